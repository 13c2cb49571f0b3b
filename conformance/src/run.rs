//! Running the corpus: each record of each file against the reference and the server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};
use datafusion::common::ScalarValue;
use sqllogictest::{DefaultColumnType, Record};

use crate::compare::{self, Equality};
use crate::corpus::{self, Kind};
use crate::reference::{Outcome as Reference, Reference as Contexts};
use crate::report::{FileStats, Outcome, Refusal, Surface};
use crate::server::{Answer, Flight, Server};

/// A prepared statement of the file: its statement text and declared parameter types.
struct Prepared {
    statement: String,
    types: Vec<String>,
    ordered: bool,
}

/// The state of one file's run.
struct FileRun<'a> {
    server: &'a Server,
    flight: Flight,
    contexts: Contexts,
    stats: FileStats,
    outcome: &'a mut Outcome,
    prepared: BTreeMap<String, Prepared>,
    /// Settings a `SET` changed in-process (the server's stay as configured).
    settings: BTreeSet<String>,
    line: u32,
}

pub(crate) async fn run(args: &crate::Args) -> anyhow::Result<Outcome> {
    let files = corpus::selection(&args.files)?;
    std::fs::create_dir_all(&args.work)?;
    let server = Server::start(&args.bin, &args.work).await?;
    let mut outcome = Outcome::default();
    for file in files {
        if args.only.as_deref().is_some_and(|o| !file.contains(o)) {
            continue;
        }
        let path = args.corpus.join(&file);
        let records = sqllogictest::parse_file::<DefaultColumnType>(&path)
            .with_context(|| format!("cannot parse {}", path.display()))?;
        let started = std::time::Instant::now();
        let mut run = FileRun {
            server: &server,
            flight: server.flight().await?,
            contexts: Contexts::new(&server.data_dir.join("parquet"))?,
            stats: FileStats::new(&file),
            outcome: &mut outcome,
            prepared: BTreeMap::new(),
            settings: BTreeSet::new(),
            line: 0,
        };
        for record in records {
            if !run.record(record).await? {
                break;
            }
        }
        run.contexts.clear();
        server.refresh().await?;
        let mut stats = run.stats;
        stats.seconds = started.elapsed().as_secs_f64();
        eprintln!("{}", stats.line());
        outcome.files.push(stats);
    }
    if args.only.is_none() {
        refusals(args, &server, &mut outcome).await?;
    }
    Ok(outcome)
}

/// The statements of `args.refuse` (`code | sql` per line), each sent to every surface.
async fn refusals(
    args: &crate::Args,
    server: &Server,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.refuse)
        .with_context(|| format!("cannot read {}", args.refuse.display()))?;
    let name = args.refuse.file_name().map_or_else(
        || "must_refuse".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut run = FileRun {
        server,
        flight: server.flight().await?,
        contexts: Contexts::new(&server.data_dir.join("parquet"))?,
        stats: FileStats::new(&name),
        outcome,
        prepared: BTreeMap::new(),
        settings: BTreeSet::new(),
        line: 0,
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (code, sql) = line
            .split_once('|')
            .with_context(|| format!("{name}:{}: expected `code | sql`", n + 1))?;
        let expected = Refused::parse(code.trim())
            .with_context(|| format!("{name}:{}: unknown code {}", n + 1, code.trim()))?;
        run.line = u32::try_from(n + 1).unwrap_or(u32::MAX);
        run.stats.statements += 1;
        let kind = match expected {
            Refused::NotReadOnly => "file, URL or write access",
            Refused::NotFound => "a file or URL named as a table",
        };
        run.must_answer(sql.trim(), kind, expected).await;
    }
    let stats = run.stats;
    eprintln!("{}", stats.line());
    outcome.files.push(stats);
    Ok(())
}

