"""The 22 TPC-H queries through Flight SQL (ADBC driver) against DuckDB over the same Parquet
files."""

from __future__ import annotations

import pytest

from e2e_util import adbc_connect, diff_against_duckdb, tpch_query_ids, tpch_sql


@pytest.fixture(scope="module")
def conn(server):
    """One ADBC connection for the module (22 queries)."""
    c = adbc_connect(server.flight)
    yield c
    c.close()


@pytest.mark.parametrize("qid", tpch_query_ids())
def test_tpch_query_over_flight(conn, duck, qid):
    sql = tpch_sql(qid)
    with conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    problems = diff_against_duckdb(qid, sql, table, duck)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
