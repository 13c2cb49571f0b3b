"""Flight SQL spoken by hand: pyarrow.flight for the transport, flight_proto.py for the Flight SQL
protobuf messages. Checks each command's result schema against FlightSql.proto, the metadata
the demo declares (tables, keys), cancellation, and that bad input gets the right gRPC status
while the server keeps serving."""

from __future__ import annotations

import base64
import signal
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import flight_proto as fp
from e2e_util import (ADMIN_PASSWORD, ADMIN_USER, SLOW_QUERY, TPCH_FOREIGN_KEYS, TPCH_PRIMARY_KEYS,
                      TPCH_TABLES, FlightSession, flight_status, metric, wait_for)

CATALOG, SCHEMA = "dataport", "tpch"

# Result schemas from FlightSql.proto (names, types, nullability).
CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()),
                               pa.field("db_schema_name", pa.utf8(), nullable=False)])
TABLES_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()),
                           pa.field("db_schema_name", pa.utf8()),
                           pa.field("table_name", pa.utf8(), nullable=False),
                           pa.field("table_type", pa.utf8(), nullable=False)])
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.utf8(), nullable=False)])
PRIMARY_KEYS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()),
                                 pa.field("db_schema_name", pa.utf8()),
                                 pa.field("table_name", pa.utf8(), nullable=False),
                                 pa.field("column_name", pa.utf8(), nullable=False),
                                 pa.field("key_name", pa.utf8()),
                                 pa.field("key_sequence", pa.int32(), nullable=False)])
KEYS_SCHEMA = pa.schema([pa.field("pk_catalog_name", pa.utf8()),
                         pa.field("pk_db_schema_name", pa.utf8()),
                         pa.field("pk_table_name", pa.utf8(), nullable=False),
                         pa.field("pk_column_name", pa.utf8(), nullable=False),
                         pa.field("fk_catalog_name", pa.utf8()),
                         pa.field("fk_db_schema_name", pa.utf8()),
                         pa.field("fk_table_name", pa.utf8(), nullable=False),
                         pa.field("fk_column_name", pa.utf8(), nullable=False),
                         pa.field("key_sequence", pa.int32(), nullable=False),
                         pa.field("fk_key_name", pa.utf8()),
                         pa.field("pk_key_name", pa.utf8()),
                         pa.field("update_rule", pa.uint8(), nullable=False),
                         pa.field("delete_rule", pa.uint8(), nullable=False)])
XDBC_COLUMNS = ["type_name", "data_type", "column_size", "literal_prefix", "literal_suffix",
                "create_params", "nullable", "case_sensitive", "searchable", "unsigned_attribute",
                "fixed_prec_scale", "auto_increment", "local_type_name", "minimum_scale",
                "maximum_scale", "sql_data_type", "datetime_subcode", "num_prec_radix",
                "interval_precision"]
SQL_INFO_UNION_CHILDREN = ["string_value", "bool_value", "bigint_value", "int32_bitmask",
                           "string_list", "int32_to_int32_list_map"]


def same_schema(actual: pa.Schema, expected: pa.Schema) -> bool:
    """Names, types and nullability equal (schema metadata ignored)."""
    return actual.remove_metadata().equals(expected.remove_metadata())


def check_result(session: FlightSession, cmd: bytes, expected_schema: pa.Schema) -> pa.Table:
    """GetFlightInfo + DoGet of a metadata command; both schemas must be the documented one."""
    info = session.info(cmd)
    assert same_schema(info.schema, expected_schema), \
        f"FlightInfo schema:\n{info.schema}\nexpected:\n{expected_schema}"
    table = session.read(info)
    assert same_schema(table.schema, expected_schema), \
        f"DoGet schema:\n{table.schema}\nexpected:\n{expected_schema}"
    return table


def expect_status(fn, status: str | tuple[str, ...], *fragments: str) -> BaseException:
    """Calls fn; it must fail with one of the gRPC statuses and mention each fragment."""
    statuses = (status,) if isinstance(status, str) else status
    try:
        fn()
    except (flight.FlightError, pa.ArrowException) as e:
        got = flight_status(e)
        assert got in statuses, f"expected {statuses}, got {got} ({type(e).__name__}): {e}"
        for frag in fragments:
            assert frag.lower() in str(e).lower(), f"{frag!r} not in error message: {e}"
        return e
    raise AssertionError(f"expected a {statuses} error, the call succeeded")


