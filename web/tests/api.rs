use arrow::array::RecordBatch;
use bytes::Bytes;
use dataport_web::WebOptions;
use serde_json::{Value, json};

use crate::common::Server;

async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

const NATION: &str = "select n_nationkey, n_name, n_regionkey from nation order by n_nationkey";

#[tokio::test]
async fn every_format_carries_the_same_rows() {
    let s = Server::start(WebOptions::default()).await;
    let body = json!({"sql": NATION});

    let resp = s.query(body.clone(), "json").await;
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rows: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[3]["n_name"], "CANADA");
    assert_eq!(rows[3]["n_nationkey"], 3);

    let text = s.query(body.clone(), "ndjson").await.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, rows);

    let csv = s.query(body.clone(), "csv").await.text().await.unwrap();
    let mut csv_lines = csv.lines();
    assert_eq!(csv_lines.next(), Some("n_nationkey,n_name,n_regionkey"));
    assert_eq!(csv_lines.nth(3), Some("3,CANADA,1"));
    assert_eq!(csv.lines().count(), 26);

    let ipc = s.query(body.clone(), "arrow").await.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 25);

    let pq: Bytes = s.query(body, "parquet").await.bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(pq)
        .unwrap()
        .build()
        .unwrap();
    let total: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(total, 25);
}

#[tokio::test]
async fn empty_results_are_well_formed() {
    let s = Server::start(WebOptions::default()).await;
    let body = json!({"sql": "select n_name from nation where n_nationkey < 0"});
    let rows: Vec<Value> = s.query(body.clone(), "json").await.json().await.unwrap();
    assert!(rows.is_empty());
    assert_eq!(
        s.query(body.clone(), "csv").await.text().await.unwrap(),
        "n_name\n"
    );
    assert_eq!(
        s.query(body.clone(), "ndjson").await.text().await.unwrap(),
        ""
    );
    let ipc = s.query(body, "arrow").await.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    assert_eq!(reader.schema().field(0).name(), "n_name");
}

