//! DuckDB on the pulled copy, locked down for an assistant's SQL.
//!
//! Three guards, each enough for what it covers:
//! - [`check`]: one statement that reads, by its first keyword (a clear refusal for COPY,
//!   ATTACH, INSTALL, SET, CREATE, …);
//! - the statement runs only inside DuckDB's `query('<sql>')` table function, as a string
//!   literal, so DuckDB's own parser accepts exactly one SELECT-like statement (a `;` or `)`
//!   in the SQL cannot end the wrapper);
//! - the database is opened read-only, file access is limited to the pull folder
//!   (`allowed_directories`, `enable_external_access = false`) and the configuration locked.
//!
//! It runs the DuckDB that `dataport pull` uses ([`crate::views::find`]): the CLI, statements on
//! standard input and JSON lines out, or Python's `duckdb` module with a small script that
//! answers the same way. Every run is a new process, killed at the time limit or on cancel.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dataport_mcp::{QueryResult, ResultColumn};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::views::Runner;

/// What a checked statement is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Rows: SELECT, WITH, VALUES, FROM, TABLE, DESCRIBE, SHOW, SUMMARIZE, PIVOT.
    Query,
    /// `EXPLAIN [ANALYZE] <query>`: the plan of `sql`.
    Explain { analyze: bool },
}

/// One statement that reads, as [`check`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) kind: Kind,
    /// The query itself: without a final `;`, and without `EXPLAIN [ANALYZE]`.
    pub(crate) sql: String,
}

/// Statements that read, by their first keyword.
const READS: [&str; 11] = [
    "SELECT",
    "WITH",
    "VALUES",
    "FROM",
    "TABLE",
    "DESCRIBE",
    "DESC",
    "SHOW",
    "SUMMARIZE",
    "PIVOT",
    "UNPIVOT",
];

/// Why a statement that does not read is refused, by its first keyword.
fn refusal(keyword: &str) -> &'static str {
    match keyword {
        "COPY" | "EXPORT" | "IMPORT" => "it reads or writes files",
        "ATTACH" | "DETACH" | "USE" => "it opens or switches databases",
        "INSTALL" | "LOAD" | "FORCE" => "it installs or loads extensions",
        "PRAGMA" | "SET" | "RESET" => "it changes settings",
        "CREATE" | "DROP" | "ALTER" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE"
        | "COMMENT" | "UPSERT" | "REPLACE" => "it changes the database",
        "CALL" | "EXECUTE" | "PREPARE" | "DEALLOCATE" => {
            "it runs procedures or prepared statements"
        }
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "CHECKPOINT" | "VACUUM"
        | "ANALYZE" => "it manages transactions or storage",
        _ => "it is not a query",
    }
}

