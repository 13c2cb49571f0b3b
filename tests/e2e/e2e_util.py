"""Pure helpers for the Dataport end-to-end tests: server process control, metrics parsing,
value normalisation and result comparison. Fixtures live in conftest.py."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import requests

import flight_proto as fp

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DATAPORT_BIN", REPO / "target" / "debug" / "dataport"))
TPCH_QUERIES = Path(
    os.environ.get("DATAPORT_TPCH_QUERIES", REPO / "benches" / "tpch" / "queries")
)
TPCH_TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]
# Keys the demo declares in docs/data_description.md (demo/src/lib.rs, TABLE_DOCS).
TPCH_PRIMARY_KEYS = {
    "region": ["r_regionkey"], "nation": ["n_nationkey"], "supplier": ["s_suppkey"],
    "customer": ["c_custkey"], "part": ["p_partkey"], "partsupp": ["ps_partkey", "ps_suppkey"],
    "orders": ["o_orderkey"], "lineitem": ["l_orderkey", "l_linenumber"],
}
# (fk table, fk column, pk table, pk column); every demo foreign key has one column.
TPCH_FOREIGN_KEYS = [
    ("nation", "n_regionkey", "region", "r_regionkey"),
    ("supplier", "s_nationkey", "nation", "n_nationkey"),
    ("customer", "c_nationkey", "nation", "n_nationkey"),
    ("partsupp", "ps_partkey", "part", "p_partkey"),
    ("partsupp", "ps_suppkey", "supplier", "s_suppkey"),
    ("orders", "o_custkey", "customer", "c_custkey"),
    ("lineitem", "l_orderkey", "orders", "o_orderkey"),
    ("lineitem", "l_partkey", "part", "p_partkey"),
    ("lineitem", "l_suppkey", "supplier", "s_suppkey"),
]
# A query that runs for minutes (a 600k x 600k nested-loop join whose predicate no optimizer can
# prove false from statistics) and sends nothing until it ends.
SLOW_QUERY = "select count(*) from lineitem a, lineitem b where a.l_orderkey <> b.l_orderkey"
STARTUP_TIMEOUT = float(os.environ.get("DATAPORT_STARTUP_TIMEOUT", "120"))

# First administrator: created on first start with the password from DATAPORT_ADMIN_PASSWORD,
# which `Server.start` sets to ADMIN_PASSWORD unless the caller's env says otherwise. (The
# password rules want 8+ characters with upper, lower and a digit.)
ADMIN_USER = "admin"
ADMIN_PASSWORD = "Admin-Passw0rd"

CONTENT_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}


# --------------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------------


class Server:
    """One `dataport serve` process, started on ephemeral ports."""

    def __init__(self, data_dir: Path, args: list[str], log_dir: Path, env: dict | None = None,
                 default_addr_args: bool = True):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        if default_addr_args:
            self.args = ["--data-dir", str(self.data_dir), "--http-addr", "127.0.0.1:0",
                         "--flight-addr", "127.0.0.1:0", *self.args]
        self.env = env
        self.auto_login = True
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / "stdout.log"
        self.stderr_path = log_dir / "stderr.log"
        self.proc: subprocess.Popen | None = None
        self.http = ""
        # grpc://host:port, or grpc+tls://host:port when Flight serves TLS
        self.flight = ""
        self.flight_tls = "--flight-tls-cert" in self.args
        self.addresses: dict = {}
        # Logged in as ADMIN_USER once the server is up (see `start`); `login` makes others.
        self.session = requests.Session()
        self.admin_token = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Server":
        if not BIN.exists():
            raise RuntimeError(f"dataport binary not found at {BIN} (build it or set DATAPORT_BIN)")
        addr_file = self.data_dir / "run" / "addresses.json"
        # The data dir may be shared with another (still running) server: drop its address
        # file so we only ever read the one our process writes.
        addr_file.unlink(missing_ok=True)
        # Hermetic: no server setting leaks in from the caller's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
        env["DATAPORT_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        # Tests send wrong passwords on purpose, all from 127.0.0.1: a shared server must not
        # lock the suite out. The rate-limit tests set the real default (5) on their own dirs.
        env["DATAPORT_MAX_FAILED_LOGINS"] = "1000"
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", *self.args],
            stdout=open(self.stdout_path, "wb"),
            stderr=open(self.stderr_path, "wb"),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dataport exited with code {self.proc.returncode} during startup "
                    f"(args {self.args}):\n{self.stderr_tail()}"
                )
            try:
                self.addresses = json.loads(addr_file.read_text())
                if self.addresses.get("http") and self.addresses.get("flight"):
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"dataport did not write {addr_file} within {STARTUP_TIMEOUT}s:\n"
                    f"{self.stderr_tail()}"
                )
            time.sleep(0.2)
        self.http = "http://" + self.addresses["http"]
        self.flight = ("grpc+tls://" if self.flight_tls else "grpc://") + self.addresses["flight"]
        # The address file is written once listening; make sure HTTP answers before handing out.
        deadline = time.monotonic() + 30
        while True:
            try:
                self.session.get(self.url("/health"), timeout=5)
                socket.create_connection(self.flight_hostport, timeout=5).close()
                break
            except (requests.ConnectionError, OSError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"dataport not answering on {self.http}:\n{self.stderr_tail()}")
                time.sleep(0.2)
        password = (self.env or {}).get("DATAPORT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        if self.auto_login:
            self.admin_token = self.login(ADMIN_USER, password)
            self.session.headers["Authorization"] = f"Bearer {self.admin_token}"
        return self

    def login(self, user: str, password: str) -> str:
        """A session token for `user` (POST /api/v1/auth/login)."""
        r = requests.post(self.url("/api/v1/auth/login"),
                          json={"username": user, "password": password}, timeout=60)
        assert r.status_code == 200, f"login as {user} -> {r.status_code}: {r.text[:500]}"
        return r.json()["token"]

    def session_as(self, user: str, password: str) -> requests.Session:
        """A requests session carrying `user`'s bearer token."""
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {self.login(user, password)}"
        return s

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run `dataport ARGS` against this server's data dir, with the server's extra
        environment (its settings), as an operator would."""
        return run_cli(self.data_dir, *args, input=input, check=check, env=self.env)

    @property
    def flight_hostport(self) -> tuple[str, int]:
        host, port = self.addresses["flight"].rsplit(":", 1)
        return host, int(port)

    def stop(self, timeout: float = 45) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code, or None
        when the process had to be killed."""
        self.session.close()
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr_tail(self, n: int = 60) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "<no stderr>"
        return "\n".join(lines[-n:])

    # -- HTTP --------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.http + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.session.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.session.post(self.url(path), **kw)

    def run_job(self, name: str, timeout: float = 120) -> dict:
        """Start the job `name` by hand (as the admin) and wait for it to finish; its run."""
        seen = {r["id"] for r in self.get(f"/api/v1/jobs/{name}").json()["history"]}
        r = self.post(f"/api/v1/jobs/{name}/run")
        assert r.status_code == 202, r.text[:300]

        def finished():
            history = self.get(f"/api/v1/jobs/{name}").json()["history"]
            new = [h for h in history if h["id"] not in seen and h.get("finished_ms")]
            return new[0] if new else None
        return wait_for(finished, timeout=timeout, what=f"job {name} to finish")

    def query(self, sql: str, params: list | None = None, fmt: str | None = None,
              accept: str | None = None, timeout: float = 300, **kw) -> requests.Response:
        body: dict = {"sql": sql}
        if params is not None:
            body["params"] = params
        headers = kw.pop("headers", {})
        if accept is not None:
            headers["Accept"] = accept
        return self.session.post(
            self.url("/api/v1/query"),
            params={"format": fmt} if fmt else None,
            json=body, headers=headers, timeout=timeout, **kw,
        )

    def query_json(self, sql: str, params: list | None = None) -> list[dict]:
        r = self.query(sql, params)
        assert r.status_code == 200, f"{sql!r} -> {r.status_code}: {r.text[:2000]}"
        return r.json()

    def query_arrow(self, sql: str, params: list | None = None) -> pa.Table:
        r = self.query(sql, params, fmt="arrow")
        assert r.status_code == 200, f"{sql!r} -> {r.status_code}: {r.text[:2000]}"
        return pa.ipc.open_stream(r.content).read_all()

    def metrics(self) -> list[tuple[str, dict, float]]:
        r = self.get("/metrics")
        assert r.status_code == 200, r.text[:500]
        return parse_metrics(r.text)

    def assert_alive(self) -> None:
        r = self.query("select 1 as one")
        assert r.status_code == 200, f"server stopped serving: {r.status_code} {r.text[:500]}"
        assert r.json() == [{"one": 1}], r.text[:500]

    def assert_flight_alive(self, **client_kw) -> None:
        """A fresh Flight client can still log in and run a query."""
        assert self.proc is not None and self.proc.poll() is None, \
            f"dataport exited with {self.proc.returncode}:\n{self.stderr_tail()}"
        with FlightSession(self.flight, timeout=60, **client_kw) as s:
            t = s.sql("select 1 as one")
        assert t.to_pylist() == [{"one": 1}], t


