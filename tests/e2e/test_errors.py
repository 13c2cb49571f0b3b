"""Error statuses and codes, the read-only policy, and that the server keeps serving after each."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e2e_util import assert_error, raw_http, sql_str

REFUSED = [
    "CREATE TABLE t(a int)",
    "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
    "CREATE VIEW v AS SELECT 1",
    "INSERT INTO tpch.region VALUES (1,'a','b')",
    "COPY (SELECT 1) TO '/tmp/x.parquet'",
    "DROP TABLE tpch.region",
    "SET datafusion.execution.batch_size = 1",
    "DELETE FROM tpch.region",
    "UPDATE tpch.region SET r_name='x'",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "EXPLAIN COPY (SELECT 1) TO '/tmp/y.csv'",
    # spelling variants of the same statements
    "drop table region",
    "  /* comment */ drop table tpch.region",
    "create table t2 as select 1 as a",
    "explain analyze insert into tpch.region values (9,'a','b')",
    "copy tpch.region to '/tmp/dataport-e2e-region.csv'",
]


@pytest.fixture
def srv(server):
    """The demo server, checked to be still serving after the test."""
    yield server
    server.assert_alive()


@pytest.mark.parametrize("sql", REFUSED)
def test_policy_refuses(srv, sql):
    assert_error(srv.query(sql), 403, "permission_denied")
    # nothing was changed
    assert srv.query_json("select count(*) as n from tpch.region") == [{"n": 5}]
    assert srv.query_json("select r_name from tpch.region where r_regionkey = 0") == [
        {"r_name": "AFRICA"}]


@pytest.mark.parametrize("stmt", ["COPY (SELECT 1) TO {path}", "EXPLAIN COPY (SELECT 1) TO {path}",
                                  "COPY tpch.region TO {path}"])
def test_refused_copy_writes_nothing(srv, tmp_path, stmt):
    path = tmp_path / "out.parquet"
    assert_error(srv.query(stmt.format(path=sql_str(path))), 403, "permission_denied")
    assert not path.exists()


def test_refused_ddl_leaves_no_objects(srv):
    for sql in ("CREATE TABLE t(a int)", "CREATE VIEW v AS SELECT 1",
                "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'"):
        srv.query(sql)
    for name in ("t", "v", "x"):
        assert_error(srv.query(f"select * from {name}"), 404, "not_found")


@pytest.mark.parametrize("sql", ["select 1; drop table tpch.region",
                                 "select 1 as one; select 2 as two"])
def test_multiple_statements_not_run(srv, sql):
    r = srv.query(sql)
    assert r.status_code in (400, 403), r.text[:500]
    assert_error(r, r.status_code, "invalid_argument" if r.status_code == 400 else "permission_denied")
    assert srv.query_json("select count(*) as n from tpch.region") == [{"n": 5}]


@pytest.mark.parametrize("sql", ["select 1 as one", "with a as (select 1 as one) select one from a",
                                 "values (1)", "explain select * from tpch.region",
                                 "show tables", "describe tpch.region"])
def test_policy_allows_read_statements(srv, sql):
    r = srv.query(sql)
    assert r.status_code == 200, r.text[:500]
    assert isinstance(r.json(), list) and r.json()


def test_file_path_as_table_is_not_found(srv):
    r = srv.query("SELECT * FROM '/etc/passwd'")
    assert_error(r, 404, "not_found")
    assert "root:" not in r.text


def test_file_path_is_never_read(srv, tmp_path):
    marker = "dataport-e2e-secret-7f3a"
    path = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"secret": [marker]}), path)
    for sql in (f"select * from {sql_str(path)}", f'select * from "{path}"'):
        r = srv.query(sql)
        assert_error(r, 404, "not_found")
        assert marker not in r.text


@pytest.mark.parametrize("sql", ["selec 1", "select * from", "select (1"])
def test_syntax_error(srv, sql):
    assert_error(srv.query(sql), 400, "invalid_argument")


@pytest.mark.parametrize("sql,name", [
    ("select * from no_such_table", "no_such_table"),
    ("select * from tpch.no_such_table", "no_such_table"),
    ("select * from no_such_schema.lineitem", "no_such_schema"),
])
def test_unknown_table(srv, sql, name):
    err = assert_error(srv.query(sql), 404, "not_found")
    assert name in err["message"].lower()


def test_unknown_column(srv):
    err = assert_error(srv.query("select no_such_column from tpch.nation"), 400, "invalid_argument")
    assert "no_such_column" in err["message"].lower()


@pytest.mark.parametrize("sql,params", [
    ("select n_name from nation where n_nationkey = $1", []),
    ("select n_name from nation where n_nationkey = $1", None),
    ("select n_name from nation where n_nationkey = $1", [{"a": 1}]),
    ("select n_name from nation where n_nationkey = $1", [[1, 2]]),
    ("select n_name from nation where n_nationkey = $1", "3"),
])
def test_bad_params(srv, sql, params):
    body = {"sql": sql} if params is None else {"sql": sql, "params": params}
    r = srv.post("/api/v1/query", json=body)
    assert_error(r, 400, "invalid_argument")


@pytest.mark.parametrize("body", [b'{"sql": ', b"not json", b"[]", b'{"query": "select 1"}',
                                  b'{"sql": 5}', b""])
def test_bad_json_body(srv, body):
    r = srv.post("/api/v1/query", data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_argument")


def test_body_over_1mib_is_413(srv):
    body = json.dumps({"sql": "select 1 as one -- " + "x" * (1024 * 1024 + 100)}).encode()
    status, headers, payload = raw_http(srv.addresses["http"], "POST", "/api/v1/query", body,
                                        {"Content-Type": "application/json",
                                         "Authorization": srv.session.headers["Authorization"]})
    assert status == 413, payload[:500]
    err = json.loads(payload)["error"]
    assert err["code"] == "payload_too_large" and err["message"] and err["request_id"], err


def test_body_just_under_1mib_is_accepted(srv):
    body = {"sql": "select 1 as one -- " + "x" * (1000 * 1000)}
    r = srv.post("/api/v1/query", json=body)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == [{"one": 1}]


@pytest.mark.parametrize("accept", ["application/xml", "image/png"])
def test_unsupported_accept_is_406(srv, accept):
    assert_error(srv.query("select 1", accept=accept), 406, "not_acceptable")


@pytest.mark.parametrize("fmt", ["xml", "xlsx"])
def test_unsupported_format_is_406(srv, fmt):
    assert_error(srv.query("select 1", fmt=fmt), 406, "not_acceptable")


def test_request_ids_are_unique(srv):
    ids = {assert_error(srv.query("selec 1"), 400, "invalid_argument")["request_id"]
           for _ in range(3)}
    assert len(ids) == 3


def _damage_first_column_chunk(path) -> None:
    """Overwrite the first column chunk's bytes in place (same inode, footer intact): the table
    still loads, and reading it fails inside the Parquet decoder."""
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(0).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xab" * column.total_compressed_size)


def test_an_internal_error_shows_the_client_only_a_request_id(start_server, data_copy):
    """A failure that is the server's (a data file damaged under it) answers `internal` with a
    generic message and the request id on HTTP and Flight SQL; the log has the detail under
    that id; nothing of the file, its path or the decoder reaches the client."""
    import re
    import time

    import pyarrow.flight as flight

    from e2e_util import FlightSession

    srv = start_server(data_dir=data_copy)
    table = data_copy / "parquet" / "tpch" / "supplier.parquet"
    _damage_first_column_chunk(table)
    # The refresh notices the change; the footer is intact, so the table stays listed.
    deadline = time.time() + 30
    while True:
        r = srv.query("select count(*) as n from tpch.supplier where s_suppkey > 0")
        if r.status_code != 200 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 500, r.text[:500]
    error = r.json()["error"]
    assert error["code"] == "internal", error
    assert error["message"] == "internal error; the server log has the details", error
    request_id = error["request_id"]
    assert r.headers["x-request-id"] == request_id
    leaked = re.compile(r"parquet|supplier|/tmp|panicked|decod|thrift|snappy|zstd", re.I)
    assert not leaked.search(r.text), r.text

    with FlightSession(srv.flight) as session:
        with pytest.raises(flight.FlightInternalError) as raised:
            session.sql("select s_suppkey from tpch.supplier where s_suppkey > 0")
    message = str(raised.value)
    flight_id = re.search(r"request id ([0-9a-f-]{36})", message)
    assert flight_id, message
    assert not leaked.search(message.split("gRPC client debug context")[0]), message

    srv.assert_alive()
    log = srv.stderr_path.read_text()
    for rid in (request_id, flight_id.group(1)):
        lines = [l for l in log.splitlines() if rid in l and "internal error" in l]
        assert lines, f"no log line with the detail under {rid}:\n{log[-3000:]}"
