"""Flight SQL through the ADBC Flight SQL driver (the Go driver, via adbc-driver-flightsql) and its
DB-API layer: logins, queries with and without parameters, metadata calls, partitions, errors
and result types.

ADBC's `cursor.execute` always prepares: CreatePreparedStatement -> (DoPut to bind parameters)
-> GetFlightInfo(CommandPreparedStatementQuery) -> DoGet -> ClosePreparedStatement.

Errors: the driver reports '<server message> (<grpc-go code name>; <call>)', sets vendor_code
to the numeric gRPC code, and maps the code to an ADBC status:
INVALID_ARGUMENT -> INVALID_ARGUMENT, NOT_FOUND -> NOT_FOUND, PERMISSION_DENIED -> UNAUTHORIZED,
UNAUTHENTICATED -> UNAUTHENTICATED (all ProgrammingError), DEADLINE_EXCEEDED -> TIMEOUT and
CANCELLED -> CANCELLED (OperationalError)."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_flightsql import dbapi
from adbc_driver_manager import AdbcStatusCode

from e2e_util import (SLOW_QUERY, TPCH_FOREIGN_KEYS, TPCH_PRIMARY_KEYS, TPCH_TABLES, FlightSession,
                      adbc_connect, adbc_grpc_status, arrow_rows, metric, wait_for)

VIEW_TYPES = (pa.string_view(), pa.binary_view())


def expect_adbc_error(fn, grpc_status: str, adbc_status: AdbcStatusCode, exc_class=dbapi.Error,
                      *fragments: str) -> dbapi.Error:
    """fn must raise an ADBC error of `exc_class` with that ADBC status, whose message names the
    gRPC status the server sent."""
    with pytest.raises(dbapi.Error) as ei:
        fn()
    e = ei.value
    assert isinstance(e, exc_class), f"expected {exc_class.__name__}, got {type(e).__name__}: {e}"
    assert e.status_code == adbc_status, f"expected ADBC {adbc_status.name}, got {e.status_code!r}: {e}"
    assert adbc_grpc_status(e) == grpc_status, f"expected gRPC {grpc_status}: {e}"
    for frag in fragments:
        assert frag.lower() in str(e).lower(), f"{frag!r} not in {e}"
    return e


def run(conn, sql: str, params=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def assert_no_view_types(schema: pa.Schema) -> None:
    def walk(t: pa.DataType, path: str):
        assert t not in VIEW_TYPES, f"{path}: view type {t} on the wire"
        assert t not in (pa.large_string(), pa.large_binary()), f"{path}: {t} (expected plain utf8/binary)"
        for i in range(t.num_fields):
            walk(t.field(i).type, f"{path}.{t.field(i).name}")
    for f in schema:
        walk(f.type, f.name)


@pytest.fixture
def conn(server, adbc_conn):
    """The demo server's ADBC connection, checked to be still serving after the test."""
    yield adbc_conn
    server.assert_flight_alive()


# -- logins -------------------------------------------------------------------------------------


def test_connect_with_username_password(conn):
    with conn.cursor() as cur:
        cur.execute("select 1 as one")
        assert cur.fetchall() == [(1,)]
        assert [d[0] for d in cur.description] == ["one"]


