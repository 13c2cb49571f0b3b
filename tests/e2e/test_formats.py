"""Output formats: every format parsed by an independent reader must give the same rows."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from e2e_util import (CONTENT_TYPES, arrow_rows, assert_error, diff_ordered, kind_of, norm_rows,
                      sql_str)

# (server SQL, DuckDB SQL over the views, source table)
QUERIES = {
    "nation": ("select * from tpch.nation order by n_nationkey",
               "select * from nation order by n_nationkey", "nation"),
    "lineitem": ("select * from tpch.lineitem order by l_orderkey, l_linenumber limit 1000",
                 "select * from lineitem order by l_orderkey, l_linenumber limit 1000", "lineitem"),
}


# -- readers: bytes -> (column names, rows) ----------------------------------------------------

def read_json(body: bytes, tmp_path):
    data = json.loads(body)
    assert isinstance(data, list), f"JSON result is not an array: {str(data)[:200]}"
    names = list(data[0].keys()) if data else []
    for obj in data:
        assert isinstance(obj, dict) and set(obj) == set(names), obj
    return names, [tuple(obj[n] for n in names) for obj in data]


def read_ndjson(body: bytes, tmp_path):
    objs = [json.loads(line) for line in body.decode("utf-8").split("\n") if line.strip()]
    names = list(objs[0].keys()) if objs else []
    for obj in objs:
        assert isinstance(obj, dict) and set(obj) == set(names), obj
    return names, [tuple(obj[n] for n in names) for obj in objs]


def read_csv(body: bytes, tmp_path):
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert rows, "CSV body is empty (no header row)"
    return rows[0], [tuple(r) for r in rows[1:]]


def read_arrow(body: bytes, tmp_path):
    table = pa.ipc.open_stream(body).read_all()
    return table.column_names, arrow_rows(table)


def read_parquet(body: bytes, tmp_path):
    table = pq.read_table(io.BytesIO(body))
    return table.column_names, arrow_rows(table)


def _duck_file(body: bytes, tmp_path, name: str, fn: str):
    path = tmp_path / name
    path.write_bytes(body)
    con = duckdb.connect()
    try:
        cur = con.execute(f"select * from {fn}({sql_str(path)})")
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        con.close()


def read_duckdb_csv(body: bytes, tmp_path):
    return _duck_file(body, tmp_path, "result.csv", "read_csv")


def read_duckdb_parquet(body: bytes, tmp_path):
    return _duck_file(body, tmp_path, "result.parquet", "read_parquet")


def _in_column_order(fmt, got_names, rows, names):
    """JSON objects are unordered: for json/ndjson compare keys as a set and reorder values to
    the expected column order. Other formats must keep the column order."""
    if fmt in ("json", "ndjson") and sorted(got_names) == sorted(names):
        idx = [got_names.index(n) for n in names]
        return names, [tuple(row[i] for i in idx) for row in rows]
    return got_names, rows


READERS = {
    "json": ("json", read_json),
    "ndjson": ("ndjson", read_ndjson),
    "csv": ("csv", read_csv),
    "arrow": ("arrow", read_arrow),
    "parquet": ("parquet", read_parquet),
    "duckdb-csv": ("csv", read_duckdb_csv),
    "duckdb-parquet": ("parquet", read_duckdb_parquet),
}


def _expected(duck, tpch_file, query_key):
    _, duck_sql, table = QUERIES[query_key]
    cur = duck.execute(duck_sql)
    names = [d[0] for d in cur.description]
    schema = pq.read_schema(tpch_file(table))
    kinds = [kind_of(schema.field(n).type) for n in names]
    return names, kinds, norm_rows(cur.fetchall(), kinds), schema


def _is_stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("query", QUERIES)
def test_format_roundtrip(server, duck, tpch_file, tmp_path, query, reader):
    names, kinds, expected, _ = _expected(duck, tpch_file, query)
    fmt, parse = READERS[reader]
    r = server.query(QUERIES[query][0], fmt=fmt)
    assert r.status_code == 200, r.text[:2000]
    assert r.headers.get("Content-Type", "").startswith(CONTENT_TYPES[fmt]), r.headers
    got_names, got_rows = _in_column_order(fmt, *parse(r.content, tmp_path), names)
    assert got_names == names
    problems = diff_ordered(norm_rows(got_rows, kinds), expected)
    assert not problems, f"{reader} result differs from DuckDB:\n" + "\n".join(problems)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
@pytest.mark.parametrize("query", QUERIES)
def test_binary_formats_keep_types(server, duck, tpch_file, query, fmt):
    """Arrow and Parquet output keep the source column types (strings may change encoding)."""
    _, _, _, schema = _expected(duck, tpch_file, query)
    r = server.query(QUERIES[query][0], fmt=fmt)
    assert r.status_code == 200, r.text[:2000]
    got = (pa.ipc.open_stream(r.content).schema if fmt == "arrow"
           else pq.read_schema(io.BytesIO(r.content)))
    for field in schema:
        g = got.field(field.name).type
        assert g == field.type or (_is_stringy(g) and _is_stringy(field.type)), (
            f"{field.name}: {g} != source {field.type}")


# -- negotiation -------------------------------------------------------------------------------

NATION = "select * from tpch.nation order by n_nationkey"
PARSERS = {"json": read_json, "ndjson": read_ndjson, "csv": read_csv, "arrow": read_arrow,
           "parquet": read_parquet}


def _check_body(r, fmt, duck, tpch_file, tmp_path):
    assert r.status_code == 200, r.text[:2000]
    assert r.headers.get("Content-Type", "").startswith(CONTENT_TYPES[fmt]), r.headers
    names, kinds, expected, _ = _expected(duck, tpch_file, "nation")
    got_names, rows = _in_column_order(fmt, *PARSERS[fmt](r.content, tmp_path), names)
    assert got_names == names
    assert not diff_ordered(norm_rows(rows, kinds), expected)


@pytest.mark.parametrize("fmt", CONTENT_TYPES)
def test_accept_header_selects_format(server, duck, tpch_file, tmp_path, fmt):
    r = server.query(NATION, accept=CONTENT_TYPES[fmt])
    _check_body(r, fmt, duck, tpch_file, tmp_path)


@pytest.mark.parametrize("accept", ["*/*", None])
def test_default_format_is_json(server, duck, tpch_file, tmp_path, accept):
    # `None` removes the header requests would otherwise send.
    r = server.query(NATION, headers={"Accept": accept})
    _check_body(r, "json", duck, tpch_file, tmp_path)


@pytest.mark.parametrize("fmt,accept", [("json", "text/csv"), ("arrow", "application/json"),
                                        ("csv", "application/vnd.apache.arrow.stream"),
                                        ("ndjson", "application/vnd.apache.parquet"),
                                        ("parquet", "application/x-ndjson")])
def test_format_param_overrides_accept(server, duck, tpch_file, tmp_path, fmt, accept):
    r = server.query(NATION, fmt=fmt, accept=accept)
    _check_body(r, fmt, duck, tpch_file, tmp_path)


# -- large streaming results -------------------------------------------------------------------

def _count_and_sum_stream(r, fmt):
    """Consumes a streamed response; returns (rows, sum of l_orderkey)."""
    rows = total = 0
    if fmt == "arrow":
        r.raw.decode_content = True
        reader = pa.ipc.open_stream(pa.PythonFile(r.raw, mode="r"))
        assert len(reader.schema) == 16
        for batch in reader:
            rows += batch.num_rows
            total += pc.sum(batch.column("l_orderkey")).as_py() or 0
    elif fmt == "ndjson":
        for line in r.iter_lines(chunk_size=1 << 16):
            if line.strip():
                rows += 1
                total += json.loads(line)["l_orderkey"]
    elif fmt == "csv":
        lines = (line.decode("utf-8") for line in r.iter_lines(chunk_size=1 << 16) if line)
        reader = csv.reader(lines)
        col = next(reader).index("l_orderkey")
        for rec in reader:
            rows += 1
            total += int(rec[col])
    else:  # parquet is a file format: read it whole
        table = pq.read_table(io.BytesIO(r.content), columns=["l_orderkey"])
        rows = table.num_rows
        total = pc.sum(table.column("l_orderkey")).as_py() or 0
    return rows, total


@pytest.mark.parametrize("fmt", ["arrow", "ndjson", "csv", "parquet"])
def test_large_result_streams_uncapped(server, tpch_file, fmt):
    con = duckdb.connect()
    exp_rows, exp_sum = con.execute(
        f"select count(*), sum(l_orderkey) from read_parquet({sql_str(tpch_file('lineitem'))})"
    ).fetchone()
    con.close()
    assert exp_rows > 100_000  # larger than the default JSON cap
    with server.query("select * from lineitem", fmt=fmt, stream=True, timeout=600) as r:
        assert r.status_code == 200, r.text[:2000]
        rows, total = _count_and_sum_stream(r, fmt)
    assert (rows, total) == (exp_rows, exp_sum)


def test_large_json_result_is_refused(server):
    r = server.query("select * from lineitem")
    assert_error(r, 400, "result_too_large")
    server.assert_alive()


# -- parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("sql,params", [
    ("select n_name from nation where n_nationkey = $1", [3]),
    ("select n_name from nation where n_regionkey = $1 and n_name like $2 order by n_name",
     [1, "%A%"]),
    ("select count(*) as n from lineitem where l_discount < $1", [0.03]),
    ("select $1 * 2 as x", [2.5]),
    ("select count(*) as n from nation where (n_regionkey = 1) = $1", [True]),
    ("select count(*) as n from nation where n_name = $1", [None]),
])
def test_params(server, duck, sql, params):
    got = server.query_json(sql, params)
    cur = duck.execute(sql, params)
    names = [d[0] for d in cur.description]
    expected = [dict(zip(names, row)) for row in cur.fetchall()]
    assert got == expected
    assert got


def test_param_3_is_canada(server):
    assert server.query_json("select n_name from nation where n_nationkey = $1", [3]) == [
        {"n_name": "CANADA"}]


# -- JSON row cap ------------------------------------------------------------------------------

def test_json_row_cap(start_server):
    srv = start_server(["--max-json-rows", "10"])
    ok = srv.query_json("select n_nationkey from nation order by n_nationkey limit 10")
    assert [row["n_nationkey"] for row in ok] == list(range(10))
    for sql in ("select n_nationkey from nation order by n_nationkey limit 11",
                "select * from nation"):
        assert_error(srv.query(sql), 400, "result_too_large")
        srv.assert_alive()
    # Streaming formats are not capped.
    for fmt in ("ndjson", "csv", "arrow", "parquet"):
        r = srv.query("select * from nation", fmt=fmt)
        assert r.status_code == 200, (fmt, r.text[:500])
        _, rows = PARSERS[fmt](r.content, None)
        assert len(rows) == 25, fmt


# -- everyday SQL: time functions, values JSON has no literal for, types Flight must keep -------

def test_time_functions_answer_the_current_time_on_both_surfaces(server):
    """`now()`, `current_date`, `current_time` and date arithmetic on them, as every analyst
    writes them: over HTTP and over Flight SQL (ADBC), the values are the current time."""
    import datetime as dt

    before = dt.datetime.now(dt.timezone.utc)
    row = server.query_json("select now() as n, current_date as d, current_time as t")[0]
    after = dt.datetime.now(dt.timezone.utc)
    now = dt.datetime.fromisoformat(row["n"][:26].rstrip("Z")).replace(tzinfo=dt.timezone.utc)
    assert before - dt.timedelta(seconds=5) <= now <= after + dt.timedelta(seconds=5), row
    assert row["d"] in {before.date().isoformat(), after.date().isoformat()}, row
    assert row["t"][:2].isdigit(), row
    recent = "select count(*) as n from orders where o_orderdate > current_date - interval '30 days'"
    assert server.query_json(recent) == [{"n": 0}]  # TPC-H dates end in 1998
    past = "select count(*) as n from orders where o_orderdate < current_date"
    total = server.query_json("select count(*) as n from orders")[0]["n"]
    assert server.query_json(past) == [{"n": total}]

    from e2e_util import adbc_connect
    conn = adbc_connect(server.flight)
    try:
        with conn.cursor() as cur:
            cur.execute("select now() as n, current_date as d, "
                        "date_trunc('day', now()) = cast(current_date as timestamp) as same_day")
            table = cur.fetch_arrow_table()
        with conn.cursor() as cur:
            cur.execute(recent)
            assert cur.fetchall() == [(0,)]
    finally:
        conn.close()
    # `now()` is a UTC timestamp without a zone (DataFusion's default time zone is none)
    nanos = table.column("n").cast(pa.int64())[0].as_py()
    flight_now = dt.datetime.fromtimestamp(nanos / 1e9, dt.timezone.utc)
    assert abs((flight_now - now).total_seconds()) < 60, (flight_now, now)
    assert table.column("d")[0].as_py() in {before.date(), after.date()}
    assert table.column("same_day")[0].as_py() in (True, False)


def test_json_keeps_non_finite_floats_and_non_string_map_keys(server):
    row = server.query_json(
        "select 'NaN'::double as nan, 'Infinity'::double as inf, '-Infinity'::double as ninf, "
        "1.5::double as x, [1.0, 'NaN'::double] as l, map([1, 2], ['a', 'b']) as by_int, "
        "map(['k'], [1]) as by_str, cast(0 as decimal(10, -2)) as zero")[0]
    assert row == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "x": 1.5,
                   "l": [1.0, "NaN"],
                   "by_int": [{"key": 1, "value": "a"}, {"key": 2, "value": "b"}],
                   "by_str": {"k": 1}, "zero": 0}, row
    r = server.query("select 'NaN'::double as nan", fmt="ndjson")
    assert r.status_code == 200 and json.loads(r.text) == {"nan": "NaN"}, r.text


def test_flight_announces_the_schema_it_streams(server):
    """ADBC refuses a stream whose schema differs from GetFlightInfo's: large lists, dictionaries
    and coerced CASE/UNION branches keep one schema from announcement to last batch."""
    from e2e_util import adbc_connect

    conn = adbc_connect(server.flight)
    try:
        with conn.cursor() as cur:
            cur.execute("select arrow_cast(make_array(1, 2, 3), 'LargeList(Int64)') as l, "
                        "arrow_cast('x', 'Dictionary(Int32, Utf8)') as d, "
                        "case when n_nationkey > 3 then n_nationkey else 1.5 end as c "
                        "from nation order by n_nationkey limit 2")
            table = cur.fetch_arrow_table()
        with conn.cursor() as cur:
            cur.execute("select 1 as u union all select 'two' order by 1")
            union = cur.fetch_arrow_table()
    finally:
        conn.close()
    assert table.schema.field("l").type == pa.large_list(pa.int64()), table.schema
    assert table.column("l").to_pylist() == [[1, 2, 3], [1, 2, 3]]
    assert pa.types.is_dictionary(table.schema.field("d").type), table.schema
    assert table.column("d").to_pylist() == ["x", "x"]
    assert table.column("c").to_pylist() == [1.5, 1.5]
    assert sorted(union.column("u").to_pylist()) == ["1", "two"]