/// Records with an `onlyif` for another engine, or a `skipif` for DataFusion, do not apply.
fn applies(conditions: &[sqllogictest::Condition]) -> bool {
    conditions.iter().all(|c| match c {
        sqllogictest::Condition::OnlyIf { label } => label.eq_ignore_ascii_case("datafusion"),
        sqllogictest::Condition::SkipIf { label } => !label.eq_ignore_ascii_case("datafusion"),
    })
}

impl FileRun<'_> {
    /// One record; `false` stops the file (`halt`).
    async fn record(&mut self, record: Record<DefaultColumnType>) -> anyhow::Result<bool> {
        match record {
            Record::Statement {
                loc,
                conditions,
                sql,
                ..
            }
            | Record::Query {
                loc,
                conditions,
                sql,
                ..
            } => {
                if !applies(&conditions) {
                    return Ok(true);
                }
                self.line = loc.line();
                self.sql(&sql).await?;
            }
            Record::Halt { .. } => return Ok(false),
            _ => {}
        }
        Ok(true)
    }

    async fn sql(&mut self, sql: &str) -> anyhow::Result<()> {
        match corpus::classify(sql) {
            Kind::Query { ordered } => {
                self.stats.queries += 1;
                if let Some(key) = self.settings.iter().next() {
                    self.stats.skip(format!(
                        "after SET {key} (a session setting the server keeps as configured)"
                    ));
                    return Ok(());
                }
                let reference = Contexts::run(&self.contexts.answers, sql).await;
                self.compare(sql, reference, Request::Sql, ordered).await;
            }
            Kind::Execute { name, args } => {
                self.stats.queries += 1;
                if let Some(key) = self.settings.iter().next() {
                    self.stats.skip(format!(
                        "after SET {key} (a session setting the server keeps as configured)"
                    ));
                    return Ok(());
                }
                let reference = Contexts::run(&self.contexts.answers, sql).await;
                let Some(prepared) = self.prepared.get(&name) else {
                    self.reference_failed(sql, reference, Request::Sql).await;
                    return Ok(());
                };
                let statement = prepared.statement.clone();
                let ordered = prepared.ordered;
                match self.parameters(&args, &prepared.types.clone()).await {
                    Ok((batch, json)) => {
                        self.compare(
                            &statement,
                            reference,
                            Request::Prepared { batch, json },
                            ordered,
                        )
                        .await
                    }
                    Err(why) => self
                        .stats
                        .skip(format!("EXECUTE argument not computable: {why}")),
                }
            }
            Kind::Introspection(what) => {
                self.stats.queries += 1;
                self.stats.skip(format!(
                    "{what}: describes the engine and its catalog, which differ by design"
                ));
                self.no_internal_text(sql).await;
            }
            Kind::Prepare {
                name,
                types,
                statement,
                ordered,
            } => {
                self.stats.statements += 1;
                if Contexts::run(&self.contexts.answers, sql).await.is_ok() {
                    self.prepared.insert(
                        name,
                        Prepared {
                            statement,
                            types,
                            ordered,
                        },
                    );
                }
                self.must_refuse(sql, "PREPARE").await;
            }
            Kind::Deallocate { name } => {
                self.stats.statements += 1;
                let _ = Contexts::run(&self.contexts.answers, sql).await;
                self.prepared.remove(&name);
                self.must_refuse(sql, "DEALLOCATE").await;
            }
            Kind::Setting { key, reset } => {
                self.stats.statements += 1;
                let applied = Contexts::run(&self.contexts.answers, sql).await.is_ok();
                let _ = Contexts::run(&self.contexts.setup, sql).await;
                if reset {
                    self.settings.clear();
                } else if applied && !corpus::result_neutral(&key) {
                    self.settings.insert(key);
                }
                self.must_refuse(sql, if reset { "RESET" } else { "SET" })
                    .await;
            }
            Kind::Change { kind, runs } => {
                self.stats.statements += 1;
                if runs && Contexts::run(&self.contexts.setup, sql).await.is_ok() {
                    // A view or a prepared statement of `answers` may name a table by its
                    // contents; the files are what both sides read.
                    if self.contexts.sync_tables().await? {
                        self.server.refresh().await?;
                    }
                }
                self.must_refuse(sql, &kind).await;
            }
            Kind::Unparsable => {
                self.stats.queries += 1;
                let reference = Contexts::run(&self.contexts.answers, sql).await;
                self.reference_failed(sql, reference, Request::Sql).await;
            }
        }
        Ok(())
    }

    /// The values of `EXECUTE`'s arguments, cast to the declared types: a one-row batch for
    /// Flight and JSON values for HTTP (`None` when a value has no JSON form the server reads
    /// back as the same type).
    async fn parameters(
        &self,
        args: &[String],
        types: &[String],
    ) -> Result<(RecordBatch, Option<Vec<serde_json::Value>>), String> {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut json = Some(Vec::new());
        for (i, arg) in args.iter().enumerate() {
            let expr = match types.get(i) {
                Some(t) => format!("CAST(({arg}) AS {t})"),
                None => arg.clone(),
            };
            let (_, batches) = Contexts::run(&self.contexts.answers, &format!("SELECT {expr}"))
                .await
                .map_err(|e| format!("{arg}: {e}"))?;
            let column = batches
                .first()
                .filter(|b| b.num_rows() == 1)
                .map(|b| Arc::clone(b.column(0)))
                .ok_or_else(|| format!("{arg}: not one value"))?;
            let value = ScalarValue::try_from_array(&column, 0).map_err(|e| e.to_string())?;
            json = json.and_then(|mut list| {
                list.push(json_param(&value)?);
                Some(list)
            });
            fields.push(Field::new(
                format!("${}", i + 1),
                column.data_type().clone(),
                true,
            ));
            columns.push(column);
        }
        let batch = if columns.is_empty() {
            RecordBatch::new_empty(Arc::new(Schema::empty()))
        } else {
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                .map_err(|e| e.to_string())?
        };
        Ok((batch, json))
    }

    /// The server's answers to a query the reference could not answer: they must be errors
    /// too, without internal text.
    async fn reference_failed(&mut self, sql: &str, reference: Reference, request: Request) {
        let Err(error) = reference else {
            return;
        };
        self.stats.reference_errors += 1;
        let answers = self.ask(sql, &request).await;
        for (surface, answer) in answers.errors() {
            match answer {
                Some((code, message)) => {
                    if let Some(leak) = compare::internal_text(&message) {
                        self.fail(
                            sql,
                            surface,
                            format!("error carries internal text ({leak:?}): {code} {message}"),
                        );
                    }
                }
                None => {
                    if !error.starts_with("timed out") {
                        self.fail(
                            sql,
                            surface,
                            format!(
                                "answered, but in-process DataFusion fails: {}",
                                first_line(&error)
                            ),
                        );
                    }
                }
            }
        }
    }

    async fn ask(&mut self, sql: &str, request: &Request) -> Answers {
        let (flight, arrow, json) = match request {
            Request::Sql => (
                self.flight.query(sql).await,
                self.server.http_arrow(sql, &[]).await,
                self.server.http_json(sql, &[]).await,
            ),
            Request::Prepared { batch, json } => (
                self.flight.prepared(sql, batch).await,
                match json {
                    Some(params) => self.server.http_arrow(sql, params).await,
                    None => Ok(Answer::Skipped),
                },
                match json {
                    Some(params) => self.server.http_json(sql, params).await,
                    None => Ok(Answer::Skipped),
                },
            ),
        };
        Answers {
            flight,
            arrow: arrow.unwrap_or_else(client_failed),
            json: json.unwrap_or_else(client_failed),
        }
    }

    async fn compare(&mut self, sql: &str, reference: Reference, request: Request, ordered: bool) {
        let (schema, batches) = match reference {
            Ok(ok) => ok,
            Err(e) => return self.reference_failed(sql, Err(e), request).await,
        };
        self.stats.compared += 1;
        let shape_only = corpus::volatile(sql);
        for surface in [Surface::Flight, Surface::HttpArrow, Surface::HttpJson] {
            // A result whose values differ is asked for again: a query whose answer depends on
            // the order of ties (a window frame over equal keys) may differ from run to run in
            // DataFusion itself. It passes if a repeat run matches.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let judged = self
                    .judge(
                        surface, sql, &request, &schema, &batches, ordered, shape_only,
                    )
                    .await;
                match judged {
                    Judged::Skipped(reason) => {
                        self.stats.skip_surface(surface, reason);
                        break;
                    }
                    Judged::Failed(problem) => {
                        self.fail(sql, surface, problem);
                        break;
                    }
                    Judged::Answered(problems, Equality::Different(_))
                        if problems.is_empty() && attempt < 4 =>
                    {
                        continue;
                    }
                    Judged::Answered(problems, verdict) => {
                        if attempt > 1
                            && problems.is_empty()
                            && !matches!(verdict, Equality::Different(_))
                        {
                            self.stats.skip_surface(
                                surface,
                                "(counted identical) matched on a repeat run: the answer depends on the order of ties",
                            );
                        }
                        self.conclude(sql, surface, problems, verdict);
                        break;
                    }
                }
            }
        }
    }

    /// One surface's answer to `sql`, judged against the reference.
    #[allow(clippy::too_many_arguments)]
    async fn judge(
        &mut self,
        surface: Surface,
        sql: &str,
        request: &Request,
        schema: &arrow::datatypes::SchemaRef,
        batches: &[RecordBatch],
        ordered: bool,
        shape_only: Option<&str>,
    ) -> Judged {
        let no_json_params = "parameter values without a JSON form of their type";
        match surface {
            Surface::Flight | Surface::FlightUpdate => {
                let answer = match request {
                    Request::Sql => self.flight.query(sql).await,
                    Request::Prepared { batch, .. } => self.flight.prepared(sql, batch).await,
                };
                match answer {
                    Answer::Rows(result) => {
                        let mut problems = Vec::new();
                        if let Some(d) = compare::same_schema(&result.announced, &result.streamed) {
                            problems.push(format!("GetFlightInfo and DoGet disagree: {d}"));
                        }
                        problems.extend(compare::type_differences(schema, &result.streamed));
                        let verdict = verdict(batches, &result.batches, ordered, shape_only);
                        Judged::Answered(problems, verdict)
                    }
                    Answer::Error { code, message } => Judged::Failed(format!("{code}: {message}")),
                    Answer::Skipped => Judged::Skipped(no_json_params),
                }
            }
            Surface::HttpArrow => {
                let Some(params) = request.http_params() else {
                    return Judged::Skipped(no_json_params);
                };
                match self
                    .server
                    .http_arrow(sql, params)
                    .await
                    .unwrap_or_else(client_failed)
                {
                    Answer::Rows((streamed, got)) => Judged::Answered(
                        compare::type_differences(schema, &streamed),
                        verdict(batches, &got, ordered, shape_only),
                    ),
                    Answer::Error { code, message } => Judged::Failed(format!("{code}: {message}")),
                    Answer::Skipped => Judged::Skipped(no_json_params),
                }
            }
            Surface::HttpJson => {
                let Some(params) = request.http_params() else {
                    return Judged::Skipped(no_json_params);
                };
                match self
                    .server
                    .http_json(sql, params)
                    .await
                    .unwrap_or_else(client_failed)
                {
                    Answer::Rows(rows) => {
                        let names: Vec<&str> =
                            schema.fields().iter().map(|f| f.name().as_str()).collect();
                        let mut problems = Vec::new();
                        if let Some(row) = rows.first() {
                            let got: Vec<&str> = row.iter().map(|(k, _)| k.as_str()).collect();
                            if got != names {
                                problems.push(format!("JSON keys {got:?} instead of {names:?}"));
                            }
                        }
                        let got: Vec<Vec<serde_json::Value>> = rows
                            .into_iter()
                            .map(|r| r.into_iter().map(|(_, v)| v).collect())
                            .collect();
                        let expected_rows =
                            batches.iter().map(RecordBatch::num_rows).sum::<usize>();
                        let verdict = match shape_only {
                            Some(f) if got.len() == expected_rows => {
                                let _ = f;
                                Equality::Identical
                            }
                            Some(f) => Equality::Different(format!(
                                "{} JSON rows instead of {expected_rows} ({f} values not compared)",
                                got.len()
                            )),
                            None => match compare::expected_json_rows(batches) {
                                Ok(expected) => compare::json_rows(expected, got, ordered),
                                Err(e) => {
                                    Equality::Different(format!("no JSON form expected: {e}"))
                                }
                            },
                        };
                        Judged::Answered(problems, verdict)
                    }
                    Answer::Error { code, .. } if code.ends_with("result_too_large") => {
                        Judged::Skipped("more rows than JSON's row cap")
                    }
                    Answer::Error { code, message } => Judged::Failed(format!("{code}: {message}")),
                    Answer::Skipped => Judged::Skipped(no_json_params),
                }
            }
        }
    }

    fn conclude(&mut self, sql: &str, surface: Surface, problems: Vec<String>, verdict: Equality) {
        let mut problems = problems;
        match verdict {
            Equality::Identical => {}
            Equality::SameRowsOtherOrder => self.stats.tie_order(surface),
            Equality::Different(d) => problems.push(d),
        }
        if problems.is_empty() {
            self.stats.identical(surface);
        } else {
            self.fail(sql, surface, problems.join("; "));
        }
    }

    fn fail(&mut self, sql: &str, surface: Surface, problem: String) {
        self.outcome
            .fail(&self.stats.file, self.line, sql, surface, problem);
        self.stats.failures += 1;
    }

    /// A statement the read-only server must refuse on both surfaces.
    async fn must_refuse(&mut self, sql: &str, kind: &str) {
        self.must_answer(sql, kind, Refused::NotReadOnly).await;
    }

    /// A statement the server must refuse with `expected` on every surface.
    async fn must_answer(&mut self, sql: &str, kind: &str, expected: Refused) {
        let http = self.server.http_json(sql, &[]).await;
        let flight_query = self.flight.query(sql).await;
        let flight_update = self.flight.update(sql).await;
        let checks: [(Surface, Option<(String, String)>); 3] = [
            (
                Surface::HttpJson,
                match http {
                    Ok(Answer::Error { code, message }) => Some((code, message)),
                    Ok(_) => None,
                    Err(e) => Some(("client".into(), format!("{e:#}"))),
                },
            ),
            (Surface::Flight, flight_query.error()),
            (Surface::FlightUpdate, flight_update.error()),
        ];
        let mut refused = true;
        for (surface, answer) in checks {
            match answer {
                Some((code, message)) if expected.codes().contains(&code.as_str()) => {
                    if let Some(leak) = compare::internal_text(&message) {
                        self.fail(
                            sql,
                            surface,
                            format!("refusal carries internal text ({leak:?}): {message}"),
                        );
                    }
                    if surface == Surface::HttpJson {
                        self.outcome.refusals.push(Refusal {
                            kind: kind.to_string(),
                            reason: strip_request_id(&message),
                            sql: sql.to_string(),
                        });
                    }
                }
                Some((code, message)) => {
                    refused = false;
                    self.fail(
                        sql,
                        surface,
                        format!(
                            "{kind} must be refused with {}, but the answer was {code}: {message}",
                            expected.codes()[0]
                        ),
                    );
                }
                None => {
                    refused = false;
                    self.fail(
                        sql,
                        surface,
                        format!("{kind} was accepted by a read-only server"),
                    );
                }
            }
        }
        if refused {
            self.stats.refused += 1;
        }
    }

    /// Introspection runs for its errors only.
    async fn no_internal_text(&mut self, sql: &str) {
        let answers = self.ask(sql, &Request::Sql).await;
        for (surface, answer) in answers.errors() {
            if let Some((code, message)) = answer
                && let Some(leak) = compare::internal_text(&message)
            {
                self.fail(
                    sql,
                    surface,
                    format!("error carries internal text ({leak:?}): {code} {message}"),
                );
            }
        }
    }
}

