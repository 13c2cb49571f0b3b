"""The 22 TPC-H queries through the server (Arrow over HTTP) against DuckDB over the same
Parquet files. The Flight SQL twin is test_flight_tpch.py; both compare with one helper."""

from __future__ import annotations

import pytest

from e2e_util import diff_against_duckdb, tpch_query_ids, tpch_sql


@pytest.mark.parametrize("qid", tpch_query_ids())
def test_tpch_query(server, duck, qid):
    sql = tpch_sql(qid)
    problems = diff_against_duckdb(qid, sql, server.query_arrow(sql), duck)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
