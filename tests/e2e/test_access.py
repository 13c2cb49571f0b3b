"""Access control end to end: who may read what (groups, private tables, grants with row filters
and hidden columns), over every surface (HTTP, Flight SQL by hand, ADBC); logins, session and
API tokens (forged, expired, refreshed, revoked), login rate limits, the audit log, the
protected routes, and the `dataport user|grant|revoke|token|audit` commands.

The shared demo server (`server`) has `admin` (data-ops), `analyst` (dataread) and `insider`
(dataread, data-private); `tpch.customer` is the one private table. A table someone may not read
must look exactly like a table that does not exist, so most probes here run twice, once on
`customer` and once on the missing `customerx`, and compare the errors with the table name
(and request ids) normalised.

Rules for sharing the demo server: tests only add users and groups with unique names and revoke
their grants afterwards, and never send a wrong password to it (the login rate limit counts
failures per client address, and every test connects from 127.0.0.1). Tests that need failed
logins, or that change the administrator, start their own server on a copy of the demo data
(login attempts are kept in the data dir's state database, so a fresh copy starts clean).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests
from adbc_driver_flightsql import DatabaseOptions, dbapi

import flight_proto as fp
from e2e_util import (ADMIN_PASSWORD, ADMIN_USER, TPCH_FOREIGN_KEYS, TPCH_TABLES, FlightSession,
                      adbc_connect, adbc_grpc_status, assert_error, flight_status, wait_for)

HIDDEN = "customer"       # the demo's private table
MISSING = "customerx"     # a table that does not exist
PRIVATE_TABLE = f"tpch.{HIDDEN}"
CATALOG, SCHEMA = "dataport", "tpch"
TOKEN_TTL = 30 * 24 * 3600
AUTH_HEADER = DatabaseOptions.AUTHORIZATION_HEADER.value

# Queries that reach the table in different ways; `{t}` / `{T}` is the table name (lower / upper
# case). Each must fail for `analyst` exactly as it fails on a missing table, and run for
# `insider` and `admin`.
PROBES = {
    "qualified": "select * from tpch.{t} limit 5",
    "unqualified": "select * from {t} limit 5",
    "quoted": 'select * from "tpch"."{t}" limit 5',
    "catalog-qualified": "select * from dataport.tpch.{t} limit 5",
    "upper-case": "select * from TPCH.{T} limit 5",
    "count": "select count(*) as n from tpch.{t}",
    "column-list": "select c_custkey, c_name from tpch.{t} limit 5",
    "cte": "with c as (select * from tpch.{t}) select count(*) as n from c",
    "nested-cte": "with a as (select c_custkey from tpch.{t}), b as (select * from a) "
                  "select count(*) as n from b",
    "derived-table": "select count(*) as n from (select c_custkey from tpch.{t}) s",
    "in-subquery": "select count(*) as n from tpch.orders where o_custkey in "
                   "(select c_custkey from tpch.{t})",
    "exists": "select count(*) as n from tpch.orders o where exists "
              "(select 1 from tpch.{t} c where c.c_custkey = o.o_custkey)",
    "scalar-subquery": "select (select count(*) from tpch.{t}) as n",
    "join": "select count(*) as n from tpch.orders o join tpch.{t} c on o.o_custkey = c.c_custkey",
    "left-join": "select count(*) as n from tpch.nation n left join tpch.{t} c "
                 "on c.c_nationkey = n.n_nationkey",
    "union": "select c_name as name from tpch.{t} union all select n_name from tpch.nation limit 10",
    "explain": "explain select * from tpch.{t}",
    "explain-join": "explain select count(*) from tpch.orders o join tpch.{t} c "
                    "on o.o_custkey = c.c_custkey",
    "describe": "describe tpch.{t}",
}
# Only compared with the missing table (whether they run for readers is not this module's concern).
EXTRA_PROBES = {
    "show-columns": "show columns from tpch.{t}",
}
ADBC_PROBES = ["qualified", "unqualified", "join", "cte", "union", "explain"]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def fill(sql: str, table: str) -> str:
    return sql.replace("{t}", table).replace("{T}", table.upper())


def unique(prefix: str) -> str:
    """A fresh user or group name (lower-case letters, digits and '-')."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_password() -> str:
    """Follows the password rules: 8+ characters, upper, lower and a digit."""
    return f"Pw-{uuid.uuid4().hex[:12]}-Z9"


def read_password(demo_dir: Path, user: str) -> str:
    path = demo_dir / "auth" / f"{user}-password"
    assert path.exists(), f"the demo did not write {path}"
    password = path.read_text().strip()
    assert password, f"{path} is empty"
    return password


def strip_volatile(text: str) -> str:
    """An error message without what legitimately differs between two calls: request ids,
    uuids and pyarrow's gRPC debug context (timestamps, ports)."""
    text = text.split(". gRPC client debug context")[0]
    text = re.sub(r"\(request id [^)]*\)", "(request id)", text)
    text = _UUID.sub("<uuid>", text)
    text = re.sub(r'created_time:"[^"]*"', "", text)
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)


def normalise(text: str, table: str) -> str:
    """`strip_volatile`, and the table name replaced by a placeholder."""
    return re.sub(re.escape(table), "<table>", strip_volatile(text), flags=re.IGNORECASE)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def http_query(session: requests.Session, srv, sql: str) -> requests.Response:
    return session.post(srv.url("/api/v1/query"), json={"sql": sql}, timeout=120)


def query_ok(session: requests.Session, srv, sql: str) -> list[dict]:
    r = http_query(session, srv, sql)
    assert r.status_code == 200, f"{sql!r} -> {r.status_code}: {r.text[:1000]}"
    return r.json()


def http_error_signature(resp: requests.Response, table: str) -> tuple:
    """What a client can tell from an error response, with the table name normalised."""
    assert resp.status_code >= 400, f"expected an error, got {resp.status_code}: {resp.text[:500]}"
    body = resp.json()
    err = body.get("error") or {}
    return (resp.status_code, err.get("code"), normalise(err.get("message", ""), table),
            sorted(body), sorted(err))


def me(srv, token: str) -> requests.Response:
    return requests.get(srv.url("/api/v1/auth/me"), headers=bearer(token), timeout=60)


def login_response(srv, user: str, password: str) -> requests.Response:
    return requests.post(srv.url("/api/v1/auth/login"),
                         json={"username": user, "password": password}, timeout=60)


def session_for_token(token: str) -> requests.Session:
    s = requests.Session()
    s.headers.update(bearer(token))
    return s


def catalog_tables(session: requests.Session, srv) -> dict[str, dict]:
    r = session.get(srv.url("/api/v1/catalog"), timeout=60)
    assert r.status_code == 200, r.text[:1000]
    return {f"{s['name']}.{t['name']}": t for s in r.json()["schemas"] for t in s["tables"]}


def add_user(srv, groups=(), prefix: str = "u") -> tuple[str, str]:
    """`dataport user add` with a unique name and a rule-abiding password."""
    name, password = unique(prefix), new_password()
    args = ["user", "add", name, "--password-stdin"]
    if groups:
        args += ["--groups", ",".join(groups)]
    srv.cli(*args, input=password + "\n")
    return name, password


def cli_json(srv, *args: str):
    p = srv.cli(*args)
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"dataport {' '.join(args)} printed no JSON: {p.stdout[:1000]!r}") from None


def users_by_name(srv) -> dict[str, dict]:
    return {u["name"]: u for u in cli_json(srv, "user", "list", "--json")}


def grants_of(srv, group: str) -> list[dict]:
    return [g for g in cli_json(srv, "grants", "--json") if g["group"] == group]


def create_api_token(srv, user: str, *extra: str) -> tuple[str, str]:
    """(token, id) from `dataport token create`; the token is the last line of its output."""
    p = srv.cli("token", "create", user, *extra)
    lines = [ln.strip() for ln in p.stdout.strip().splitlines() if ln.strip()]
    assert lines, f"token create printed nothing: {p.stdout!r}"
    token = lines[-1]
    m = re.fullmatch(r"dpk_([A-Za-z0-9]+)_([A-Za-z0-9]+)", token)
    assert m, f"the last line is not a dpk_<id>_<secret> token: {token!r}"
    return token, m.group(1)


def tokens_by_id(srv, user: str | None = None) -> dict[str, dict]:
    args = ["token", "list"] + ([user] if user else []) + ["--json"]
    return {t["id"]: t for t in cli_json(srv, *args)}


# -- Flight -----------------------------------------------------------------------------------


def flight_error(fn) -> BaseException:
    try:
        fn()
    except (flight.FlightError, pa.ArrowException) as e:
        return e
    raise AssertionError("expected a Flight error, the call succeeded")


def expect_flight_status(fn, status: str) -> BaseException:
    e = flight_error(fn)
    got = flight_status(e)
    assert got == status, f"expected {status}, got {got} ({type(e).__name__}): {e}"
    return e


def flight_with_bearer(srv, token: str) -> str | None:
    """None if `select 1` runs on Flight with this bearer token, else the gRPC status name."""
    with FlightSession(srv.flight, user=None) as s:
        opts = s.call_options([(b"authorization", f"Bearer {token}".encode())])
        try:
            table = s.sql("select 1 as one", opts)
        except (flight.FlightError, pa.ArrowException) as e:
            return flight_status(e)
    assert table.to_pylist() == [{"one": 1}], table
    return None


def flight_outcome(fn, table: str) -> tuple:
    """A Flight call's result as something comparable: ('ok', rows) or ('error', status, message)."""
    try:
        result = fn()
    except (flight.FlightError, pa.ArrowException) as e:
        return ("error", flight_status(e), normalise(str(e), table))
    return ("ok", result.num_rows)


