"""`dataport mcp` end to end: the official MCP Python SDK starts it as an assistant would
(stdio), on a laptop that ran `dataport login` and `dataport pull` as the `dataread` account
`analyst`.

Online, the tools answer through the server's `/mcp`. Offline (the stored login points at a
closed port), they answer from the pulled files with a notice saying so: the catalog and
profiles from `docs/`, SQL in DuckDB on `analytics.duckdb` (the CLI, or Python's module),
read-only and locked to the pull folder. The private `tpch.customer` appears in neither.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import requests
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

from e2e_util import BIN, run_async
from test_access import read_password

PRIVATE = "tpch.customer"
VENV_BIN = Path(sys.executable).parent  # the test venv: the duckdb CLI and Python's duckdb


class Laptop:
    """An analyst's laptop: its own DATAPORT_HOME (the login) and pull folder."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.dir = root / "dataport"
        self.path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
        env["DATAPORT_HOME"] = str(self.home)
        env["PATH"] = self.path
        return env

    def run(self, *args: str, input: str | None = None) -> str:
        p = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True,
                           env=self.env(), timeout=600)
        assert p.returncode == 0, f"dataport {' '.join(args)} -> {p.returncode}:\n{p.stderr}"
        return p.stdout

    def credentials(self) -> dict:
        return json.loads((self.home / "credentials.json").read_text())

    def offline_copy(self, root: Path) -> "Laptop":
        """This laptop with its server gone: the same pull folder, the login pointing at a
        port nothing listens on."""
        other = Laptop(root)
        other.dir = self.dir
        other.home.mkdir(parents=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        creds = self.credentials()
        creds["server"] = f"http://127.0.0.1:{port}"
        path = other.home / "credentials.json"
        path.write_text(json.dumps(creds))
        path.chmod(0o600)
        return other


@asynccontextmanager
async def mcp_session(laptop: Laptop, log: Path, *args: str):
    """An SDK session with `dataport mcp` started on `laptop`; its standard error in `log`."""
    params = StdioServerParameters(command=str(BIN), args=["mcp", "--dir", str(laptop.dir), *args],
                                   env=laptop.env())
    with open(log, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def catalog_names(server, token: str) -> set[str]:
    r = requests.get(server.url("/api/v1/catalog"), headers={"Authorization": f"Bearer {token}"},
                     timeout=60)
    assert r.status_code == 200, r.text[:500]
    return {f"{s['name']}.{t['name']}" for s in r.json()["schemas"] for t in s["tables"]}


@pytest.fixture(scope="module")
def laptop(server, demo_dir, tmp_path_factory) -> Laptop:
    """`analyst` logged in and everything they may read pulled (views applied by the CLI)."""
    laptop = Laptop(tmp_path_factory.mktemp("mcp-laptop"))
    password = read_password(demo_dir, "analyst")
    laptop.run("login", "--server", server.http, "--user", "analyst", "--password-stdin",
               input=password + "\n")
    server.run_job("profile:catalog")
    report = json.loads(laptop.run("pull", "--dir", str(laptop.dir), "--all", "--json"))
    assert report["views"]["state"] == "applied", report
    assert (laptop.dir / "docs" / "catalog.json").is_file(), "the pull wrote no docs/catalog.json"
    return laptop


def test_online_the_tools_answer_through_the_server(server, laptop, tmp_path):
    expected = catalog_names(server, laptop.credentials()["token"])
    assert PRIVATE not in expected

    async def main():
        async with mcp_session(laptop, tmp_path / "mcp.log") as s:
            tools = {t.name for t in (await s.list_tools()).tools}
            assert {"list_tables", "describe_table", "run_query", "run_metric"} <= tools, tools

            listed = await s.call_tool("list_tables", {})
            assert not listed.is_error, text_of(listed)
            assert not text_of(listed).startswith("Offline"), text_of(listed)
            names = {t["table"] for t in listed.structured_content["tables"]}
            assert names == expected

            q = await s.call_tool("run_query", {"sql": "select count(*) as n from tpch.nation"})
            assert not q.is_error, text_of(q)
            assert q.structured_content["rows"] == [[25]], q.structured_content
            assert "DataFusion" in next(t for t in (await s.list_tools()).tools
                                        if t.name == "run_query").description

            private = await s.call_tool("run_query", {"sql": f"select count(*) from {PRIVATE}"})
            assert private.is_error, text_of(private)

    run_async(main())


@pytest.mark.parametrize("duckdb", ["cli", "python"])
def test_offline_the_tools_answer_from_the_pulled_files(laptop, tmp_path, duckdb):
    offline = laptop.offline_copy(tmp_path / "offline")
    if duckdb == "python":
        # No duckdb CLI on PATH: Python's duckdb module answers, as `dataport pull` would use it.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        python = bin_dir / "python3"  # a script: a link would lose the venv
        python.write_text(f'#!/bin/sh\nexec "{VENV_BIN / "python"}" "$@"\n')
        python.chmod(0o755)
        offline.path = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
        assert shutil.which("duckdb", path=offline.path) is None
    pulled = json.loads((laptop.dir / "docs" / "catalog.json").read_text())
    catalog = {f"{t['schema']}.{t['name']}" for t in pulled["tables"]}
    assert PRIVATE not in catalog

    async def main():
        async with mcp_session(offline, tmp_path / "mcp.log") as s:
            listed = await s.call_tool("list_tables", {})
            text = text_of(listed)
            assert not listed.is_error, text
            assert text.startswith(f"Offline: the server at {offline.credentials()['server']} "
                                   "could not be reached"), text
            assert f"answered from the files pulled to {laptop.dir.resolve()}" in text \
                or f"answered from the files pulled to {laptop.dir}" in text, text
            names = {t["table"] for t in listed.structured_content["tables"]}
            assert names == catalog
            assert PRIVATE not in text and "customer" not in names

            run_query = next(t for t in (await s.list_tools()).tools if t.name == "run_query")
            assert "DuckDB" in run_query.description

            q = await s.call_tool("run_query", {
                "sql": "select n_name from tpch.nation order by n_nationkey", "max_rows": 3})
            assert not q.is_error, text_of(q)
            assert text_of(q).startswith("Offline: "), text_of(q)
            assert q.structured_content["rows"] == [["ALGERIA"], ["ARGENTINA"], ["BRAZIL"]]
            assert q.structured_content["total_rows"] == 25
            assert "3 of 25 rows shown" in text_of(q)

            described = await s.call_tool("describe_table", {"table": "tpch.orders"})
            assert not described.is_error and "o_orderkey" in text_of(described)

            m = await s.call_tool("run_metric", {"name": "orders_placed", "grain": "year"})
            assert not m.is_error, text_of(m)
            assert len(m.structured_content["rows"]) == 7, m.structured_content  # 1992 … 1998

            # The private table: not in the catalog, not in the database.
            private = await s.call_tool("run_query", {"sql": f"select count(*) from {PRIVATE}"})
            assert private.is_error, text_of(private)
            assert "does not exist" in text_of(private), text_of(private)
            missing = await s.call_tool("describe_table", {"table": PRIVATE})
            assert missing.is_error and "no table" in text_of(missing), text_of(missing)

            # Writes, settings and files outside the folder are refused.
            for sql, why in [
                (f"copy tpch.nation to '{tmp_path / 'x.csv'}'", "COPY statements are refused"),
                ("attach ':memory:' as m", "ATTACH statements are refused"),
                ("select 1; select 2", "one statement at a time"),
                ("select * from read_csv('/etc/passwd')", "Permission Error"),
            ]:
                r = await s.call_tool("run_query", {"sql": sql})
                assert r.is_error and why in text_of(r), f"{sql}: {text_of(r)}"
            assert not (tmp_path / "x.csv").exists()

            # Over the tool's limit: a JSON-RPC error, not an answer.
            with pytest.raises(MCPError) as over:
                await s.call_tool("run_query", {"sql": "select 1", "max_rows": 1_000_000})
            assert over.value.error.code == -32602, over.value.error
            assert "max_rows may be at most" in over.value.error.message

    run_async(main())
