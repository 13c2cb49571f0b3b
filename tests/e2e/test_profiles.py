"""Table profiles end to end: the profiler's figures on TPC-H `lineitem` (and on a copy of it
with NULLs, NaN, infinities, booleans and timestamps) agree with DuckDB's `SUMMARIZE` and exact
DuckDB aggregates over the same Parquet file; `dataport profile` prints, exports and refreshes.

Grants on profiles (row filters, hidden columns, related tables) are tested with the other
access rules in test_access.py.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from e2e_util import TPCH_TABLES, sql_str

# A copy of lineitem with gaps: NULLs at known rates, NaN and infinities in a double column,
# a boolean, a timestamp and a timestamp with time zone.
GAPS_SQL = """
select l_orderkey, l_linenumber,
       case when l_orderkey % 10 = 0 then null else l_quantity end as quantity,
       case when l_orderkey % 3 = 0 then null
            when l_orderkey % 1000 = 1 then 'NaN'::double
            when l_orderkey % 1000 = 2 then 'Infinity'::double
            else l_extendedprice::double end as price,
       l_discount as discount,
       case when l_linenumber = 1 then null else l_shipmode end as shipmode,
       l_comment as comment,
       l_returnflag = 'R' as returned,
       case when l_orderkey % 7 = 0 then null else l_shipdate end as shipdate,
       l_commitdate::timestamp + interval 90 minute as commit_ts,
       timezone('UTC', l_receiptdate::timestamp) as receipt_tstz
from read_parquet({src})
"""

GAPS_DESCRIPTION = """  - id: "lab.lineitem_gaps"
    name: lineitem_gaps
    folder: lab
    description: "lineitem with gaps"
    primary_key: "l_orderkey"
    foreign_keys:
      - column: l_orderkey
        references: "tpch.orders.o_orderkey"