@pytest.fixture
def fc(server, flight_client):
    """The demo server's Flight session, checked to be still serving after the test."""
    yield flight_client
    server.assert_flight_alive()


# -- queries ------------------------------------------------------------------------------------


def test_statement_query(fc, server):
    sql = "select n_nationkey, n_name, n_regionkey from tpch.nation order by n_nationkey"
    info = fc.info(fp.command_statement_query(sql))
    assert info.schema.names == ["n_nationkey", "n_name", "n_regionkey"]
    assert len(info.endpoints) >= 1
    assert info.total_records in (-1, 25)
    table = fc.read(info)
    assert table.schema.remove_metadata().equals(info.schema.remove_metadata()), \
        f"DoGet schema {table.schema} != FlightInfo schema {info.schema}"
    assert table.schema.field("n_name").type == pa.utf8()
    assert table.num_rows == 25
    assert table.equals(server.query_arrow(sql).cast(table.schema))


def test_flight_info_descriptor_echoes_command(fc):
    cmd = fp.command_statement_query("select 1 as one")
    info = fc.info(cmd)
    parsed = fp.Info.parse(info.serialize())
    # FlightInfo.flight_descriptor is the request's descriptor (Flight.proto)
    if parsed.descriptor is not None and parsed.descriptor.cmd:
        assert parsed.descriptor.cmd == cmd
    assert parsed.endpoints and all(e.ticket for e in parsed.endpoints)


def test_each_ticket_reads_once_or_repeatably(fc):
    """A ticket read twice gives the same rows or a clean error (never garbage)."""
    info = fc.info(fp.command_statement_query("select r_name from tpch.region order by 1"))
    first = fc.read(info)
    assert first.column("r_name").to_pylist() == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]
    try:
        again = fc.read(info)
    except (flight.FlightError, pa.ArrowException) as e:
        assert flight_status(e) in ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"), e
    else:
        assert again.equals(first)


def test_prepared_statement_with_parameters(fc):
    """What ADBC does: CreatePreparedStatement -> DoPut (bind) -> GetFlightInfo -> DoGet ->
    ClosePreparedStatement."""
    sql = "select n_name from tpch.nation where n_regionkey = $1 and n_nationkey > $2 order by 1"
    [res] = fc.action("CreatePreparedStatement", fp.action_create_prepared_statement_request(sql))
    prepared = fp.parse_create_prepared_statement_result(res)
    assert prepared.handle
    if prepared.dataset_schema:
        assert pa.ipc.read_schema(pa.py_buffer(prepared.dataset_schema)).names == ["n_name"]
    handle = prepared.handle

    params = pa.table({"$1": pa.array([1], pa.int64()), "$2": pa.array([0], pa.int64())})
    descriptor = flight.FlightDescriptor.for_command(fp.command_prepared_statement_query(handle))
    writer, reader = fc.client.do_put(descriptor, params.schema, fc.options)
    writer.write_table(params)
    writer.done_writing()
    meta = reader.read()
    writer.close()
    if meta is not None:
        new_handle = fp.parse_do_put_prepared_statement_result(meta.to_pybytes())
        handle = new_handle or handle

    table = fc.command(fp.command_prepared_statement_query(handle))
    # region 1 = AMERICA: ARGENTINA(1), BRAZIL(2), CANADA(3), PERU(17), UNITED STATES(24)
    assert table.column("n_name").to_pylist() == ["ARGENTINA", "BRAZIL", "CANADA", "PERU",
                                                  "UNITED STATES"]
    assert fc.action("ClosePreparedStatement",
                     fp.action_close_prepared_statement_request(handle)) in ([], [b""])


# -- catalog metadata ---------------------------------------------------------------------------


def test_get_catalogs(fc):
    table = check_result(fc, fp.command_get_catalogs(), CATALOGS_SCHEMA)
    assert table.column("catalog_name").to_pylist() == [CATALOG]


