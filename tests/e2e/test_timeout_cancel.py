"""Query timeouts and cancellation when the client goes away."""

from __future__ import annotations

import json
import socket
import time

from e2e_util import assert_error, metric, wait_for

# A 600k x 600k nested-loop join. The predicate is one that no optimizer can prove false from
# column statistics (`a.l_orderkey + b.l_orderkey < 0` can be, and then finishes at once).
EXPENSIVE = ("select count(*) from lineitem a, lineitem b "
             "where a.l_comment || b.l_comment = 'dataport'")


def _outcome(samples, outcome):
    return metric(samples, "dataport_queries_total", surface="http", outcome=outcome) or 0


def _running(srv):
    return metric(srv.metrics(), "dataport_queries_running")


def test_query_timeout_gives_504(start_server):
    srv = start_server(["--query-timeout", "2s"])
    before = _outcome(srv.metrics(), "timeout")
    t0 = time.monotonic()
    r = srv.query(EXPENSIVE, timeout=120)
    elapsed = time.monotonic() - t0
    assert_error(r, 504, "deadline_exceeded")
    assert elapsed < 60, f"timeout took {elapsed:.1f}s"
    wait_for(lambda: _outcome(srv.metrics(), "timeout") >= before + 1, 30,
             what="dataport_queries_total{outcome=timeout} to increase")
    wait_for(lambda: _running(srv) == 0, 30, what="dataport_queries_running == 0")
    # short queries still run under the same timeout
    srv.assert_alive()
    assert srv.query_json("select count(*) as n from nation") == [{"n": 25}]


def test_client_disconnect_cancels_query(start_server):
    srv = start_server(["--query-timeout", "600s"])
    before = _outcome(srv.metrics(), "cancelled")
    assert _running(srv) == 0

    host, port = srv.addresses["http"].rsplit(":", 1)
    body = json.dumps({"sql": EXPENSIVE}).encode()
    request = (f"POST /api/v1/query HTTP/1.1\r\nHost: {srv.addresses['http']}\r\n"
               f"Authorization: {srv.session.headers['Authorization']}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(request)
        # the query must really be running before we hang up
        wait_for(lambda: (_running(srv) or 0) >= 1, 15, what="the query to start running")
        time.sleep(1)
    finally:
        sock.close()

    t0 = time.monotonic()
    wait_for(lambda: _outcome(srv.metrics(), "cancelled") >= before + 1, 30,
             what='dataport_queries_total{surface="http",outcome="cancelled"} to increase')
    wait_for(lambda: _running(srv) == 0, max(1.0, 30 - (time.monotonic() - t0)),
             what="dataport_queries_running == 0 after the disconnect")
    srv.assert_alive()
