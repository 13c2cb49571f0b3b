//! The `dataport` binary syncing from the Keboola double: `dataport sync`, the server's jobs
//! API, and SIGKILL at random points of syncs and merges.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::keboola_double::{DoubleOptions, DoubleRow, DoubleTable, KeboolaDouble};

const BIN: &str = env!("CARGO_BIN_EXE_dataport");
const ADMIN_PASSWORD: &str = "Admin-Passw0rd";
const DAY: i64 = 86_400;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn table(id: &str, name: &str, rows: Vec<DoubleRow>) -> DoubleTable {
    DoubleTable {
        id: id.into(),
        name: name.into(),
        bucket: "in.c-crm".into(),
        columns: vec!["id".into(), "version".into(), "day".into(), "text".into()],
        primary_key: vec!["id".into()],
        column_metadata: vec![
            (
                "id".into(),
                "KBC.datatype.basetype".into(),
                "INTEGER".into(),
                "user".into(),
            ),
            (
                "version".into(),
                "KBC.datatype.basetype".into(),
                "INTEGER".into(),
                "user".into(),
            ),
            (
                "day".into(),
                "KBC.datatype.basetype".into(),
                "DATE".into(),
                "user".into(),
            ),
        ],
        rows,
    }
}

/// Source rows: ids `0..n`, each at `version`, spread over the last 60 days.
fn rows(ids: impl Iterator<Item = i64>, version: impl Fn(i64) -> i64) -> Vec<DoubleRow> {
    let t = now();
    ids.map(|i| {
        let day = chrono::DateTime::from_timestamp(t - (i % 60) * DAY, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        DoubleRow {
            values: vec![
                Some(i.to_string()),
                Some(version(i).to_string()),
                Some(day),
                Some(format!(
                    "row {i} with some text to make the files a little larger"
                )),
            ],
            changed_at: t,
        }
    })
    .collect()
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(double: &KeboolaDouble, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("docs")).unwrap();
    std::fs::write(
        data.join("docs/data_description.md"),
        "# CRM\n\n```yaml\nfolder_mapping: {\"in.c-crm\": \"crm\"}\ntables:\n  - {id: in.c-crm.orders, name: orders, description: Orders, primary_key: id, sync_strategy: incremental}\n  - {id: in.c-crm.events, name: events, description: Events, primary_key: id, sync_strategy: partitioned, partition_by: day, partition_granularity: day}\n```\n",
    )
    .unwrap();
    let config = dir.path().join("dataport.yaml");
    std::fs::write(
        &config,
        format!(
            "catalog:\n  data_dir: {}\nsources:\n  - name: kbc\n    type: keboola\n    url: {}\n    token_env: KBC_TEST_TOKEN\n    poll_interval_ms: 5\n    retry_backoff_ms: 5\n{extra}",
            data.display(),
            double.base_url
        ),
    )
    .unwrap();
    Setup { dir, config }
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("KBC_TEST_TOKEN", "test-token")
            .env("DATAPORT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("DATAPORT_DATA_DIR")
            .env_remove("DATAPORT_CONFIG")
            .stdin(Stdio::null());
        c
    }

    fn sync(&self) -> std::process::Output {
        self.command(&["sync", "--quiet"]).output().unwrap()
    }
}

/// Every id of a table (all its files), checking each file reads completely.
fn table_ids(path: &Path) -> Vec<i64> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        f
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    };
    let mut ids = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.') && name.ends_with(".parquet"),
            "stray file registered in a table folder: {}",
            f.display()
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap_or_else(|e| panic!("torn file {}: {e}", f.display()))
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap_or_else(|e| panic!("torn file {}: {e}", f.display()));
            let col = batch.column_by_name("id").unwrap();
            ids.extend(col.as_primitive::<Int64Type>().values().iter().copied());
            assert_eq!(col.null_count(), 0);
        }
    }
    ids
}

/// No temporary files or journals anywhere under `parquet/`.
fn assert_clean(parquet: &Path) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut files = Vec::new();
    walk(parquet, &mut files);
    let stray: Vec<_> = files
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
}

