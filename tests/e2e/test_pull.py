"""Analyst sync, client side, end to end: `dataport login`, `pull` and `push` against a real
server, then real DuckDB over the pulled files; the rsync fallback through a real rsync daemon.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from e2e_util import BIN, TPCH_TABLES, tpch_diffs_over_flight, wait_for, write_parquet_atomic

FILTER = "c_nationkey = 7"
HIDDEN = ["c_phone", "c_acctbal"]


class Client:
    """`dataport` on an analyst's laptop: its own DATAPORT_HOME, a pull folder."""

    def __init__(self, root: Path, server_url: str):
        self.home = root / "laptop" / "home"
        self.dir = root / "laptop" / "data"
        self.server_url = server_url

    path: str | None = None  # PATH for the client, when a test sets one
    exe: Path = BIN  # `dataport`, or the laptop-only `dataport-client`

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
        env["DATAPORT_HOME"] = str(self.home)
        if self.path is not None:
            env["PATH"] = self.path
        return env

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
        p = subprocess.run([str(self.exe), *args], input=input, capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        if check:
            assert p.returncode == 0, f"dataport {' '.join(args)} -> {p.returncode}:\n{p.stderr}"
        return p

    def login(self, user: str, password: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("login", "--server", self.server_url, "--user", user, "--password-stdin",
                        input=password + "\n", check=check)

    def pull(self, *args: str) -> dict:
        p = self.run("pull", "--dir", str(self.dir), "--json", *args)
        return json.loads(p.stdout)

    def files(self) -> set[str]:
        return {p.relative_to(self.dir).as_posix() for p in self.dir.rglob("*.parquet")
                if ".dataport" not in p.parts}


def add_user(srv, groups) -> tuple[str, str]:
    name, password = f"pull-{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex[:12]}-Z9"
    srv.cli("user", "add", name, "--password-stdin", "--groups", ",".join(groups), input=password + "\n")
    return name, password


def demo_password(server, user: str) -> str:
    return (server.data_dir / "auth" / f"{user}-password").read_text().strip()


def manifest(server, user: str, password: str) -> dict:
    s = server.session_as(user, password)
    r = s.get(server.url("/api/v1/sync/manifest?all=true"), timeout=300)
    assert r.status_code == 200, r.text[:300]
    return {f"{t['schema']}.{t['table']}": t for t in r.json()["tables"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def duckdb_shim(tmp_path_factory) -> Path:
    """A `duckdb` executable (the pip package's engine) that reads SQL on stdin like the CLI."""
    d = tmp_path_factory.mktemp("bin")
    exe = d / "duckdb"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import sys, duckdb\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute(sys.stdin.read())\n"
        "con.close()\n")
    exe.chmod(0o755)
    return exe


def test_login_stores_an_owner_only_token_and_logout_revokes_it(server, tmp_path):
    c = Client(tmp_path, server.http)
    bad = c.login("analyst", "not-the-password", check=False)
    assert bad.returncode != 0 and "credentials" in bad.stderr.lower(), bad.stderr
    assert not (c.home / "credentials.json").exists()
    password = demo_password(server, "analyst")
    out = c.login("analyst", password).stdout
    assert "logged in" in out and "analyst" in out, out
    creds = c.home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(c.home.stat().st_mode) == 0o700
    stored = json.loads(creds.read_text())
    assert stored["user"] == "analyst" and stored["server"] == server.http
    assert password not in creds.read_text()
    token = stored["token"]
    me = requests.get(server.url("/api/v1/auth/me"), headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["user"] == "analyst"
    c.run("logout")
    assert not creds.exists()
    me = requests.get(server.url("/api/v1/auth/me"), headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401
    # without credentials, pull says what to do
    p = c.run("pull", "--dir", str(c.dir), check=False)
    assert p.returncode != 0 and "dataport login" in p.stderr, p.stderr


def test_login_with_an_api_token(server, tmp_path):
    user, password = add_user(server, ["dataread"])
    token = server.cli("token", "create", user, "--label", "laptop").stdout.strip().splitlines()[-1]
    c = Client(tmp_path, server.http)
    p = c.run("login", "--server", server.http, "--token-stdin", input=token + "\n")
    assert user in p.stdout, p.stdout
    report = c.pull("--no-duckdb")
    assert report["user"] == user and report["tables"] > 0
    server.cli("user", "remove", user, check=False)


@pytest.fixture(scope="module")
def insider_pull(server, tmp_path_factory, duckdb_shim):
    c = Client(tmp_path_factory.mktemp("insider"), server.http)
    c.login("insider", demo_password(server, "insider"))
    return c, c.pull("--duckdb", str(duckdb_shim))


def test_pull_as_insider_gives_every_table_checksummed(server, insider_pull):
    c, report = insider_pull
    want = manifest(server, "insider", demo_password(server, "insider"))
    assert set(want) == {f"tpch.{t}" for t in TPCH_TABLES}
    assert report["tables"] == len(want)
    files = {f["local_path"]: f for t in want.values() for f in t["files"]}
    assert report["downloaded"] == len(files) == report["files"]
    assert report["downloaded_bytes"] == sum(f["size"] for f in files.values())
    assert c.files() == set(files)
    for local, f in files.items():
        assert sha256(c.dir / local) == f["sha256"], local
    assert report["views"]["state"] == "applied", report["views"]
    # nothing changed: nothing is downloaded again, and nothing is re-hashed
    again = c.pull("--no-duckdb")
    assert (again["downloaded"], again["unchanged"], again["removed"]) == (0, len(files), 0)
    text = c.run("pull", "--dir", str(c.dir), "--no-duckdb").stdout
    assert text.startswith(f"pulled {len(want)} tables ({len(files)} files) from {server.http} as insider"), text
    assert "0 downloaded (0 B)" in text and f"{len(files)} unchanged" in text, text
    # no partial or temporary file is left behind
    assert not list((c.dir / ".dataport" / "parts").iterdir())
    assert not [p for p in c.dir.rglob(".*tmp")]


def test_the_home_page_shows_my_last_pull_as_the_server_saw_it(server, tmp_path):
    name, password = add_user(server, ["dataread"])
    me = server.session_as(name, password)

    def last_pull() -> dict | None:
        r = me.get(server.url("/?format=json"), timeout=60)
        assert r.status_code == 200, r.text[:300]
        return r.json()["last_pull"]

    assert last_pull() is None
    assert "You have not pulled yet" in requests_home_html(server, name, password)
    c = Client(tmp_path, server.http)
    c.login(name, password)
    report = c.pull("--no-duckdb")
    pull = last_pull()
    assert pull["tables"] == report["tables"] and pull["manifest_files"] == report["files"]
    assert (pull["files_sent"], pull["bytes_sent"]) == (report["downloaded"], report["downloaded_bytes"])
    assert pull["errors"] == 0 and pull["last_error"] is None
    assert pull["manifest_bytes"] == report["downloaded_bytes"] > 0
    # A second pull finds everything in place; a file it may not have counts as an error.
    first = pull["started_at_ms"]
    again = c.pull("--no-duckdb")
    assert again["downloaded"] == 0
    r = me.get(server.url("/api/v1/sync/files/parquet/tpch/customer.parquet"), timeout=60)
    assert r.status_code == 404
    pull = last_pull()
    assert pull["started_at_ms"] >= first and pull["files_sent"] == 0
    assert pull["errors"] == 1 and "not found" in pull["last_error"].lower()
    html = requests_home_html(server, name, password)
    assert "Your last analyst sync" in html and "customer.parquet" in html


def requests_home_html(server, user: str, password: str) -> str:
    """The home page as the user's browser gets it."""
    s = requests.Session()
    r = s.post(server.url("/api/v1/auth/session"), json={"username": user, "password": password},
               timeout=60)
    assert r.status_code == 200, r.text
    return s.get(server.url("/"), timeout=60).text


def test_pulled_views_answer_tpch_like_the_server(server, insider_pull):
    """The 22 TPC-H queries, with their table names unqualified as the server takes them, give the
    server's answers on the laptop's DuckDB database."""
    c, _ = insider_pull
    con = duckdb.connect(str(c.dir / "analytics.duckdb"), read_only=True)
    # unqualified names resolve in DuckDB's default schema, where the pull put a view per name
    aliases = {r[0] for r in con.execute(
        "select view_name from duckdb_views() where schema_name = 'main' and not internal").fetchall()}
    assert aliases == set(TPCH_TABLES), aliases
    # descriptions from data_description.md travel with the views
    comments = con.execute("select count(*) from duckdb_views() where schema_name = 'tpch' "
                           "and comment is not null").fetchone()[0]
    assert comments > 0
    try:
        problems = tpch_diffs_over_flight(server.flight, con)
    finally:
        con.close()
    assert not problems, "\n".join(problems)


def test_pull_applies_views_with_pythons_duckdb_module_when_there_is_no_cli(server, tmp_path):
    """A laptop with Python's duckdb module but no DuckDB CLI still gets analytics.duckdb."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"  # the test venv's Python, which has duckdb
    python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    c = Client(tmp_path, server.http)
    c.path = str(bin_dir)
    c.login("analyst", demo_password(server, "analyst"))
    report = c.pull()
    assert report["views"]["state"] == "applied", report["views"]
    assert Path(report["views"]["duckdb"]).name == "python3", report["views"]
    con = duckdb.connect(str(c.dir / "analytics.duckdb"), read_only=True)
    try:
        n = con.execute("select count(*) from nation").fetchone()[0]
    finally:
        con.close()
    assert n == server.query_json("select count(*) as n from tpch.nation")[0]["n"]


def test_pull_without_any_duckdb_says_what_to_install(server, tmp_path):
    c = Client(tmp_path, server.http)
    c.path = str(tmp_path / "empty")  # neither a duckdb executable nor a Python
    c.login("analyst", demo_password(server, "analyst"))
    p = c.run("pull", "--dir", str(c.dir))
    assert "views in views.sql" in p.stdout, p.stdout
    lines = [l for l in p.stderr.splitlines() if "DuckDB" in l]
    assert len(lines) == 1 and "pip install duckdb" in lines[0], p.stderr
    assert (c.dir / "views.sql").exists() and not (c.dir / "analytics.duckdb").exists()


def test_pull_as_analyst_has_no_private_table(server, tmp_path):
    c = Client(tmp_path, server.http)
    c.login("analyst", demo_password(server, "analyst"))
    report = c.pull("--no-duckdb")
    assert report["views"]["state"] == "off"
    assert report["tables"] == len(TPCH_TABLES) - 1
    assert not any("customer" in f for f in c.files())
    sql = (c.dir / "views.sql").read_text()
    assert "\"customer\"" not in sql and "customer.parquet" not in sql
    con = duckdb.connect()
    con.execute(sql)
    n = con.execute("select count(*) from tpch.nation").fetchone()[0]
    assert n == server.query_json("select count(*) as n from tpch.nation")[0]["n"]
    with pytest.raises(duckdb.CatalogException):
        con.execute("select * from tpch.customer")
    con.close()


def test_a_restricted_share_pulls_only_its_rows_and_columns(server, tmp_path):
    group = f"pullshare-{uuid.uuid4().hex[:8]}"
    server.cli("grant", group, "tpch.customer", "--row-filter", FILTER, "--hide-columns", ",".join(HIDDEN))
    user, password = add_user(server, [group])
    try:
        c = Client(tmp_path, server.http)
        c.login(user, password)
        report = c.pull("--no-duckdb")
        assert report["tables"] == 1 and c.files() == {"tpch/customer.parquet"}
        t = pq.read_table(c.dir / "tpch" / "customer.parquet")
        assert not set(HIDDEN) & set(t.column_names)
        assert set(t.column("c_nationkey").to_pylist()) == {7}
        n = server.query_json(f"select count(*) as n from tpch.customer where {FILTER}")[0]["n"]
        assert t.num_rows == n
    finally:
        server.cli("revoke", group, "tpch.customer", check=False)
        server.cli("user", "remove", user, check=False)


def test_a_revoked_grant_removes_the_table_on_the_next_pull(server, tmp_path, duckdb_shim):
    group = f"pullgrant-{uuid.uuid4().hex[:8]}"
    server.cli("grant", group, "tpch.nation")
    server.cli("grant", group, "tpch.region")
    user, password = add_user(server, [group])
    try:
        c = Client(tmp_path, server.http)
        c.login(user, password)
        first = c.pull("--duckdb", str(duckdb_shim))
        assert first["tables"] == 2 and c.files() == {"tpch/nation.parquet", "tpch/region.parquet"}
        server.cli("revoke", group, "tpch.region")
        second = c.pull("--duckdb", str(duckdb_shim))
        assert second["removed"] == 1 and second["removed_tables"] == ["tpch.region"], second
        assert c.files() == {"tpch/nation.parquet"}
        con = duckdb.connect(str(c.dir / "analytics.duckdb"), read_only=True)
        views = {r[0] for r in con.execute(
            "select view_name from duckdb_views() where schema_name = 'tpch'").fetchall()}
        aliases = {r[0] for r in con.execute(
            "select view_name from duckdb_views() where schema_name = 'main' and not internal").fetchall()}
        con.close()
        assert views == {"nation"}
        assert aliases == {"nation"}, "the unqualified view of a revoked table must go too"
    finally:
        server.cli("revoke", group, "tpch.nation", check=False)
        server.cli("user", "remove", user, check=False)


@pytest.fixture
def events_server(start_server, data_copy):
    """A server on a copy of the demo data with a partitioned table `lab.events`."""
    root = data_copy / "parquet" / "lab" / "events"
    # eu and apac have the same bytes: two files of equal content download separately
    for region in ("eu", "us", "apac"):
        write_events(root, region, 1)
    srv = start_server(data_dir=data_copy, demo=False)
    group = f"lab-{uuid.uuid4().hex[:6]}"
    srv.cli("grant", group, "lab.events")
    user, password = add_user(srv, [group])
    return srv, root, user, password


def write_events(root: Path, region: str, version: int) -> None:
    n = 1000 * version
    t = pa.table({"id": list(range(n)), "amount": [float(i) * version for i in range(n)]})
    write_parquet_atomic(t, root / f"region={region}" / "part-0.parquet")


def refresh(srv) -> None:
    r = srv.post("/api/v1/catalog/refresh", timeout=120)
    assert r.status_code == 200, r.text[:300]


def test_a_changed_table_downloads_only_its_changed_files(events_server, tmp_path, duckdb_shim):
    srv, root, user, password = events_server
    c = Client(tmp_path, srv.http)
    c.login(user, password)
    first = c.pull("--duckdb", str(duckdb_shim))
    assert first["downloaded"] == 3 and c.files() == {
        f"lab/events/region={r}/part-0.parquet" for r in ("eu", "us", "apac")}
    write_events(root, "us", 2)
    refresh(srv)
    second = c.pull("--duckdb", str(duckdb_shim))
    assert (second["downloaded"], second["unchanged"]) == (1, 2), second
    con = duckdb.connect(str(c.dir / "analytics.duckdb"), read_only=True)
    rows = con.execute("select region, count(*), sum(amount) from lab.events group by 1 order by 1").fetchall()
    types = dict(con.execute("select column_name, data_type from duckdb_columns() "
                             "where table_name = 'events'").fetchall())
    con.close()
    want = srv.query_json("select region, count(*) as n, sum(amount) as s from lab.events group by 1 order by 1")
    assert rows == [(w["region"], w["n"], w["s"]) for w in want]
    assert types["region"] == "VARCHAR"
    # a partition that goes away is deleted locally, with its empty folder
    shutil.rmtree(root / "region=apac")
    refresh(srv)
    third = c.pull("--no-duckdb")
    assert (third["downloaded"], third["removed"]) == (0, 1), third
    assert not (c.dir / "lab" / "events" / "region=apac").exists()


def test_a_damaged_local_file_is_detected_and_replaced(server, tmp_path):
    c = Client(tmp_path, server.http)
    c.login("analyst", demo_password(server, "analyst"))
    c.pull("--no-duckdb")
    f = c.dir / "tpch" / "orders.parquet"
    good = sha256(f)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    report = c.pull("--no-duckdb")
    assert (report["repaired"], report["downloaded"]) == (1, 1), report
    assert sha256(f) == good
    # damage that keeps the size and the modification time: only --verify re-hashes
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    quick = c.pull("--no-duckdb")
    assert quick["downloaded"] == 0
    report = c.pull("--no-duckdb", "--verify")
    assert (report["repaired"], report["downloaded"]) == (1, 1), report
    assert sha256(f) == good


def test_a_killed_pull_resumes(server, tmp_path):
    c = Client(tmp_path, server.http)
    c.login("insider", demo_password(server, "insider"))
    want = manifest(server, "insider", demo_password(server, "insider"))
    lineitem = want["tpch.lineitem"]["files"][0]
    assert lineitem["size"] > 2 << 20, "the demo lineitem is too small to interrupt"
    proc = subprocess.Popen(
        [str(BIN), "pull", "--dir", str(c.dir), "--no-duckdb", "--jobs", "1", "--limit-rate", "4M",
         "--quiet"],
        env=c.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    parts = c.dir / ".dataport" / "parts"

    def partial() -> Path | None:
        found = list(parts.glob(f"{lineitem['sha256']}-*.part")) if parts.exists() else []
        return found[0] if found and found[0].stat().st_size > 1 << 20 else None

    try:
        part = wait_for(partial, timeout=120, what="a partial lineitem download")
        # one pull per folder at a time
        second = c.run("pull", "--dir", str(c.dir), "--no-duckdb", check=False)
        assert second.returncode != 0 and "another pull" in second.stderr, second.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    had = part.stat().st_size
    assert 0 < had < lineitem["size"]
    assert not (c.dir / lineitem["local_path"]).exists()
    report = c.pull("--no-duckdb")
    assert report["resumed_bytes"] >= had, report
    assert report["downloaded_bytes"] < sum(f["size"] for t in want.values() for f in t["files"])
    for t in want.values():
        for f in t["files"]:
            assert sha256(c.dir / f["local_path"]) == f["sha256"], f["local_path"]
    assert not part.exists()


class EvilManifest(http.server.BaseHTTPRequestHandler):
    """A server whose manifest points outside the pull folder."""

    def do_GET(self):  # noqa: N802
        body = json.dumps({"generated_at": "now", "snapshot_version": 1, "tables": [{
            "schema": "x", "table": "y", "columns": [], "files": [{
                "path": "parquet/x/y.parquet", "local_path": "../escaped.parquet",
                "size": 3, "sha256": "0" * 64, "modified": "now"}]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_manifest_pointing_outside_the_folder_is_refused(tmp_path):
    httpd = http.server.HTTPServer(("127.0.0.1", 0), EvilManifest)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        c = Client(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}")
        c.home.mkdir(parents=True)
        (c.home / "credentials.json").write_text(json.dumps(
            {"server": c.server_url, "user": "u", "token": "t"}))
        p = c.run("pull", "--dir", str(c.dir), check=False)
        assert p.returncode != 0 and "unusable manifest" in p.stderr, p.stderr
        assert not list(tmp_path.rglob("escaped.parquet"))
    finally:
        httpd.shutdown()


def test_push_uploads_notes_and_transcripts_once(server, tmp_path):
    user, password = add_user(server, ["dataread"])
    c = Client(tmp_path, server.http)
    c.login(user, password)
    c.dir.mkdir()
    (c.dir / "notes.md").write_text("# Notes\n- revenue is net of returns\n")
    (c.dir / "transcripts").mkdir()
    (c.dir / "transcripts" / "s1.jsonl").write_text('{"role": "user", "text": "hi"}\n')
    (c.dir / "transcripts" / "ignored.txt").write_text("not a transcript")
    first = json.loads(c.run("push", "--dir", str(c.dir), "--json").stdout)
    assert first["notes"]["unchanged"] is False
    assert [(t["name"], t["unchanged"]) for t in first["transcripts"]] == [("s1.jsonl", False)]
    again = json.loads(c.run("push", "--dir", str(c.dir), "--json").stdout)
    assert again["notes"]["unchanged"] is True and again["transcripts"][0]["unchanged"] is True
    stored = server.data_dir / "uploads" / user
    assert (stored / "notes.md").read_text() == (c.dir / "notes.md").read_text()
    assert (stored / "transcripts" / "s1.jsonl").exists()
    assert not (stored / "transcripts" / "ignored.txt").exists()
    server.cli("user", "remove", user, check=False)


def test_the_laptop_binary_alone_logs_in_pulls_and_pushes(server, tmp_path):
    """`dataport-client` (the laptop crate's binary, built without the server) speaks the same
    commands: a login, a pull that matches the server's manifest byte for byte, a push."""
    exe = BIN.parent / "dataport-client"
    assert exe.exists(), f"{exe} is built with the workspace"
    user, password = add_user(server, ["dataread"])
    c = Client(tmp_path, server.http)
    c.exe = exe
    c.login(user, password)
    report = c.pull("--no-duckdb")
    served = manifest(server, user, password)
    assert report["tables"] == len(served) and report["views"]["state"] == "off", report
    local = {}
    for t in served.values():
        for f in t["files"]:
            local[f["local_path"]] = f["sha256"]
    assert local, "the user may read tables"
    for rel, digest in local.items():
        assert sha256(c.dir / rel) == digest, rel
    (c.dir / "notes.md").write_text("from the laptop binary\n")
    pushed = json.loads(c.run("push", "--dir", str(c.dir), "--json").stdout)
    assert pushed["notes"]["unchanged"] is False
    assert (server.data_dir / "uploads" / user / "notes.md").read_text() == "from the laptop binary\n"
    c.run("logout")
    server.cli("user", "remove", user, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (.ci/run installs it)")
def test_rsync_daemon_with_the_filter_transfers_exactly_the_granted_files(server, tmp_path):
    group = f"rsyncshare-{uuid.uuid4().hex[:8]}"
    server.cli("grant", group, "tpch.customer", "--row-filter", FILTER, "--hide-columns", ",".join(HIDDEN))
    share_user, share_password = add_user(server, [group])
    users = {"analyst": demo_password(server, "analyst"), share_user: share_password}
    # as whoever runs the tests (a root daemon would otherwise switch to `nobody`)
    conf = [f"uid = {os.getuid()}", f"gid = {os.getgid()}",
            f"pid file = {tmp_path / 'rsyncd.pid'}", "use chroot = no", "read only = yes",
            "list = no", f"log file = {tmp_path / 'rsyncd.log'}"]
    for user in users:
        filt = tmp_path / f"{user}.filter"
        server.cli("rsync-filter", "--user", user, "--output", str(filt))
        conf += [f"[{user}]", f"path = {server.data_dir}", f"filter = merge {filt}"]
    (tmp_path / "rsyncd.conf").write_text("\n".join(conf) + "\n")
    port = free_port()
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={tmp_path / 'rsyncd.conf'}",
                               f"--port={port}", "--address=127.0.0.1"])
    try:
        wait_for(lambda: port_open(port), timeout=30, what="the rsync daemon")
        for user, password in users.items():
            dest = tmp_path / f"got-{user}"
            dest.mkdir()
            p = subprocess.run(["rsync", "-r", f"rsync://127.0.0.1:{port}/{user}/", str(dest)],
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stderr
            got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
            want = manifest(server, user, password)
            assert got == {f["path"] for t in want.values() for f in t["files"]}, user
            for t in want.values():
                for f in t["files"]:
                    assert sha256(dest / f["path"]) == f["sha256"]
            # nothing else can be named either
            p = subprocess.run(["rsync", f"rsync://127.0.0.1:{port}/{user}/parquet/tpch/customer.parquet",
                                str(tmp_path / "stolen.parquet")], capture_output=True, text=True, timeout=60)
            assert p.returncode != 0 and not (tmp_path / "stolen.parquet").exists()
        share_files = {f["path"] for t in manifest(server, share_user, share_password).values()
                       for f in t["files"]}
        assert all(f.startswith("sync/views/") for f in share_files)
        assert not any(f.startswith("sync/") for t in manifest(server, "analyst", users["analyst"]).values()
                       for f in (x["path"] for x in t["files"]))
    finally:
        daemon.terminate()
        daemon.wait(10)
        server.cli("revoke", group, "tpch.customer", check=False)
        server.cli("user", "remove", share_user, check=False)
