//! The server under test: the real `dataport` binary on free ports, and its two surfaces as a
//! client sees them (Flight SQL over gRPC, the HTTP query API).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandPreparedStatementQuery, CommandStatementQuery,
    CommandStatementUpdate, ProstMessageExt,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The admin account's password for the run (the account reads every table).
const PASSWORD: &str = "Conformance-1234";

/// A running server; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) data_dir: PathBuf,
    http: String,
    flight: String,
    token: String,
    web: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a surface answered: batches, or an error with its code and message.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    Rows(T),
    Error {
        code: String,
        message: String,
    },
    /// Not asked (the request has no form for this surface).
    Skipped,
}

/// Flight's answer to a query: the schema `GetFlightInfo` announced, the schema `DoGet`
/// streamed, and the batches.
#[derive(Debug)]
pub(crate) struct FlightResult {
    pub(crate) announced: SchemaRef,
    pub(crate) streamed: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
}

/// HTTP JSON rows, each as its (column, value) pairs in order (names may repeat).
pub(crate) type JsonRows = Vec<Vec<(String, serde_json::Value)>>;

impl Server {
    pub(crate) async fn start(bin: &Path, work: &Path) -> anyhow::Result<Self> {
        let data_dir = work.join("data");
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)?;
        }
        std::fs::create_dir_all(data_dir.join("parquet"))?;
        let log = std::fs::File::create(work.join("server.log"))?;
        let child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--flight-addr",
                "127.0.0.1:0",
                "--refresh-interval",
                "0s",
                "--query-timeout",
                "60s",
                "--max-failed-logins",
                "1000",
            ])
            .env("DATAPORT_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let addresses = data_dir.join("run").join("addresses.json");
        let started = Instant::now();
        let (http, flight) = loop {
            if let Ok(text) = std::fs::read_to_string(&addresses)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let (Some(h), Some(f)) = (v["http"].as_str(), v["flight"].as_str())
            {
                break (h.to_string(), f.to_string());
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the server did not start within 120 s; see {}",
                    work.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let web = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let login: serde_json::Value = web
            .post(format!("http://{http}/api/v1/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = login["token"]
            .as_str()
            .context("login answered no token")?
            .to_string();
        Ok(Self {
            child,
            data_dir,
            http,
            flight,
            token,
            web,
        })
    }

    /// Rescan the data dir now (the server's own refresh, as an administrator calls it).
    pub(crate) async fn refresh(&self) -> anyhow::Result<()> {
        self.web
            .post(format!("http://{}/api/v1/catalog/refresh", self.http))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn http_query(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        format: &str,
    ) -> anyhow::Result<Answer<bytes::Bytes>> {
        let response = self
            .web
            .post(format!("http://{}/api/v1/query?format={format}", self.http))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"sql": sql, "params": params}))
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if status.is_success() {
            return Ok(Answer::Rows(body));
        }
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(Answer::Error {
            code: format!(
                "{} {}",
                status.as_u16(),
                error["error"]["code"].as_str().unwrap_or("?")
            ),
            message: error["error"]["message"].as_str().map_or_else(
                || String::from_utf8_lossy(&body).into_owned(),
                str::to_string,
            ),
        })
    }

    /// `POST /api/v1/query?format=arrow`.
    pub(crate) async fn http_arrow(
        &self,
        sql: &str,
        params: &[serde_json::Value],
    ) -> anyhow::Result<Answer<(SchemaRef, Vec<RecordBatch>)>> {
        Ok(match self.http_query(sql, params, "arrow").await? {
            Answer::Rows(body) => {
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
                let schema = reader.schema();
                let batches = reader.collect::<Result<Vec<_>, _>>()?;
                Answer::Rows((schema, batches))
            }
            Answer::Error { code, message } => Answer::Error { code, message },
            Answer::Skipped => Answer::Skipped,
        })
    }

    /// `POST /api/v1/query?format=json`.
    pub(crate) async fn http_json(
        &self,
        sql: &str,
        params: &[serde_json::Value],
    ) -> anyhow::Result<Answer<JsonRows>> {
        Ok(match self.http_query(sql, params, "json").await? {
            Answer::Rows(body) => {
                let rows: Vec<OrderedObject> = serde_json::from_slice(&body)
                    .with_context(|| "the JSON result is not an array of objects")?;
                Answer::Rows(rows.into_iter().map(|r| r.0).collect())
            }
            Answer::Error { code, message } => Answer::Error { code, message },
            Answer::Skipped => Answer::Skipped,
        })
    }

    pub(crate) async fn flight(&self) -> anyhow::Result<Flight> {
        let channel = Channel::from_shared(format!("http://{}", self.flight))?
            .connect()
            .await?;
        let bearer = MetadataValue::try_from(format!("Bearer {}", self.token))?;
        let client = FlightServiceClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(64 << 20);
        Ok(Flight { client })
    }
}

/// A JSON object read with its keys in order, repeats kept (`select 1, 1` names both columns
/// alike).
struct OrderedObject(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedObject, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(entry);
                }
                Ok(OrderedObject(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[derive(Clone)]
struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A Flight SQL connection, called as a client library would.
pub(crate) struct Flight {
    client: FlightServiceClient<InterceptedService<Channel, Bearer>>,
}

fn status_answer<T>(status: &tonic::Status) -> Answer<T> {
    Answer::Error {
        code: format!("{:?}", status.code()),
        message: status.message().to_string(),
    }
}

fn flight_error_answer<T>(error: FlightError) -> Answer<T> {
    match error {
        FlightError::Tonic(status) => status_answer(&status),
        other => Answer::Error {
            code: "client".into(),
            message: other.to_string(),
        },
    }
}

impl Flight {
    /// A statement query: `GetFlightInfo(CommandStatementQuery)`, then `DoGet` of its ticket.
    pub(crate) async fn query(&mut self, sql: &str) -> Answer<FlightResult> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        match self.client.get_flight_info(descriptor).await {
            Ok(info) => self.fetch(info.into_inner()).await,
            Err(status) => status_answer(&status),
        }
    }

    /// A statement update (`DoPut(CommandStatementUpdate)`), as ADBC sends DDL and DML.
    pub(crate) async fn update(&mut self, sql: &str) -> Answer<i64> {
        let command = CommandStatementUpdate {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let message = FlightData::new().with_descriptor(descriptor);
        match self
            .client
            .do_put(futures::stream::iter(vec![message]))
            .await
        {
            Ok(response) => match response.into_inner().try_collect::<Vec<_>>().await {
                Ok(_) => Answer::Rows(0),
                Err(status) => status_answer(&status),
            },
            Err(status) => status_answer(&status),
        }
    }

    /// A prepared statement with `parameters` bound (one row, one column per `$n`).
    pub(crate) async fn prepared(
        &mut self,
        sql: &str,
        parameters: &RecordBatch,
    ) -> Answer<FlightResult> {
        let handle = match self.create_prepared(sql).await {
            Ok(h) => h,
            Err(failed) => return failed,
        };
        let command = CommandPreparedStatementQuery {
            prepared_statement_handle: handle.clone(),
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        // A statement without parameters is executed without a bind, as clients do.
        let bound = if parameters.num_columns() == 0 {
            Ok(())
        } else {
            self.bind(descriptor.clone(), parameters).await
        };
        let answer = match bound {
            Ok(()) => match self.client.get_flight_info(descriptor).await {
                Ok(info) => self.fetch(info.into_inner()).await,
                Err(status) => status_answer(&status),
            },
            Err(failed) => failed,
        };
        let close = ActionClosePreparedStatementRequest {
            prepared_statement_handle: handle,
        };
        let _ = self
            .client
            .do_action(Action::new(
                "ClosePreparedStatement",
                close.as_any().encode_to_vec(),
            ))
            .await;
        answer
    }

    async fn create_prepared<T>(&mut self, sql: &str) -> Result<bytes::Bytes, Answer<T>> {
        let create = ActionCreatePreparedStatementRequest {
            query: sql.to_string(),
            transaction_id: None,
        };
        let action = Action::new("CreatePreparedStatement", create.as_any().encode_to_vec());
        let results = match self.client.do_action(action).await {
            Ok(r) => r
                .into_inner()
                .try_collect::<Vec<_>>()
                .await
                .map_err(|s| status_answer(&s))?,
            Err(status) => return Err(status_answer(&status)),
        };
        let client_error = |message: String| Answer::Error {
            code: "client".into(),
            message,
        };
        let first = results
            .into_iter()
            .next()
            .ok_or_else(|| client_error("CreatePreparedStatement answered no result".into()))?;
        let any = Any::decode(first.body.as_ref()).map_err(|e| client_error(e.to_string()))?;
        let result = any
            .unpack::<ActionCreatePreparedStatementResult>()
            .ok()
            .flatten()
            .ok_or_else(|| client_error("unreadable CreatePreparedStatement result".into()))?;
        Ok(result.prepared_statement_handle)
    }

    /// `DoPut` of the parameter values for a prepared statement.
    async fn bind<T>(
        &mut self,
        descriptor: FlightDescriptor,
        parameters: &RecordBatch,
    ) -> Result<(), Answer<T>> {
        let messages: Vec<FlightData> = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(vec![Ok(parameters.clone())]))
            .try_collect()
            .await
            .map_err(flight_error_answer)?;
        let response = self
            .client
            .do_put(futures::stream::iter(messages))
            .await
            .map_err(|s| status_answer(&s))?;
        response
            .into_inner()
            .try_collect::<Vec<_>>()
            .await
            .map_err(|s| status_answer(&s))?;
        Ok(())
    }

    async fn fetch(&mut self, info: FlightInfo) -> Answer<FlightResult> {
        let announced = match info.clone().try_decode_schema() {
            Ok(s) => Arc::new(s),
            Err(e) => {
                return Answer::Error {
                    code: "client".into(),
                    message: format!("unreadable announced schema: {e}"),
                };
            }
        };
        let mut batches = Vec::new();
        let mut streamed: Option<SchemaRef> = None;
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let response = match self.client.do_get(Ticket::new(ticket.ticket)).await {
                Ok(r) => r.into_inner(),
                Err(status) => return status_answer(&status),
            };
            let mut stream =
                FlightRecordBatchStream::new_from_flight_data(response.map_err(FlightError::from));
            loop {
                match stream.try_next().await {
                    Ok(Some(batch)) => batches.push(batch),
                    Ok(None) => break,
                    Err(e) => return flight_error_answer(e),
                }
            }
            streamed = stream.schema().cloned().or(streamed);
        }
        Answer::Rows(FlightResult {
            streamed: streamed.unwrap_or_else(|| Arc::new(Schema::empty())),
            announced,
            batches,
        })
    }
}
