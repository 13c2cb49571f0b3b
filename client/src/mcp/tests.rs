//! The proxy end to end in one process: lines in and out as an assistant's client sees them,
//! against a small HTTP server that plays the server's `/mcp`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::credentials::Credentials;

/// A request the fake server got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: HashMap<String, String>,
    body: Value,
}

impl Seen {
    fn rpc_method(&self) -> &str {
        self.body["method"].as_str().unwrap_or("")
    }
}

/// What the fake server answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(value: Value) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: value.to_string(),
            delay: Duration::ZERO,
        }
    }
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    fn events(messages: &[Value]) -> Self {
        let body: String = messages
            .iter()
            .map(|m| format!("event: message\ndata: {m}\n\n"))
            .collect();
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            body: format!(": stream\n\n{body}"),
            delay: Duration::ZERO,
        }
    }
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

/// A one-route HTTP/1.1 server; `handler` gets each request and how many came before it.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.lines();
                    let method = lines
                        .next()
                        .unwrap_or("")
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                    let request = Seen {
                        method,
                        headers,
                        body,
                    };
                    let reply = {
                        let mut log = log.lock().unwrap();
                        let before = log.len();
                        log.push(request.clone());
                        handler(&request, before)
                    };
                    tokio::time::sleep(reply.delay).await;
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        response.push_str(&format!("{k}: {v}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&reply.body);
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The server's side of a healthy session: `initialize` opens session `s<n>`, a tool call
/// answers with a progress notification and its result, anything else with an empty result.
fn healthy(seen: &Seen) -> Reply {
    match seen.rpc_method() {
        "initialize" => {
            let mut r = Reply::json(json!({"jsonrpc": "2.0", "id": seen.body["id"], "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "dataport", "version": "x"}}}));
            r.headers.push(("mcp-session-id", "s1".into()));
            r
        }
        "notifications/initialized" | "notifications/cancelled" => Reply::status(202),
        "tools/call" => Reply::events(&[
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 0.5}}),
            json!({"jsonrpc": "2.0", "id": seen.body["id"], "result": {"content": [{"type": "text", "text": "from the server"}], "isError": false}}),
        ]),
        _ => Reply::json(json!({"jsonrpc": "2.0", "id": seen.body["id"], "result": {"tools": []}})),
    }
}

/// A client of the proxy: lines in, lines out.
struct Client {
    input: tokio::io::DuplexStream,
    output: tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
    done: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl Client {
    fn start(options: McpOptions) -> Self {
        let (input, proxy_in) = tokio::io::duplex(1 << 20);
        let (proxy_out, output) = tokio::io::duplex(1 << 20);
        let done = tokio::spawn(serve(options, proxy_in, proxy_out));
        Self {
            input,
            output: BufReader::new(output).lines(),
            done,
        }
    }

    async fn send(&mut self, message: Value) {
        let line = format!("{message}\n");
        self.input.write_all(line.as_bytes()).await.unwrap();
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.output.next_line())
            .await
            .expect("an answer within 20 s")
            .unwrap()
            .expect("the proxy is still running");
        serde_json::from_str(&line).unwrap()
    }

    async fn call(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.next().await
    }

    async fn finish(self) {
        drop(self.input);
        tokio::time::timeout(Duration::from_secs(20), self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn options(home: &Path, server: Option<&str>) -> McpOptions {
    let credentials = home.join("credentials.json");
    if let Some(server) = server {
        Credentials {
            server: server.into(),
            user: "ana".into(),
            token: "secret-token".into(),
            expires_at: None,
        }
        .save(&credentials)
        .unwrap();
    }
    McpOptions {
        server: None,
        dir: home.join("pulled"),
        credentials,
        duckdb: DuckDb::Off,
        retry_every: Duration::from_secs(3600),
    }
}

async fn initialize(client: &mut Client) {
    let init = client
        .call(
            0,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "test", "version": "1"}}),
        )
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert!(
        init["result"]["instructions"]
            .as_str()
            .unwrap()
            .contains("DuckDB SQL when the server cannot be reached")
    );
    client
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
}

#[tokio::test]
async fn online_requests_go_to_the_server_in_one_session_and_events_pass_through() {
    let fake = Fake::start(Arc::new(|s, _| healthy(s))).await;
    let home = tempfile::tempdir().unwrap();
    let mut client = Client::start(options(home.path(), Some(&fake.url)));
    initialize(&mut client).await;
    // Answered here: nothing reached the server yet.
    let pong = client.call(1, "ping", json!({})).await;
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
    assert!(fake.seen().is_empty());

    let tools = client.call(2, "tools/list", json!({})).await;
    assert_eq!(tools["result"], json!({"tools": []}));
    client
        .send(json!({"jsonrpc": "2.0", "id": "c", "method": "tools/call", "params": {"name": "list_tables", "_meta": {"progressToken": 1}}}))
        .await;
    let progress = client.next().await;
    assert_eq!(progress["method"], "notifications/progress");
    let answer = client.next().await;
    assert_eq!(answer["id"], "c");
    assert_eq!(answer["result"]["content"][0]["text"], "from the server");
    client.finish().await;

    let seen = fake.seen();
    let methods: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.rpc_method()))
        .collect();
    assert_eq!(
        methods,
        [
            ("POST", "initialize"),
            ("POST", "notifications/initialized"),
            ("POST", "tools/list"),
            ("POST", "tools/call"),
            ("DELETE", ""),
        ]
    );
    // The client's hello, and the session's headers on everything after it.
    assert_eq!(seen[0].body["params"]["clientInfo"]["name"], "test");
    assert_eq!(seen[0].body["params"]["protocolVersion"], "2025-06-18");
    assert!(!seen[0].headers.contains_key("mcp-session-id"));
    for s in &seen {
        assert_eq!(s.headers["authorization"], "Bearer secret-token");
    }
    for s in &seen[1..] {
        assert_eq!(s.headers["mcp-session-id"], "s1");
        assert_eq!(s.headers["mcp-protocol-version"], "2025-06-18");
    }
    assert_eq!(
        seen[2].headers["accept"],
        "application/json, text/event-stream"
    );
    assert_eq!(seen[2].headers["content-type"], "application/json");
    // Forwarded as it came.
    assert_eq!(seen[3].body["params"]["_meta"]["progressToken"], 1);
}

