//! Query and request counters and latency histograms, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Which protocol a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Surface {
    Http,
    Flight,
    /// Jobs and other work started by the server itself.
    Internal,
    /// AI assistants' tool calls over the Model Context Protocol.
    Mcp,
}

impl Surface {
    const ALL: [Surface; 4] = [
        Surface::Http,
        Surface::Flight,
        Surface::Internal,
        Surface::Mcp,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Flight => "flight",
            Self::Internal => "internal",
            Self::Mcp => "mcp",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Error,
    /// Refused by policy or access rules.
    Refused,
    Timeout,
    /// The client went away or asked to stop.
    Cancelled,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Cancelled,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const SURFACES: usize = 4;
const OUTCOMES: usize = 5;

/// A latency histogram (Prometheus buckets, count and sum).
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// `name_bucket`, `name_sum` and `name_count` lines with the label `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (b, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{le}\"}} {}",
                self.buckets[b].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Process-wide query and request metrics; cheap to update on every query and request.
#[derive(Debug, Default)]
pub struct Metrics {
    queries: [[AtomicU64; OUTCOMES]; SURFACES],
    running: AtomicI64,
    latency: [Histogram; SURFACES],
    rows: [AtomicU64; SURFACES],
    bytes: [AtomicU64; SURFACES],
    /// Requests by surface, method and status: the transports keep both label sets small.
    requests: Mutex<BTreeMap<(Surface, String, String), u64>>,
    request_latency: [Histogram; SURFACES],
}

impl Metrics {
    pub(crate) fn query_started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn query_finished(&self, surface: Surface, outcome: Outcome, elapsed: Duration) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        let s = surface.idx();
        self.queries[s][outcome.idx()].fetch_add(1, Ordering::Relaxed);
        self.latency[s].observe(elapsed);
    }

    /// A request ended (see [`crate::telemetry`]).
    pub(crate) fn request_finished(
        &self,
        surface: Surface,
        method: &str,
        status: &str,
        elapsed: Duration,
    ) {
        self.request_latency[surface.idx()].observe(elapsed);
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry((surface, method.to_string(), status.to_string()))
                .or_default() += 1;
        }
    }

    /// Requests that ended on `surface` with `method` and `status`.
    pub fn requests(&self, surface: Surface, method: &str, status: &str) -> u64 {
        self.requests.lock().map_or(0, |r| {
            r.get(&(surface, method.to_string(), status.to_string()))
                .copied()
                .unwrap_or(0)
        })
    }

    pub(crate) fn rows_served(&self, surface: Surface, rows: u64) {
        self.rows[surface.idx()].fetch_add(rows, Ordering::Relaxed);
    }

    /// Transports report the bytes they wrote to clients.
    pub fn bytes_served(&self, surface: Surface, bytes: u64) {
        self.bytes[surface.idx()].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Queries currently planning or streaming.
    pub fn running(&self) -> i64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Queries that ended with `outcome` on `surface`.
    pub fn queries(&self, surface: Surface, outcome: Outcome) -> u64 {
        self.queries[surface.idx()][outcome.idx()].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition of the query metrics.
    pub(crate) fn render(&self, out: &mut String) {
        header(
            out,
            "dataport_queries_total",
            "counter",
            "Queries by surface and outcome.",
        );
        for s in Surface::ALL {
            for o in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "dataport_queries_total{{surface=\"{}\",outcome=\"{}\"}} {}",
                    s.as_str(),
                    o.as_str(),
                    self.queries(s, o)
                );
            }
        }
        header(
            out,
            "dataport_queries_running",
            "gauge",
            "Queries planning or streaming now.",
        );
        let _ = writeln!(out, "dataport_queries_running {}", self.running());
        header(
            out,
            "dataport_query_duration_seconds",
            "histogram",
            "Query time from receipt to the end of the result stream.",
        );
        for s in Surface::ALL {
            self.latency[s.idx()].render(
                out,
                "dataport_query_duration_seconds",
                &format!("surface=\"{}\"", s.as_str()),
            );
        }
        header(
            out,
            "dataport_rows_served_total",
            "counter",
            "Result rows sent to clients.",
        );
        for s in Surface::ALL {
            let _ = writeln!(
                out,
                "dataport_rows_served_total{{surface=\"{}\"}} {}",
                s.as_str(),
                self.rows[s.idx()].load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "dataport_bytes_served_total",
            "counter",
            "Encoded result bytes sent to clients.",
        );
        for s in Surface::ALL {
            let _ = writeln!(
                out,
                "dataport_bytes_served_total{{surface=\"{}\"}} {}",
                s.as_str(),
                self.bytes[s.idx()].load(Ordering::Relaxed)
            );
        }
        self.render_requests(out);
    }

    fn render_requests(&self, out: &mut String) {
        header(
            out,
            "dataport_requests_total",
            "counter",
            "Requests (HTTP requests, Flight RPCs) by surface, method and status.",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((surface, method, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "dataport_requests_total{{surface=\"{}\",method=\"{}\",status=\"{}\"}} {n}",
                    surface.as_str(),
                    label(method),
                    label(status)
                );
            }
        }
        header(
            out,
            "dataport_request_duration_seconds",
            "histogram",
            "Request time from receipt to the end of the response body.",
        );
        for s in [Surface::Http, Surface::Flight] {
            self.request_latency[s.idx()].render(
                out,
                "dataport_request_duration_seconds",
                &format!("surface=\"{}\"", s.as_str()),
            );
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
