"""The MCP endpoint (`/mcp`, Streamable HTTP) end to end, through the official MCP Python SDK
as the client and through raw JSON-RPC for the error paths: initialize, the tools, resources
and prompts; a `dataread` account never sees the private table through any of them; malformed
messages, unknown methods, oversized requests, revoked tokens, limits, rate limits and
cancellation each get a proper JSON-RPC error; every call is in the audit log and `/metrics`.

The stdio server (`dataport mcp`) is tested in test_mcp_stdio.py, the OAuth flow in
test_mcp_oauth.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import asynccontextmanager

import httpx2
import pytest
import requests
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from e2e_util import ADMIN_PASSWORD, ADMIN_USER, SLOW_QUERY, metric, run_async, wait_for
from test_access import read_password

TOOLS = {"list_tables", "describe_table", "profile", "search_catalog", "run_query",
         "explain_query", "list_metrics", "run_metric", "search_knowledge"}
PRIVATE = "tpch.customer"
QUESTION_SQL = ("SELECT n.n_name AS nation, count(*) AS customers FROM tpch.customer c "
                "JOIN tpch.nation n ON c.c_nationkey = n.n_nationkey "
                "GROUP BY n.n_name ORDER BY customers DESC, nation LIMIT 1")


@asynccontextmanager
async def connect(url: str, token: str):
    """An SDK client session on `url` with a bearer token."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


def run(coro):
    return run_async(coro)


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def everything(result) -> str:
    """What a tool answered, as one string: its text and its structured content."""
    return text_of(result) + json.dumps(result.structured_content or {})


@pytest.fixture(scope="module")
def tokens(server, demo_dir):
    return {
        "admin": server.login(ADMIN_USER, ADMIN_PASSWORD),
        "analyst": server.login("analyst", read_password(demo_dir, "analyst")),
        "insider": server.login("insider", read_password(demo_dir, "insider")),
    }


@pytest.fixture(scope="module")
def profiled(server):
    server.run_job("profile:catalog")


class Raw:
    """JSON-RPC by hand: a session opened with initialize."""

    def __init__(self, server, token: str):
        self.url = server.url("/mcp")
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {token}",
                                  "Accept": "application/json, text/event-stream",
                                  "Content-Type": "application/json"})
        r = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"}}})
        assert r.status_code == 200, r.text
        self.session = r.headers["mcp-session-id"]
        assert r.json()["result"]["protocolVersion"] == "2025-11-25"
        self.http.headers["Mcp-Session-Id"] = self.session
        self.http.headers["MCP-Protocol-Version"] = "2025-11-25"
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202

    def post(self, message, **kw) -> requests.Response:
        data = message if isinstance(message, (bytes, str)) else json.dumps(message)
        return self.http.post(self.url, data=data, timeout=120, **kw)

    def call(self, tool: str, arguments: dict, id=1) -> dict:
        r = self.post({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments}})
        assert r.status_code in (200, 429), r.text
        return r.json()


# --- the tools, through the SDK ------------------------------------------------------------

def test_an_assistant_answers_which_nation_has_the_most_customers(server, tokens, profiled):
    """The issue's acceptance question, the way an assistant works: find the tables, read how
    they join, run one query."""
    expected = server.query_json(QUESTION_SQL)[0]

    async def go():
        async with connect(server.url("/mcp"), tokens["admin"]) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            for t in tools.values():
                assert t.description and len(t.description) > 40, t.name
                assert t.input_schema["type"] == "object"
                assert t.annotations.read_only_hint is True
            found = await client.call_tool("search_catalog", {"query": "which nation has the most customers"})
            assert not found.is_error
            hits = [h["table"] for h in found.structured_content["results"]]
            assert {"tpch.customer", "tpch.nation"} <= set(hits), hits
            described = await client.call_tool("describe_table", {"table": "tpch.customer"})
            text = text_of(described)
            assert "c_nationkey" in text and "tpch.nation" in text, text
            answer = await client.call_tool("run_query", {"sql": QUESTION_SQL})
            assert not answer.is_error, text_of(answer)
            rows = answer.structured_content["rows"]
            assert rows == [[expected["nation"], expected["customers"]]]
            assert answer.structured_content["total_rows"] == 1
            assert expected["nation"] in text_of(answer)

    run(go())