@pytest.mark.parametrize("kwargs,expected", [
    ({}, [SCHEMA]),
    ({"db_schema_filter_pattern": "tp%"}, [SCHEMA]),
    ({"db_schema_filter_pattern": "t_ch"}, [SCHEMA]),
    ({"db_schema_filter_pattern": "zz%"}, []),
    ({"catalog": CATALOG}, [SCHEMA]),
    ({"catalog": "no_such_catalog"}, []),
    ({"catalog": ""}, []),  # "" means: those without a catalog
])
def test_get_db_schemas(fc, kwargs, expected):
    table = check_result(fc, fp.command_get_db_schemas(**kwargs), DB_SCHEMAS_SCHEMA)
    rows = table.to_pylist()
    names = [r["db_schema_name"] for r in rows]
    # other schemas may exist (e.g. information_schema); the filter decides about tpch
    if expected:
        assert SCHEMA in names, rows
        assert all(r["catalog_name"] == CATALOG for r in rows), rows
    else:
        assert SCHEMA not in names, rows
    if "db_schema_filter_pattern" in kwargs and kwargs["db_schema_filter_pattern"] in ("tp%", "t_ch"):
        assert names == [SCHEMA], rows
    keys = [(r["catalog_name"], r["db_schema_name"]) for r in rows]
    assert keys == sorted(keys), "not ordered by catalog_name, db_schema_name"


def _tpch_rows(table: pa.Table) -> list[dict]:
    return [r for r in table.to_pylist() if r["db_schema_name"] == SCHEMA]


def test_get_tables_all(fc):
    table = check_result(fc, fp.command_get_tables(), TABLES_SCHEMA)
    rows = _tpch_rows(table)
    assert sorted(r["table_name"] for r in rows) == sorted(TPCH_TABLES), rows
    assert all(r["catalog_name"] == CATALOG and r["table_type"] == "TABLE" for r in rows), rows
    keys = [(r["catalog_name"], r["db_schema_name"], r["table_name"]) for r in table.to_pylist()]
    assert keys == sorted(keys), "not ordered by catalog_name, db_schema_name, table_name"


@pytest.mark.parametrize("kwargs,expected", [
    ({"table_name_filter_pattern": "line%"}, ["lineitem"]),
    ({"table_name_filter_pattern": "_art%"}, ["part", "partsupp"]),
    ({"table_name_filter_pattern": "%"}, TPCH_TABLES),
    ({"table_name_filter_pattern": "nation"}, ["nation"]),
    ({"table_name_filter_pattern": "nope%"}, []),
    ({"db_schema_filter_pattern": "tp%"}, TPCH_TABLES),
    ({"db_schema_filter_pattern": "other"}, []),
    ({"catalog": CATALOG, "db_schema_filter_pattern": SCHEMA}, TPCH_TABLES),
    ({"catalog": "elsewhere"}, []),
    ({"catalog": ""}, []),  # "" means: those without a catalog
    ({"table_types": ["TABLE"]}, TPCH_TABLES),
    ({"table_types": ["VIEW"]}, []),
    ({"table_types": ["VIEW", "TABLE"], "table_name_filter_pattern": "orders"}, ["orders"]),
])
def test_get_tables_filters(fc, kwargs, expected):
    table = check_result(fc, fp.command_get_tables(**kwargs), TABLES_SCHEMA)
    assert sorted(r["table_name"] for r in _tpch_rows(table)) == sorted(expected), table.to_pylist()
    if kwargs.get("table_types"):
        assert set(table.column("table_type").to_pylist()) <= set(kwargs["table_types"])


def test_get_tables_include_schema(fc, tpch_file):
    table = check_result(fc, fp.command_get_tables(db_schema_filter_pattern=SCHEMA, include_schema=True),
                         TABLES_WITH_SCHEMA_SCHEMA)
    rows = _tpch_rows(table)
    assert sorted(r["table_name"] for r in rows) == sorted(TPCH_TABLES)
    for r in rows:
        schema = pa.ipc.read_schema(pa.py_buffer(r["table_schema"]))
        on_disk = pq.read_schema(tpch_file(r["table_name"]))
        assert schema.names == on_disk.names, (r["table_name"], schema.names, on_disk.names)
        for f in schema:
            assert f.type == on_disk.field(f.name).type, \
                f"{r['table_name']}.{f.name}: {f.type} (parquet: {on_disk.field(f.name).type})"
            assert f.type not in (pa.string_view(), pa.binary_view()), f


def test_get_table_types(fc):
    table = check_result(fc, fp.command_get_table_types(), TABLE_TYPES_SCHEMA)
    assert table.column("table_type").to_pylist() == ["TABLE"]


# -- SqlInfo ------------------------------------------------------------------------------------