def run_cli(data_dir: Path, *args: str, input: str | None = None,
            check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`dataport ARGS` with DATAPORT_DATA_DIR (and `env`) set; output captured as text."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
    env.update(extra)
    env["DATAPORT_DATA_DIR"] = str(data_dir)
    p = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True,
                       env=env, timeout=120)
    if check:
        assert p.returncode == 0, f"dataport {' '.join(args)} -> {p.returncode}:\n{p.stderr}"
    return p


# --------------------------------------------------------------------------------------------
# Flight SQL clients
# --------------------------------------------------------------------------------------------

GRPC_CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED"]
# How grpc-go (inside the ADBC Flight SQL driver) spells the codes in its messages.
GO_CODE_NAMES = {c: "".join(w.capitalize() for w in c.split("_")) for c in GRPC_CODES}
GO_CODE_NAMES["CANCELLED"] = "Canceled"


class FlightSession:
    """A pyarrow.flight client logged in with HTTP Basic (Handshake -> bearer token), plus helpers
    that speak Flight SQL with hand-built protobuf commands (see flight_proto.py)."""

    def __init__(self, location: str, user: str | None = ADMIN_USER,
                 password: str | None = ADMIN_PASSWORD, timeout: float | None = 120, **client_kw):
        self.location = location
        self.client = flight.FlightClient(location, **client_kw)
        self.timeout = timeout
        self.header: tuple[bytes, bytes] | None = None
        if user is not None:
            self.header = self.client.authenticate_basic_token(
                user.encode(), password.encode(), flight.FlightCallOptions(timeout=timeout))
        self.options = self.call_options()

    @property
    def token(self) -> str:
        assert self.header is not None
        value = self.header[1].decode()
        assert value.startswith("Bearer "), value
        return value[len("Bearer "):]

    def call_options(self, headers: list | None = None, timeout: float | None = -1.0):
        """Call options carrying `headers` (default: the session's bearer header)."""
        if headers is None:
            headers = [self.header] if self.header else []
        return flight.FlightCallOptions(headers=headers,
                                        timeout=self.timeout if timeout == -1.0 else timeout)

    def info(self, cmd: bytes, options=None) -> flight.FlightInfo:
        return self.client.get_flight_info(flight.FlightDescriptor.for_command(cmd),
                                           options or self.options)

    def schema(self, cmd: bytes, options=None) -> pa.Schema:
        return self.client.get_schema(flight.FlightDescriptor.for_command(cmd),
                                      options or self.options).schema

    def read(self, info: flight.FlightInfo, options=None) -> pa.Table:
        """Reads every endpoint of `info` (on this connection) and concatenates them."""
        tables = []
        for ep in info.endpoints:
            for loc in ep.locations:
                uri = loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri)
                assert uri.startswith("arrow-flight-reuse-connection:") or \
                    uri.split("://")[-1] == self.location.split("://")[-1], \
                    f"endpoint points elsewhere: {uri}"
            tables.append(self.client.do_get(ep.ticket, options or self.options).read_all())
        if not tables:
            return info.schema.empty_table()
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def command(self, cmd: bytes, options=None) -> pa.Table:
        return self.read(self.info(cmd, options), options)

    def sql(self, query: str, options=None) -> pa.Table:
        return self.command(fp.command_statement_query(query), options)

    def action(self, action_type: str, body: bytes = b"", options=None) -> list[bytes]:
        return [r.body.to_pybytes() for r in
                self.client.do_action(flight.Action(action_type, body), options or self.options)]

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def flight_status(exc: BaseException) -> str:
    """The gRPC status name behind a pyarrow.flight client exception.

    pyarrow maps gRPC codes to exception classes (and, for the codes that share ArrowInvalid or
    FlightInternalError, to message prefixes such as 'gRPC returned resource exhausted error')."""
    msg = str(exc).lower()
    if isinstance(exc, flight.FlightUnauthenticatedError):
        return "UNAUTHENTICATED"
    if isinstance(exc, flight.FlightUnauthorizedError):
        return "PERMISSION_DENIED"
    if isinstance(exc, flight.FlightCancelledError):
        return "CANCELLED"
    if isinstance(exc, flight.FlightTimedOutError):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, flight.FlightUnavailableError):
        return "UNAVAILABLE"
    if isinstance(exc, flight.FlightInternalError):
        if "aborted" in msg:
            return "ABORTED"
        if "data loss" in msg:
            return "DATA_LOSS"
        return "INTERNAL"
    if isinstance(exc, pa.ArrowKeyError):
        return "NOT_FOUND"
    if isinstance(exc, pa.ArrowNotImplementedError):
        return "UNIMPLEMENTED"
    if isinstance(exc, pa.ArrowInvalid):
        if "resource exhausted" in msg:
            return "RESOURCE_EXHAUSTED"
        if "precondition" in msg:
            return "FAILED_PRECONDITION"
        if "out-of-range" in msg or "out of range" in msg:
            return "OUT_OF_RANGE"
        return "INVALID_ARGUMENT"
    if "already exists" in msg:
        return "ALREADY_EXISTS"
    return "UNKNOWN"