def test_each_tool_answers(server, tokens, profiled):
    async def go():
        async with connect(server.url("/mcp"), tokens["insider"]) as client:
            listed = await client.call_tool("list_tables", {})
            tables = {t["table"] for t in listed.structured_content["tables"]}
            catalog = requests.get(server.url("/api/v1/catalog"), timeout=60,
                                   headers={"Authorization": f"Bearer {tokens['insider']}"}).json()
            assert tables == {f'{s["name"]}.{t["name"]}' for s in catalog["schemas"] for t in s["tables"]}
            assert "updated" in text_of(listed)

            only = await client.call_tool("list_tables", {"schema": "nope"})
            assert only.structured_content["tables"] == []

            prof = await client.call_tool("profile", {"table": "tpch.orders"})
            assert not prof.is_error, text_of(prof)
            cols = {c["name"] for c in prof.structured_content["columns"]}
            assert "o_orderdate" in cols
            assert "sample_rows" not in prof.structured_content
            assert "% filled" in text_of(prof)

            plan = await client.call_tool("explain_query", {"sql": "SELECT count(*) FROM tpch.orders"})
            assert not plan.is_error and "physical_plan" in text_of(plan), text_of(plan)

            many = await client.call_tool("run_query", {"sql": "SELECT o_orderkey FROM tpch.orders ORDER BY 1", "max_rows": 5})
            assert len(many.structured_content["rows"]) == 5
            assert many.structured_content["total_rows"] == server.query_json("SELECT count(*) AS n FROM tpch.orders")[0]["n"]
            assert "5 of" in text_of(many) and "max_rows" in text_of(many)

            bad = await client.call_tool("run_query", {"sql": "SELECT o_nope FROM tpch.orders"})
            assert bad.is_error and "o_nope" in text_of(bad) and "describe_table" in text_of(bad)
            refused = await client.call_tool("run_query", {"sql": "DROP TABLE tpch.orders"})
            assert refused.is_error and "read-only" in text_of(refused)

            metrics = await client.call_tool("list_metrics", {})
            names = [m["name"] for m in metrics.structured_content["metrics"]]
            assert "revenue" in names, names
            value = await client.call_tool("run_metric", {"name": "revenue", "grain": "year"})
            assert not value.is_error, text_of(value)
            assert value.structured_content["total_rows"] >= 1
            unknown = await client.call_tool("run_metric", {"name": "nope"})
            assert unknown.is_error and "list_metrics" in text_of(unknown)

            knowledge = await client.call_tool("search_knowledge", {"query": "revenue"})
            assert not knowledge.is_error, text_of(knowledge)

            resources = (await client.list_resources()).resources
            uris = {str(r.uri) for r in resources}
            assert "dataport://catalog" in uris and "dataport://tables/tpch.orders" in uris
            doc = await client.read_resource("dataport://tables/tpch.orders")
            assert "# tpch.orders" in doc.contents[0].text
            prof_doc = await client.read_resource("dataport://profiles/tpch.orders")
            assert json.loads(prof_doc.contents[0].text)["table"] == "orders"

            prompts = {p.name for p in (await client.list_prompts()).prompts}
            assert prompts == {"explore_table", "answer_with_sql"}
            p = await client.get_prompt("answer_with_sql", {"question": "How many orders per year?"})
            assert "How many orders per year?" in p.messages[0].content.text

            # Progress over server-sent events: the SDK asks for it, the answer still arrives.
            seen = []

            async def on_progress(progress, total, message):
                seen.append(message)
            slow = await client.call_tool("run_query", {"sql": "SELECT count(*) AS n FROM tpch.lineitem"},
                                          progress_callback=on_progress)
            assert not slow.is_error

    run(go())


def test_a_dataread_account_never_sees_the_private_table(server, tokens, profiled):
    """Every tool, resource and prompt, as `analyst` (dataread): the private table looks
    exactly like one that does not exist."""
    async def go():
        async with connect(server.url("/mcp"), tokens["analyst"]) as client:
            answers = []
            for name, args in [("list_tables", {}), ("list_metrics", {}),
                               ("search_catalog", {"query": "customer c_custkey c_name market segment"}),
                               ("describe_table", {"table": "tpch.orders"}),
                               ("search_knowledge", {"query": "customer"})]:
                r = await client.call_tool(name, args)
                answers.append(everything(r))
            for a in answers:
                assert PRIVATE not in a and "c_custkey" not in a and "c_mktsegment" not in a, a[:2000]
            for name, args in [("describe_table", {"table": "{t}"}), ("profile", {"table": "{t}"}),
                               ("run_query", {"sql": "SELECT * FROM {t} LIMIT 1"}),
                               ("explain_query", {"sql": "SELECT * FROM {t}"})]:
                hidden = await client.call_tool(name, json.loads(json.dumps(args).replace("{t}", PRIVATE)))
                missing = await client.call_tool(name, json.loads(json.dumps(args).replace("{t}", "tpch.customerx")))
                assert hidden.is_error and missing.is_error, name
                assert "c_custkey" not in everything(hidden)
                assert text_of(hidden).replace("customer", "X") == text_of(missing).replace("customerx", "X"), \
                    (name, text_of(hidden), text_of(missing))
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            assert not any("customer" in u for u in uris), uris
            catalog = await client.read_resource("dataport://catalog")
            assert PRIVATE not in catalog.contents[0].text
            with pytest.raises(Exception) as e:
                await client.read_resource(f"dataport://tables/{PRIVATE}")
            assert "customer" not in str(e.value).replace(PRIVATE, "")

    run(go())