"""


def summarize(con, path: Path) -> dict[str, dict]:
    rows = con.execute(f"summarize select * from read_parquet({sql_str(path)})").fetchall()
    names = [d[0] for d in con.description]
    return {r[0]: dict(zip(names, r)) for r in rows}


def exact(con, path: Path, column: str) -> dict:
    nan = f"isnan({column})" if con.execute(
        f"select typeof({column}) from read_parquet({sql_str(path)}) limit 1").fetchone()[0] == "DOUBLE" \
        else "false"
    r = con.execute(
        f"select count(distinct {column}), count({column}), count(*) "
        f"from read_parquet({sql_str(path)})").fetchone()
    return {"distinct": r[0], "non_null": r[1], "rows": r[2], "nan_expr": nan}


def close(a: float, b: float, rel: float = 1e-6, abs_: float = 0.011) -> bool:
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def check_against_summarize(profile: dict, path: Path) -> None:
    con = duckdb.connect()
    try:
        summary = summarize(con, path)
        rows = con.execute(f"select count(*) from read_parquet({sql_str(path)})").fetchone()[0]
        assert profile["row_count"] == rows
        assert [c["name"] for c in profile["columns"]] == list(summary)
        for col in profile["columns"]:
            name = col["name"]
            s = summary[name]
            assert s["count"] == rows
            # null percentage (DuckDB rounds to 2 places, as the profile does)
            null_pct = float(s["null_percentage"])
            assert close(100 - col["completeness_pct"], null_pct), (name, col["completeness_pct"], null_pct)
            e = exact(con, path, name)
            assert col["null_count"] == rows - e["non_null"], name
            # distinct counts: exact here (under the profiler's exact threshold), so equal to
            # DuckDB's count(distinct); DuckDB's HyperLogLog estimate is within a few percent.
            # (DuckDB counts NaN as one distinct value, as does DataFusion.)
            assert col["unique_count"] == e["distinct"], (name, col["unique_count"], e["distinct"])
            approx = s["approx_unique"]
            assert abs(col["unique_count"] - approx) <= max(2, 0.1 * approx), \
                (name, col["unique_count"], approx)
            if "numeric_stats" in col:
                n = col["numeric_stats"]
                finite = con.execute(
                    f"select min({name}), max({name}), avg({name}) from read_parquet({sql_str(path)}) "
                    f"where not {e['nan_expr']} and abs({name}::double) != 'Infinity'::double"
                ).fetchone()
                lo, hi, mean = (None if v is None else float(v) for v in finite)
                if s["column_type"] != "DOUBLE":
                    # with no NaN or infinities, SUMMARIZE's min and max are the same figures
                    assert (float(Decimal(s["min"])), float(Decimal(s["max"]))) == (lo, hi), name
                assert close(n["min"], lo) and close(n["max"], hi), (name, n, lo, hi)
                assert close(n["mean"], mean), (name, n["mean"], mean)
                # percentiles are approximate (t-digest, interpolating between values): each
                # must sit at its rank among the finite values, to within 1 % (and the rounding)
                for key, p in (("p5", .05), ("p25", .25), ("median", .5), ("p75", .75), ("p95", .95)):
                    q = n[key]
                    below, upto = con.execute(
                        f"select avg(({name}::double < ?)::int), avg(({name}::double <= ?)::int) "
                        f"from read_parquet({sql_str(path)}) where {name} is not null and not "
                        f"{e['nan_expr']} and abs({name}::double) != 'Infinity'::double",
                        [q - 0.006, q + 0.006]).fetchone()
                    assert below <= p + 0.01 and upto >= p - 0.01, \
                        (name, key, q, below, upto)
            if "date_stats" in col:
                d = col["date_stats"]
                norm = lambda v: str(v).replace("T", " ").replace("+00:00", "").replace("Z", "")
                assert norm(d["earliest"]).startswith(norm(s["min"])[:19]), (name, d, s["min"])
                assert norm(d["latest"]).startswith(norm(s["max"])[:19]), (name, d, s["max"])
            if "boolean_stats" in col:
                t, f = con.execute(
                    f"select count(*) filter ({name}), count(*) filter (not {name}) "
                    f"from read_parquet({sql_str(path)})").fetchone()
                assert (col["boolean_stats"]["true_count"], col["boolean_stats"]["false_count"]) == (t, f)
            if "string_stats" in col:
                lo, hi = con.execute(
                    f"select min(length({name})), max(length({name})) from read_parquet({sql_str(path)})"
                ).fetchone()
                assert (col["string_stats"]["min_length"], col["string_stats"]["max_length"]) == (lo, hi)
    finally:
        con.close()


def test_lineitem_agrees_with_duckdb_summarize(server, tpch_file):
    r = server.get("/api/v1/catalog/tpch/lineitem/profile", timeout=600)
    assert r.status_code == 200, r.text[:500]
    profile = r.json()["profile"]
    check_against_summarize(profile, tpch_file("lineitem"))
    # what SUMMARIZE does not say
    assert profile["primary_key"] == ["l_orderkey", "l_linenumber"]
    assert profile["duplicate_rows"] == 0
    assert profile["missing_cells"] == 0 and profile["avg_completeness"] == 100
    assert {(r["table"], r["direction"]) for r in profile["related_tables"]} == \
        {("tpch.orders", "belongs_to"), ("tpch.part", "belongs_to"), ("tpch.supplier", "belongs_to")}
    cols = {c["name"]: c for c in profile["columns"]}
    flags = cols["l_returnflag"]["string_stats"]["top_values"]
    con = duckdb.connect()
    want = con.execute(f"select l_returnflag, count(*) from read_parquet({sql_str(tpch_file('lineitem'))}) "
                       "group by 1 order by 2 desc, 1").fetchall()
    con.close()
    assert [(v["value"], v["count"]) for v in flags] == want
    assert len(cols["l_shipdate"]["date_stats"]["histogram"]["bins"]) >= 28  # 7 years of quarters
    assert sum(cols["l_quantity"]["numeric_stats"]["histogram"]["counts"]) == profile["row_count"]


@pytest.fixture
def gaps_server(start_server, data_copy, tpch_file):
    """A server on a copy of the demo data with `lab.lineitem_gaps` added."""
    out = data_copy / "parquet" / "lab" / "lineitem_gaps.parquet"
    out.parent.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    con.execute(f"copy ({GAPS_SQL.format(src=sql_str(tpch_file('lineitem')))}) "
                f"to {sql_str(out)} (format parquet)")
    con.close()
    # declared with a key that is not unique (an order's lines share it): keys in
    # data_description.md are metadata, and the duplicates must show
    desc = data_copy / "docs" / "data_description.md"
    text = desc.read_text()
    assert "\ntables:\n" in text
    desc.write_text(text.replace("\ntables:\n", "\ntables:\n" + GAPS_DESCRIPTION, 1))
    return start_server(data_dir=data_copy, demo=False), out


def test_gaps_agree_with_duckdb_summarize(gaps_server):
    srv, path = gaps_server
    r = srv.get("/api/v1/catalog/lab/lineitem_gaps/profile", timeout=600)
    assert r.status_code == 200, r.text[:500]
    profile = r.json()["profile"]
    check_against_summarize(profile, path)
    cols = {c["name"]: c for c in profile["columns"]}
    assert profile["variable_types"] == {"NUMERIC": 5, "STRING": 2, "BOOLEAN": 1, "DATE": 1, "TIMESTAMP": 2}
    # NaN and infinities count as present values but stay out of the statistics
    price = cols["price"]
    assert 0 < price["completeness_pct"] < 70
    assert all(v is None or math.isfinite(v) for v in price["numeric_stats"].values()
               if not isinstance(v, dict))
    alerts = {(a["column"], a["type"]) for a in profile["alerts"]}
    assert ("price", "high_missing") in alerts      # ~33 % NULL
    assert ("price", "missing") not in alerts       # one or the other
    assert ("quantity", "missing") in alerts        # ~10 % NULL
    assert ("shipdate", "missing") in alerts        # ~14 % NULL
    assert not any(c == "discount" and t in ("missing", "high_missing") for c, t in alerts)
    assert ("shipmode", "missing") in alerts        # the ~25 % first lines of orders
    assert profile["missing_cells"] == sum(c["null_count"] for c in profile["columns"])
    assert profile["date_range"]["earliest"] <= profile["date_range"]["latest"]
    # the declared key is not unique: every line after an order's first is a duplicate
    orders = srv.query_json("select count(distinct l_orderkey) as n from lab.lineitem_gaps")[0]["n"]
    assert profile["primary_key"] == ["l_orderkey"]
    assert profile["duplicate_rows"] == profile["row_count"] - orders > 0
    assert any(a["type"] == "duplicate_keys" for a in profile["alerts"]), profile["alerts"]
    # ...and queries don't take the declared key for a guarantee either
    assert srv.query_json("select count(*) as n from (select distinct l_orderkey from lab.lineitem_gaps)") \
        == [{"n": orders}]
    assert {(r["table"], r["direction"]) for r in profile["related_tables"]} == {("tpch.orders", "belongs_to")}
    # the sample values' query shape, with NaN among many values, also works as a user query
    # (DataFusion's grouped top-k panicked on it; the server turns that rule off)
    rows = srv.query_json("select distinct price from lab.lineitem_gaps order by price limit 3")
    assert len(rows) == 3, rows


def test_profile_command(server, tmp_path):
    text = server.cli("profile", "tpch.nation").stdout
    assert text.startswith("tpch.nation: 25 rows, 4 columns"), text
    assert "n_nationkey (key)" in text and "belongs_to tpch.region" in text, text

    served = json.loads(server.cli("profile", "tpch.region", "--json").stdout)
    assert served["profile"]["row_count"] == 5 and served["restricted"] is False
    # the server serves the profile the command stored
    over_http = server.get("/api/v1/catalog/tpch/region/profile").json()
    assert over_http["computed_at"] == served["computed_at"]
    assert over_http["data_version"] == served["data_version"]

    out = tmp_path / "profiles.json"
    server.cli("profile", "--export", str(out))
    export = json.loads(out.read_text())
    assert export["version"] == "1.0"
    assert set(export["tables"]) == {f"tpch.{t}" for t in TPCH_TABLES}
    assert export["tables"]["tpch.region"] == over_http["profile"]
    to_stdout = json.loads(server.cli("profile", "--export", "-").stdout)
    assert to_stdout | {"generated_at": export["generated_at"]} == export

    again = json.loads(server.cli("profile", "tpch.region", "--json", "--force").stdout)
    assert again["data_version"] == served["data_version"]
    assert again["computed_at"] >= served["computed_at"] and again["duration_ms"] >= 0
    assert again["profile"] == served["profile"]

    everything = server.cli("profile", "--all").stdout
    assert f"0 profiled, {len(TPCH_TABLES)} unchanged, 0 failed" in everything, everything

    missing = server.cli("profile", "tpch.nope", check=False)
    assert missing.returncode != 0 and "nope" in missing.stderr, missing.stderr
    assert server.cli("profile", check=False).returncode != 0
