//! Analyst sync over HTTP: the manifest, file downloads (ETag, Range), settings and uploads.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::common::{Server, tpch_dir};
use dataport_web::WebOptions;

fn files_of(manifest: &Value, table: &str) -> Vec<Value> {
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            format!(
                "{}.{}",
                t["schema"].as_str().unwrap(),
                t["table"].as_str().unwrap()
            ) == table
        })
        .map(|t| t["files"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn manifest_lists_every_file_with_its_digest() {
    let s = Server::start(WebOptions::default()).await;
    let manifest: Value = s
        .get("/api/v1/sync/manifest?all=true")
        .await
        .json()
        .await
        .unwrap();
    let tables = manifest["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 8, "{manifest}");
    let nation = tables.iter().find(|t| t["table"] == "nation").unwrap();
    assert_eq!(nation["restricted"], false);
    assert_eq!(nation["columns"][0]["name"], "n_nationkey");
    assert!(nation["description"].as_str().unwrap().contains("nations"));
    let [file] = files_of(&manifest, "tpch.nation").try_into().unwrap();
    assert_eq!(file["path"], "parquet/tpch/nation.parquet");
    assert_eq!(file["local_path"], "tpch/nation.parquet");
    let bytes = std::fs::read(tpch_dir().join("parquet/tpch/nation.parquet")).unwrap();
    assert_eq!(file["size"], bytes.len() as u64);
    assert_eq!(file["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));

    // The file, whole, then in ranges.
    let url = "/api/v1/sync/files/parquet/tpch/nation.parquet";
    let whole = s.get(url).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", file["sha256"].as_str().unwrap()));
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let get_with = |headers: Vec<(&'static str, String)>| {
        let mut r = s.client.get(format!("{}{url}", s.base));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let part = get_with(vec![("range", "bytes=10-19".into())])
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-19/{}", bytes.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let tail = get_with(vec![("range", format!("bytes={}-", bytes.len() - 7))])
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &bytes[bytes.len() - 7..]
    );
    let past = get_with(vec![("range", format!("bytes={}-", bytes.len()))])
        .await
        .unwrap();
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );
    // A range of another version is answered with the whole file.
    let stale = get_with(vec![
        ("range", "bytes=0-9".into()),
        ("if-range", "\"0000\"".into()),
    ])
    .await
    .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap().len(), bytes.len());
    let same = get_with(vec![("if-none-match", etag.clone())])
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn only_listed_files_are_served() {
    let s = Server::start(WebOptions::default()).await;
    for path in [
        "parquet/tpch/nope.parquet",
        // (reqwest removes plain `..` segments itself; encoded slashes reach the server)
        "parquet%2F..%2Fparquet%2Ftpch%2Fnation.parquet",
        "parquet%2Ftpch%2F..%2Ftpch%2Fnation.parquet",
        "parquet//tpch/nation.parquet",
        "%2Fetc%2Fpasswd",
        "..%2F..%2Fetc%2Fpasswd",
        "docs/data_description.md",
        "parquet/tpch/_demo_complete",
        "state/dataport.db",
        "parquet/tpch/nation.parquet/x",
    ] {
        let r = s.get(&format!("/api/v1/sync/files/{path}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
}

#[tokio::test]
async fn settings_choose_what_the_manifest_lists() {
    let s = Server::start(WebOptions::default()).await;
    let put = |body: Value| {
        s.client
            .put(format!("{}/api/v1/sync/settings", s.base))
            .json(&body)
            .send()
    };
    let r = put(json!({"schemas": ["tpch"], "exclude": ["tpch.lineitem"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = s.get("/api/v1/sync/settings").await.json().await.unwrap();
    assert_eq!(got["exclude"], json!(["tpch.lineitem"]));
    let manifest: Value = s.get("/api/v1/sync/manifest").await.json().await.unwrap();
    let names: Vec<&str> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(!names.contains(&"lineitem"));
    // Excluded from the manifest, still downloadable (the caller may read it).
    let r = s
        .get("/api/v1/sync/files/parquet/tpch/lineitem.parquet")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for bad in [
        json!({"tables": ["nodot"]}),
        json!({"schemas": "tpch"}),
        json!({"tabels": []}),
    ] {
        let r = put(bad.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = put(json!({})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn uploads_are_stored_once() {
    let s = Server::start(WebOptions {
        max_upload_bytes: 1024,
        ..WebOptions::default()
    })
    .await;
    let post = |query: &str, body: Vec<u8>| {
        s.client
            .post(format!("{}/api/v1/sync/upload?{query}", s.base))
            .body(body)
            .send()
    };
    let notes = format!("# notes {}\n", uuid::Uuid::new_v4()).into_bytes();
    let first = post("kind=notes", notes.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = post("kind=notes", notes.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["unchanged"], true);
    assert_eq!(
        std::fs::read(tpch_dir().join("uploads/admin/notes.md")).unwrap(),
        notes
    );
    let line = format!("{{\"id\": \"{}\"}}\n", uuid::Uuid::new_v4()).into_bytes();
    let r = post("kind=transcript&name=s-1.jsonl", line.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        std::fs::read(tpch_dir().join("uploads/admin/transcripts/s-1.jsonl")).unwrap(),
        line
    );
    for (query, body) in [
        ("kind=transcript&name=s-2.jsonl", b"not json\n".to_vec()),
        ("kind=transcript&name=../x.jsonl", line.clone()),
        ("kind=transcript&name=x.txt", line.clone()),
        ("kind=transcript", line.clone()),
        ("kind=other", line.clone()),
    ] {
        let r = post(query, body).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let big = post("kind=notes", vec![b'x'; 2048]).await.unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