# --- errors as JSON-RPC ------------------------------------------------------------------------

def test_malformed_messages_get_json_rpc_errors(server, tokens):
    raw = Raw(server, tokens["analyst"])
    r = raw.post(b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    r = raw.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    r = raw.post({"jsonrpc": "1.0", "id": 3, "method": "ping"})
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] == 3
    r = raw.post({"jsonrpc": "2.0", "id": 4, "method": "tables/drop"})
    assert r.status_code == 200 and r.json()["error"]["code"] == -32601 and r.json()["id"] == 4
    r = raw.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "drop_table"}})
    assert r.json()["error"]["code"] == -32602
    assert raw.call("run_query", {"sql": "SELECT 1", "extra": True})["error"]["code"] == -32602
    assert raw.call("run_query", {})["error"]["code"] == -32602
    r = raw.post({"jsonrpc": "2.0", "id": 6, "method": "ping"})
    assert r.json() == {"jsonrpc": "2.0", "id": 6, "result": {}}
    # Oversized: over server.max_body_size (1 MiB by default).
    big = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": "run_query", "arguments": {"sql": "SELECT '" + "x" * (2 << 20) + "'"}}}
    r = raw.post(big)
    assert r.status_code == 413 and r.json()["error"]["code"] == -32013
    server.assert_alive()


def test_a_query_over_the_limits_is_refused_and_results_are_capped(server, tokens):
    raw = Raw(server, tokens["analyst"])
    over = raw.call("run_query", {"sql": "SELECT * FROM tpch.lineitem", "max_rows": 100000})
    assert over["error"]["code"] == -32602 and "at most 500" in over["error"]["message"]
    wide = raw.call("run_query", {"sql": "SELECT " + ", ".join(f"l_comment AS c{i}" for i in range(8))
                                         + " FROM tpch.lineitem", "max_rows": 500})
    result = wide["result"]["structuredContent"]
    assert len(result["rows"]) < 500 and "KiB" in result["truncated"]
    assert result["total_rows"] == server.query_json("SELECT count(*) AS n FROM tpch.lineitem")[0]["n"]