def fk_tuples(rows) -> set[tuple]:
    return {(r["fk_table_name"], r["fk_column_name"], r["pk_table_name"], r["pk_column_name"])
            for r in rows}


def tpch_table_rows(table: pa.Table) -> list[dict]:
    return [r for r in table.to_pylist() if r["db_schema_name"] == SCHEMA]


# -- ADBC -------------------------------------------------------------------------------------


def adbc_run(conn, sql: str) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def adbc_error(fn) -> dbapi.Error:
    with pytest.raises(dbapi.Error) as ei:
        fn()
    return ei.value


def adbc_signature(e: dbapi.Error, table: str) -> tuple:
    return (type(e).__name__, e.status_code, adbc_grpc_status(e), normalise(str(e), table))


def adbc_tpch_tables(conn, **kw) -> dict[str, dict]:
    """The tpch tables ADBC's GetObjects lists (empty when the schema is not listed)."""
    out = {}
    for cat in conn.adbc_get_objects(**kw).read_all().to_pylist():
        for sch in cat["catalog_db_schemas"] or []:
            if sch["db_schema_name"] == SCHEMA:
                for t in sch["db_schema_tables"] or []:
                    out[t["table_name"]] = t
    return out


def adbc_bearer_status(srv, token: str) -> str | None:
    """None if a fresh ADBC connection with this bearer header runs a query, else the gRPC status."""
    try:
        conn = adbc_connect(srv.flight, user=None, **{AUTH_HEADER: f"Bearer {token}"})
        try:
            assert adbc_run(conn, "select 1 as one").to_pylist() == [{"one": 1}]
        finally:
            conn.close()
    except dbapi.Error as e:
        return adbc_grpc_status(e)
    return None


# -- JWT --------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict, dict]:
    head, payload, _sig = token.split(".")
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(payload))


def jwt_encode(header: dict, payload: dict) -> str:
    enc = lambda d: b64url(json.dumps(d, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}"


_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def jwt_sign(payload: dict, key: bytes, alg: str = "HS256", header: dict | None = None) -> str:
    signing_input = jwt_encode(header or {"alg": alg, "typ": "JWT"}, payload)
    sig = hmac.new(key, signing_input.encode(), _DIGESTS[alg]).digest()
    return f"{signing_input}.{b64url(sig)}"


def jwt_secret(srv) -> bytes:
    """The server's HS256 key (settings.jwt_secret in the state database), as the bytes it signs with."""
    path = srv.data_dir / "state" / "dataport.sqlite"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT value FROM settings WHERE key = 'jwt_secret'").fetchone()
    finally:
        con.close()
    assert row and row[0], f"no jwt_secret in {path}"
    return row[0].encode()


def claims(sub: str, iat: int | None = None, exp: int | None = None, **extra) -> dict:
    iat = int(time.time()) if iat is None else iat
    c = {"sub": sub, "exp": iat + 3600 if exp is None else exp, "iat": iat, "iss": "dataport",
         "jti": uuid.uuid4().hex}
    c.update(extra)
    return c


def assert_token_refused(srv, token: str, what: str) -> None:
    """401 (with a challenge) on HTTP and UNAUTHENTICATED on Flight."""
    r = me(srv, token)
    assert_error(r, 401, "unauthenticated")
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), \
        f"{what}: 401 without a Bearer WWW-Authenticate header: {dict(r.headers)}"
    assert_error(requests.post(srv.url("/api/v1/query"), json={"sql": "select 1"},
                               headers=bearer(token), timeout=60), 401, "unauthenticated")
    status = flight_with_bearer(srv, token)
    assert status == "UNAUTHENTICATED", f"{what}: Flight answered {status or 'OK'} instead of UNAUTHENTICATED"


def assert_token_works(srv, token: str, user: str, what: str) -> None:
    r = me(srv, token)
    assert r.status_code == 200, f"{what}: /auth/me -> {r.status_code}: {r.text[:500]}"
    assert r.json()["user"] == user, r.json()
    status = flight_with_bearer(srv, token)
    assert status is None, f"{what}: Flight refused the token with {status}"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passwords(server, demo_dir) -> dict[str, str]:
    return {"admin": ADMIN_PASSWORD, "analyst": read_password(demo_dir, "analyst"),
            "insider": read_password(demo_dir, "insider")}


@pytest.fixture(scope="module")
def http_as(server, passwords):
    """HTTP sessions on the demo server by user name."""
    sessions = {"admin": server.session}
    for user in ("analyst", "insider"):
        sessions[user] = server.session_as(user, passwords[user])
    yield sessions
    for user in ("analyst", "insider"):
        sessions[user].close()


@pytest.fixture(scope="module")
def flight_as(server, passwords):
    sessions = {user: FlightSession(server.flight, user, passwords[user])
                for user in ("admin", "analyst", "insider")}
    yield sessions
    for s in sessions.values():
        s.close()


@pytest.fixture(scope="module")
def adbc_as(server, passwords):
    conns = {user: adbc_connect(server.flight, user, passwords[user]) for user in ("analyst", "insider")}
    yield conns
    for c in conns.values():
        c.close()


@pytest.fixture(scope="module")
def customer_columns(server) -> list[str]:
    """The private table's columns, as the administrator sees them."""
    r = server.get(f"/api/v1/catalog/{SCHEMA}/{HIDDEN}")
    assert r.status_code == 200, r.text[:500]
    return [c["name"] for c in r.json()["columns"]]


@pytest.fixture
def make_user(server):
    """Unique users on the demo server (or another server), removed afterwards."""
    made = []

    def make(groups=(), srv=None, prefix: str = "u") -> tuple[str, str]:
        srv = srv or server
        name, password = add_user(srv, groups, prefix)
        made.append((srv, name))
        return name, password

    yield make
    for srv, name in made:
        srv.cli("user", "remove", name, check=False)


@pytest.fixture
def grant(server):
    """`dataport grant` on the demo server (or another); successful grants are revoked afterwards."""
    added = []

    def do(group: str, target: str, *extra: str, srv=None, check: bool = True):
        srv = srv or server
        p = srv.cli("grant", group, target, *extra, check=check)
        if p.returncode == 0:
            added.append((srv, group, target))
        return p

    yield do
    for srv, group, target in added:
        srv.cli("revoke", group, target, check=False)


# --------------------------------------------------------------------------------------------
# 1. A private table is invisible to `dataread` over HTTP
# --------------------------------------------------------------------------------------------


def test_analyst_reads_public_tables(server, http_as):
    """Control for the probes below: the analyst's session works and reads public tables."""
    assert query_ok(http_as["analyst"], server, "select count(*) as n from tpch.orders") == [{"n": 150000}]
    assert query_ok(http_as["analyst"], server, "select count(*) as n from tpch.nation") == [{"n": 25}]


@pytest.mark.parametrize("probe", sorted({**PROBES, **EXTRA_PROBES}))
def test_private_table_looks_missing_over_http(server, http_as, probe):
    sql = {**PROBES, **EXTRA_PROBES}[probe]
    analyst = http_as["analyst"]
    missing = http_query(analyst, server, fill(sql, MISSING))
    assert missing.status_code >= 400, \
        f"sanity: {fill(sql, MISSING)!r} on a missing table answered {missing.status_code}: {missing.text[:500]}"
    denied = http_query(analyst, server, fill(sql, HIDDEN))
    assert denied.status_code >= 400, \
        f"analyst read the private table with {fill(sql, HIDDEN)!r}: {denied.text[:500]}"
    assert http_error_signature(denied, HIDDEN) == http_error_signature(missing, MISSING), (
        f"the private table is distinguishable from a missing one:\n"
        f"  private: {denied.status_code} {denied.text[:500]}\n  missing: {missing.status_code} {missing.text[:500]}")
    for col in ("c_phone", "c_acctbal", "c_mktsegment"):
        assert col not in denied.text or col in fill(sql, HIDDEN), f"{col} leaked: {denied.text[:500]}"


def test_private_table_error_names_the_table(server, http_as):
    err = assert_error(http_query(http_as["analyst"], server, f"select * from {PRIVATE_TABLE}"),
                       404, "not_found")
    assert "not found" in err["message"].lower() and HIDDEN in err["message"], err


@pytest.mark.parametrize("user", ["insider", "admin"])
@pytest.mark.parametrize("probe", sorted(PROBES))
def test_private_table_readable_with_privilege(server, http_as, user, probe):
    rows = query_ok(http_as[user], server, fill(PROBES[probe], HIDDEN))
    assert isinstance(rows, list) and rows, f"{user}: {probe} answered no rows"


def test_private_table_count_with_privilege(server, http_as):
    for user in ("insider", "admin"):
        assert query_ok(http_as[user], server, f"select count(*) as n from {PRIVATE_TABLE}") == \
            [{"n": 15000}], user


def test_information_schema_hides_private_table(server, http_as):
    analyst, insider = http_as["analyst"], http_as["insider"]
    sql = "select table_schema, table_name from information_schema.tables where table_name = 'customer'"
    assert query_ok(analyst, server, sql) == [], "analyst sees customer in information_schema.tables"
    assert query_ok(insider, server, sql) == [{"table_schema": SCHEMA, "table_name": HIDDEN}]

    sql = "select table_name, column_name from information_schema.columns where table_schema = 'tpch'"
    cols = query_ok(analyst, server, sql)
    assert {"table_name": "orders", "column_name": "o_custkey"} in cols, "sanity: orders columns missing"
    leaked = [r for r in cols if r["table_name"] == HIDDEN or r["column_name"].startswith("c_")]
    assert not leaked, f"information_schema.columns shows the private table to analyst: {leaked[:5]}"
    assert query_ok(analyst, server, "select column_name from information_schema.columns "
                                     "where table_name = 'customer'") == []
    insider_cols = {r["column_name"] for r in query_ok(insider, server, sql) if r["table_name"] == HIDDEN}
    assert "c_phone" in insider_cols, insider_cols