def _sql_info(fc, ids) -> dict[int, tuple[str, object]]:
    """{info id: (union child name, value)}."""
    table = fc.command(fp.command_get_sql_info(ids))
    assert table.schema.names == ["info_name", "value"], table.schema
    assert table.schema.field("info_name").type == pa.uint32()
    vtype = table.schema.field("value").type
    assert pa.types.is_union(vtype) and vtype.mode == "dense", vtype
    assert [vtype.field(i).name for i in range(vtype.num_fields)] == SQL_INFO_UNION_CHILDREN, vtype
    out = {}
    for batch in table.to_batches():
        names = batch.column(0).to_pylist()
        values = batch.column(1)
        for i, name in enumerate(names):
            child = vtype.field(vtype.type_codes.index(values.type_codes[i].as_py())).name
            out[name] = (child, values[i].as_py())
    return out


def test_get_sql_info_server(fc):
    info = _sql_info(fc, [0, 1, 2, 3])
    assert set(info) >= {0, 1, 2, 3}, info
    for i in (0, 1, 2):
        child, value = info[i]
        assert child == "string_value" and isinstance(value, str) and value.strip(), (i, info[i])
    assert info[3] == ("bool_value", True), f"FLIGHT_SQL_SERVER_READ_ONLY: {info[3]}"
    # the Arrow version is a version number
    assert info[2][1][0].isdigit(), info[2]


def test_get_sql_info_sql_syntax(fc):
    info = _sql_info(fc, [504])
    assert info.get(504) == ("string_value", '"'), info


def test_get_sql_info_all(fc):
    """An empty id list means: everything the server has (at least the server ids)."""
    info = _sql_info(fc, [])
    assert set(info) >= {0, 1, 2, 3}, sorted(info)


# -- XDBC type info -----------------------------------------------------------------------------


def test_get_xdbc_type_info(fc):
    table = fc.command(fp.command_get_xdbc_type_info())
    assert table.schema.names == XDBC_COLUMNS, table.schema
    assert table.num_rows > 0
    rows = table.to_pylist()
    assert all(r["type_name"] and isinstance(r["data_type"], int) for r in rows), rows
    data_types = [r["data_type"] for r in rows]
    assert data_types == sorted(data_types), "not ordered by data_type"
    # the demo's column types: VARCHAR (12), BIGINT (-5), INTEGER (4), DECIMAL (3), DATE (91)
    for code in (12, -5, 4):
        assert code in data_types, f"no XDBC type with data_type {code}: {sorted(set(data_types))}"

    only = fc.command(fp.command_get_xdbc_type_info(12)).to_pylist()
    assert only and all(r["data_type"] == 12 for r in only), only


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("table_name", TPCH_TABLES)
def test_get_primary_keys(fc, table_name):
    for kwargs in ({}, {"catalog": CATALOG, "db_schema": SCHEMA}):
        table = check_result(fc, fp.command_get_primary_keys(table_name, **kwargs), PRIMARY_KEYS_SCHEMA)
        rows = table.to_pylist()
        assert [(r["column_name"], r["key_sequence"]) for r in rows] == \
            [(c, i + 1) for i, c in enumerate(TPCH_PRIMARY_KEYS[table_name])], rows
        assert all((r["catalog_name"], r["db_schema_name"], r["table_name"]) ==
                   (CATALOG, SCHEMA, table_name) for r in rows), rows
        assert len({r["key_name"] for r in rows}) == 1, "one key, one key_name"


@pytest.mark.parametrize("kwargs", [{"catalog": "elsewhere"}, {"catalog": ""}, {"db_schema": "other"},
                                    {"db_schema": ""}])
def test_get_keys_other_catalog_or_schema(fc, kwargs):
    """Keys of the same table name in another catalog/schema ("" = those without one): none."""
    for cmd in (fp.command_get_primary_keys, fp.command_get_imported_keys, fp.command_get_exported_keys):
        assert fc.command(cmd("orders", **kwargs)).num_rows == 0, (cmd.__name__, kwargs)


def test_get_primary_keys_unknown_table(fc):
    try:
        table = fc.command(fp.command_get_primary_keys("no_such_table"))
    except (flight.FlightError, pa.ArrowException) as e:
        assert flight_status(e) == "NOT_FOUND", e
    else:
        assert table.num_rows == 0


def _fk_tuples(rows) -> set[tuple]:
    return {(r["fk_table_name"], r["fk_column_name"], r["pk_table_name"], r["pk_column_name"])
            for r in rows}


