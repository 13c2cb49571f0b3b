"""The 22 TPC-H queries through the server (Arrow) against DuckDB over the same Parquet files."""

from __future__ import annotations

import re

import pytest

from e2e_util import (TPCH_QUERIES, abs_tolerances, arrow_rows, check_sorted, diff_unordered, kind_of, main_query,
                      norm_rows, top_level_order_by)


def _query_ids():
    files = sorted(TPCH_QUERIES.glob("q*.sql"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return [p.stem for p in files] or [f"q{i}" for i in range(1, 23)]


@pytest.mark.parametrize("qid", _query_ids())
def test_tpch_query(server, duck, qid):
    path = TPCH_QUERIES / f"{qid}.sql"
    assert path.exists(), f"TPC-H query file missing: {path} (set DATAPORT_TPCH_QUERIES)"
    sql = main_query(path.read_text())

    table = server.query_arrow(sql)
    names = table.column_names
    kinds = [kind_of(f.type) for f in table.schema]
    raw = arrow_rows(table)

    cur = duck.execute(sql)
    duck_names = [d[0] for d in cur.description]
    expected = cur.fetchall()

    header = (f"{qid}: server columns {names} ({[str(f.type) for f in table.schema]}), "
              f"DuckDB columns {duck_names}")
    assert len(names) == len(duck_names), header
    assert len(raw) == len(expected), f"{header}\nrow count {len(raw)} != DuckDB {len(expected)}"

    problems = diff_unordered(norm_rows(raw, kinds), norm_rows(expected, kinds), kinds, rel=1e-6,
                              abs_tols=abs_tolerances(table.schema))
    order_by = top_level_order_by(sql)
    if order_by:
        problems += check_sorted(raw, names, order_by)
    if problems:
        pytest.fail(f"{header}\n" + "\n".join(problems), pytrace=False)