/// Whether `sql` is one statement that reads; the refusal says what to send instead.
pub(crate) fn check(sql: &str) -> Result<Statement, String> {
    if sql.contains('\0') {
        return Err("the SQL contains a NUL character; send plain text".into());
    }
    let tokens = lex(sql)?;
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| t.kind != TokenKind::Semicolon)
        .collect();
    let Some(first) = words.first() else {
        return Err("the SQL is empty: send one SELECT statement".into());
    };
    // A `;` may end the statement, but nothing may follow it.
    if let Some(semi) = tokens.iter().position(|t| t.kind == TokenKind::Semicolon)
        && tokens[semi + 1..]
            .iter()
            .any(|t| t.kind != TokenKind::Semicolon)
    {
        return Err(
            "send one statement at a time: the SQL has more than one (separated by ';')".into(),
        );
    }
    let end = tokens
        .iter()
        .find(|t| t.kind == TokenKind::Semicolon)
        .map_or(sql.len(), |t| t.start);
    let body = |from: usize| sql[from..end].trim().to_string();

    let keyword = |t: &Token| sql[t.start..t.end].to_ascii_uppercase();
    let mut at = 0;
    let mut kind = Kind::Query;
    if first.kind == TokenKind::Word && keyword(first) == "EXPLAIN" {
        at = 1;
        let analyze = words
            .get(1)
            .is_some_and(|t| matches!(keyword(t).as_str(), "ANALYZE" | "ANALYSE"));
        if analyze {
            at = 2;
        }
        kind = Kind::Explain { analyze };
    }
    let Some(head) = words.get(at) else {
        return Err("EXPLAIN needs a query after it: EXPLAIN SELECT …".into());
    };
    match head.kind {
        TokenKind::Open => {}
        TokenKind::Word => {
            let k = keyword(head);
            if !READS.contains(&k.as_str()) {
                return Err(format!(
                    "{k} statements are refused offline ({}): only one statement that reads is \
                     allowed (SELECT, WITH, VALUES, FROM, TABLE, DESCRIBE, SHOW, SUMMARIZE, PIVOT \
                     or EXPLAIN of one of them)",
                    refusal(&k)
                ));
            }
        }
        _ => {
            return Err(
                "the SQL does not start with a query: send one SELECT (or WITH, VALUES, \
                 DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) statement"
                    .into(),
            );
        }
    }
    Ok(Statement {
        kind,
        sql: body(head.start),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Word,
    Semicolon,
    Open,
    /// Anything else: strings, quoted names, numbers, operators.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

/// The tokens of `sql` that matter to [`check`]: words, `;`, `(`; strings, quoted names and
/// comments are skipped whole. An unterminated one is refused (DuckDB would refuse it too).
fn lex(sql: &str) -> Result<Vec<Token>, String> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let n = bytes.len();
    let skip_quoted = |mut i: usize, quote: u8, backslash: bool| -> Result<usize, String> {
        // `i` is just after the opening quote; a doubled quote is one quote.
        while i < n {
            match bytes[i] {
                b'\\' if backslash => i += 2,
                b if b == quote => {
                    if i + 1 < n && bytes[i + 1] == quote {
                        i += 2;
                    } else {
                        return Ok(i + 1);
                    }
                }
                _ => i += 1,
            }
        }
        Err(if quote == b'"' {
            "a quoted name (\"…) is not closed".to_string()
        } else {
            "a string ('…) is not closed".to_string()
        })
    };
    while i < n {
        let c = bytes[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < n && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Block comments nest, as in PostgreSQL and DuckDB.
                let mut depth = 0;
                loop {
                    if i + 1 >= n {
                        return Err("a comment (/* …) is not closed".into());
                    }
                    if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                let start = i;
                i = skip_quoted(i + 1, b'\'', false)?;
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: i,
                });
            }
            b'"' => {
                let start = i;
                i = skip_quoted(i + 1, b'"', false)?;
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: i,
                });
            }
            b'$' => {
                // `$tag$ … $tag$` (or `$$ … $$`); otherwise a parameter such as `$1`.
                let start = i;
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if bytes[e] == b'$' && !bytes[i + 1].is_ascii_digit() => {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(p) => i = e + 1 + p + tag.len(),
                            None => return Err(format!("a {tag}-quoted string is not closed")),
                        }
                    }
                    _ => i += 1,
                }
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start,
                    end: i,
                });
            }
            b';' => {
                tokens.push(Token {
                    kind: TokenKind::Semicolon,
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
            b'(' => {
                tokens.push(Token {
                    kind: TokenKind::Open,
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < n
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                // E'…': a string with backslash escapes.
                if i - start == 1 && matches!(c, b'e' | b'E') && bytes.get(i) == Some(&b'\'') {
                    i = skip_quoted(i + 1, b'\'', true)?;
                    tokens.push(Token {
                        kind: TokenKind::Other,
                        start,
                        end: i,
                    });
                } else {
                    tokens.push(Token {
                        kind: TokenKind::Word,
                        start,
                        end: i,
                    });
                }
            }
            _ => {
                tokens.push(Token {
                    kind: TokenKind::Other,
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// `text` as a DuckDB string expression that holds no line break: `'a' || chr(10) || 'b'`
/// (quotes doubled), so that the CLI, which reads its script line by line, sees each statement
/// on one line.
pub(crate) fn literal(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\n' => out.push_str("' || chr(10) || '"),
            '\r' => out.push_str("' || chr(13) || '"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Why DuckDB did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DuckError {
    /// DuckDB refused the SQL (its own message, without the wrapper's position).
    #[error("{0}")]
    Sql(String),
    /// The DuckDB found cannot restrict file access (older than the settings used).
    #[error(
        "the DuckDB at {0} cannot restrict file access ({1}): install a newer DuckDB for offline queries"
    )]
    TooOld(String, String),
    /// The database cannot be opened (missing, or being written by a pull).
    #[error("{0}")]
    Database(String),
    #[error("the query ran longer than {} s and was stopped", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("cancelled")]
    Cancelled,
    /// DuckDB could not be run, or answered something unreadable.
    #[error("{0}")]
    Failed(String),
}

/// Where and how the offline queries run.
#[derive(Debug, Clone)]
pub(crate) struct Duck {
    pub(crate) runner: Runner,
    /// `analytics.duckdb`.
    pub(crate) database: PathBuf,
    /// The pull folder: the only place DuckDB may read files from.
    pub(crate) allowed: PathBuf,
    pub(crate) timeout: Duration,
}

/// The Python side of [`Runner::Python`]: reads `{"database", "setup", "queries"}` on standard
/// input, prints every row of each query as one JSON object (as the CLI's `-jsonlines` does),
/// and a DuckDB error on standard error with exit code 1.
const PYTHON_RUN: &str = r#"import json, sys
try:
    import duckdb
except ImportError:
    sys.stderr.write("the Python module duckdb is not installed\n")
    sys.exit(3)
job = json.loads(sys.stdin.read())
try:
    con = duckdb.connect(job["database"], read_only=True)
    for s in job["setup"]:
        con.execute(s)
    out = sys.stdout
    for q in job["queries"]:
        cur = con.execute(q)
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            out.write(json.dumps(dict(zip(names, row)), default=str) + "\n")
    out.flush()
except duckdb.Error as e:
    sys.stderr.write(str(e) + "\n")
    sys.exit(1)
"#;

impl Duck {
    /// The settings every run starts with.
    fn setup(&self) -> Vec<String> {
        let mut dir = self.allowed.to_string_lossy().into_owned();
        if !dir.ends_with(std::path::MAIN_SEPARATOR) {
            dir.push(std::path::MAIN_SEPARATOR);
        }
        let mut setup = Vec::new();
        if matches!(self.runner, Runner::Python(_)) {
            // No scans of the script's own Python variables.
            setup.push("SET python_enable_replacements = false".to_string());
        }
        setup.extend([
            format!("SET allowed_directories = [{}]", literal(&dir)),
            "SET enable_external_access = false".to_string(),
            "SET lock_configuration = true".to_string(),
        ]);
        setup
    }

    /// Runs `queries` after the settings; each output line as JSON (a line that is not JSON,
    /// as the CLI prints a plan, is kept as a string).
    async fn run(
        &self,
        queries: &[String],
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<Value>, DuckError> {
        let setup = self.setup();
        let (mut command, input) = match &self.runner {
            Runner::Cli(exe) => {
                let mut c = tokio::process::Command::new(exe);
                c.args(["-readonly", "-bail", "-batch", "-jsonlines", "-init"])
                    .arg(null_device())
                    .arg(&self.database);
                let mut script = String::new();
                for s in setup.iter().chain(queries) {
                    script.push_str(s);
                    script.push_str(";\n");
                }
                (c, script)
            }
            Runner::Python(python) => {
                let mut c = tokio::process::Command::new(python);
                c.arg("-c").arg(PYTHON_RUN);
                let job = serde_json::json!({
                    "database": self.database.to_string_lossy(),
                    "setup": setup,
                    "queries": queries,
                });
                (c, job.to_string())
            }
        };
        let exe = match &self.runner {
            Runner::Cli(p) | Runner::Python(p) => p.display().to_string(),
        };
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| DuckError::Failed(format!("cannot run {exe}: {e}")))?;
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(DuckError::Failed(format!(
                "{exe} started without its pipes"
            )));
        };
        let io = async {
            let write = async {
                let r = stdin.write_all(input.as_bytes()).await;
                drop(stdin);
                r
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (w, o, e) = tokio::join!(
                write,
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err)
            );
            let status = child.wait().await;
            (w, o, e, status, out, err)
        };
        let timeout = self.timeout;
        let (written, read_out, read_err, status, out, err) = tokio::select! {
            () = cancel.cancelled() => return Err(DuckError::Cancelled),
            () = tokio::time::sleep_until(deadline.into()) => return Err(DuckError::Timeout(timeout)),
            r = io => r,
        };
        let err = String::from_utf8_lossy(&err).trim().to_string();
        let status = status.map_err(|e| DuckError::Failed(format!("{exe}: {e}")))?;
        if let Err(e) = read_out.and(read_err) {
            return Err(DuckError::Failed(format!(
                "cannot read the answer of {exe}: {e}"
            )));
        }
        // The CLI reports SQL errors on stderr (and may exit 0 without `-bail`).
        if !status.success() || !err.is_empty() {
            return Err(classify(&exe, &err, written.err()));
        }
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_string())))
            .collect())
    }

    /// Runs `sql` (a statement [`check`] accepted, [`Kind::Query`]): its columns, its first
    /// `max_rows` rows within `max_bytes` of cell text, and how many rows it has.
    pub(crate) async fn query(
        &self,
        sql: &str,
        max_rows: usize,
        max_bytes: usize,
        cancel: &CancellationToken,
    ) -> Result<QueryResult, DuckError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let inner = format!("query({})", literal(sql));
        let lines = self
            .run(
                &[
                    format!("DESCRIBE SELECT * FROM {inner}"),
                    format!(
                        "SELECT json_array(*COLUMNS(*)) AS __dataport_row FROM {inner} LIMIT {}",
                        max_rows + 1
                    ),
                ],
                deadline,
                cancel,
            )
            .await?;
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for line in lines {
            if let (Some(name), Some(kind)) = (
                line.get("column_name").and_then(Value::as_str),
                line.get("column_type").and_then(Value::as_str),
            ) {
                columns.push(ResultColumn {
                    name: name.to_string(),
                    data_type: kind.to_string(),
                });
            } else if let Some(row) = line.get("__dataport_row") {
                rows.push(match row {
                    Value::Array(cells) => cells.clone(),
                    // Python hands the JSON over as text.
                    Value::String(text) => {
                        serde_json::from_str::<Vec<Value>>(text).map_err(|e| {
                            DuckError::Failed(format!("unreadable row from DuckDB: {e}"))
                        })?
                    }
                    other => {
                        return Err(DuckError::Failed(format!(
                            "unreadable row from DuckDB: {other}"
                        )));
                    }
                });
            }
        }
        let total = if rows.len() > max_rows {
            let counted = self
                .run(
                    &[format!("SELECT count(*) AS __dataport_total FROM {inner}")],
                    deadline,
                    cancel,
                )
                .await?;
            counted
                .iter()
                .find_map(|l| l.get("__dataport_total").and_then(Value::as_u64))
                .ok_or_else(|| DuckError::Failed("DuckDB did not count the rows".into()))?
        } else {
            rows.len() as u64
        };
        let mut truncated = None;
        if rows.len() > max_rows {
            rows.truncate(max_rows);
            truncated = Some(format!(
                "max_rows is {max_rows}: aggregate or filter in SQL, or ask for more rows"
            ));
        }
        let mut bytes = 0;
        if let Some(cut) = rows.iter().position(|row| {
            bytes += row.iter().map(cell_bytes).sum::<usize>();
            bytes > max_bytes
        }) {
            rows.truncate(cut);
            truncated = Some(format!(
                "the answer is limited to {max_bytes} bytes of cell text: select fewer or \
                 shorter columns"
            ));
        }
        Ok(QueryResult {
            columns,
            rows,
            total_rows: total,
            truncated,
            sql: sql.to_string(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The plan of `sql` (a query [`check`] accepted), with run-time figures when `analyze`
    /// (which runs it).
    pub(crate) async fn explain(
        &self,
        sql: &str,
        analyze: bool,
        cancel: &CancellationToken,
    ) -> Result<String, DuckError> {
        let deadline = Instant::now() + self.timeout;
        let explain = if analyze {
            "EXPLAIN ANALYZE"
        } else {
            "EXPLAIN"
        };
        let lines = self
            .run(
                &[format!("{explain} SELECT * FROM query({})", literal(sql))],
                deadline,
                cancel,
            )
            .await?;
        let plan: Vec<String> = lines
            .iter()
            .map(|l| match l {
                Value::String(text) => text.clone(),
                other => other
                    .get("explain_value")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            })
            .collect();
        Ok(plan.join("\n"))
    }
}

/// Bytes of a cell's text, as counted against `max_bytes`.
fn cell_bytes(cell: &Value) -> usize {
    match cell {
        Value::String(s) => s.len(),
        Value::Null => 4,
        other => other.to_string().len(),
    }
}

fn null_device() -> &'static str {
    if cfg!(windows) { "NUL" } else { "/dev/null" }
}

/// DuckDB's error as an answer: its own message without the position in the wrapper (which
/// is not the assistant's SQL).
fn classify(exe: &str, stderr: &str, write: Option<std::io::Error>) -> DuckError {
    let message = match stderr.find("\nLINE ") {
        Some(at) => stderr[..at].trim(),
        None => stderr.trim(),
    };
    if message.is_empty() {
        return DuckError::Failed(match write {
            Some(e) => format!("{exe} stopped before reading the query: {e}"),
            None => format!("{exe} failed without a message"),
        });
    }
    let setting = [
        "allowed_directories",
        "enable_external_access",
        "lock_configuration",
    ]
    .into_iter()
    .find(|s| message.contains(s));
    if let Some(setting) = setting
        && (message.contains("nrecognized") || message.contains("not found"))
    {
        return DuckError::TooOld(exe.to_string(), format!("no setting {setting}"));
    }
    if message.starts_with("IO Error")
        && (message.contains("lock") || message.contains("Cannot open database"))
    {
        return DuckError::Database(message.to_string());
    }
    DuckError::Sql(message.to_string())
}

/// The folder `database` is in, as DuckDB should see it (absolute, links resolved).
pub(crate) fn allowed_dir(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ok(sql: &str) -> Statement {
        check(sql).unwrap_or_else(|e| panic!("{sql:?} refused: {e}"))
    }

    fn refused(sql: &str) -> String {
        check(sql).expect_err(sql)
    }

    #[test]
    fn statements_that_read_pass_with_their_final_semicolon_removed() {
        assert_eq!(
            ok("  select 1 ;  -- done\n"),
            Statement {
                kind: Kind::Query,
                sql: "select 1".into()
            }
        );
        for sql in [
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "values (1), (2)",
            "FROM tpch.nation",
            "table tpch.nation",
            "DESCRIBE tpch.nation",
            "show tables",
            "SUMMARIZE tpch.nation",
            "(select 1) union (select 2)",
            "/* a /* nested */ comment */ select 'a;b' as \"x;\", $$;$$, $t$ ; $t$, E'\\';' ;",
            "select $1",
        ] {
            assert_eq!(ok(sql).kind, Kind::Query, "{sql}");
        }
        assert_eq!(
            ok("explain analyze select 1;"),
            Statement {
                kind: Kind::Explain { analyze: true },
                sql: "select 1".into()
            }
        );
        assert_eq!(
            ok("EXPLAIN select 1").kind,
            Kind::Explain { analyze: false }
        );
    }

    #[test]
    fn writes_settings_and_second_statements_are_refused() {
        for (sql, why) in [
            (
                "COPY (select 1) TO '/tmp/x.csv'",
                "COPY statements are refused",
            ),
            ("attach 'x.duckdb'", "opens or switches databases"),
            ("INSTALL httpfs", "installs or loads extensions"),
            ("load httpfs", "installs or loads extensions"),
            ("PRAGMA version", "changes settings"),
            ("set threads = 1", "changes settings"),
            ("create table t as select 1", "changes the database"),
            ("insert into t values (1)", "changes the database"),
            ("update t set a = 1", "changes the database"),
            ("call pragma_version()", "runs procedures"),
            ("explain copy t to 'x'", "COPY statements are refused"),
            ("select 1; select 2", "one statement at a time"),
            (
                "select 1; copy (select 1) to 'x'",
                "one statement at a time",
            ),
            ("select 'unclosed", "is not closed"),
            ("select 1 /* open", "is not closed"),
            ("   ", "empty"),
            ("-- only a comment", "empty"),
            ("explain", "needs a query"),
            ("1 + 1", "does not start with a query"),
            ("select 1\0", "NUL"),
        ] {
            let e = refused(sql);
            assert!(e.contains(why), "{sql}: {e}");
        }
    }

    #[test]
    fn literals_double_quotes_and_carry_no_line_break() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            literal("select 1 -- c\n, 2\r\n"),
            "'select 1 -- c' || chr(10) || ', 2' || chr(13) || '' || chr(10) || ''"
        );
        assert!(!literal("a\nb\rc").contains(['\n', '\r']));
    }

    #[test]
    fn errors_lose_the_wrappers_position() {
        let e = classify(
            "duckdb",
            "Binder Error: Referenced column \"nope\" not found\n\nLINE 1: DESCRIBE SELECT * FROM query('x')\n      ^",
            None,
        );
        assert_eq!(
            e,
            DuckError::Sql("Binder Error: Referenced column \"nope\" not found".into())
        );
        assert!(matches!(
            classify(
                "duckdb",
                "Catalog Error: unrecognized configuration parameter \"allowed_directories\"",
                None
            ),
            DuckError::TooOld(..)
        ));
        assert!(matches!(
            classify(
                "duckdb",
                "IO Error: Could not set lock on file \"a.duckdb\": Conflicting lock is held",
                None
            ),
            DuckError::Database(_)
        ));
    }

    /// The DuckDB runners available here: the test venv's CLI and Python module (built by
    /// `tests/venv.sh`), and those on `PATH`.
    pub(crate) fn runners() -> Vec<Runner> {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-test/bin");
        let mut found = Vec::new();
        if venv.join("duckdb").is_file() {
            found.push(Runner::Cli(venv.join("duckdb")));
        }
        if venv.join("python").is_file() {
            found.push(Runner::Python(venv.join("python")));
        }
        if found.is_empty()
            && let Some(r) = crate::views::find(&crate::views::DuckDb::Auto)
        {
            found.push(r);
        }
        if found.is_empty() {
            eprintln!("no DuckDB here (run tests/venv.sh): the DuckDB runs are not tested");
        }
        found
    }

    /// A pull folder with `s.t` (5 rows) and `s.u` as views in `analytics.duckdb`, made with
    /// `runner`; a file outside the views, `secret.csv`, beside the folder.
    pub(crate) fn fixture(runner: &Runner, root: &Path) -> PathBuf {
        let dir = root.join("pulled");
        std::fs::create_dir_all(dir.join("s")).unwrap();
        std::fs::write(root.join("secret.csv"), "a\n42\n").unwrap();
        let d = dir.canonicalize().unwrap();
        let p = |rel: &str| d.join(rel).to_string_lossy().into_owned();
        let script = format!(
            "COPY (SELECT i AS id, 'x' || i AS name, DATE '2024-01-30' + i::INT AS day, \
             (i * 1.5)::DECIMAL(10,2) AS amount, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END AS parity \
             FROM range(5) r(i)) TO '{t}' (FORMAT parquet);\n\
             COPY (SELECT 'only' AS note) TO '{u}' (FORMAT parquet);\n\
             CREATE SCHEMA s;\n\
             CREATE VIEW s.t AS SELECT * FROM read_parquet(['{t}']);\n\
             CREATE VIEW s.u AS SELECT * FROM read_parquet(['{u}']);\n\
             CREATE VIEW main.t AS SELECT * FROM s.t;\n",
            t = p("s/t.parquet"),
            u = p("s/u.parquet"),
        );
        let db = d.join("analytics.duckdb");
        let status = match runner {
            Runner::Cli(exe) => {
                let mut child = std::process::Command::new(exe)
                    .arg(&db)
                    .stdin(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes())
                    .unwrap();
                drop(child.stdin.take());
                child.wait().unwrap()
            }
            Runner::Python(python) => std::process::Command::new(python)
                .arg("-c")
                .arg("import duckdb, sys; c = duckdb.connect(sys.argv[1]); c.execute(sys.argv[2]); c.close()")
                .arg(&db)
                .arg(&script)
                .status()
                .unwrap(),
        };
        assert!(status.success());
        d
    }

    fn duck(runner: &Runner, dir: &Path) -> Duck {
        Duck {
            runner: runner.clone(),
            database: dir.join("analytics.duckdb"),
            allowed: allowed_dir(dir),
            timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn queries_keep_their_first_rows_and_count_the_rest() {
        for runner in runners() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = fixture(&runner, tmp.path());
            let d = duck(&runner, &dir);
            let cancel = CancellationToken::new();
            let r = d
                .query("select * from s.t order by id desc", 2, 1 << 20, &cancel)
                .await
                .unwrap();
            let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                names,
                ["id", "name", "day", "amount", "parity"],
                "{runner:?}"
            );
            assert_eq!(r.columns[3].data_type, "DECIMAL(10,2)");
            assert_eq!(r.total_rows, 5);
            assert_eq!(
                r.rows,
                vec![
                    serde_json::json!([4, "x4", "2024-02-03", 6.0, "even"])
                        .as_array()
                        .unwrap()
                        .clone(),
                    serde_json::json!([3, "x3", "2024-02-02", 4.5, "odd"])
                        .as_array()
                        .unwrap()
                        .clone(),
                ],
                "{runner:?}"
            );
            assert!(r.truncated.as_deref().unwrap().contains("max_rows is 2"));

            // Few rows: no second run, nothing truncated; unqualified names work.
            let r = d
                .query("select count(*) as n from t", 10, 1 << 20, &cancel)
                .await
                .unwrap();
            assert_eq!((r.total_rows, r.truncated.as_deref()), (1, None));
            assert_eq!(r.rows, vec![vec![serde_json::json!(5)]]);

            // The byte limit stops the rows early.
            let r = d
                .query("select name from s.t", 10, 5, &cancel)
                .await
                .unwrap();
            assert_eq!((r.rows.len(), r.total_rows), (2, 5), "{runner:?}");
            assert!(r.truncated.as_deref().unwrap().contains("bytes"));

            // DESCRIBE, SHOW and a query with a `)` and a `;` in a string stay one statement.
            let r = d.query("describe s.t", 10, 1 << 20, &cancel).await.unwrap();
            assert_eq!(r.total_rows, 5);
            let r = d
                .query(
                    "select ')); copy (select 1) to ''x.csv''; --' as s",
                    10,
                    1 << 20,
                    &cancel,
                )
                .await
                .unwrap();
            assert_eq!(
                r.rows[0][0],
                serde_json::json!(")); copy (select 1) to 'x.csv'; --")
            );
            assert!(!dir.join("x.csv").exists());

            let plan = d
                .explain("select * from s.t", false, &cancel)
                .await
                .unwrap();
            assert!(
                plan.to_uppercase().contains("PARQUET"),
                "{runner:?}: {plan}"
            );
        }
    }

    #[tokio::test]
    async fn duckdb_refuses_what_the_check_would_and_files_outside_the_folder() {
        for runner in runners() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = fixture(&runner, tmp.path());
            let d = duck(&runner, &dir);
            let cancel = CancellationToken::new();
            let secret = tmp.path().join("secret.csv");
            let sql = format!("select * from read_csv('{}')", secret.display());
            let e = d.query(&sql, 10, 1 << 20, &cancel).await.unwrap_err();
            assert!(
                matches!(&e, DuckError::Sql(m) if m.contains("Permission Error")),
                "{runner:?}: {e:?}"
            );
            // Even past the check, DuckDB itself runs only one SELECT.
            for sql in [
                "copy (select 1) to 'x.csv'",
                "select 1; select 2",
                "set threads = 1",
            ] {
                let e = d.query(sql, 10, 1 << 20, &cancel).await.unwrap_err();
                assert!(
                    matches!(&e, DuckError::Sql(m) if m.contains("single SELECT")),
                    "{runner:?} {sql}: {e:?}"
                );
            }
            let e = d
                .query("select nope from s.t", 10, 1 << 20, &cancel)
                .await
                .unwrap_err();
            assert!(
                matches!(&e, DuckError::Sql(m) if m.starts_with("Binder Error") && !m.contains("LINE")),
                "{e:?}"
            );
        }
    }

    #[tokio::test]
    async fn slow_queries_stop_at_the_time_limit_and_on_cancel() {
        for runner in runners() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = fixture(&runner, tmp.path());
            let mut d = duck(&runner, &dir);
            d.timeout = Duration::from_millis(800);
            let slow = "select count(*) from range(100000000000) a";
            let started = Instant::now();
            let e = d
                .query(slow, 10, 1 << 20, &CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(e, DuckError::Timeout(Duration::from_millis(800)));
            assert!(started.elapsed() < Duration::from_secs(10));
            d.timeout = Duration::from_secs(60);
            let cancel = CancellationToken::new();
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.cancel();
            });
            let e = d.query(slow, 10, 1 << 20, &cancel).await.unwrap_err();
            assert_eq!(e, DuckError::Cancelled);
        }
    }
}