def test_show_tables_hides_private_table(server, http_as):
    def names(user):
        return {(r["table_schema"], r["table_name"]) for r in query_ok(http_as[user], server, "show tables")}
    analyst = names("analyst")
    assert (SCHEMA, "orders") in analyst, analyst
    assert (SCHEMA, HIDDEN) not in analyst, "SHOW TABLES lists customer for analyst"
    assert (SCHEMA, HIDDEN) in names("insider")


def test_catalog_hides_private_table_and_its_keys(server, http_as):
    tables = catalog_tables(http_as["analyst"], server)
    assert set(tables) == {f"tpch.{t}" for t in TPCH_TABLES} - {PRIVATE_TABLE}, sorted(tables)
    for full, t in tables.items():
        for fk in t["foreign_keys"]:
            assert fk["references"]["table"] != HIDDEN, f"{full} shows a foreign key to customer: {fk}"
    assert tables["tpch.orders"]["foreign_keys"] == [], tables["tpch.orders"]["foreign_keys"]
    lineitem_fks = [(fk["columns"], fk["references"]["table"]) for fk in tables["tpch.lineitem"]["foreign_keys"]]
    assert (["l_orderkey"], "orders") in lineitem_fks, "sanity: keys between public tables are listed"

    insider = catalog_tables(http_as["insider"], server)
    assert insider[PRIVATE_TABLE]["private"] is True
    assert any(fk["references"]["table"] == HIDDEN for fk in insider["tpch.orders"]["foreign_keys"]), \
        insider["tpch.orders"]["foreign_keys"]


def test_catalog_table_endpoint_404_like_missing(server, http_as):
    analyst = http_as["analyst"]
    denied = analyst.get(server.url(f"/api/v1/catalog/{SCHEMA}/{HIDDEN}"), timeout=60)
    missing = analyst.get(server.url(f"/api/v1/catalog/{SCHEMA}/nosuchtable"), timeout=60)
    assert_error(missing, 404, "not_found")
    assert_error(denied, 404, "not_found")
    assert http_error_signature(denied, HIDDEN) == http_error_signature(missing, "nosuchtable"), \
        f"private: {denied.text}\nmissing: {missing.text}"
    r = http_as["insider"].get(server.url(f"/api/v1/catalog/{SCHEMA}/{HIDDEN}"), timeout=60)
    assert r.status_code == 200 and r.json()["name"] == HIDDEN, r.text[:500]


def test_me_reports_groups(server, http_as):
    expected = {"analyst": {"user": "analyst", "groups": ["dataread"], "admin": False},
                "insider": {"user": "insider", "groups": ["data-private", "dataread"], "admin": False},
                "admin": {"user": "admin", "groups": ["data-ops"], "admin": True}}
    for user, body in expected.items():
        r = http_as[user].get(server.url("/api/v1/auth/me"), timeout=60)
        assert r.status_code == 200, r.text[:500]
        assert r.json() == body, f"{user}: {r.json()}"


# --------------------------------------------------------------------------------------------
# 2. The same over Flight SQL (ADBC, and pyarrow with hand-built commands)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("probe", ADBC_PROBES)
def test_private_table_looks_missing_over_adbc(adbc_as, probe):
    conn = adbc_as["analyst"]
    missing = adbc_error(lambda: adbc_run(conn, fill(PROBES[probe], MISSING)))
    denied = adbc_error(lambda: adbc_run(conn, fill(PROBES[probe], HIDDEN)))
    assert adbc_signature(denied, HIDDEN) == adbc_signature(missing, MISSING), \
        f"private: {denied!r}\nmissing: {missing!r}"
    if probe == "qualified":
        assert adbc_grpc_status(denied) == "NOT_FOUND", denied
    # the connection still works, and insider reads the table
    assert adbc_run(conn, "select count(*) as n from tpch.nation").to_pylist() == [{"n": 25}]
    assert adbc_run(adbc_as["insider"], fill(PROBES[probe], HIDDEN)).num_rows > 0


def test_adbc_get_objects_hides_private_table(adbc_as):
    tables = adbc_tpch_tables(adbc_as["analyst"], depth="all")
    assert "orders" in tables, f"sanity: {sorted(tables)}"
    assert HIDDEN not in tables, "GetObjects lists customer for analyst"
    for name, t in tables.items():
        cols = [c["column_name"] for c in t["table_columns"] or []]
        assert not [c for c in cols if c.startswith("c_")], f"{name}: {cols}"
    assert adbc_tpch_tables(adbc_as["analyst"], depth="tables", table_name_filter="cust%") == {}
    assert HIDDEN in adbc_tpch_tables(adbc_as["insider"], depth="tables")


def test_adbc_get_table_schema_private_like_missing(adbc_as):
    conn = adbc_as["analyst"]
    missing = adbc_error(lambda: conn.adbc_get_table_schema(MISSING, db_schema_filter=SCHEMA))
    denied = adbc_error(lambda: conn.adbc_get_table_schema(HIDDEN, db_schema_filter=SCHEMA))
    assert adbc_signature(denied, HIDDEN) == adbc_signature(missing, MISSING), \
        f"private: {denied!r}\nmissing: {missing!r}"
    schema = adbc_as["insider"].adbc_get_table_schema(HIDDEN, db_schema_filter=SCHEMA)
    assert "c_phone" in schema.names


@pytest.mark.parametrize("probe", ["qualified", "join", "explain"])
def test_private_table_looks_missing_over_flight(flight_as, probe):
    s = flight_as["analyst"]
    missing = flight_error(lambda: s.sql(fill(PROBES[probe], MISSING)))
    denied = flight_error(lambda: s.sql(fill(PROBES[probe], HIDDEN)))
    assert flight_status(denied) == flight_status(missing) == "NOT_FOUND", f"{denied}\n{missing}"
    assert normalise(str(denied), HIDDEN) == normalise(str(missing), MISSING), \
        f"private: {denied}\nmissing: {missing}"
    assert flight_as["insider"].sql(fill(PROBES[probe], HIDDEN)).num_rows > 0


def test_flight_get_tables_hides_private_table(flight_as):
    s = flight_as["analyst"]
    rows = tpch_table_rows(s.command(fp.command_get_tables()))
    names = {r["table_name"] for r in rows}
    assert names == set(TPCH_TABLES) - {HIDDEN}, sorted(names)
    rows = tpch_table_rows(s.command(fp.command_get_tables(table_name_filter_pattern="cust%",
                                                           include_schema=True)))
    assert rows == [], rows
    schemas = s.command(fp.command_get_db_schemas()).column("db_schema_name").to_pylist()
    assert SCHEMA in schemas, schemas
    insider = {r["table_name"] for r in tpch_table_rows(flight_as["insider"].command(fp.command_get_tables()))}
    assert HIDDEN in insider


def test_flight_keys_hide_private_table(flight_as):
    s = flight_as["analyst"]
    imported = s.command(fp.command_get_imported_keys("orders", CATALOG, SCHEMA)).to_pylist()
    assert fk_tuples(imported) == set(), f"orders -> customer key shown to analyst: {imported}"
    exported = s.command(fp.command_get_exported_keys("nation", CATALOG, SCHEMA)).to_pylist()
    assert fk_tuples(exported) == {fk for fk in TPCH_FOREIGN_KEYS
                                   if fk[2] == "nation" and fk[0] != HIDDEN}, exported
    insider = flight_as["insider"].command(fp.command_get_imported_keys("orders", CATALOG, SCHEMA))
    assert fk_tuples(insider.to_pylist()) == {("orders", "o_custkey", HIDDEN, "c_custkey")}


@pytest.mark.parametrize("command", ["primary_keys", "exported_keys", "imported_keys", "cross_reference"])
def test_flight_key_commands_private_like_missing(flight_as, command):
    def call(s, table):
        cmd = {
            "primary_keys": lambda: fp.command_get_primary_keys(table, CATALOG, SCHEMA),
            "exported_keys": lambda: fp.command_get_exported_keys(table, CATALOG, SCHEMA),
            "imported_keys": lambda: fp.command_get_imported_keys(table, CATALOG, SCHEMA),
            "cross_reference": lambda: fp.command_get_cross_reference(table, "orders", CATALOG, SCHEMA,
                                                                      CATALOG, SCHEMA),
        }[command]()
        return lambda: s.command(cmd)

    s = flight_as["analyst"]
    denied = flight_outcome(call(s, HIDDEN), HIDDEN)
    missing = flight_outcome(call(s, MISSING), MISSING)
    assert denied == missing, f"{command}: private {denied} vs missing {missing}"
    assert denied[0] == "error" or denied[1] == 0, denied
    if command == "primary_keys":
        insider = flight_as["insider"].command(fp.command_get_primary_keys(HIDDEN, CATALOG, SCHEMA))
        assert insider.column("column_name").to_pylist() == ["c_custkey"], "sanity: insider sees the key"


# --------------------------------------------------------------------------------------------
# 3. Grants: row filters, hidden columns, schema grants, revocation, validation
# --------------------------------------------------------------------------------------------

EU_FILTER = "c_nationkey = 7"
EU_HIDDEN = ["c_phone", "c_acctbal"]