#[tokio::test]
async fn a_forgotten_session_is_opened_again_and_the_request_resent() {
    // The first tools/list after the handshake meets a restarted server (404).
    let fake = Fake::start(Arc::new(|s, before| {
        if s.rpc_method() == "tools/list" && before == 2 {
            return Reply::status(404);
        }
        healthy(s)
    }))
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut client = Client::start(options(home.path(), Some(&fake.url)));
    initialize(&mut client).await;
    let tools = client.call(1, "tools/list", json!({})).await;
    assert_eq!(tools["result"], json!({"tools": []}), "{tools}");
    client.finish().await;
    let methods: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| s.rpc_method().to_string())
        .collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "initialize",
            "notifications/initialized",
            "tools/list",
            ""
        ]
    );
}

#[tokio::test]
async fn an_unreachable_server_is_answered_offline_and_tried_again_later() {
    // Down (503) for the first two requests, then up.
    let fake = Fake::start(Arc::new(|s, before| {
        if before < 2 {
            return Reply::status(503);
        }
        healthy(s)
    }))
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(home.path(), Some(&fake.url));
    opts.retry_every = Duration::from_millis(300);
    let mut client = Client::start(opts);
    initialize(&mut client).await;

    let tools = client.call(1, "tools/list", json!({})).await;
    let listed: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"run_query"), "{tools}");
    let run_query = &tools["result"]["tools"][4];
    assert!(
        run_query["description"]
            .as_str()
            .unwrap()
            .contains("DuckDB"),
        "{run_query}"
    );
    // No pull here: the answer says what is wrong and what to do.
    let answer = client
        .call(2, "tools/call", json!({"name": "list_tables"}))
        .await;
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "Offline: the server at {} could not be reached (HTTP 503",
            fake.url
        )),
        "{text}"
    );
    assert!(text.contains("run `dataport pull`"), "{text}");
    // Within the retry interval the server is not asked again.
    assert_eq!(fake.seen().len(), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = client.call(3, "tools/list", json!({})).await;
    assert_eq!(
        again["result"]["tools"].as_array().unwrap().len(),
        8,
        "{again}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Up again: a session, then the request (its progress first).
    let progress = client
        .call(4, "tools/call", json!({"name": "list_tables"}))
        .await;
    assert_eq!(progress["method"], "notifications/progress");
    let ok = client.next().await;
    let text = ok["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text, "from the server", "{ok}");
    client.finish().await;
}

#[tokio::test]
async fn without_a_login_everything_is_answered_offline() {
    let home = tempfile::tempdir().unwrap();
    let mut client = Client::start(options(home.path(), None));
    initialize(&mut client).await;
    let answer = client
        .call(1, "tools/call", json!({"name": "list_tables"}))
        .await;
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Offline: not logged in (no login stored at"),
        "{text}"
    );
    // Unknown methods and bad lines get JSON-RPC errors.
    let unknown = client.call(2, "no/such", json!({})).await;
    assert_eq!(unknown["error"]["code"], jsonrpc::METHOD_NOT_FOUND);
    client.input.write_all(b"{not json\n").await.unwrap();
    let bad = client.next().await;
    assert_eq!(bad["error"]["code"], jsonrpc::PARSE_ERROR);
    assert_eq!(bad["id"], Value::Null);
    client.finish().await;
}

#[tokio::test]
async fn a_slow_call_blocks_nothing_and_a_cancel_reaches_the_server() {
    let fake = Fake::start(Arc::new(|s, _| {
        let mut r = healthy(s);
        if s.rpc_method() == "tools/call" {
            r.delay = Duration::from_secs(30);
        }
        r
    }))
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut client = Client::start(options(home.path(), Some(&fake.url)));
    initialize(&mut client).await;
    // Open the session first, so that the slow call is the only thing under way.
    client.call(1, "tools/list", json!({})).await;
    client
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_query", "arguments": {"sql": "select 1"}}}))
        .await;
    let wait_for_call = async {
        while !fake.seen().iter().any(|s| s.rpc_method() == "tools/call") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait_for_call)
        .await
        .unwrap();
    let pong = client.call(3, "ping", json!({})).await;
    assert_eq!(pong["id"], 3);
    client
        .send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2, "reason": "user"}}))
        .await;
    let wait_for_cancel = async {
        while !fake
            .seen()
            .iter()
            .any(|s| s.rpc_method() == "notifications/cancelled")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait_for_cancel)
        .await
        .unwrap();
    // The cancelled call gets no answer; the next request's is the next line.
    let next = client.call(4, "ping", json!({})).await;
    assert_eq!(next["id"], 4);
    client.finish().await;
}

