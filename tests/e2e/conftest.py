"""Fixtures for the Dataport end-to-end tests.

Binary: $DATAPORT_BIN (default <repo>/target/debug/dataport).
TPC-H queries: $DATAPORT_TPCH_QUERIES (default <repo>/benches/tpch/queries).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from e2e_util import TPCH_TABLES, FlightSession, Server, adbc_connect, sql_str


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="session")
def server(demo_dir, tmp_path_factory):
    """The shared demo server; its first start generates TPC-H SF 0.1 into `demo_dir`."""
    srv = Server(demo_dir, ["--demo"], tmp_path_factory.mktemp("log-demo"))
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture
def start_server(server, demo_dir, tmp_path):
    """Factory for extra servers with their own flags; they are stopped after the test.

    By default they reuse the demo data dir (with `--demo`, which must be idempotent)."""
    started: list[Server] = []

    def start(args=(), data_dir: Path | None = None, demo: bool = True, env: dict | None = None,
              default_addr_args: bool = True) -> Server:
        data_dir = Path(data_dir or demo_dir)
        argv = (["--demo"] if demo else []) + list(args)
        srv = Server(data_dir, argv, tmp_path / f"log-{len(started)}", env=env,
                     default_addr_args=default_addr_args)
        started.append(srv)
        try:
            return srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def data_copy(server, demo_dir, tmp_path) -> Path:
    """A private copy of the demo data dir (parquet/ and docs/) for tests that mutate it."""
    dest = tmp_path / "data"
    dest.mkdir()
    for sub in ("parquet", "docs"):
        shutil.copytree(demo_dir / sub, dest / sub)
    return dest


@pytest.fixture(scope="session")
def tpch_file(server, demo_dir):
    """Path of a generated TPC-H table file."""
    def path(table: str) -> Path:
        p = demo_dir / "parquet" / "tpch" / f"{table}.parquet"
        assert p.exists(), f"demo data missing: {p}"
        return p
    return path


@pytest.fixture(scope="session")
def duck(tpch_file):
    """DuckDB with one view per TPC-H table over the server's own Parquet files."""
    con = duckdb.connect()
    for t in TPCH_TABLES:
        con.execute(f"create view {t} as select * from read_parquet({sql_str(tpch_file(t))})")
    yield con
    con.close()


@pytest.fixture
def flight_client(server):
    """A pyarrow.flight session on the demo server, logged in as the bootstrap admin."""
    with FlightSession(server.flight) as session:
        yield session


@pytest.fixture
def adbc_conn(server):
    """An ADBC Flight SQL DB-API connection to the demo server (username/password login)."""
    conn = adbc_connect(server.flight)
    try:
        yield conn
    finally:
        conn.close()