def test_connect_with_bearer_header(server):
    with FlightSession(server.flight) as s:
        token = s.token
    conn = adbc_connect(server.flight, user=None,
                        **{DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"})
    try:
        assert run(conn, "select 2 as two").to_pylist() == [{"two": 2}]
    finally:
        conn.close()


def test_wrong_password_is_unauthenticated(server):
    def connect_and_query():
        c = adbc_connect(server.flight, password="wrong")
        try:
            run(c, "select 1")
        finally:
            c.close()
    expect_adbc_error(connect_and_query, "UNAUTHENTICATED", AdbcStatusCode.UNAUTHENTICATED,
                      dbapi.ProgrammingError)
    server.assert_flight_alive()


def test_bogus_bearer_is_unauthenticated(server):
    def connect_and_query():
        c = adbc_connect(server.flight, user=None,
                         **{DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer not-a-token"})
        try:
            run(c, "select 1")
        finally:
            c.close()
    expect_adbc_error(connect_and_query, "UNAUTHENTICATED", AdbcStatusCode.UNAUTHENTICATED,
                      dbapi.ProgrammingError)


# -- queries ------------------------------------------------------------------------------------


def test_execute_without_parameters(conn, server):
    sql = "select n_nationkey, n_name, n_regionkey from nation order by n_nationkey"
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    assert len(rows) == 25 and rows[0] == (0, "ALGERIA", 0)
    assert rows == arrow_rows(server.query_arrow(sql))


def test_fetch_arrow_table_matches_http(conn, server):
    sql = "select * from tpch.lineitem order by l_orderkey, l_linenumber limit 2000"
    table = run(conn, sql)
    expected = server.query_arrow(sql)
    assert table.schema.names == expected.schema.names
    for f in table.schema:
        assert f.type == expected.schema.field(f.name).type, f"{f.name}: {f.type} vs HTTP {expected.schema.field(f.name).type}"
    assert_no_view_types(table.schema)
    assert table.to_pylist() == expected.to_pylist()


def test_fetch_types(conn, tpch_file):
    """Column types are the Parquet files' types (no view types, utf8 strings)."""
    table = run(conn, "select * from orders limit 10")
    on_disk = pq.read_schema(tpch_file("orders"))
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in on_disk]


def test_execute_with_dollar_parameters(conn):
    sql = "select n_name from nation where n_regionkey = $1 and n_nationkey > $2 order by n_name"
    with conn.cursor() as cur:
        cur.execute(sql, (1, 0))
        assert [r[0] for r in cur.fetchall()] == ["ARGENTINA", "BRAZIL", "CANADA", "PERU", "UNITED STATES"]
        # the same prepared statement, new parameters
        cur.execute(sql, (3, 10))
        assert [r[0] for r in cur.fetchall()] == ["ROMANIA", "RUSSIA", "UNITED KINGDOM"]


def test_execute_with_qmark_parameters(conn):
    """ADBC's DB-API paramstyle is 'qmark'; JDBC/ODBC tools send `?` too."""
    assert dbapi.paramstyle == "qmark"
    sql = "select n_name from nation where n_regionkey = ? and n_nationkey > ? order by n_name"
    with conn.cursor() as cur:
        cur.execute(sql, (1, 0))
        assert [r[0] for r in cur.fetchall()] == ["ARGENTINA", "BRAZIL", "CANADA", "PERU", "UNITED STATES"]


@pytest.mark.parametrize("sql,params", [
    ("select n_nationkey from nation where n_name = $1", ("GERMANY",)),
    ("select count(*) from orders where o_orderdate = $1", (dt.date(1995, 3, 15),)),
    ("select count(*) from lineitem where l_discount = $1", (decimal.Decimal("0.05"),)),
    ("select count(*) from part where p_retailprice > $1", (1500.5,)),
    ("select count(*) from customer where c_mktsegment = $1 and c_acctbal > $2", ("BUILDING", 5000)),
    ("select $1 || '-' || $2 as s", ("a", "b")),
])
def test_parameter_types(conn, duck, sql, params):
    """Python values of several types bound as parameters; DuckDB on the same files agrees."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    expected = duck.execute(sql, list(params)).fetchall()
    assert rows == expected
    assert rows and rows[0][0] not in (0, None), rows


def test_parameter_count_mismatch_is_invalid_argument(conn):
    def go():
        run(conn, "select n_name from nation where n_nationkey = $1 and n_regionkey = $2", (1,))
    expect_adbc_error(go, "INVALID_ARGUMENT", AdbcStatusCode.INVALID_ARGUMENT, dbapi.ProgrammingError)


def test_fetch_in_batches(conn):
    with conn.cursor() as cur:
        cur.execute("select l_orderkey from lineitem")
        reader = cur.fetch_record_batch()
        n = sum(b.num_rows for b in reader)
    assert n == 600572


def test_no_view_types_in_results(conn):
    table = run(conn, "select 'x'::varchar as a, arrow_cast('y', 'Utf8View') as b, "
                      "arrow_cast(arrow_cast('z', 'Binary'), 'BinaryView') as c, "
                      "[arrow_cast('w', 'Utf8View')] as d, "
                      "named_struct('s', arrow_cast('v', 'Utf8View')) as e")
    assert_no_view_types(table.schema)
    assert table.schema.field("a").type == pa.utf8()
    assert table.schema.field("b").type == pa.utf8()
    assert table.schema.field("c").type == pa.binary()
    assert table.to_pylist() == [{"a": "x", "b": "y", "c": b"z", "d": ["w"], "e": {"s": "v"}}]


def test_no_view_types_in_table_results(conn):
    for t in TPCH_TABLES:
        with conn.cursor() as cur:
            cur.execute(f"select * from {t} limit 1")
            assert_no_view_types(cur.fetch_arrow_table().schema)


def test_execute_schema(conn):
    """adbc_execute_schema: the result schema without running (prepare + dataset_schema)."""
    with conn.cursor() as cur:
        try:
            schema = cur.adbc_execute_schema("select n_name, n_nationkey from nation")
        except dbapi.NotSupportedError:
            pytest.skip("driver/server do not support execute_schema")
        assert schema.names == ["n_name", "n_nationkey"]
        assert schema.field("n_name").type == pa.utf8()


# -- metadata -----------------------------------------------------------------------------------


def test_get_info(conn):
    info = conn.adbc_get_info()
    for key in ("vendor_name", "vendor_version", "vendor_arrow_version"):
        assert isinstance(info.get(key), str) and info[key].strip(), f"{key}: {info.get(key)!r} in {info}"
    assert "dataport" in info["vendor_name"].lower(), info["vendor_name"]
    assert re.match(r"^v?\d+\.\d+", info["vendor_version"]), info["vendor_version"]
    assert re.match(r"^\d+\.\d+", info["vendor_arrow_version"]), info["vendor_arrow_version"]
    assert "flight sql" in info["driver_name"].lower(), info


def test_get_table_types(conn):
    assert conn.adbc_get_table_types() == ["TABLE"]


def _objects(conn, **kw) -> list[dict]:
    return conn.adbc_get_objects(**kw).read_all().to_pylist()


def _tpch_tables(objects) -> dict[str, dict]:
    [cat] = [c for c in objects if c["catalog_name"] == "dataport"]
    [sch] = [s for s in cat["catalog_db_schemas"] if s["db_schema_name"] == "tpch"]
    return {t["table_name"]: t for t in sch["db_schema_tables"]}


XDBC = {pa.int64(): -5, pa.int32(): 4, pa.utf8(): 12, pa.date32(): 91}


def test_get_objects_all(conn, tpch_file):
    objects = _objects(conn, depth="all")
    assert [c["catalog_name"] for c in objects] == ["dataport"], [c["catalog_name"] for c in objects]
    tables = _tpch_tables(objects)
    assert sorted(tables) == sorted(TPCH_TABLES)
    for name, t in tables.items():
        assert t["table_type"] == "TABLE", t
        on_disk = pq.read_schema(tpch_file(name))
        cols = t["table_columns"]
        assert [c["column_name"] for c in cols] == on_disk.names, name
        assert [c["ordinal_position"] for c in cols] == list(range(1, len(cols) + 1)), name
        for c in cols:
            arrow_type = on_disk.field(c["column_name"]).type
            if c["xdbc_data_type"] is not None:
                want = 3 if pa.types.is_decimal(arrow_type) else XDBC[arrow_type]
                assert c["xdbc_data_type"] == want, (name, c)


def test_get_objects_filters(conn):
    assert _tpch_tables(_objects(conn, depth="tables", table_name_filter="line%")).keys() == {"lineitem"}
    assert _tpch_tables(_objects(conn, depth="tables", table_name_filter="_art%")).keys() == {"part", "partsupp"}
    assert _tpch_tables(_objects(conn, depth="tables", table_types_filter=["VIEW"])) == {}
    schemas = _objects(conn, depth="db_schemas", db_schema_filter="tp%")
    assert [s["db_schema_name"] for c in schemas for s in c["catalog_db_schemas"]] == ["tpch"]
    cols = _tpch_tables(_objects(conn, depth="columns", table_name_filter="orders",
                                 column_name_filter="o_order%"))["orders"]["table_columns"]
    assert [c["column_name"] for c in cols] == ["o_orderkey", "o_orderstatus", "o_orderdate", "o_orderpriority"]


def test_get_objects_constraints(conn):
    """Primary and foreign keys as table_constraints (when the driver asks the server for them)."""
    tables = _tpch_tables(_objects(conn, depth="all"))
    if not any(t["table_constraints"] for t in tables.values()):
        pytest.skip("the ADBC Flight SQL driver does not fill table_constraints (its GetObjects only "
                    "calls GetCatalogs/GetDbSchemas/GetTables); keys are checked in test_flight_raw")
    for name, t in tables.items():
        pks = [c for c in t["table_constraints"] if c["constraint_type"] == "PRIMARY KEY"]
        assert [c["constraint_column_names"] for c in pks] == [TPCH_PRIMARY_KEYS[name]], (name, pks)
        fks = {(c["constraint_column_names"][0], u["fk_table"], u["fk_column_name"])
               for c in t["table_constraints"] if c["constraint_type"] == "FOREIGN KEY"
               for u in c["constraint_column_usage"]}
        assert fks == {(col, pt, pc) for ft, col, pt, pc in TPCH_FOREIGN_KEYS if ft == name}, (name, fks)


def test_get_table_schema(conn, tpch_file):
    for name in TPCH_TABLES:
        schema = conn.adbc_get_table_schema(name, db_schema_filter="tpch")
        on_disk = pq.read_schema(tpch_file(name))
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in on_disk], name
    schema = conn.adbc_get_table_schema("nation", catalog_filter="dataport", db_schema_filter="tpch")
    assert schema.names == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]


def test_get_table_schema_unknown_table(conn):
    with pytest.raises(dbapi.Error) as ei:
        conn.adbc_get_table_schema("no_such_table", db_schema_filter="tpch")
    assert ei.value.status_code == AdbcStatusCode.NOT_FOUND, ei.value


# -- partitions ---------------------------------------------------------------------------------


def test_execute_partitions(conn, server):
    sql = "select o_orderkey, o_totalprice from orders where o_orderkey < 1000 order by o_orderkey"
    with conn.cursor() as cur:
        partitions, schema = cur.adbc_execute_partitions(sql)
        assert partitions, "no partitions"
        if schema is not None:
            assert schema.names == ["o_orderkey", "o_totalprice"]
        rows = []
        for p in partitions:
            with conn.cursor() as reader:
                reader.adbc_read_partition(p)
                rows += reader.fetchall()
    assert rows == arrow_rows(server.query_arrow(sql))


def test_partition_read_on_another_connection(conn, server):
    sql = "select r_name from region order by r_name"
    with conn.cursor() as cur:
        partitions, _ = cur.adbc_execute_partitions(sql)
        other = adbc_connect(server.flight)
        try:
            rows = []
            for p in partitions:
                with other.cursor() as reader:
                    reader.adbc_read_partition(p)
                    rows += reader.fetchall()
        finally:
            other.close()
    assert [r[0] for r in rows] == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", ["CREATE TABLE t(a int)", "INSERT INTO tpch.region VALUES (9,'a','b')",
                                 "COPY (SELECT 1) TO '/tmp/dataport-adbc.parquet'", "DROP TABLE tpch.region",
                                 "DELETE FROM tpch.region", "SET datafusion.execution.batch_size = 1",
                                 "CREATE VIEW v AS SELECT 1"])
def test_writes_are_permission_denied(conn, sql):
    expect_adbc_error(lambda: run(conn, sql), "PERMISSION_DENIED", AdbcStatusCode.UNAUTHORIZED,
                      dbapi.ProgrammingError)
    assert run(conn, "select count(*) as n from tpch.region").to_pylist() == [{"n": 5}]


def test_executescript_is_refused(conn):
    """executescript sends the text as an update (CommandStatementUpdate)."""
    with conn.cursor() as cur:
        with pytest.raises(dbapi.Error) as ei:
            cur.executescript("DROP TABLE tpch.region")
    assert adbc_grpc_status(ei.value) == "PERMISSION_DENIED", ei.value
    assert run(conn, "select count(*) as n from tpch.region").to_pylist() == [{"n": 5}]


@pytest.mark.parametrize("sql", ["selec 1", "select * from", "select (1"])
def test_syntax_error_is_invalid_argument(conn, sql):
    expect_adbc_error(lambda: run(conn, sql), "INVALID_ARGUMENT", AdbcStatusCode.INVALID_ARGUMENT,
                      dbapi.ProgrammingError)


def test_unknown_column_is_invalid_argument(conn):
    expect_adbc_error(lambda: run(conn, "select no_such_column from nation"), "INVALID_ARGUMENT",
                      AdbcStatusCode.INVALID_ARGUMENT, dbapi.ProgrammingError, "no_such_column")


@pytest.mark.parametrize("sql", ["select * from no_such_table", "select * from tpch.no_such_table"])
def test_unknown_table_is_not_found(conn, sql):
    expect_adbc_error(lambda: run(conn, sql), "NOT_FOUND", AdbcStatusCode.NOT_FOUND,
                      dbapi.ProgrammingError, "no_such_table")


def test_query_timeout_is_deadline_exceeded(start_server):
    srv = start_server(["--query-timeout", "1s"])
    c = adbc_connect(srv.flight)
    try:
        t0 = time.monotonic()
        expect_adbc_error(lambda: run(c, SLOW_QUERY), "DEADLINE_EXCEEDED", AdbcStatusCode.TIMEOUT,
                          dbapi.OperationalError)
        assert time.monotonic() - t0 < 30
        # the connection is still usable
        assert run(c, "select 1 as one").to_pylist() == [{"one": 1}]
    finally:
        c.close()
    srv.assert_flight_alive()


def test_cancel_is_cancelled(start_server):
    srv = start_server(["--query-timeout", "120s"])
    c = adbc_connect(srv.flight)
    try:
        cur = c.cursor()
        outcome: dict = {}

        def consume():
            try:
                cur.execute(SLOW_QUERY)
                cur.fetchall()
                outcome["result"] = "finished"
            except BaseException as e:  # noqa: BLE001
                outcome["error"] = e

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        wait_for(lambda: (metric(srv.metrics(), "dataport_queries_running") or 0) >= 1, 30,
                 what="the slow query to start running")
        time.sleep(0.5)
        cur.adbc_cancel()
        thread.join(30)
        assert not thread.is_alive(), "execute/fetch still running 30s after adbc_cancel()"
        err = outcome.get("error")
        assert isinstance(err, dbapi.OperationalError), f"expected OperationalError, got {outcome}"
        assert err.status_code == AdbcStatusCode.CANCELLED, err
        cur.close()
        wait_for(lambda: metric(srv.metrics(), "dataport_queries_running") == 0, 30,
                 what="the cancelled query to stop on the server")
        assert run(c, "select 1 as one").to_pylist() == [{"one": 1}]
    finally:
        c.close()
    srv.assert_flight_alive()


def test_many_connections_and_statements(server):
    """Prepared statements are closed and sessions don't pile up: 30 connect/query/close rounds."""
    for i in range(30):
        c = adbc_connect(server.flight)
        try:
            t = run(c, "select n_nationkey from nation where n_nationkey = $1", (i % 25,))
            assert t.to_pylist() == [{"n_nationkey": i % 25}]
        finally:
            c.close()
    server.assert_flight_alive()
