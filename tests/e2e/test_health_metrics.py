"""/health, /metrics, configuration from the environment and graceful shutdown."""

from __future__ import annotations

import json
import time

import pytest

from e2e_util import ADMIN_USER, TPCH_TABLES, FlightSession, metric

METRIC_NAMES = [
    "dataport_queries_total",
    "dataport_queries_running",
    "dataport_query_duration_seconds_bucket",
    "dataport_rows_served_total",
    "dataport_bytes_served_total",
    "dataport_memory_pool_reserved_bytes",
    "dataport_catalog_tables",
    "dataport_catalog_refreshes_total",
]


def health(srv) -> dict:
    r = srv.get("/health")
    assert r.status_code == 200, r.text[:500]
    return r.json()


def test_health(server):
    h = health(server)
    assert h["status"] == "ok", h
    assert isinstance(h["version"], str) and h["version"], h
    assert isinstance(h["uptime_seconds"], (int, float)) and h["uptime_seconds"] >= 0, h
    tables = h["tables"]
    assert (len(tables) if isinstance(tables, list) else tables) == len(TPCH_TABLES), h
    assert isinstance(h["last_refresh"], dict), h
    assert h["errors"] == [], h
    time.sleep(1.1)
    assert health(server)["uptime_seconds"] > h["uptime_seconds"] - 1e-9


def test_metrics_exposition(server):
    server.assert_alive()  # at least one query, so every series exists
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers
    samples = server.metrics()
    names = {n for n, _, _ in samples}
    missing = [n for n in METRIC_NAMES if n not in names]
    assert not missing, f"missing metrics: {missing}"
    assert metric(samples, "dataport_queries_total", surface="http", outcome="ok") >= 1
    assert metric(samples, "dataport_catalog_tables") == len(TPCH_TABLES)
    assert metric(samples, "dataport_queries_running") == 0
    assert metric(samples, "dataport_memory_pool_reserved_bytes") >= 0
    buckets = [ls.get("le") for n, ls, _ in samples if n == "dataport_query_duration_seconds_bucket"]
    assert "+Inf" in buckets, buckets


def _outcome(samples, outcome):
    return metric(samples, "dataport_queries_total", surface="http", outcome=outcome) or 0


def test_counters_increase_after_a_query(server):
    before = server.metrics()
    r = server.query("select * from tpch.nation")
    assert r.status_code == 200 and len(r.json()) == 25
    after = server.metrics()
    assert _outcome(after, "ok") >= _outcome(before, "ok") + 1
    assert metric(after, "dataport_rows_served_total") >= (
        (metric(before, "dataport_rows_served_total") or 0) + 25)
    assert metric(after, "dataport_bytes_served_total") > (
        metric(before, "dataport_bytes_served_total") or 0)
    inf = lambda s: metric(s, "dataport_query_duration_seconds_bucket", le="+Inf") or 0  # noqa: E731
    assert inf(after) >= inf(before) + 1


@pytest.mark.parametrize("sql,outcome", [("selec 1", "error"),
                                         ("select * from no_such_table", "error"),
                                         ("drop table tpch.region", "refused")])
def test_outcome_counters(server, sql, outcome):
    before = _outcome(server.metrics(), outcome)
    assert server.query(sql).status_code >= 400
    assert _outcome(server.metrics(), outcome) >= before + 1


def test_refresh_counter(server):
    before = metric(server.metrics(), "dataport_catalog_refreshes_total") or 0
    r = server.post("/api/v1/catalog/refresh")
    assert r.status_code == 200, r.text[:500]
    assert metric(server.metrics(), "dataport_catalog_refreshes_total") >= before + 1
    assert health(server)["status"] == "ok"


def test_config_from_environment(start_server, demo_dir):
    srv = start_server(demo=False, default_addr_args=False, env={
        "DATAPORT_DATA_DIR": str(demo_dir),
        "DATAPORT_HTTP_ADDR": "127.0.0.1:0",
        "DATAPORT_FLIGHT_ADDR": "127.0.0.1:0",
    })
    assert srv.query_json("select count(*) as n from tpch.region") == [{"n": 5}]
    assert health(srv)["status"] == "ok"