class Share:
    """A group with a restricted grant on tpch.customer, and two members: `user` (also in
    dataread) and `only` (just the group)."""

    def __init__(self, server):
        self.server = server
        self.group = unique("eu")
        self.users: list[str] = []
        self.sessions: list[requests.Session] = []

    def setup(self):
        server = self.server
        self.user, self.password = add_user(server, [self.group, "dataread"], "u-eu")
        self.users.append(self.user)
        self.only, self.only_password = add_user(server, [self.group], "u-euonly")
        self.users.append(self.only)
        self.cli = server.cli("grant", self.group, PRIVATE_TABLE, "--row-filter", EU_FILTER,
                              "--hide-columns", ",".join(EU_HIDDEN))
        self.http = server.session_as(self.user, self.password)
        self.sessions.append(self.http)
        self.http_only = server.session_as(self.only, self.only_password)
        self.sessions.append(self.http_only)

    def close(self):
        for s in self.sessions:
            s.close()
        self.server.cli("revoke", self.group, PRIVATE_TABLE, check=False)
        for name in self.users:
            self.server.cli("user", "remove", name, check=False)


@pytest.fixture(scope="module")
def eu(server):
    share = Share(server)
    try:
        share.setup()
        yield share
    finally:
        share.close()


@pytest.fixture(scope="module")
def eu_expected(server) -> dict:
    """What the administrator counts for the filter."""
    q = server.query_json
    return {
        "count": q(f"select count(*) as n from {PRIVATE_TABLE} where {EU_FILTER}")[0]["n"],
        "keys": sorted(r["c_custkey"] for r in q(f"select c_custkey from {PRIVATE_TABLE} where {EU_FILTER}")),
        "orders": q(f"select count(*) as n from tpch.orders o join {PRIVATE_TABLE} c "
                    f"on o.o_custkey = c.c_custkey where c.{EU_FILTER}")[0]["n"],
    }


def test_grant_is_listed(server, eu):
    assert "granted" in eu.cli.stdout.lower(), eu.cli.stdout
    [g] = grants_of(server, eu.group)
    assert (g["schema"], g["table"], g["row_filter"]) == (SCHEMA, HIDDEN, EU_FILTER), g
    assert sorted(g["hidden_columns"]) == sorted(EU_HIDDEN), g
    assert eu.group in server.cli("grants").stdout


def test_row_filter_limits_rows(server, eu, eu_expected):
    assert 0 < eu_expected["count"] < 15000, eu_expected
    assert query_ok(eu.http, server, f"select count(*) as n from {PRIVATE_TABLE}") == \
        [{"n": eu_expected["count"]}]
    keys = sorted(r["c_custkey"] for r in query_ok(eu.http, server, f"select c_custkey from {PRIVATE_TABLE}"))
    assert keys == eu_expected["keys"]
    # no predicate of the caller's widens the share
    assert query_ok(eu.http, server, f"select count(*) as n from {PRIVATE_TABLE} where c_nationkey <> 7") == \
        [{"n": 0}]
    assert query_ok(eu.http, server, f"select count(*) as n from {PRIVATE_TABLE} where c_nationkey = 7 "
                                     "or c_nationkey <> 7 or c_nationkey is null") == [{"n": eu_expected["count"]}]


def test_row_filter_in_aggregates_and_joins(server, eu, eu_expected):
    rows = query_ok(eu.http, server, f"select c_nationkey, count(*) as n from {PRIVATE_TABLE} "
                                     "group by c_nationkey order by c_nationkey")
    assert rows == [{"c_nationkey": 7, "n": eu_expected["count"]}], rows
    joined = query_ok(eu.http, server, f"select count(*) as n from tpch.orders o join {PRIVATE_TABLE} c "
                                       "on o.o_custkey = c.c_custkey")
    assert joined == [{"n": eu_expected["orders"]}], joined
    via_cte = query_ok(eu.http, server, f"with c as (select * from {PRIVATE_TABLE}) select count(*) as n "
                                        "from c join tpch.nation n on c.c_nationkey = n.n_nationkey")
    assert via_cte == [{"n": eu_expected["count"]}]


def test_hidden_columns_not_in_results(server, eu, customer_columns):
    rows = query_ok(eu.http, server, f"select * from {PRIVATE_TABLE} limit 5")
    assert len(rows) == 5
    visible = [c for c in customer_columns if c not in EU_HIDDEN]
    for row in rows:
        assert list(row) == visible, f"columns {list(row)}, expected {visible}"
        assert row["c_nationkey"] == 7, row


@pytest.mark.parametrize("sql", [
    f"select c_phone from {PRIVATE_TABLE}",
    f"select customer.c_phone from {PRIVATE_TABLE}",
    f"select tpch.customer.c_acctbal from {PRIVATE_TABLE}",
    f"select sum(c_acctbal) as s from {PRIVATE_TABLE}",
    f"select count(*) as n from {PRIVATE_TABLE} where c_acctbal > 0",
    f"select c_custkey from {PRIVATE_TABLE} order by c_phone limit 1",
    f"select c_nationkey, max(c_acctbal) as m from {PRIVATE_TABLE} group by 1",
])
def test_hidden_columns_cannot_be_used(server, eu, sql):
    hidden_col = next(c for c in EU_HIDDEN if c in sql)
    denied = http_query(eu.http, server, sql)
    err = assert_error(denied, 400, "invalid_argument")
    assert hidden_col in err["message"], err
    # the same as a column that never existed
    missing = http_query(eu.http, server, sql.replace(hidden_col, "c_nosuchcol"))
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "invalid_argument"), missing.text
    for col in EU_HIDDEN:
        if col != hidden_col:
            assert col not in err["message"], f"the other hidden column is named: {err}"


def test_restricted_table_in_information_schema_and_catalog(server, eu, customer_columns):
    visible = [c for c in customer_columns if c not in EU_HIDDEN]
    cols = query_ok(eu.http, server, "select column_name from information_schema.columns "
                                     "where table_schema = 'tpch' and table_name = 'customer'")
    assert sorted(r["column_name"] for r in cols) == sorted(visible), cols

    r = eu.http.get(server.url(f"/api/v1/catalog/{SCHEMA}/{HIDDEN}"), timeout=60)
    assert r.status_code == 200, r.text[:500]
    t = r.json()
    assert [c["name"] for c in t["columns"]] == visible, t["columns"]
    assert t["row_count"] is None, f"row_count of a filtered share must be null: {t['row_count']}"
    assert (t["size_bytes"], t["file_count"]) == (0, 0), t
    assert t["primary_key"] == ["c_custkey"], t["primary_key"]
    assert [(fk["columns"], fk["references"]["table"]) for fk in t["foreign_keys"]] == \
        [(["c_nationkey"], "nation")], t["foreign_keys"]
    tables = catalog_tables(eu.http, server)
    assert tables[PRIVATE_TABLE] == t
    # customer is visible now, so orders' key to it is too
    assert any(fk["references"]["table"] == HIDDEN for fk in tables["tpch.orders"]["foreign_keys"])
    assert tables["tpch.orders"]["row_count"] == 150000


def test_grant_alone_gives_only_the_granted_table(server, eu, eu_expected):
    assert set(catalog_tables(eu.http_only, server)) == {PRIVATE_TABLE}
    assert query_ok(eu.http_only, server, f"select count(*) as n from {PRIVATE_TABLE}") == \
        [{"n": eu_expected["count"]}]
    denied = http_query(eu.http_only, server, "select count(*) as n from tpch.orders")
    missing = http_query(eu.http_only, server, "select count(*) as n from tpch.ordersx")
    assert http_error_signature(denied, "orders") == http_error_signature(missing, "ordersx")
    assert_error(denied, 404, "not_found")


def profile_of(session: requests.Session, srv, table: str) -> dict:
    r = session.get(srv.url(f"/api/v1/catalog/{table.replace('.', '/')}/profile"), timeout=300)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def test_profile_of_a_restricted_share(server, eu, eu_expected, customer_columns):
    """The row filter and hidden columns apply to the profile: it describes the caller's rows
    and columns only; the listing then summarises that profile, and the administrator's is
    unchanged."""
    visible = [c for c in customer_columns if c not in EU_HIDDEN]
    served = profile_of(eu.http, server, PRIVATE_TABLE)
    p = served["profile"]
    assert served["restricted"] is True and served["stale"] is False, served
    assert p["row_count"] == eu_expected["count"], p["row_count"]
    assert [c["name"] for c in p["columns"]] == visible
    assert p["column_count"] == len(visible)
    assert p["file_size_mb"] == 0, "a filtered share does not reveal the table's size"
    text = json.dumps(served)
    for col in EU_HIDDEN:
        assert col not in text, f"the hidden column {col} is in the profile"
    cols = {c["name"]: c for c in p["columns"]}
    nation = cols["c_nationkey"]
    assert nation["unique_count"] == 1, nation
    assert nation["numeric_stats"]["min"] == nation["numeric_stats"]["max"] == 7
    assert "constant" in [a["type"] for a in nation["alerts"]], nation["alerts"]
    key = cols["c_custkey"]
    assert key["unique_count"] == eu_expected["count"]
    assert (key["numeric_stats"]["min"], key["numeric_stats"]["max"]) == \
        (eu_expected["keys"][0], eu_expected["keys"][-1])
    assert p["sample_rows"], p
    for row in p["sample_rows"]:
        assert set(row) == set(visible) and row["c_nationkey"] == "7", row

    # the administrator's profile is of the whole table
    full = profile_of(server.session, server, PRIVATE_TABLE)
    assert full["restricted"] is False
    assert full["profile"]["row_count"] == 15000
    assert {c["name"] for c in full["profile"]["columns"]} == set(customer_columns)
    assert cols["c_nationkey"] != {c["name"]: c for c in full["profile"]["columns"]}["c_nationkey"]

    # the listing summarises the caller's own profile (computed above), not the whole table's
    t = eu.http.get(server.url(f"/api/v1/catalog/{SCHEMA}/{HIDDEN}"), timeout=60).json()
    assert t["profile"]["row_count"] == eu_expected["count"], t["profile"]
    assert t["profile"]["alerts"].get("constant", 0) >= 1, t["profile"]
    admin_t = server.get(f"/api/v1/catalog/{SCHEMA}/{HIDDEN}").json()
    assert admin_t["profile"]["row_count"] == 15000, admin_t["profile"]

    # the export holds only what the caller may read, as the caller sees it
    export = eu.http_only.get(server.url("/api/v1/catalog/profiles.json"), timeout=300).json()
    assert export["version"] == "1.0" and set(export) == {"generated_at", "version", "tables"}
    assert set(export["tables"]) == {PRIVATE_TABLE}
    only = export["tables"][PRIVATE_TABLE]
    assert only["row_count"] == eu_expected["count"]
    assert [c["name"] for c in only["columns"]] == visible
    # the group alone can't read nation: no join to it is named
    assert only["related_tables"] == [], only["related_tables"]