fn unique(ids: &[i64]) -> BTreeSet<i64> {
    let set: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(set.len(), ids.len(), "duplicate primary keys");
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_syncs_and_merges_never_tears_a_table() {
    let mut version = 1i64;
    let mut n = 2000i64;
    let double = KeboolaDouble::start(
        vec![
            table("in.c-crm.orders", "orders", rows(0..n, |_| 1)),
            table("in.c-crm.events", "events", rows(0..n, |_| 1)),
        ],
        DoubleOptions {
            job_polls_before_success: 0,
            ..DoubleOptions::default()
        },
    )
    .await;
    let s = setup(&double, "");
    let parquet = s.data().join("parquet");
    let orders = parquet.join("crm/orders.parquet");
    let events = parquet.join("crm/events");

    let started = Instant::now();
    let first = s.sync();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let full_sync = started.elapsed();
    let mut expected: BTreeSet<i64> = (0..n).collect();
    assert_eq!(unique(&table_ids(&orders)), expected);
    assert_eq!(unique(&table_ids(&events)), expected);

    // A small deterministic generator, seeded from the clock (printed for reproduction).
    let mut seed = std::env::var("DATAPORT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or((now() as u64) ^ 0x9e37_79b9_7f4a_7c15);
    eprintln!("kill seed {seed} (DATAPORT_KILL_SEED reproduces it), full sync {full_sync:?}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let window = full_sync.as_millis().max(50) as u64 * 2;
    // Bounded in time: 50 iterations take about a minute and a half on 2 busy cores.
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut iterations = 0;
    let mut killed_mid_way = 0;
    while iterations < 50 && Instant::now() < deadline {
        iterations += 1;
        // The source changes: some rows get a new version, some new rows appear.
        version += 1;
        let v = version;
        let added = (next() % 200) as i64;
        n += added;
        let source = rows(0..n, |i| if i % 7 == v % 7 { v } else { 1 });
        double.set_rows("in.c-crm.orders", source.clone());
        double.set_rows("in.c-crm.events", source);
        let target: BTreeSet<i64> = (0..n).collect();

        let mut child: Child = s
            .command(&["sync", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(next() % window);
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL
            killed_mid_way += 1;
        }
        child.wait().unwrap();

        // What a restarting server does first, then what it would serve.
        dataport_catalog::write::recover(&parquet).unwrap();
        assert_clean(&parquet);
        for (path, name) in [(&orders, "orders"), (&events, "events")] {
            let got = unique(&table_ids(path));
            assert!(
                got == expected || got == target,
                "iteration {iterations}: {name} has {} ids, neither the previous {} nor the new {}",
                got.len(),
                expected.len(),
                target.len()
            );
        }
        // Now and then a sync runs to the end: the next sync always completes.
        if iterations % 10 == 0 {
            let out = s.sync();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(unique(&table_ids(&orders)), target);
            assert_eq!(unique(&table_ids(&events)), target);
            expected = target;
        } else {
            // The tables are whole: each is either version; remember the newer if both moved.
            let o = unique(&table_ids(&orders));
            let e = unique(&table_ids(&events));
            if o == target && e == target {
                expected = target;
            } else if o != expected || e != expected {
                // One table moved, the other did not: finish the sync to re-align.
                let out = s.sync();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                expected = target;
            }
        }
    }
    assert!(iterations >= 50, "only {iterations} iterations in time");
    assert!(
        killed_mid_way > 0,
        "no sync was interrupted; the kill window is wrong"
    );
    let out = s.sync();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target: BTreeSet<i64> = (0..n).collect();
    assert_eq!(unique(&table_ids(&orders)), target);
    assert_eq!(unique(&table_ids(&events)), target);
    eprintln!("{iterations} iterations, {killed_mid_way} killed mid-way");
}

/// A running server on a config; stopped on drop.
struct Server {
    child: Child,
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(s: &Setup) -> Server {
    let mut child = s
        .command(&["serve"])
        .env("DATAPORT_HTTP_ADDR", "127.0.0.1:0")
        .env("DATAPORT_FLIGHT_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addresses = s.data().join("run/addresses.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = loop {
        if let Ok(text) = std::fs::read_to_string(&addresses)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            break v["http"].as_str().unwrap().to_string();
        }
        assert!(child.try_wait().unwrap().is_none(), "server exited");
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_string();
    Server {
        child,
        base,
        token,
        client,
    }
}

impl Server {
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    async fn post(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    async fn query(&self, sql: &str) -> serde_json::Value {
        self.client
            .post(format!("{}/api/v1/query", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"sql": sql}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_on_the_command_line_and_as_a_server_job() {
    let double = KeboolaDouble::start(
        vec![
            table("in.c-crm.orders", "orders", rows(0..50, |_| 1)),
            table("in.c-crm.events", "events", rows(0..20, |_| 1)),
        ],
        DoubleOptions::default(),
    )
    .await;
    let s = setup(
        &double,
        "jobs:\n  - {job: \"sync:kbc\", cron: \"0 3 * * *\", jitter: 5m}\n  - {job: refresh:catalog, every: 1h}\n",
    );
    // Command line: one table, then everything.
    let out = s.command(&["sync", "kbc", "crm.events"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("crm.events") && stderr.contains("1 tables synced"),
        "{stderr}"
    );
    assert!(!s.data().join("parquet/crm/orders.parquet").exists());
    let out = s.command(&["sync", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no source 'nope'"));

    let server = start_server(&s).await;
    let (status, body) = server.get("/api/v1/jobs").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "memory:collect",
            "memory:sessions",
            "notify:run",
            "profile:catalog",
            "refresh:catalog",
            "sync:kbc"
        ]
    );
    let sync_job = &body["jobs"][5];
    assert_eq!(sync_job["schedule"], "cron 0 3 * * *");
    assert!(sync_job["next_run"].is_string(), "{sync_job}");
    // The command-line run is in the job's history.
    assert_eq!(sync_job["last_run"]["trigger"], "cli");

    // Manual trigger through the API (admins only).
    let (status, body) = server
        .post("/api/v1/jobs/sync:kbc/run", &server.token)
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let (_, job) = server.get("/api/v1/jobs/sync:kbc").await;
        if job["running"] == false && job["history"][0]["id"].as_i64() == Some(run_id) {
            break job["history"][0].clone();
        }
        assert!(Instant::now() < deadline, "job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last["outcome"], "ok", "{last}");
    assert_eq!(last["trigger"], "manual");
    // The synced table is served at once (the job refreshed the catalog).
    let result = server.query("select count(*) as n from crm.orders").await;
    assert_eq!(result[0]["n"], 50, "{result}");
    // The sync job profiled what it wrote.
    let (status, profile) = server.get("/api/v1/catalog/crm/orders/profile").await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["profile"]["row_count"], 50, "{profile}");
    assert_eq!(profile["stale"], false);
    // `last_sync` is the sync state's, as RFC 3339.
    let last_sync = profile["profile"]["last_sync"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(last_sync)
            .is_ok_and(|t| { (chrono::Utc::now().timestamp() - t.timestamp()).abs() < 600 }),
        "{profile}"
    );
    let (status, _) = server.post("/api/v1/jobs/nope/run", &server.token).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .post("/api/v1/jobs/sync:kbc/run", "not-a-token")
        .await;
    assert_eq!(status, 401);
    let metrics = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dataport_job_runs_total{job=\"sync:kbc\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}