/// A surface's answer, judged.
enum Judged {
    /// Answered: problems with its schema or types, and how its values compare.
    Answered(Vec<String>, Equality),
    /// Failed where the reference answered.
    Failed(String),
    /// Not asked, for this reason.
    Skipped(&'static str),
}

/// How `got` compares with `expected`; for a volatile query only the row counts.
fn verdict(
    expected: &[RecordBatch],
    got: &[RecordBatch],
    ordered: bool,
    shape_only: Option<&str>,
) -> Equality {
    let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    match shape_only {
        Some(f) if rows(expected) != rows(got) => Equality::Different(format!(
            "{} rows instead of {} ({f} values not compared)",
            rows(got),
            rows(expected)
        )),
        Some(_) => Equality::Identical,
        None => compare::values(expected, got, ordered),
    }
}

/// How the server must refuse a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    /// The read-only policy refuses it (403, `PERMISSION_DENIED`).
    NotReadOnly,
    /// It names something that is not in the catalog (404, `NOT_FOUND`): a file or a URL.
    NotFound,
}

impl Refused {
    /// The codes the surfaces answer with: HTTP's status and code, and gRPC's.
    fn codes(self) -> [&'static str; 2] {
        match self {
            Refused::NotReadOnly => ["403 permission_denied", "PermissionDenied"],
            Refused::NotFound => ["404 not_found", "NotFound"],
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "permission_denied" => Some(Refused::NotReadOnly),
            "not_found" => Some(Refused::NotFound),
            _ => None,
        }
    }
}