def test_profile_related_tables_name_only_readable_tables(server, http_as):
    """`related_tables` comes from foreign keys either way; a key into or from a table the
    caller can't read is left out, in the profile, the listing and the export."""
    def related(user: str) -> set[tuple]:
        p = profile_of(http_as[user], server, "tpch.nation")["profile"]
        return {(r["table"], r["direction"]) for r in p["related_tables"]}

    assert related("insider") == {("tpch.region", "belongs_to"), ("tpch.customer", "has_many"),
                                  ("tpch.supplier", "has_many")}
    assert related("admin") == related("insider")
    assert related("analyst") == {("tpch.region", "belongs_to"), ("tpch.supplier", "has_many")}
    orders = profile_of(http_as["analyst"], server, "tpch.orders")["profile"]
    assert [r["table"] for r in orders["related_tables"]] == ["tpch.lineitem"], orders["related_tables"]
    export = http_as["analyst"].get(server.url("/api/v1/catalog/profiles.json"), timeout=600)
    assert export.status_code == 200, export.text[:300]
    assert PRIVATE_TABLE not in export.json()["tables"]
    for name in (PRIVATE_TABLE, "c_custkey"):
        assert name not in json.dumps(export.json()), f"the export names {name}"
    assert len(export.json()["tables"]) == len(TPCH_TABLES) - 1
    catalog = http_as["analyst"].get(server.url("/api/v1/catalog"), timeout=60).json()
    assert PRIVATE_TABLE not in json.dumps(catalog) and "c_custkey" not in json.dumps(catalog)


def test_restricted_share_over_adbc_and_flight(server, eu, eu_expected, customer_columns):
    visible = [c for c in customer_columns if c not in EU_HIDDEN]
    conn = adbc_connect(server.flight, eu.user, eu.password)
    try:
        table = adbc_run(conn, f"select * from {PRIVATE_TABLE} limit 3")
        assert table.schema.names == visible
        assert adbc_run(conn, f"select count(*) as n from {PRIVATE_TABLE}").to_pylist() == \
            [{"n": eu_expected["count"]}]
        e = adbc_error(lambda: adbc_run(conn, f"select c_phone from {PRIVATE_TABLE}"))
        assert adbc_grpc_status(e) == "INVALID_ARGUMENT", e
        assert conn.adbc_get_table_schema(HIDDEN, db_schema_filter=SCHEMA).names == visible
        objects = adbc_tpch_tables(conn, depth="columns", table_name_filter=HIDDEN)
        assert [c["column_name"] for c in objects[HIDDEN]["table_columns"]] == visible
    finally:
        conn.close()

    with FlightSession(server.flight, eu.user, eu.password) as s:
        rows = tpch_table_rows(s.command(fp.command_get_tables(table_name_filter_pattern=HIDDEN,
                                                               include_schema=True)))
        assert [r["table_name"] for r in rows] == [HIDDEN], rows
        schema = pa.ipc.read_schema(pa.py_buffer(rows[0]["table_schema"]))
        assert schema.names == visible, schema.names
        assert s.sql(f"select count(*) as n from {PRIVATE_TABLE}").to_pylist() == [{"n": eu_expected["count"]}]


def test_schema_grant(server, make_user, grant):
    group = unique("sch")
    name, password = make_user([group])
    session = server.session_as(name, password)
    assert catalog_tables(session, server) == {}, "a user without groups' grants sees tables"
    grant(group, "tpch.*")
    assert set(catalog_tables(session, server)) == {f"tpch.{t}" for t in TPCH_TABLES}
    assert query_ok(session, server, f"select count(*) as n from {PRIVATE_TABLE}") == [{"n": 15000}]
    server.cli("revoke", group, "tpch.*")
    assert catalog_tables(session, server) == {}
    assert_error(http_query(session, server, "select count(*) as n from tpch.nation"), 404, "not_found")


def test_revoke_applies_without_restart(server, make_user, grant):
    group = unique("rev")
    name, password = make_user([group, "dataread"])
    grant(group, PRIVATE_TABLE, "--row-filter", "c_nationkey = 3")
    session = server.session_as(name, password)
    expected = server.query_json(f"select count(*) as n from {PRIVATE_TABLE} where c_nationkey = 3")
    assert query_ok(session, server, f"select count(*) as n from {PRIVATE_TABLE}") == expected
    conn = adbc_connect(server.flight, name, password)
    try:
        assert adbc_run(conn, f"select count(*) as n from {PRIVATE_TABLE}").to_pylist() == expected

        server.cli("revoke", group, PRIVATE_TABLE)
        assert grants_of(server, group) == []

        sql = "select count(*) as n from tpch.{t}"
        denied = http_query(session, server, fill(sql, HIDDEN))
        missing = http_query(session, server, fill(sql, MISSING))
        assert_error(denied, 404, "not_found")
        assert http_error_signature(denied, HIDDEN) == http_error_signature(missing, MISSING)
        assert PRIVATE_TABLE not in catalog_tables(session, server)
        # the ADBC connection opened before the revoke
        e = adbc_error(lambda: adbc_run(conn, fill(sql, HIDDEN)))
        assert adbc_grpc_status(e) == "NOT_FOUND", e
    finally:
        conn.close()
    # revoking again says there is nothing to revoke
    assert server.cli("revoke", group, PRIVATE_TABLE, check=False).returncode != 0


BAD_GRANTS = {
    "unknown-filter-column": (PRIVATE_TABLE, ["--row-filter", "nosuchcol = 1"], "nosuchcol"),
    "filter-not-boolean": (PRIVATE_TABLE, ["--row-filter", "c_nationkey + 1"], None),
    "filter-syntax": (PRIVATE_TABLE, ["--row-filter", "c_nationkey = = 7"], None),
    "filter-subquery": (PRIVATE_TABLE, ["--row-filter", "c_nationkey in (select n_nationkey from tpch.nation)"], None),
    "filter-aggregate": (PRIVATE_TABLE, ["--row-filter", "count(*) > 1"], None),
    "unknown-hidden-column": (PRIVATE_TABLE, ["--hide-columns", "nosuch"], "nosuch"),
    "hide-every-column": (PRIVATE_TABLE, ["--hide-columns", "<all>"], None),
    "unknown-table": ("tpch.nosuchtable", ["--row-filter", "x = 1"], "nosuchtable"),
    "filter-on-schema-grant": ("tpch.*", ["--row-filter", "c_nationkey = 7"], None),
    "not-a-table": ("customer", [], None),
}


@pytest.mark.parametrize("case", sorted(BAD_GRANTS))
def test_grant_validation(server, grant, customer_columns, case):
    target, extra, must_mention = BAD_GRANTS[case]
    extra = [",".join(customer_columns) if a == "<all>" else a for a in extra]
    group = unique("bad")
    p = grant(group, target, *extra, check=False)
    assert p.returncode != 0, f"dataport grant {target} {extra} was accepted:\n{p.stdout}"
    assert p.stderr.strip(), "the refusal says nothing on stderr"
    if must_mention:
        assert must_mention in p.stderr, p.stderr
    assert grants_of(server, group) == [], "a refused grant was stored"


# --------------------------------------------------------------------------------------------
# 4. Tokens: login, forged tokens, refresh, logout, removed users, passwords, API tokens
# --------------------------------------------------------------------------------------------


def test_login_response_and_claims(server, passwords):
    before = int(time.time())
    r = login_response(server, "analyst", passwords["analyst"])
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["token_type"] == "Bearer", body
    assert (body["user"], body["groups"], body["admin"]) == ("analyst", ["dataread"], False), body
    assert TOKEN_TTL - 120 <= body["expires_in"] <= TOKEN_TTL, body["expires_in"]
    assert before + TOKEN_TTL - 5 <= body["expires_at"] <= int(time.time()) + TOKEN_TTL + 5, body
    header, payload = jwt_parts(body["token"])
    assert header.get("alg") == "HS256", header
    assert payload["iss"] == "dataport" and payload["sub"] == "analyst", payload
    assert payload["exp"] == body["expires_at"] and payload["exp"] - payload["iat"] == TOKEN_TTL, payload
    assert isinstance(payload.get("jti"), str) and payload["jti"], payload
    assert_token_works(server, body["token"], "analyst", "fresh login")


