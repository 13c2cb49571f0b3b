"""/health, /metrics, configuration from the environment and graceful shutdown."""

from __future__ import annotations

import time

import pytest

from e2e_util import TPCH_TABLES, metric

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
