//! What the run found: counts per file, every difference, every refusal with its reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Surface {
    /// Flight SQL `GetFlightInfo` + `DoGet` (or a prepared statement).
    Flight,
    /// Flight SQL `DoPut(CommandStatementUpdate)`, as clients send DDL and DML.
    FlightUpdate,
    /// `POST /api/v1/query?format=arrow`.
    HttpArrow,
    /// `POST /api/v1/query?format=json`.
    HttpJson,
}

impl Surface {
    fn name(self) -> &'static str {
        match self {
            Surface::Flight => "Flight SQL",
            Surface::FlightUpdate => "Flight SQL update",
            Surface::HttpArrow => "HTTP Arrow",
            Surface::HttpJson => "HTTP JSON",
        }
    }
}

/// Counts of one `.slt` file.
#[derive(Debug, Default)]
pub(crate) struct FileStats {
    pub(crate) file: String,
    pub(crate) seconds: f64,
    /// Query texts met (queries, `EXECUTE`, introspection, unparsable text).
    pub(crate) queries: usize,
    /// Queries in-process DataFusion answered, compared on every surface.
    pub(crate) compared: usize,
    /// Queries in-process DataFusion answered with an error (the server must error too).
    pub(crate) reference_errors: usize,
    /// Identical answers per surface.
    identical: BTreeMap<Surface, usize>,
    /// Ordered results equal as multisets but not in order (ties of the ORDER BY).
    ties: BTreeMap<Surface, usize>,
    /// Statements (DDL, DML, settings, PREPARE) met.
    pub(crate) statements: usize,
    /// Statements the server refused on every surface, as it must.
    pub(crate) refused: usize,
    /// Queries not compared, by reason.
    skipped: BTreeMap<String, usize>,
    /// Surfaces not asked, by reason.
    surface_skips: BTreeMap<(Surface, String), usize>,
    pub(crate) failures: usize,
}

impl FileStats {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            ..Self::default()
        }
    }

    pub(crate) fn skip(&mut self, reason: String) {
        // Reasons may quote a multi-line engine message; the report lists one per line.
        let reason = one_line(&reason, 240);
        *self.skipped.entry(reason).or_default() += 1;
    }

    pub(crate) fn skip_surface(&mut self, surface: Surface, reason: &str) {
        *self
            .surface_skips
            .entry((surface, reason.to_string()))
            .or_default() += 1;
    }

    pub(crate) fn identical(&mut self, surface: Surface) {
        *self.identical.entry(surface).or_default() += 1;
    }

    pub(crate) fn tie_order(&mut self, surface: Surface) {
        *self.ties.entry(surface).or_default() += 1;
    }

    fn count(map: &BTreeMap<Surface, usize>, surface: Surface) -> usize {
        map.get(&surface).copied().unwrap_or_default()
    }

    /// The report's columns after the file name: queries, compared, identical on Flight, HTTP
    /// Arrow and HTTP JSON, in-process errors, statements, refused, failures.
    fn counts(&self) -> [usize; 9] {
        [
            self.queries,
            self.compared,
            Self::count(&self.identical, Surface::Flight),
            Self::count(&self.identical, Surface::HttpArrow),
            Self::count(&self.identical, Surface::HttpJson),
            self.reference_errors,
            self.statements,
            self.refused,
            self.failures,
        ]
    }

    pub(crate) fn line(&self) -> String {
        let [
            queries,
            compared,
            flight,
            arrow,
            json,
            _,
            statements,
            refused,
            failures,
        ] = self.counts();
        format!(
            "{:<40} {queries:>5} queries, {compared:>5} compared: Flight {flight:>5}, HTTP Arrow {arrow:>5}, HTTP JSON {json:>5} identical; {refused:>4} statements refused of {statements:>4}; {failures} failures ({:.1} s)",
            self.file, self.seconds
        )
    }
}

/// A difference between a surface and the reference.
#[derive(Debug)]
pub(crate) struct Failure {
    file: String,
    line: u32,
    sql: String,
    surface: Surface,
    problem: String,
}

/// A statement the server refused, and why (as the client was told).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) kind: String,
    pub(crate) reason: String,
    pub(crate) sql: String,
}

#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) files: Vec<FileStats>,
    failures: Vec<Failure>,
    pub(crate) refusals: Vec<Refusal>,
}

fn one_line(sql: &str, max: usize) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

impl Outcome {
    pub(crate) fn fail(
        &mut self,
        file: &str,
        line: u32,
        sql: &str,
        surface: Surface,
        problem: String,
    ) {
        self.failures.push(Failure {
            file: file.to_string(),
            line,
            sql: sql.to_string(),
            surface,
            problem,
        });
    }

    pub(crate) fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    fn total(&self, f: impl Fn(&FileStats) -> usize) -> usize {
        self.files.iter().map(f).sum()
    }