def _check_fk_rows(rows):
    for r in rows:
        assert (r["pk_catalog_name"], r["pk_db_schema_name"]) == (CATALOG, SCHEMA), r
        assert (r["fk_catalog_name"], r["fk_db_schema_name"]) == (CATALOG, SCHEMA), r
        assert r["key_sequence"] == 1, r  # all demo foreign keys have one column
        assert 0 <= r["update_rule"] <= 4 and 0 <= r["delete_rule"] <= 4, r


@pytest.mark.parametrize("table_name", TPCH_TABLES)
def test_get_imported_keys(fc, table_name):
    table = check_result(fc, fp.command_get_imported_keys(table_name, CATALOG, SCHEMA), KEYS_SCHEMA)
    rows = table.to_pylist()
    _check_fk_rows(rows)
    assert _fk_tuples(rows) == {fk for fk in TPCH_FOREIGN_KEYS if fk[0] == table_name}, rows
    assert len(rows) == len(_fk_tuples(rows)), rows


@pytest.mark.parametrize("table_name", TPCH_TABLES)
def test_get_exported_keys(fc, table_name):
    table = check_result(fc, fp.command_get_exported_keys(table_name, CATALOG, SCHEMA), KEYS_SCHEMA)
    rows = table.to_pylist()
    _check_fk_rows(rows)
    assert _fk_tuples(rows) == {fk for fk in TPCH_FOREIGN_KEYS if fk[2] == table_name}, rows
    assert len(rows) == len(_fk_tuples(rows)), rows


@pytest.mark.parametrize("pk_table,fk_table", [("nation", "customer"), ("orders", "lineitem"),
                                               ("supplier", "partsupp"), ("region", "lineitem"),
                                               ("lineitem", "orders")])
def test_get_cross_reference(fc, pk_table, fk_table):
    cmd = fp.command_get_cross_reference(pk_table, fk_table, CATALOG, SCHEMA, CATALOG, SCHEMA)
    rows = check_result(fc, cmd, KEYS_SCHEMA).to_pylist()
    _check_fk_rows(rows)
    assert _fk_tuples(rows) == {fk for fk in TPCH_FOREIGN_KEYS
                                if fk[0] == fk_table and fk[2] == pk_table}, rows


# -- authentication -----------------------------------------------------------------------------


def test_handshake_returns_bearer_token(server):
    with FlightSession(server.flight) as s:
        name, value = s.header
        assert name.lower() == b"authorization" and value.startswith(b"Bearer ") and s.token
        assert s.sql("select 1 as one").to_pylist() == [{"one": 1}]
        # the token works on another connection too
        with FlightSession(server.flight, user=None) as other:
            opts = other.call_options([s.header])
            assert other.sql("select 2 as two", opts).to_pylist() == [{"two": 2}]


def test_wrong_password_is_unauthenticated(server):
    expect_status(lambda: FlightSession(server.flight, password="wrong"), "UNAUTHENTICATED")
    expect_status(lambda: FlightSession(server.flight, user="nobody", password="x"), "UNAUTHENTICATED")
    server.assert_flight_alive()


@pytest.mark.parametrize("headers", [
    [],
    [(b"authorization", b"Bearer not-a-real-token")],
    [(b"authorization", b"Basic " + base64.b64encode(b"admin:wrong"))],
    [(b"authorization", b"Basic !!!notbase64")],
    [(b"authorization", b"Digest abc")],
], ids=["none", "bogus-bearer", "bad-basic", "garbage-basic", "other-scheme"])
def test_calls_without_valid_credentials(server, headers):
    with FlightSession(server.flight, user=None) as s:
        opts = s.call_options(headers)
        expect_status(lambda: s.info(fp.command_statement_query("select 1"), opts), "UNAUTHENTICATED")
        expect_status(lambda: s.info(fp.command_get_catalogs(), opts), "UNAUTHENTICATED")
        expect_status(lambda: s.client.do_get(flight.Ticket(b"x"), opts).read_all(), "UNAUTHENTICATED")
        expect_status(lambda: s.action("CancelFlightInfo", b"", opts), "UNAUTHENTICATED")
    server.assert_flight_alive()


@pytest.mark.parametrize("credentials", [
    base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()),
    # unpadded, as the ADBC Go driver sends it
    base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).rstrip(b"="),
], ids=["padded", "unpadded"])
def test_basic_header_on_a_normal_call(server, credentials):
    padded = credentials + b"=" * (-len(credentials) % 4)
    assert base64.b64decode(padded) == f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()
    with FlightSession(server.flight, user=None) as s:
        opts = s.call_options([(b"authorization", b"Basic " + credentials)])
        assert s.sql("select 3 as three", opts).to_pylist() == [{"three": 3}]