#[tokio::test]
async fn a_refused_login_answers_offline_until_a_new_login_is_stored() {
    let fake = Fake::start(Arc::new(|s, _| {
        if s.headers["authorization"] != "Bearer new-token" {
            return Reply::status(401);
        }
        healthy(s)
    }))
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(home.path(), Some(&fake.url));
    opts.retry_every = Duration::from_millis(200);
    let credentials = opts.credentials.clone();
    let mut client = Client::start(opts);
    initialize(&mut client).await;
    let answer = client
        .call(1, "tools/call", json!({"name": "list_tables"}))
        .await;
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "Offline: the server at {} refused the stored login (HTTP 401; run `dataport login` again)",
            fake.url
        )),
        "{text}"
    );
    // `dataport login` elsewhere: the next try uses the new token.
    Credentials {
        server: fake.url.clone(),
        user: "ana".into(),
        token: "new-token".into(),
        expires_at: None,
    }
    .save(&credentials)
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tools = client.call(2, "tools/list", json!({})).await;
    assert_eq!(tools["result"], json!({"tools": []}), "{tools}");
    client.finish().await;
    // The old token was sent once: read again, the stored login still held it.
    let refused = fake
        .seen()
        .iter()
        .filter(|s| s.headers["authorization"] == "Bearer secret-token")
        .count();
    assert_eq!(refused, 1);
}