#[tokio::test]
async fn accept_header_negotiates_and_format_param_wins() {
    let s = Server::start(WebOptions::default()).await;
    let url = format!("{}/api/v1/query", s.base);
    let send = |accept: &'static str, url: String| {
        let c = s.client.clone();
        async move {
            c.post(url)
                .header("accept", accept)
                .json(&json!({"sql": "select 1 as x"}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = send("text/csv", url.clone()).await;
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let r = send(
        "application/x-ndjson;q=0.5, application/vnd.apache.arrow.stream",
        url.clone(),
    )
    .await;
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let r = send("*/*", url.clone()).await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = send("text/csv", format!("{url}?format=ndjson")).await;
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let (status, code, _) = error_of(send("image/png", url.clone()).await).await;
    assert_eq!((status, code.as_str()), (406, "not_acceptable"));
    let (status, _, _) = error_of(send("text/csv", format!("{url}?format=xlsx")).await).await;
    assert_eq!(status, 406);
}

#[tokio::test]
async fn errors_have_honest_statuses() {
    let s = Server::start(WebOptions {
        max_json_rows: 10,
        ..WebOptions::default()
    })
    .await;
    let cases = [
        (json!({"sql": "selec 1"}), 400, "invalid_argument"),
        (json!({"sql": "select * from nope"}), 404, "not_found"),
        (
            json!({"sql": "drop table tpch.nation"}),
            403,
            "permission_denied",
        ),
        (
            json!({"sql": "select $1", "params": [[1]]}),
            400,
            "invalid_argument",
        ),
        (
            json!({"sql": "select * from nation"}),
            400,
            "result_too_large",
        ),
        (json!({"query": "select 1"}), 400, "invalid_argument"),
    ];
    for (body, status, code) in cases {
        let resp = s.query(body.clone(), "json").await;
        assert!(resp.headers().contains_key("x-request-id"));
        let (st, c, msg) = error_of(resp).await;
        assert_eq!((st, c.as_str()), (status, code), "{body}: {msg}");
    }
    // The cap applies to JSON only; exactly the cap is fine.
    let rows: Vec<Value> = s
        .query(json!({"sql": "select * from nation limit 10"}), "json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    let csv = s
        .query(json!({"sql": "select * from nation"}), "csv")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 26);

    let big = "x".repeat(2 << 20);
    let resp = s
        .client
        .post(format!("{}/api/v1/query", s.base))
        .header("content-type", "application/json")
        .body(format!("{{\"sql\": \"select '{big}'\"}}"))
        .send()
        .await
        .unwrap();
    let (st, c, _) = error_of(resp).await;
    assert_eq!((st, c.as_str()), (413, "payload_too_large"));
    let (st, _, _) = error_of(s.get("/api/v1/nothing-here").await).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn catalog_health_and_metrics() {
    let s = Server::start(WebOptions::default()).await;
    let catalog: Value = s.get("/api/v1/catalog").await.json().await.unwrap();
    assert_eq!(catalog["catalog"], "dataport");
    let tables = catalog["schemas"][0]["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 8);
    let lineitem: Value = s
        .get("/api/v1/catalog/tpch/lineitem")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        lineitem["primary_key"],
        json!(["l_orderkey", "l_linenumber"])
    );
    assert!(lineitem["row_count"].as_u64().unwrap() > 0);
    assert!(
        lineitem["columns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["description"].is_string() && c["type"] != "Utf8View")
    );
    let (st, code, _) = error_of(s.get("/api/v1/catalog/tpch/nope").await).await;
    assert_eq!((st, code.as_str()), (404, "not_found"));

    let health: Value = s.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["tables"], 8);

    s.query(json!({"sql": "select 1"}), "json").await;
    let metrics = s.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("dataport_queries_total{surface=\"http\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    for name in [
        "dataport_query_duration_seconds_bucket",
        "dataport_rows_served_total",
        "dataport_bytes_served_total",
        "dataport_memory_pool_reserved_bytes",
        "dataport_catalog_tables 8",
        "dataport_catalog_refreshes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let refresh: Value = s
        .client
        .post(format!("{}/api/v1/catalog/refresh", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refresh["tables"], 8);
    assert_eq!(refresh["tables_reloaded"], 0);
}

#[tokio::test]
async fn table_profiles_are_computed_once_and_served() {
    let s = Server::start(WebOptions::default()).await;
    let first: Value = s
        .get("/api/v1/catalog/tpch/nation/profile")
        .await
        .json()
        .await
        .unwrap();
    let p = &first["profile"];
    assert_eq!(p["row_count"], 25, "{first}");
    assert_eq!(p["column_count"], 4);
    assert_eq!(first["stale"], false);
    assert_eq!(first["restricted"], false);
    let key = p["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "n_nationkey")
        .unwrap();
    assert_eq!(key["unique_count"], 25);
    assert_eq!(key["numeric_stats"]["min"], 0.0);
    assert_eq!(key["numeric_stats"]["max"], 24.0);
    assert!(key["alerts"].to_string().contains("unique"));
    // `region` is the table nation belongs to.
    assert!(
        p["related_tables"].to_string().contains("tpch.region"),
        "{p}"
    );
    // Stored: the second answer is the same computation.
    let second: Value = s
        .get("/api/v1/catalog/tpch/nation/profile")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["computed_at"], first["computed_at"]);
    assert_eq!(second["data_version"], first["data_version"]);
    let missing = s.get("/api/v1/catalog/tpch/nope/profile").await;
    assert_eq!(missing.status(), 404);

    // The listing summarises the stored profile.
    let table: Value = s
        .get("/api/v1/catalog/tpch/nation")
        .await
        .json()
        .await
        .unwrap();
    let summary = &table["profile"];
    assert_eq!(summary["row_count"], 25, "{table}");
    assert_eq!(summary["computed_at"], first["computed_at"]);
    assert_eq!(summary["alerts"]["unique"], 3, "{summary}");
    assert_eq!(summary["stale"], false);

    // The export has every table in the seed's shape, nation's profile unchanged.
    let export: Value = s
        .get("/api/v1/catalog/profiles.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export["version"], "1.0");
    assert!(export["generated_at"].as_str().unwrap().ends_with('Z'));
    let tables = export["tables"].as_object().unwrap();
    assert_eq!(tables.len(), 8, "{:?}", tables.keys());
    assert_eq!(tables["tpch.nation"], first["profile"]);
    assert_eq!(tables["tpch.lineitem"]["row_count"], 60175);
    // ...and now the listing summarises every table.
    let catalog: Value = s.get("/api/v1/catalog").await.json().await.unwrap();
    for t in catalog["schemas"][0]["tables"].as_array().unwrap() {
        assert!(t["profile"]["row_count"].is_u64(), "{t}");
    }
}