def adbc_connect(location: str, user: str | None = ADMIN_USER, password: str | None = ADMIN_PASSWORD,
                 **db_kwargs):
    """An ADBC Flight SQL DB-API connection (autocommit: Dataport has no transactions)."""
    from adbc_driver_flightsql import dbapi

    kw = {}
    if user is not None:
        kw = {"username": user, "password": password}
    kw.update({k: str(v) for k, v in db_kwargs.items()})
    return dbapi.connect(location, db_kwargs=kw, autocommit=True)


def adbc_grpc_status(exc: BaseException) -> str | None:
    """The gRPC status the ADBC Flight SQL driver reported: it writes '<message> (<GoCodeName>;
    <context>)' and sets vendor_code to the numeric gRPC code."""
    msg = str(exc)
    for name, go in GO_CODE_NAMES.items():
        if f"({go};" in msg:
            return name
    code = getattr(exc, "vendor_code", None)
    if isinstance(code, int) and 0 < code < len(GRPC_CODES):
        return GRPC_CODES[code]
    return None


# --------------------------------------------------------------------------------------------
# Process memory
# --------------------------------------------------------------------------------------------


def proc_status_kib(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


# --------------------------------------------------------------------------------------------
# Responses and metrics
# --------------------------------------------------------------------------------------------


def assert_error(resp: requests.Response, status: int, code: str) -> dict:
    """Asserts the documented error envelope and returns its `error` object."""
    assert resp.status_code == status, (
        f"expected {status} {code}, got {resp.status_code}: {resp.text[:2000]}"
    )
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:2000]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    err = body["error"]
    assert err.get("code") == code, f"expected code {code}, got {err}"
    assert isinstance(err.get("message"), str) and err["message"], err
    assert isinstance(err.get("request_id"), str) and err["request_id"], err
    return err


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text: str) -> list[tuple[str, dict, float]]:
    """Parses Prometheus text exposition into (name, labels, value) samples."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparseable metrics line: {line!r}"
        name, labels_text, value = m.groups()
        labels = {}
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = _LABEL.match(labels_text, pos)
                assert lm, f"unparseable labels in {line!r}"
                labels[lm.group(1)] = bytes(lm.group(2), "utf-8").decode("unicode_escape")
                pos = lm.end()
        samples.append((name, labels, float(value)))
    return samples


def metric(samples, name: str, **labels) -> float | None:
    """Sum of the samples named `name` whose labels include `labels`; None if there are none."""
    hits = [v for n, ls, v in samples
            if n == name and all(ls.get(k) == str(w) for k, w in labels.items())]
    return sum(hits) if hits else None


def run_async(coro):
    """`asyncio.run(coro)` in a thread of its own: the browser tests' Playwright (sync API)
    keeps an event loop running in the main thread once started, and asyncio.run refuses to
    start inside a running loop."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns it, or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_parquet_atomic(table: pa.Table, dest: Path) -> None:
    """Writes `dest` via a dot-prefixed temp name in the same folder, then renames."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp"
    pq.write_table(table, tmp)
    os.rename(tmp, dest)


def sql_str(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Value normalisation and comparison
# --------------------------------------------------------------------------------------------


def kind_of(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "num"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "ts"
    if pa.types.is_boolean(t):
        return "bool"
    return "str"


def norm(v, kind: str):
    """Maps a value from any reader (JSON, CSV text, Arrow, DuckDB) to a comparable form:
    numbers -> float, dates -> 'YYYY-MM-DD', timestamps -> ISO text, bools -> bool."""
    if v is None:
        return None
    if kind == "num":
        if isinstance(v, str):
            v = v.strip()
            if v == "":
                return None
        if isinstance(v, bool):
            return float(v)
        return float(decimal.Decimal(v) if isinstance(v, str) else v)
    if kind == "date":
        return v.isoformat()[:10] if isinstance(v, (dt.date, dt.datetime)) else str(v)[:10]
    if kind == "ts":
        s = v.isoformat() if isinstance(v, dt.datetime) else str(v)
        return s.replace("T", " ").rstrip("Z")
    if kind == "bool":
        if isinstance(v, str):
            return v.strip().lower() in ("true", "t", "1")
        return bool(v)
    return v if isinstance(v, str) else str(v)


def norm_rows(rows, kinds) -> list[tuple]:
    return [tuple(norm(v, k) for v, k in zip(row, kinds)) for row in rows]


def arrow_rows(table: pa.Table) -> list[tuple]:
    cols = [c.to_pylist() for c in table.columns]
    return list(zip(*cols)) if cols else []


def values_close(a, b, rel: float, abs_tol: float = 1e-9) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)
    return a == b


def rows_close(a: tuple, b: tuple, rel: float, abs_tols: list[float] | None = None) -> bool:
    tols = abs_tols or [1e-9] * len(a)
    return len(a) == len(b) and all(values_close(x, y, rel, t) for x, y, t in zip(a, b, tols))


def abs_tolerances(schema) -> list[float]:
    """A decimal column of scale s is exact only to 10^-s (DataFusion's AVG of a decimal is a
    decimal of scale 6 where DuckDB answers a double): allow one unit in the last place."""
    return [10.0 ** -f.type.scale if pa.types.is_decimal(f.type) else 1e-9 for f in schema]


def diff_ordered(actual: list[tuple], expected: list[tuple], rel: float = 1e-9) -> list[str]:
    """Row-by-row comparison in order; returns human-readable problems (empty when equal)."""
    problems = []
    if len(actual) != len(expected):
        problems.append(f"row count {len(actual)} != expected {len(expected)}")
    for i, (a, e) in enumerate(zip(actual, expected)):
        if not rows_close(a, e, rel):
            problems.append(f"row {i}: got {a!r}\n        expected {e!r}")
            if len(problems) > 10:
                problems.append("...")
                break
    return problems


def _num_sort_key(row: tuple):
    return tuple((0, 0.0) if v is None else (1, v) for v in row)


def diff_unordered(actual: list[tuple], expected: list[tuple], kinds: list[str],
                   rel: float = 1e-6, abs_tols: list[float] | None = None) -> list[str]:
    """Multiset comparison with numeric tolerance. Rows are bucketed by their exact
    (non-numeric) values, then matched within each bucket."""
    def split(row):
        exact = tuple(v for v, k in zip(row, kinds) if k != "num")
        nums = tuple(v for v, k in zip(row, kinds) if k == "num")
        return exact, nums

    buckets: dict = {}
    for side, rows in ((0, actual), (1, expected)):
        for row in rows:
            exact, nums = split(row)
            buckets.setdefault(repr(exact), ([], []))[side].append((nums, row))

    only_actual, only_expected = [], []
    for a_list, e_list in buckets.values():
        a_list.sort(key=lambda x: _num_sort_key(x[0]))
        e_list.sort(key=lambda x: _num_sort_key(x[0]))
        if len(a_list) == len(e_list) and all(
            rows_close(a[1], e[1], rel, abs_tols) for a, e in zip(a_list, e_list)
        ):
            continue
        unmatched = list(e_list)
        for a in a_list:
            for j, e in enumerate(unmatched):
                if rows_close(a[1], e[1], rel, abs_tols):
                    del unmatched[j]
                    break
            else:
                only_actual.append(a[1])
        only_expected.extend(e[1] for e in unmatched)

    problems = []
    if len(actual) != len(expected):
        problems.append(f"row count {len(actual)} != expected {len(expected)}")
    if only_actual:
        problems.append(f"{len(only_actual)} rows only in actual, e.g.:\n  "
                        + "\n  ".join(map(repr, only_actual[:10])))
    if only_expected:
        problems.append(f"{len(only_expected)} rows only in expected, e.g.:\n  "
                        + "\n  ".join(map(repr, only_expected[:10])))
    return problems


# --------------------------------------------------------------------------------------------
# SQL text helpers
# --------------------------------------------------------------------------------------------


def split_statements(sql: str) -> list[str]:
    """Drops `--` comments and splits on `;` outside string literals."""
    out, buf, in_str, i = [], [], False, 0
    while i < len(sql):
        c = sql[i]
        if not in_str and sql.startswith("--", i):
            nl = sql.find("\n", i)
            i = len(sql) if nl < 0 else nl
            continue
        if c == "'":
            in_str = not in_str
        if c == ";" and not in_str:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def main_query(text: str) -> str:
    """The query statement of a TPC-H file: the only statement, or else the last SELECT/WITH."""
    stmts = split_statements(text)
    if len(stmts) == 1:
        return stmts[0]
    queries = [s for s in stmts if re.match(r"(?is)^\s*(select|with)\b", s)]
    assert queries, f"no query statement in {text!r}"
    return queries[-1]


def top_level_order_by(sql: str) -> list[tuple[str, bool]] | None:
    """Items (expression, descending) of the outermost ORDER BY, or None if there is none."""
    depth, in_str, masked = 0, False, []
    for c in sql:
        if c == "'":
            in_str = not in_str
        if not in_str:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        masked.append(c if depth == 0 and not in_str and c not in "()" else " ")
    flat = "".join(masked).lower()
    hits = list(re.finditer(r"\border\s+by\b", flat))
    if not hits:
        return None
    start = hits[-1].end()
    m = re.search(r"\b(limit|offset|fetch)\b", flat[start:])
    end = start + m.start() if m else len(sql)
    # Split the original text on commas that are at depth 0 (commas in `flat` survive masking
    # only at depth 0).
    items, last = [], start
    for i in range(start, end):
        if flat[i] == ",":
            items.append(sql[last:i])
            last = i + 1
    items.append(sql[last:end])
    result = []
    for item in items:
        item = re.sub(r"(?i)\s+nulls\s+(first|last)\s*$", "", item.strip())
        desc = bool(re.search(r"(?i)\s+desc$", item))
        expr = re.sub(r"(?i)\s+(asc|desc)$", "", item).strip()
        result.append((expr, desc))
    return result


def check_sorted(rows: list[tuple], names: list[str], order_by: list[tuple[str, bool]]) -> list[str]:
    """Checks `rows` (raw values) are sorted by the ORDER BY items that name output columns.
    Stops at the first item that is not an output column (later keys can't be checked)."""
    lower = [n.lower() for n in names]
    keys = []
    for expr, desc in order_by:
        e = expr.lower().strip('"')
        e = e.split(".")[-1] if "." in e and e.split(".")[-1] in lower else e
        if e.isdigit():
            keys.append((int(e) - 1, desc))
        elif e in lower:
            keys.append((lower.index(e), desc))
        else:
            break
    for i in range(1, len(rows)):
        prev, cur = rows[i - 1], rows[i]
        for idx, desc in keys:
            p, c = prev[idx], cur[idx]
            if p is None or c is None:
                break  # null ordering is not checked
            if p == c:
                continue
            if (p > c) != desc:
                return [f"rows {i - 1} and {i} out of order on {names[idx]} "
                        f"({'desc' if desc else 'asc'}): {prev!r} then {cur!r}"]
            break
    return []


# --------------------------------------------------------------------------------------------
# Raw HTTP (for requests whose body the server may refuse before reading it)
# --------------------------------------------------------------------------------------------


def raw_http(hostport: str, method: str, path: str, body: bytes = b"",
             headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    """Sends one HTTP/1.1 request on a fresh socket (Connection: close), ignoring errors while
    sending (a server may answer and stop reading early), and returns (status, headers, body)."""
    import socket

    host, port = hostport.rsplit(":", 1)
    head = [f"{method} {path} HTTP/1.1", f"Host: {hostport}", "Connection: close",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    head_end = raw.find(b"\r\n\r\n")
    assert head_end >= 0, f"no HTTP response received (got {raw[:200]!r})"
    lines = raw[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    payload = raw[head_end + 4:]
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        out, pos = [], 0
        while True:
            eol = payload.find(b"\r\n", pos)
            size = int(payload[pos:eol].split(b";")[0], 16)
            if size == 0:
                break
            out.append(payload[eol + 2:eol + 2 + size])
            pos = eol + 2 + size + 2
        payload = b"".join(out)
    return status, hdrs, payload


# --------------------------------------------------------------------------------------------
# TPC-H
# --------------------------------------------------------------------------------------------


def tpch_query_ids() -> list[str]:
    files = sorted(TPCH_QUERIES.glob("q*.sql"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return [p.stem for p in files] or [f"q{i}" for i in range(1, 23)]


def tpch_sql(qid: str) -> str:
    path = TPCH_QUERIES / f"{qid}.sql"
    assert path.exists(), f"TPC-H query file missing: {path} (set DATAPORT_TPCH_QUERIES)"
    return main_query(path.read_text())


def tpch_diffs_over_flight(location: str, duck) -> list[str]:
    """Every TPC-H query through Flight SQL (ADBC) at `location`, compared with `duck`'s answer."""
    conn = adbc_connect(location)
    problems = []
    try:
        for qid in tpch_query_ids():
            sql = tpch_sql(qid)
            with conn.cursor() as cur:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
            problems += diff_against_duckdb(qid, sql, table, duck)
    finally:
        conn.close()
    return problems


def diff_against_duckdb(qid: str, sql: str, table: pa.Table, duck) -> list[str]:
    """Compares a server result (Arrow) with DuckDB's answer to the same SQL: same column count,
    same rows as a multiset with numeric tolerance, and sorted by the top-level ORDER BY.
    Returns problems, the first line describing both sides' columns (empty list when equal)."""
    names = table.column_names
    kinds = [kind_of(f.type) for f in table.schema]
    raw = arrow_rows(table)
    cur = duck.execute(sql)
    duck_names = [d[0] for d in cur.description]
    expected = cur.fetchall()
    header = (f"{qid}: server columns {names} ({[str(f.type) for f in table.schema]}), "
              f"DuckDB columns {duck_names}")
    if len(names) != len(duck_names):
        return [header, "column count differs"]
    if len(raw) != len(expected):
        return [header, f"row count {len(raw)} != DuckDB {len(expected)}"]
    problems = diff_unordered(norm_rows(raw, kinds), norm_rows(expected, kinds), kinds, rel=1e-6,
                              abs_tols=abs_tolerances(table.schema))
    order_by = top_level_order_by(sql)
    if order_by:
        problems += check_sorted(raw, names, order_by)
    return [header] + problems if problems else []


# --------------------------------------------------------------------------------------------
# Documentation snippets
# --------------------------------------------------------------------------------------------

DOCS = REPO / "docs"
# What the docs write where the tests have their own values.
DOC_USER = "alice"
DOC_LOCATION = "grpc://localhost:50051"
DOC_TLS_LOCATION = "grpc+tls://dataport.example.com:50051"
DOC_CA_FILE = "dataport-ca.pem"


def doc_snippets(page: str) -> dict[str, str]:
    """The code blocks of docs/<page> that follow a `<!-- snippet: NAME -->` line, by name."""
    text = (DOCS / page).read_text()
    found = re.findall(r"<!-- snippet: ([\w-]+) -->\s*\n```\w*\n(.*?)\n```", text, re.S)
    snippets = dict(found)
    assert len(snippets) == len(found), f"duplicate snippet names in {page}"
    return snippets


def adapt_snippet(code: str, location: str, user: str = ADMIN_USER, tls_location: str | None = None,
                  ca_file: str | None = None) -> str:
    """A docs snippet with the test server's address, user name (and TLS CA file) swapped in."""
    code = code.replace(DOC_LOCATION, location).replace(f'"{DOC_USER}"', f'"{user}"')
    code = code.replace(f'b"{DOC_USER}"', f'b"{user}"')
    if tls_location:
        code = code.replace(DOC_TLS_LOCATION, tls_location)
    if ca_file:
        code = code.replace(f'"{DOC_CA_FILE}"', repr(str(ca_file)))
    return code
