"""Fixtures for the Dataport end-to-end tests.

Binary: $DATAPORT_BIN (default <repo>/target/debug/dataport).
TPC-H queries: $DATAPORT_TPCH_QUERIES (default <repo>/benches/tpch/queries).
Browser tests: Chromium at $DATAPORT_CHROMIUM (default /usr/bin/chromium); screenshots in
$DATAPORT_ARTIFACTS/screenshots (default <repo>/target/e2e-artifacts/screenshots).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

import browser_util
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


# ------------------------------------------------------------------------------------------
# Browser tests (tests/e2e/browser_util.py)
# ------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item (`item.rep_call`), for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Playwright) for the session. A missing or broken browser fails
    the tests that need it; they are not skipped."""
    try:
        pw, chromium = browser_util.launch()
    except RuntimeError as e:
        problem = str(e)
    else:
        problem = None
    if problem:
        pytest.fail(problem, pytrace=False)
    yield chromium
    browser_util.close(pw, chromium)


@pytest.fixture
def new_page(browser, request):
    """Factory: `new_page(srv, phone=False, **context_options)` is a Playwright Page in a new
    browser context (its own cookies) whose base URL is the server's, so `page.goto("/login")`
    works. Desktop 1280x900, or a 390x844 phone. The test's screenshots of an earlier run are
    removed first; when the test fails, each page still open is saved as a screenshot
    (`<test>-failure-<n>.png`). The contexts are closed after the test."""
    contexts = []
    browser_util.remove_screenshots(browser_util.current_test_name())

    def make(srv, phone: bool = False, **context_options):
        context = browser_util.new_context(browser, srv.http, phone=phone, **context_options)
        contexts.append(context)
        return context.new_page()

    yield make
    report = getattr(request.node, "rep_call", None)
    pages = [page for context in contexts for page in context.pages]
    if report is not None and report.failed:
        for n, page in enumerate(pages, 1):
            try:
                path = browser_util.screenshot(page, f"failure-{n}")
                print(f"screenshot of {page.url} at failure: {path}")
            except Exception as e:  # a crashed or closed page must not hide the failure
                print(f"no screenshot of page {n} at failure: {e}")
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def tg():
    """A Telegram Bot API double (telegram_double.py) for the module's notification server."""
    from notify_util import BOT_TOKEN
    from telegram_double import TelegramDouble
    double = TelegramDouble(BOT_TOKEN).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def srv(server, demo_dir, tg, tmp_path_factory, request):
    """A server with notifications pointed at `tg`, on a copy of the demo data; a module sets
    `NOTIFY_SETTINGS` (notify.* keys) to change the defaults of notify_util.config_text.
    Modules with a server of their own define their own `srv`."""
    from notify_util import start_notify_server
    settings = getattr(request.module, "NOTIFY_SETTINGS", {})
    s = start_notify_server(tmp_path_factory.mktemp("notify"), demo_dir, tg, **settings)
    yield s
    s.stop()