# -- errors and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("sql", ["CREATE TABLE t(a int)", "INSERT INTO tpch.region VALUES (9,'a','b')",
                                 "COPY (SELECT 1) TO '/tmp/dataport-flight-raw.parquet'",
                                 "DROP TABLE tpch.region", "SET datafusion.execution.batch_size = 1"])
def test_writes_are_permission_denied(fc, sql):
    expect_status(lambda: fc.sql(sql), "PERMISSION_DENIED")


def test_statement_update_is_permission_denied(fc):
    """CommandStatementUpdate (DoPut) is how Flight SQL clients send DML."""
    def put():
        descriptor = flight.FlightDescriptor.for_command(
            fp.command_statement_update("DELETE FROM tpch.region"))
        writer, reader = fc.client.do_put(descriptor, pa.schema([]), fc.options)
        writer.done_writing()
        reader.read()
        writer.close()
    expect_status(put, "PERMISSION_DENIED")
    assert fc.sql("select count(*) as n from tpch.region").to_pylist() == [{"n": 5}]


@pytest.mark.parametrize("sql", ["selec 1", "select * from", "select (1"])
def test_syntax_error_is_invalid_argument(fc, sql):
    expect_status(lambda: fc.sql(sql), "INVALID_ARGUMENT")


@pytest.mark.parametrize("sql,name", [("select * from no_such_table", "no_such_table"),
                                      ("select * from tpch.no_such_table", "no_such_table")])
def test_unknown_table_is_not_found(fc, sql, name):
    expect_status(lambda: fc.sql(sql), "NOT_FOUND", name)


@pytest.mark.parametrize("ticket", [b"", b"\x00\x01garbage", b"\xff" * 64,
                                    fp.any_pack("type.googleapis.com/nope.Nope", b"x")],
                         ids=["empty", "garbage", "ff", "unknown-any"])
def test_malformed_ticket(fc, ticket):
    expect_status(lambda: fc.client.do_get(flight.Ticket(ticket), fc.options).read_all(),
                  ("INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND"))


def test_garbage_ticket_is_invalid_argument(fc):
    expect_status(lambda: fc.client.do_get(flight.Ticket(b"\x00\x01garbage"), fc.options).read_all(),
                  "INVALID_ARGUMENT")


def test_unknown_statement_handle(fc):
    ticket = fp.sql_any("TicketStatementQuery", fp.f_bytes(1, b"no-such-statement-handle"))
    expect_status(lambda: fc.client.do_get(flight.Ticket(ticket), fc.options).read_all(),
                  ("NOT_FOUND", "INVALID_ARGUMENT"))


def test_unknown_any_type_url(fc):
    cmd = fp.sql_any("CommandDoesNotExist", b"")
    expect_status(lambda: fc.info(cmd), ("INVALID_ARGUMENT", "UNIMPLEMENTED"), "CommandDoesNotExist")


@pytest.mark.parametrize("cmd", [b"", b"garbage", b"\x0a\xff\xff\xff\xff\x0f", b"select 1"],
                         ids=["empty", "garbage", "bad-length", "plain-sql"])
def test_garbage_command(fc, cmd):
    expect_status(lambda: fc.info(cmd), "INVALID_ARGUMENT")


def test_garbage_command_in_sub_message(fc):
    """A well-formed Any whose payload is not the named message."""
    cmd = fp.sql_any("CommandStatementQuery", b"\xff\xff\xff")
    expect_status(lambda: fc.info(cmd), "INVALID_ARGUMENT")


@pytest.mark.parametrize("action", ["CancelFlightInfo", "CancelQuery", "CreatePreparedStatement",
                                    "ClosePreparedStatement"])
def test_garbage_action_body(fc, action):
    expect_status(lambda: fc.action(action, b"\xff\x00garbage"), ("INVALID_ARGUMENT", "NOT_FOUND"))


def test_unknown_action(fc):
    expect_status(lambda: fc.action("NoSuchAction", b""), ("INVALID_ARGUMENT", "UNIMPLEMENTED"))


def test_close_unknown_prepared_statement(fc):
    body = fp.action_close_prepared_statement_request(b"no-such-handle")
    try:
        fc.action("ClosePreparedStatement", body)
    except (flight.FlightError, pa.ArrowException) as e:
        assert flight_status(e) in ("NOT_FOUND", "INVALID_ARGUMENT"), e