def test_sessions_tokens_and_origins(server, tokens):
    url = server.url("/mcp")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = requests.post(url, json=ping, timeout=30)
    assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"]
    assert r.json()["error"]["code"] == -32001
    r = requests.post(url, json=ping, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert r.status_code == 401
    auth = {"Authorization": f"Bearer {tokens['analyst']}"}
    r = requests.post(url, json=ping, headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32010
    r = requests.post(url, json=ping, headers={**auth, "Mcp-Session-Id": "bogus"}, timeout=30)
    assert r.status_code == 404
    r = requests.post(url, json=ping, headers={**auth, "Origin": "https://evil.example"}, timeout=30)
    assert r.status_code == 403
    assert requests.get(url, headers=auth, timeout=30).status_code == 405
    raw = Raw(server, tokens["analyst"])
    # Another account cannot use the session.
    r = requests.post(url, json=ping, headers={"Authorization": f"Bearer {tokens['insider']}",
                                               "Mcp-Session-Id": raw.session}, timeout=30)
    assert r.status_code == 404
    assert raw.http.delete(url, timeout=30).status_code == 204
    assert raw.post(ping).status_code == 404
    r = raw.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers={"MCP-Protocol-Version": "1999-01-01"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32022


def test_an_assistant_token_works_here_only_and_a_revoked_one_is_refused(server, tokens):
    admin = server.session_as("analyst", read_password(server.data_dir, "analyst"))
    created = admin.post(server.url("/api/v1/auth/tokens"),
                         json={"label": "assistant test", "scope": "assistant"}).json()
    raw = Raw(server, created["token"])
    listed = raw.call("list_tables", {})["result"]["structuredContent"]["tables"]
    assert PRIVATE not in {t["table"] for t in listed} and listed
    r = requests.post(server.url("/api/v1/query"), json={"sql": "SELECT 1"}, timeout=30,
                      headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 403
    assert admin.delete(server.url(f"/api/v1/auth/tokens/{created['id']}")).status_code == 204
    r = raw.post({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                  "params": {"name": "list_tables", "arguments": {}}})
    assert r.status_code == 401 and r.json()["error"]["code"] == -32001


def test_a_cancelled_call_stops_its_query(server, tokens):
    raw = Raw(server, tokens["analyst"])
    out = {}

    def slow():
        out["r"] = raw.call("run_query", {"sql": SLOW_QUERY.replace("lineitem", "tpch.lineitem")}, id="slow-1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.5)
    r = raw.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": "slow-1", "reason": "user pressed stop"}})
    assert r.status_code == 202
    t.join(60)
    assert not t.is_alive(), "the cancelled call did not end"
    assert out["r"]["id"] == "slow-1" and out["r"]["error"]["code"] == -32800

    def audited():
        entries = server.get("/api/v1/admin/audit?user=analyst&limit=50").json()["entries"]
        return [e for e in entries if e.get("tool") == "run_query" and "a.l_orderkey" in e["sql"]]
    entries = wait_for(audited, 10)
    assert entries[0]["outcome"] == "cancelled" and entries[0]["surface"] == "mcp"


def test_calls_are_audited_and_counted(server, tokens):
    raw = Raw(server, tokens["analyst"])
    raw.call("run_query", {"sql": "SELECT count(*) AS n FROM tpch.nation"})
    raw.call("describe_table", {"table": "tpch.nation"})

    def entries():
        got = server.get("/api/v1/admin/audit?user=analyst&limit=100").json()["entries"]
        tools = {e.get("tool") for e in got if e["surface"] == "mcp"}
        return got if {"run_query", "describe_table"} <= tools else None
    got = wait_for(entries, 10)
    q = next(e for e in got if e.get("tool") == "run_query" and "tpch.nation" in e["sql"])
    assert q["rows"] == 1 and q["outcome"] == "ok" and q["tables"]
    samples = server.metrics()
    assert metric(samples, "dataport_mcp_tool_calls_total", tool="run_query", outcome="ok") >= 1
    assert metric(samples, "dataport_mcp_tool_calls_total", tool="describe_table", outcome="ok") >= 1
    assert metric(samples, "dataport_mcp_sessions") >= 1


def test_rate_and_concurrency_limits(start_server, demo_dir):
    srv = start_server(["--mcp-calls-per-minute", "3", "--mcp-max-concurrent-queries", "1"])
    token = srv.login("analyst", read_password(demo_dir, "analyst"))
    raw = Raw(srv, token)
    out = {}

    def slow():
        out["r"] = raw.call("run_query", {"sql": SLOW_QUERY.replace("lineitem", "tpch.lineitem")}, id="s")
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.5)
    second = raw.call("run_query", {"sql": "SELECT 1"}, id="t")
    assert second["error"]["code"] == -32029 and "queries" in second["error"]["message"]
    raw.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "s"}})
    t.join(60)
    for n in range(5):  # three calls a minute: the next ones are refused
        r = raw.post({"jsonrpc": "2.0", "id": f"u{n}", "method": "tools/call",
                      "params": {"name": "list_tables", "arguments": {}}})
        if r.status_code != 200:
            break
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == -32029
    assert r.json()["error"]["data"]["retry_after_seconds"] >= 1
    srv.assert_alive()


def test_the_docs_demo_snippet_runs_as_written(server, tokens):
    """docs/mcp.md's Python example, run with the venv's Python against this server, with an
    assistant token made as its shell block makes one."""
    import re
    import subprocess
    import sys

    from e2e_util import REPO
    text = (REPO / "docs" / "mcp.md").read_text()
    section = text.split("## Try it on the demo", 1)[1].split("\n## ", 1)[0]
    body = re.search(r'-d (\'\{"label".*?\}\')', section).group(1).strip("'")
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    created = requests.post(server.url("/api/v1/auth/tokens"), data=body, timeout=30,
                            headers={"Authorization": f"Bearer {tokens['insider']}",
                                     "Content-Type": "application/json"})
    assert created.status_code == 201, created.text
    run_ = subprocess.run([sys.executable, "-c", snippet.replace("http://127.0.0.1:8080", server.http)],
                          env={**os.environ, "ASSISTANT": created.json()["token"]},
                          capture_output=True, text=True, timeout=120)
    assert run_.returncode == 0, run_.stderr[-3000:]
    expected = server.query_json(QUESTION_SQL)[0]
    assert expected["nation"] in run_.stdout and "c_nationkey" in run_.stdout, run_.stdout[-3000:]