def test_forged_token_control(server):
    """A token signed here with the server's key is accepted: the forgeries below differ from a
    valid token only in what each one tests."""
    token = jwt_sign(claims("analyst"), jwt_secret(server))
    assert_token_works(server, token, "analyst", "token signed with the server key")


def _forge(kind: str, server, passwords) -> str:
    secret = jwt_secret(server)
    now = int(time.time())
    c = claims("analyst")
    hs256 = {"alg": "HS256", "typ": "JWT"}
    if kind == "alg-none":
        return jwt_encode({"alg": "none", "typ": "JWT"}, c) + "."
    if kind == "alg-none-with-signature":
        signed = jwt_sign(c, secret)
        return jwt_encode({"alg": "none", "typ": "JWT"}, c) + "." + signed.split(".")[2]
    if kind in ("HS384", "HS512"):
        return jwt_sign(c, secret, kind)
    if kind == "header-says-hs384":
        # signed with HS256, but the header claims another algorithm
        signing_input = jwt_encode({"alg": "HS384", "typ": "JWT"}, c)
        return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
    if kind == "wrong-issuer":
        return jwt_sign({**c, "iss": "not-dataport"}, secret)
    if kind == "no-issuer":
        return jwt_sign({k: v for k, v in c.items() if k != "iss"}, secret)
    if kind == "no-expiry":
        return jwt_sign({k: v for k, v in c.items() if k != "exp"}, secret)
    if kind == "other-key":
        return jwt_sign(c, b"0" * len(secret))
    if kind == "expired":
        # past the refresh grace too (a token expired seconds ago: test_refresh_within_grace...)
        return jwt_sign({**c, "iat": now - 9 * 24 * 3600, "exp": now - 8 * 24 * 3600}, secret)
    if kind == "unknown-user":
        return jwt_sign({**c, "sub": unique("ghost")}, secret)
    if kind == "not-a-jwt":
        return "not.a.jwt"
    real = server.login("analyst", passwords["analyst"])
    head, payload, sig = real.split(".")
    if kind == "tampered-payload":
        _, p = jwt_parts(real)
        forged_payload = jwt_encode(hs256, {**p, "sub": "admin"}).split(".")[1]
        return f"{head}.{forged_payload}.{sig}"
    if kind == "bad-signature":
        i = len(sig) // 2
        return f"{head}.{payload}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"
    if kind == "truncated-signature":
        return f"{head}.{payload}.{sig[:-4]}"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["alg-none", "alg-none-with-signature", "HS384", "HS512",
                                  "header-says-hs384", "wrong-issuer", "no-issuer", "no-expiry",
                                  "other-key", "expired", "unknown-user", "not-a-jwt",
                                  "tampered-payload", "bad-signature", "truncated-signature"])
def test_forged_tokens_are_refused(server, passwords, kind):
    token = _forge(kind, server, passwords)
    assert_token_refused(server, token, kind)
    # refresh does not turn a bad token into a good one either
    r = requests.post(server.url("/api/v1/auth/refresh"), headers=bearer(token), timeout=60)
    assert_error(r, 401, "unauthenticated")


def test_refresh_issues_new_token_and_revokes_old(server, make_user):
    name, password = make_user(["dataread"])
    old = server.login(name, password)
    r = requests.post(server.url("/api/v1/auth/refresh"), headers=bearer(old), timeout=60)
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    new = body["token"]
    assert new != old and body["user"] == name and body["token_type"] == "Bearer", body
    assert jwt_parts(new)[1]["jti"] != jwt_parts(old)[1]["jti"]
    assert_token_works(server, new, name, "refreshed token")
    assert_token_refused(server, old, "token replaced by refresh")
    again = requests.post(server.url("/api/v1/auth/refresh"), headers=bearer(old), timeout=60)
    assert_error(again, 401, "unauthenticated")


def test_refresh_within_grace_after_expiry(server, make_user):
    name, _ = make_user(["dataread"])
    changed = users_by_name(server)[name]["password_changed_at"]
    secret = jwt_secret(server)
    # expires one second after the account was created: valid for the account, soon expired
    expired = jwt_sign(claims(name, iat=changed, exp=changed + 1), secret)
    too_old = jwt_sign(claims(name, iat=changed, exp=changed - 8 * 24 * 3600), secret)
    wait_for(lambda: time.time() >= changed + 2.2, 10, interval=0.1, what="the forged token to expire")
    assert_token_refused(server, expired, "expired token")
    r = requests.post(server.url("/api/v1/auth/refresh"), headers=bearer(expired), timeout=60)
    assert r.status_code == 200, f"refresh of a token expired seconds ago: {r.status_code} {r.text[:500]}"
    fresh = r.json()["token"]
    assert_token_works(server, fresh, name, "token refreshed from an expired one")
    # the expired token was used up by the refresh
    assert_error(requests.post(server.url("/api/v1/auth/refresh"), headers=bearer(expired), timeout=60),
                 401, "unauthenticated")
    # beyond the 7-day grace: no refresh
    assert_error(requests.post(server.url("/api/v1/auth/refresh"), headers=bearer(too_old), timeout=60),
                 401, "unauthenticated")


def test_logout_revokes_token(server, make_user):
    name, password = make_user(["dataread"])
    token = server.login(name, password)
    assert_token_works(server, token, name, "before logout")
    r = requests.post(server.url("/api/v1/auth/logout"), headers=bearer(token), timeout=60)
    assert r.status_code == 204, r.text[:500]
    assert_token_refused(server, token, "logged-out token")
    assert_error(requests.post(server.url("/api/v1/auth/logout"), headers=bearer(token), timeout=60),
                 401, "unauthenticated")
    # a Flight handshake token is a session token like any other
    with FlightSession(server.flight, name, password) as s:
        assert s.sql("select 1 as one").to_pylist() == [{"one": 1}]
        r = requests.post(server.url("/api/v1/auth/logout"), headers=bearer(s.token), timeout=60)
        assert r.status_code == 204, r.text[:500]
        expect_flight_status(lambda: s.sql("select 1 as one"), "UNAUTHENTICATED")


def test_removed_user_tokens_stop_working(server, make_user):
    name, password = make_user(["dataread"])
    session_token = server.login(name, password)
    api_token, _ = create_api_token(server, name)
    with FlightSession(server.flight, name, password) as s:
        flight_token = s.token
    for token in (session_token, api_token, flight_token):
        assert_token_works(server, token, name, "before removal")
    server.cli("user", "remove", name)
    assert name not in users_by_name(server)
    assert_token_refused(server, session_token, "session token of a removed user")
    assert_token_refused(server, api_token, "API token of a removed user")
    assert_token_refused(server, flight_token, "Flight token of a removed user")


def test_set_groups_applies_to_live_sessions(server, make_user):
    name, password = make_user(["dataread"])
    session = server.session_as(name, password)
    assert_error(http_query(session, server, f"select count(*) as n from {PRIVATE_TABLE}"), 404, "not_found")
    server.cli("user", "set-groups", name, "dataread,data-private")
    assert users_by_name(server)[name]["groups"] == ["data-private", "dataread"]
    assert query_ok(session, server, f"select count(*) as n from {PRIVATE_TABLE}") == [{"n": 15000}]
    r = session.get(server.url("/api/v1/auth/me"), timeout=60)
    assert r.json()["groups"] == ["data-private", "dataread"], r.json()
    server.cli("user", "set-groups", name, "")
    assert users_by_name(server)[name]["groups"] == []
    assert catalog_tables(session, server) == {}


def test_passwd_ends_older_sessions(start_server, data_copy):
    """On its own server: the old password is tried once, a failed login."""
    srv = start_server(data_dir=data_copy, demo=False)
    name, old_password = add_user(srv, ["dataread"])
    old_token = srv.login(name, old_password)
    with FlightSession(srv.flight, name, old_password) as s:
        old_flight = s.token
    time.sleep(1.1)  # tokens carry whole seconds; the change must be in a later second
    changed_password = new_password()
    srv.cli("user", "passwd", name, "--password-stdin", input=changed_password + "\n")
    assert_token_refused(srv, old_token, "session from before the password change")
    assert_token_refused(srv, old_flight, "Flight session from before the password change")
    assert_error(requests.post(srv.url("/api/v1/auth/refresh"), headers=bearer(old_token), timeout=60),
                 401, "unauthenticated")
    assert_error(login_response(srv, name, old_password), 401, "unauthenticated")
    fresh = srv.login(name, changed_password)
    assert_token_works(srv, fresh, name, "session after the password change")
    with FlightSession(srv.flight, name, changed_password) as s:
        assert s.sql("select 1 as one").to_pylist() == [{"one": 1}]
    # a weak password is refused and changes nothing
    p = srv.cli("user", "passwd", name, "--password-stdin", input="weak\n", check=False)
    assert p.returncode != 0 and p.stderr.strip(), p
    assert_token_works(srv, fresh, name, "after a refused password change")