enum Request {
    Sql,
    Prepared {
        batch: RecordBatch,
        json: Option<Vec<serde_json::Value>>,
    },
}

impl Request {
    /// The HTTP `params` of the request; `None` when its values have no JSON form.
    fn http_params(&self) -> Option<&[serde_json::Value]> {
        match self {
            Request::Sql => Some(&[]),
            Request::Prepared { json, .. } => json.as_deref(),
        }
    }
}

struct Answers {
    flight: Answer<crate::server::FlightResult>,
    arrow: Answer<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)>,
    json: Answer<crate::server::JsonRows>,
}

impl Answers {
    /// Per surface: `Some((code, message))` for an error, `None` for an answer; skipped
    /// surfaces are left out.
    fn errors(self) -> Vec<(Surface, Option<(String, String)>)> {
        let mut out = Vec::new();
        if !matches!(self.flight, Answer::Skipped) {
            out.push((Surface::Flight, self.flight.error()));
        }
        if !matches!(self.arrow, Answer::Skipped) {
            out.push((Surface::HttpArrow, self.arrow.error()));
        }
        if !matches!(self.json, Answer::Skipped) {
            out.push((Surface::HttpJson, self.json.error()));
        }
        out
    }
}

impl<T> Answer<T> {
    fn error(self) -> Option<(String, String)> {
        match self {
            Answer::Error { code, message } => Some((code, message)),
            Answer::Rows(_) | Answer::Skipped => None,
        }
    }
}

/// The JSON value the HTTP API reads back as a parameter of the same type, if there is one.
fn json_param(value: &ScalarValue) -> Option<serde_json::Value> {
    use serde_json::Value;
    if value.is_null() {
        return Some(Value::Null);
    }
    Some(match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int64(Some(i)) => Value::from(*i),
        ScalarValue::Float64(Some(f)) if f.is_finite() => Value::from(*f),
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Value::from(s.clone()),
        _ => return None,
    })
}

/// The harness's own failure to read an answer, as an answer.
fn client_failed<T>(e: anyhow::Error) -> Answer<T> {
    Answer::Error {
        code: "client".into(),
        message: format!("{e:#}"),
    }
}

fn strip_request_id(message: &str) -> String {
    match message.find(" (request id ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