def test_graceful_shutdown(start_server):
    srv = start_server()
    srv.assert_alive()
    t0 = time.monotonic()
    code = srv.stop(timeout=45)
    assert code == 0, (f"exit code {code} after SIGTERM (None = had to be killed after "
                       f"{time.monotonic() - t0:.0f}s)\n{srv.stderr_tail()}")


def _finished(log_path, request_id: str) -> list[dict]:
    """The `request finished` events of `request_id` in a JSON log: their span's fields."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        span = event.get("span") or {}
        if event.get("fields", {}).get("message") == "request finished" and \
                span.get("request_id") == request_id:
            out.append(span)
    return out


def _wait_finished(srv, request_id: str) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _finished(srv.stderr_path, request_id)
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no 'request finished' for {request_id}:\n{srv.stderr_tail()}")


def test_every_request_has_a_span_and_is_counted(start_server):
    """Each HTTP request and each Flight RPC runs in one `request` span that ends with its
    user, method, status, rows, bytes and duration, logged and counted in /metrics."""
    srv = start_server(["--log-format", "json"])
    r = srv.session.post(srv.url("/api/v1/query"), json={"sql": "select * from tpch.nation"},
                         headers={"x-request-id": "trace-http-1"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    [span] = _wait_finished(srv, "trace-http-1")
    assert span["surface"] == "http" and span["method"] == "POST /api/v1/query", span
    assert span["user"] == ADMIN_USER and span["status"] == "200", span
    assert span["rows"] == 25 and span["bytes"] == len(r.content), span
    assert span["duration_ms"] >= 0, span

    r = srv.session.get(srv.url("/api/v1/catalog/tpch/nope"), headers={"x-request-id": "trace-http-2"},
                        timeout=60)
    assert r.status_code == 404
    [span] = _wait_finished(srv, "trace-http-2")
    assert span["status"] == "404" and span["rows"] == 0, span
    assert span["method"] == "GET /api/v1/catalog/{schema}/{table}", span

    with FlightSession(srv.flight) as s:
        options = s.call_options([s.header, (b"x-request-id", b"trace-flight-1")])
        table = s.sql("select * from tpch.region", options)
        assert table.num_rows == 5
    spans = _wait_finished(srv, "trace-flight-1")
    by_method = {sp["method"]: sp for sp in spans}
    assert set(by_method) == {"GetFlightInfo", "DoGet"}, spans
    assert all(sp["user"] == ADMIN_USER and sp["status"] == "OK" for sp in spans), spans
    assert by_method["DoGet"]["rows"] == 5 and by_method["DoGet"]["bytes"] > 0, spans

    with FlightSession(srv.flight) as s:
        options = s.call_options([s.header, (b"x-request-id", b"trace-flight-2")])
        with pytest.raises(Exception):
            s.sql("select * from tpch.no_such_table", options)
    [span] = _wait_finished(srv, "trace-flight-2")
    assert span["method"] == "GetFlightInfo" and span["status"] == "NOT_FOUND", span

    samples = srv.metrics()
    assert metric(samples, "dataport_requests_total", surface="http",
                  method="POST /api/v1/query", status="200") >= 1
    assert metric(samples, "dataport_requests_total", surface="flight",
                  method="DoGet", status="OK") >= 1
    assert metric(samples, "dataport_requests_total", surface="flight",
                  method="GetFlightInfo", status="NOT_FOUND") >= 1
    assert metric(samples, "dataport_request_duration_seconds_count", surface="flight") >= 3
    # an unmatched path is one label value, whatever was asked
    srv.get("/no/such/path/x1")
    srv.get("/no/such/path/x2")
    samples = srv.metrics()
    methods = {ls.get("method") for n, ls, _ in samples if n == "dataport_requests_total"}
    assert "GET unmatched" in methods and not any("x1" in m for m in methods), methods