def test_list_actions_includes_cancel(fc):
    names = {a.type for a in fc.client.list_actions(fc.options)}
    assert {"CancelFlightInfo", "CreatePreparedStatement", "ClosePreparedStatement"} <= names, names


# -- cancellation -------------------------------------------------------------------------------


def _queries(srv, outcome=None) -> float:
    labels = {"outcome": outcome} if outcome else {}
    return metric(srv.metrics(), "dataport_queries_total", **labels) or 0


def _running(srv) -> float:
    return metric(srv.metrics(), "dataport_queries_running") or 0


def _cancel_while_streaming(srv, cancel) -> None:
    """GetFlightInfo on a slow query, DoGet in a thread, `cancel(session, info)` from here:
    the DoGet must end with CANCELLED quickly and the query must stop.

    pyarrow treats a CANCELLED status as if the user had pressed Ctrl-C and simulates a SIGINT
    in the main thread; a handler records it instead of letting it abort the test run."""
    interrupts: list = []
    previous = signal.signal(signal.SIGINT, lambda *args: interrupts.append(args))
    try:
        _cancel_while_streaming_inner(srv, cancel)
    finally:
        signal.signal(signal.SIGINT, previous)


def _cancel_while_streaming_inner(srv, cancel) -> None:
    with FlightSession(srv.flight, timeout=None) as s:
        info = s.info(fp.command_statement_query(SLOW_QUERY))
        outcome: dict = {}

        def consume():
            try:
                s.read(info)
                outcome["result"] = "finished"
            except BaseException as e:  # noqa: BLE001 - reported below
                outcome["error"] = e
            outcome["at"] = time.monotonic()

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        wait_for(lambda: _running(srv) >= 1, 30, what="the slow query to start running")
        time.sleep(0.5)
        t0 = time.monotonic()
        status = cancel(s, info)
        thread.join(30)
        assert not thread.is_alive(), "DoGet still running 30s after the cancel action"
        assert "error" in outcome, f"DoGet ended without error: {outcome}"
        err = outcome["error"]
        assert flight_status(err) == "CANCELLED", f"DoGet ended with {type(err).__name__}: {err}"
        assert outcome["at"] - t0 < 10, f"DoGet took {outcome['at'] - t0:.1f}s to end"
        assert status == fp.CancelResult.CANCELLED, f"cancel result {status!r}"
    wait_for(lambda: _running(srv) == 0, 30, what="dataport_queries_running == 0 after the cancel")
    srv.assert_flight_alive()


def test_cancel_flight_info(start_server):
    srv = start_server(["--query-timeout", "120s"])

    def cancel(s, info):
        [res] = s.action("CancelFlightInfo", fp.cancel_flight_info_request(info.serialize()))
        return fp.parse_cancel_flight_info_result(res)

    _cancel_while_streaming(srv, cancel)


def test_cancel_query_legacy_action(start_server):
    srv = start_server(["--query-timeout", "120s"])

    def cancel(s, info):
        [res] = s.action("CancelQuery", fp.action_cancel_query_request(info.serialize()))
        return fp.parse_cancel_query_result(res)

    _cancel_while_streaming(srv, cancel)


def test_query_timeout_is_deadline_exceeded(start_server):
    srv = start_server(["--query-timeout", "1s"])
    with FlightSession(srv.flight) as s:
        t0 = time.monotonic()
        expect_status(lambda: s.sql(SLOW_QUERY), "DEADLINE_EXCEEDED")
        assert time.monotonic() - t0 < 30
    wait_for(lambda: _running(srv) == 0, 30, what="dataport_queries_running == 0 after the timeout")
    srv.assert_flight_alive()


def test_client_disconnect_stops_query(start_server):
    """A client that goes away mid-DoGet (its deadline passes) must not leave the query running."""
    srv = start_server(["--query-timeout", "120s"])
    with FlightSession(srv.flight, timeout=None) as s:
        info = s.info(fp.command_statement_query(SLOW_QUERY))
        opts = s.call_options(timeout=3)
        expect_status(lambda: s.client.do_get(info.endpoints[0].ticket, opts).read_all(),
                      ("DEADLINE_EXCEEDED", "CANCELLED"))
    wait_for(lambda: _running(srv) == 0, 30, what="dataport_queries_running == 0 after the client left")
    srv.assert_flight_alive()