    fn identical(&self, surface: Surface) -> usize {
        self.total(|s| FileStats::count(&s.identical, surface))
    }

    fn ties(&self, surface: Surface) -> usize {
        self.total(|s| FileStats::count(&s.ties, surface))
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} files: {} queries, {} answered by in-process DataFusion and compared — identical on Flight SQL {}, HTTP Arrow {}, HTTP JSON {}; {} answered with an error in-process (the server errs too); {} statements, {} refused as they must be; {} failures",
            self.files.len(),
            self.total(|s| s.queries),
            self.total(|s| s.compared),
            self.identical(Surface::Flight),
            self.identical(Surface::HttpArrow),
            self.identical(Surface::HttpJson),
            self.total(|s| s.reference_errors),
            self.total(|s| s.statements),
            self.total(|s| s.refused),
            self.failures.len()
        )
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# SQL conformance report\n");
        let _ = writeln!(
            out,
            "Produced by `bash tests/conformance.sh`: DataFusion's own sqllogictest files run through the server's Flight SQL and HTTP surfaces and compared with in-process DataFusion (same version, same settings). How it works: [docs/sql-conformance.md](docs/sql-conformance.md).\n"
        );
        let _ = writeln!(out, "{}\n", self.summary());
        let _ = writeln!(
            out,
            "| file | queries | compared | Flight SQL | HTTP Arrow | HTTP JSON | in-process error | statements | refused | failures |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut totals = [0usize; 9];
        for s in &self.files {
            let counts = s.counts();
            for (total, n) in totals.iter_mut().zip(counts) {
                *total += n;
            }
            let cells: Vec<String> = counts.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "| {} | {} |", s.file, cells.join(" | "));
        }
        let cells: Vec<String> = totals.iter().map(|n| format!("**{n}**")).collect();
        let _ = writeln!(out, "| **all** | {} |\n", cells.join(" | "));
        let ties: Vec<String> = [Surface::Flight, Surface::HttpArrow, Surface::HttpJson]
            .into_iter()
            .map(|s| format!("{} {}", s.name(), self.ties(s)))
            .collect();
        let _ = writeln!(
            out,
            "Ordered results whose rows matched but whose ties of the `ORDER BY` came in another order (counted identical): {}.\n",
            ties.join(", ")
        );

        let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
        let mut surface_skips: BTreeMap<(Surface, &str), usize> = BTreeMap::new();
        for s in &self.files {
            for (reason, n) in &s.skipped {
                *skipped.entry(reason.as_str()).or_default() += n;
            }
            for ((surface, reason), n) in &s.surface_skips {
                *surface_skips
                    .entry((*surface, reason.as_str()))
                    .or_default() += n;
            }
        }
        let _ = writeln!(out, "## Not compared\n");
        if skipped.is_empty() && surface_skips.is_empty() {
            let _ = writeln!(out, "Nothing.\n");
        }
        for (reason, n) in &skipped {
            let _ = writeln!(out, "- {n} × {reason}");
        }
        for ((surface, reason), n) in &surface_skips {
            let _ = writeln!(out, "- {n} × {} only: {reason}", surface.name());
        }
        let _ = writeln!(out);

        let _ = writeln!(out, "## Statements the read-only policy refuses\n");
        let _ = writeln!(
            out,
            "Every statement below was refused by the server on HTTP, on Flight SQL `GetFlightInfo` and on Flight SQL `DoPut` updates: with `permission_denied`, or, for a file or URL named as a table, with `not_found`, the answer for any table that is not in the catalog. The corpus's statements also ran in-process (where they do not write files); the others are `conformance/must_refuse.txt`. The reason is the message the client got.\n"
        );
        let mut by_kind: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for r in &self.refusals {
            by_kind
                .entry((r.kind.as_str(), r.reason.as_str()))
                .or_default()
                .push(r.sql.as_str());
        }
        let _ = writeln!(
            out,
            "| statement | count | why (the server's answer) | example |"
        );
        let _ = writeln!(out, "|---|---:|---|---|");
        for ((kind, reason), sqls) in &by_kind {
            let _ = writeln!(
                out,
                "| {kind} | {} | {} | `{}` |",
                sqls.len(),
                reason.replace('|', "\\|"),
                one_line(sqls[0], 80).replace('|', "\\|").replace('`', "'")
            );
        }
        let _ = writeln!(out);

        let _ = writeln!(out, "## Differences\n");
        if self.failures.is_empty() {
            let _ = writeln!(
                out,
                "None: every query in-process DataFusion answers was answered identically on every surface, every refused query was refused in-process too, and no error carried internal text."
            );
        }
        for f in &self.failures {
            let _ = writeln!(
                out,
                "- `{}:{}` {} — `{}`: {}",
                f.file,
                f.line,
                f.surface.name(),
                one_line(&f.sql, 160).replace('`', "'"),
                one_line(&f.problem, 400)
            );
        }
        out
    }
}