def test_api_token_lifecycle(server, make_user):
    name, _ = make_user(["dataread"])
    token, token_id = create_api_token(server, name, "--label", "e2e-ci")
    listed = tokens_by_id(server, name)
    assert token_id in listed, listed
    entry = listed[token_id]
    assert (entry["user"], entry["label"], entry["revoked_at"], entry["expires_at"]) == \
        (name, "e2e-ci", None, None), entry
    assert isinstance(entry["created_at"], int), entry
    assert token_id in server.cli("token", "list").stdout
    assert token.split("_", 2)[2] not in server.cli("token", "list").stdout, "token list shows the secret"

    # HTTP: the token is the user, with the user's access
    session = session_for_token(token)
    assert session.get(server.url("/api/v1/auth/me"), timeout=60).json()["user"] == name
    assert query_ok(session, server, "select count(*) as n from tpch.nation") == [{"n": 25}]
    assert_error(http_query(session, server, f"select * from {PRIVATE_TABLE}"), 404, "not_found")
    # Flight: ADBC with the token as its authorization header, and pyarrow
    conn = adbc_connect(server.flight, user=None, **{AUTH_HEADER: f"Bearer {token}"})
    try:
        assert adbc_run(conn, "select count(*) as n from tpch.region").to_pylist() == [{"n": 5}]
        e = adbc_error(lambda: adbc_run(conn, f"select * from {PRIVATE_TABLE}"))
        assert adbc_grpc_status(e) == "NOT_FOUND", e
    finally:
        conn.close()
    assert flight_with_bearer(server, token) is None
    assert tokens_by_id(server, name)[token_id]["last_used_at"] is not None, "last use not recorded"

    server.cli("token", "revoke", token_id)
    assert tokens_by_id(server, name)[token_id]["revoked_at"] is not None
    assert_token_refused(server, token, "revoked API token")
    assert adbc_bearer_status(server, token) == "UNAUTHENTICATED"
    assert server.cli("token", "revoke", token_id, check=False).returncode != 0, \
        "revoking a revoked token should fail"


def test_api_token_expiry_and_logout(server, make_user):
    name, _ = make_user(["dataread"])
    token, token_id = create_api_token(server, name, "--expires", "90d")
    entry = tokens_by_id(server, name)[token_id]
    assert entry["expires_at"] - entry["created_at"] == 90 * 24 * 3600, entry
    assert_token_works(server, token, name, "API token with an expiry")
    r = requests.post(server.url("/api/v1/auth/logout"), headers=bearer(token), timeout=60)
    assert r.status_code == 204, r.text[:500]
    assert_token_refused(server, token, "API token after logout")
    assert tokens_by_id(server, name)[token_id]["revoked_at"] is not None


def test_api_token_wrong_secret(server, make_user):
    name, _ = make_user(["dataread"])
    token, token_id = create_api_token(server, name)
    secret = token.split("_", 2)[2]
    flipped = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    assert_token_refused(server, f"dpk_{token_id}_{flipped}", "API token with a wrong secret")
    assert_token_refused(server, f"dpk_{token_id}", "API token without secret")
    assert_token_refused(server, f"dpk_nosuchid_{secret}", "API token with an unknown id")
    assert_token_works(server, token, name, "the real API token")


# --------------------------------------------------------------------------------------------
# 5. Login rate limits (each on its own server and data dir)
# --------------------------------------------------------------------------------------------

# Server.start raises the limit for the shared servers; these tests want the default.
RATE_LIMIT_DEFAULT = {"DATAPORT_MAX_FAILED_LOGINS": "5"}


def test_http_login_rate_limit(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False, env=RATE_LIMIT_DEFAULT)
    name, password = add_user(srv, ["dataread"])
    for i in range(5):
        assert_error(login_response(srv, name, "Wrong-Passw0rd"), 401, "unauthenticated")
    r = login_response(srv, name, password)
    err = assert_error(r, 429, "too_many_attempts")
    assert "Retry-After" in r.headers, f"429 without Retry-After: {dict(r.headers)}"
    assert int(r.headers["Retry-After"]) >= 1, r.headers["Retry-After"]
    assert password not in err["message"]
    # five failures from one address also lock that address, for every account and surface
    assert_error(login_response(srv, ADMIN_USER, ADMIN_PASSWORD), 429, "too_many_attempts")
    expect_flight_status(lambda: FlightSession(srv.flight, ADMIN_USER, ADMIN_PASSWORD), "RESOURCE_EXHAUSTED")
    # tokens are not passwords: existing sessions keep working
    srv.assert_alive()
    assert me(srv, srv.admin_token).status_code == 200


def test_flight_login_rate_limit(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False, env=RATE_LIMIT_DEFAULT)
    name, password = add_user(srv, ["dataread"])
    for i in range(5):
        expect_flight_status(lambda: FlightSession(srv.flight, name, "Wrong-Passw0rd"), "UNAUTHENTICATED")
    expect_flight_status(lambda: FlightSession(srv.flight, name, password), "RESOURCE_EXHAUSTED")
    r = login_response(srv, name, password)
    assert_error(r, 429, "too_many_attempts")
    assert "Retry-After" in r.headers
    # a Basic header on a normal call is a password check too
    with FlightSession(srv.flight, user=None) as s:
        basic = b"Basic " + base64.b64encode(f"{name}:{password}".encode())
        expect_flight_status(lambda: s.sql("select 1", s.call_options([(b"authorization", basic)])),
                             "RESOURCE_EXHAUSTED")
    srv.assert_alive()


def test_unknown_user_and_wrong_password_look_alike(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False, env=RATE_LIMIT_DEFAULT)
    name, password = add_user(srv, ["dataread"])
    unknown = login_response(srv, unique("nobody"), "Some-Passw0rd")
    wrong = login_response(srv, name, "Wrong-Passw0rd")
    e1 = assert_error(unknown, 401, "unauthenticated")
    e2 = assert_error(wrong, 401, "unauthenticated")
    assert e1["message"] == e2["message"], f"unknown user: {e1['message']!r}; wrong password: {e2['message']!r}"
    assert name not in e2["message"]
    f1 = expect_flight_status(lambda: FlightSession(srv.flight, unique("nobody"), "Some-Passw0rd"),
                              "UNAUTHENTICATED")
    f2 = expect_flight_status(lambda: FlightSession(srv.flight, name, "Wrong-Passw0rd"), "UNAUTHENTICATED")
    assert strip_volatile(str(f1)) == strip_volatile(str(f2)), f"{f1}\n{f2}"
    # four failures: still under the limit
    assert login_response(srv, name, password).status_code == 200


# --------------------------------------------------------------------------------------------
# 6. Audit log
# --------------------------------------------------------------------------------------------


def test_audit_log(server, http_as, flight_as):
    marker = uuid.uuid4().hex[:12]
    analyst = http_as["analyst"]
    bad = http_query(analyst, server, f"select c_name as bad_{marker} from {PRIVATE_TABLE}")
    bad_err = assert_error(bad, 404, "not_found")
    ok = http_query(analyst, server, f"select count(*) as ok_{marker} from tpch.nation")
    assert ok.status_code == 200 and ok.json() == [{f"ok_{marker}": 25}], ok.text[:500]
    fl = flight_as["analyst"].sql(f"select count(*) as fl_{marker} from tpch.region")
    assert fl.to_pylist() == [{f"fl_{marker}": 5}]

    def find(entries):
        found = {k: [e for e in entries if f"{k}_{marker}" in e["sql"]] for k in ("bad", "ok", "fl")}
        return found if all(found.values()) else None

    def from_http():
        r = server.get("/api/v1/admin/audit", params={"user": "analyst", "limit": 1000})
        assert r.status_code == 200, r.text[:500]
        return find(r.json()["entries"])

    found = wait_for(from_http, 20, what="the analyst's queries in the audit log")
    [b], [o], [f] = found["bad"], found["ok"], found["fl"]
    for e in (b, o, f):
        assert e["user"] == "analyst", e
        assert isinstance(e["at_ms"], int) and isinstance(e["duration_ms"], int), e
        assert e["request_id"], e
    assert (b["surface"], b["outcome"]) == ("http", "error"), b
    assert any(t.endswith(PRIVATE_TABLE) for t in b["tables"]), b["tables"]
    assert b["error"], b
    assert b["request_id"] == bad_err["request_id"], (b, bad_err)
    assert b["rows"] == 0, b
    assert (o["surface"], o["outcome"], o["rows"], o["error"]) == ("http", "ok", 1, None), o
    assert any(t.endswith("tpch.nation") for t in o["tables"]), o["tables"]
    assert o["bytes"] > 0, o
    if ok.headers.get("x-request-id"):
        assert o["request_id"] == ok.headers["x-request-id"], (o, dict(ok.headers))
    assert (f["surface"], f["outcome"], f["rows"]) == ("flight", "ok", 1), f

    r = server.get("/api/v1/admin/audit", params={"user": "analyst", "limit": 1000})
    entries = r.json()["entries"]
    assert all(e["user"] == "analyst" for e in entries)
    order = [entries.index(x) for x in (f, o, b)]
    assert order == sorted(order), f"not newest first: positions {order}"
    limited = server.get("/api/v1/admin/audit", params={"limit": 1}).json()["entries"]
    assert len(limited) == 1, limited

    # the command shows the same entries
    cli = cli_json(server, "audit", "--json", "--user", "analyst", "--limit", "1000")
    cli_found = find(cli)
    assert cli_found, f"dataport audit does not show the marker {marker}"
    assert cli_found == found, f"CLI {cli_found}\nHTTP {found}"
    assert f"bad_{marker}" in server.cli("audit", "--user", "analyst", "--limit", "1000").stdout

    # not for analysts
    assert_error(analyst.get(server.url("/api/v1/admin/audit"), timeout=60), 403, "permission_denied")


def test_refused_authentications_are_audited(server):
    """Wrong passwords and bad tokens are attempts too: they land in the audit log with the
    claimed user (for passwords) and the client address, never the secret."""
    marker = uuid.uuid4().hex[:10]
    name = f"ghost-{marker}"
    wrong = f"Wrong-{marker}-9"
    assert_error(login_response(server, name, wrong), 401, "unauthenticated")
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
    r = requests.post(server.url("/api/v1/query"), json={"sql": "select 1"},
                      headers={**bearer(forged), "x-request-id": f"forged-{marker}"}, timeout=60)
    assert_error(r, 401, "unauthenticated")
    status = flight_status_of(lambda: FlightSession(server.flight, f"fl-{name}", wrong))
    assert status == "UNAUTHENTICATED", status

    def find():
        entries = server.get("/api/v1/admin/audit", params={"limit": 5000}).json()["entries"]
        login = [e for e in entries if e["user"] == name]
        token = [e for e in entries if e["request_id"] == f"forged-{marker}"]
        flight_login = [e for e in entries if e["user"] == f"fl-{name}"]
        return (login, token, flight_login) if login and token and flight_login else None

    login, token, flight_login = wait_for(find, 20, what="refused authentications in the audit log")
    for e, surface in ((login[0], "http"), (token[0], "http"), (flight_login[0], "flight")):
        assert (e["surface"], e["outcome"]) == (surface, "unauthenticated"), e
        assert "127.0.0.1" in e["error"], e
        assert wrong not in json.dumps(e) and forged not in json.dumps(e), f"secret in the audit log: {e}"
    assert token[0]["user"] == "-", token


def flight_status_of(fn) -> str | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the status is what matters
        return flight_status(e)
    return None


# --------------------------------------------------------------------------------------------
# 7. Protected routes, /health, /metrics
# --------------------------------------------------------------------------------------------

PROTECTED = [
    ("POST", "/api/v1/query", {"sql": "select 1"}),
    ("GET", "/api/v1/catalog", None),
    ("GET", "/api/v1/catalog/tpch/nation", None),
    ("POST", "/api/v1/catalog/refresh", None),
    ("GET", "/api/v1/auth/me", None),
    ("GET", "/api/v1/admin/audit", None),
    ("GET", "/metrics", None),
    ("POST", "/api/v1/auth/refresh", None),
    ("POST", "/api/v1/auth/logout", None),
]


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_protected_routes_need_a_bearer(server, method, path, body):
    variants = {
        "none": {},
        "basic": {"Authorization": "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()},
        "bogus-bearer": {"Authorization": "Bearer not-a-token"},
        "other-scheme": {"Authorization": "Token abc"},
    }
    for what, headers in variants.items():
        r = requests.request(method, server.url(path), json=body, headers=headers, timeout=60)
        assert_error(r, 401, "unauthenticated")
        assert r.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), \
            f"{method} {path} ({what}): no Bearer WWW-Authenticate header: {dict(r.headers)}"


def test_login_and_health_are_public(server):
    r = requests.get(server.url("/health"), timeout=60)
    assert r.status_code == 200, r.text[:500]
    h = r.json()
    assert isinstance(h["error_count"], int), h
    assert not h.get("errors"), f"anonymous /health lists errors: {h.get('errors')}"
    r = requests.get(server.url("/health"), headers={"Authorization": "Bearer junk"}, timeout=60)
    assert r.status_code == 200, "a bad token must not break /health"
    # login needs no token (and refuses a malformed body with 400, not 401)
    r = requests.post(server.url("/api/v1/auth/login"), data=b"not json",
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert_error(r, 400, "invalid_argument")


def test_admin_only_routes(server, http_as):
    analyst = http_as["analyst"]
    assert_error(analyst.get(server.url("/metrics"), timeout=60), 403, "permission_denied")
    assert_error(analyst.post(server.url("/api/v1/catalog/refresh"), timeout=60), 403, "permission_denied")
    assert_error(http_as["insider"].get(server.url("/metrics"), timeout=60), 403, "permission_denied")
    r = server.get("/metrics")
    assert r.status_code == 200 and r.headers.get("Content-Type", "").startswith("text/plain"), r.text[:300]
    assert server.post("/api/v1/catalog/refresh").status_code == 200


def test_health_errors_only_for_admins(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False, env=RATE_LIMIT_DEFAULT)
    name, password = add_user(srv, ["dataread"])
    user_token = srv.login(name, password)
    doc = data_copy / "docs" / "data_description.md"
    doc.write_text("# Broken\n\n```yaml\ntables: [ {name: : oops\n  - ]]\n  x: - {\n```\n")
    assert srv.post("/api/v1/catalog/refresh").status_code == 200

    def health(headers=None) -> dict:
        r = requests.get(srv.url("/health"), headers=headers or {}, timeout=60)
        assert r.status_code == 200, r.text[:500]
        return r.json()

    admin = wait_for(lambda: (lambda h: h if h.get("errors") else None)(health(bearer(srv.admin_token))),
                     30, what="/health to list the catalog problem for the administrator")
    assert admin["error_count"] == len(admin["errors"]) >= 1, admin
    for who, headers in (("anonymous", None), ("dataread user", bearer(user_token)),
                         ("basic admin", {"Authorization": "Basic " + base64.b64encode(
                             f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()})):
        h = health(headers)
        assert h["error_count"] >= 1, (who, h)
        # Each problem is listed, without what it concerns or why.
        assert len(h["errors"]) == h["error_count"], (who, h)
        assert all(e["source"] == "hidden" and "hint" not in e for e in h["errors"]), (who, h)
        assert "data_description" not in json.dumps(h), f"{who}: {h}"


def test_metrics_allow_list(start_server, data_copy, tmp_path):
    config = tmp_path / "dataport.yaml"
    config.write_text('server:\n  metrics_allow: ["127.0.0.1/32"]\n')
    srv = start_server(["--config", str(config)], data_dir=data_copy, demo=False)
    r = requests.get(srv.url("/metrics"), timeout=60)
    assert r.status_code == 200, f"/metrics from an allowed address: {r.status_code} {r.text[:300]}"
    # the allow-list opens /metrics only
    assert_error(requests.get(srv.url("/api/v1/catalog"), timeout=60), 401, "unauthenticated")


# --------------------------------------------------------------------------------------------
# 8. `dataport user` basics
# --------------------------------------------------------------------------------------------


def test_user_add_list_remove(server, make_user):
    name, password = make_user(["dataread"])
    users = users_by_name(server)
    assert users[name]["groups"] == ["dataread"], users[name]
    assert "password" not in json.dumps(users[name]).replace("password_changed_at", ""), users[name]
    assert name in server.cli("user", "list").stdout
    assert server.cli("user", "add", name, "--password-stdin", input=new_password() + "\n",
                      check=False).returncode != 0, "a second user with the same name was created"
    token = server.login(name, password)
    server.cli("user", "remove", name)
    assert name not in users_by_name(server)
    assert server.cli("user", "remove", name, check=False).returncode != 0, "removing twice succeeded"
    assert me(server, token).status_code == 401


@pytest.mark.parametrize("password", ["Sh0rt", "alllowercase1", "ALLUPPERCASE1", "NoDigitsHere", ""],
                         ids=["short", "no-upper", "no-lower", "no-digit", "empty"])
def test_weak_password_refused(server, password):
    name = unique("weak")
    p = server.cli("user", "add", name, "--groups", "dataread", "--password-stdin",
                   input=password + "\n", check=False)
    if p.returncode == 0:  # don't leave it behind
        server.cli("user", "remove", name, check=False)
    assert p.returncode != 0, f"password {password!r} was accepted"
    assert p.stderr.strip(), "no reason given"
    assert name not in users_by_name(server)


@pytest.mark.parametrize("name", ["Upper", "has space", "-dash", "a/b", "x" * 65])
def test_invalid_user_name_refused(server, name):
    p = server.cli("user", "add", name, "--password-stdin", input=new_password() + "\n", check=False)
    if p.returncode == 0:
        server.cli("user", "remove", name, check=False)
    assert p.returncode != 0, f"user name {name!r} was accepted"


def test_user_without_groups_sees_nothing(server, make_user):
    name, password = make_user()
    session = server.session_as(name, password)
    r = session.get(server.url("/api/v1/auth/me"), timeout=60)
    assert r.json() == {"user": name, "groups": [], "admin": False}, r.json()
    assert catalog_tables(session, server) == {}
    denied = http_query(session, server, "select * from tpch.nation")
    missing = http_query(session, server, "select * from tpch.nationx")
    assert_error(denied, 404, "not_found")
    assert http_error_signature(denied, "nation") == http_error_signature(missing, "nationx")
    assert query_ok(session, server, "select 1 as one") == [{"one": 1}]
    with FlightSession(server.flight, name, password) as s:
        schemas = s.command(fp.command_get_db_schemas()).column("db_schema_name").to_pylist()
        assert SCHEMA not in schemas, schemas
        assert tpch_table_rows(s.command(fp.command_get_tables())) == []


def test_last_administrator_is_kept(start_server, data_copy):
    """On its own server: this changes who the administrators are."""
    srv = start_server(data_dir=data_copy, demo=False)
    p = srv.cli("user", "remove", ADMIN_USER, check=False)
    assert p.returncode != 0, "the only administrator was removed"
    assert "data-ops" in p.stderr, p.stderr
    p = srv.cli("user", "set-groups", ADMIN_USER, "dataread", check=False)
    assert p.returncode != 0, "the only administrator left data-ops"
    assert users_by_name(srv)[ADMIN_USER]["groups"] == ["data-ops"]
    assert me(srv, srv.admin_token).json()["admin"] is True

    ops2, password = add_user(srv, ["data-ops"], "ops")
    srv.cli("user", "remove", ADMIN_USER)
    assert ADMIN_USER not in users_by_name(srv)
    assert me(srv, srv.admin_token).status_code == 401
    token = srv.login(ops2, password)
    assert me(srv, token).json() == {"user": ops2, "groups": ["data-ops"], "admin": True}
    assert srv.cli("user", "remove", ops2, check=False).returncode != 0, "the last administrator was removed"
    assert me(srv, token).status_code == 200
