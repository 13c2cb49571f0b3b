"""In-memory tables (`--memory-tables`): the server reads the chosen tables into memory after a
refresh and answers from there, with the same results as from the files."""

from __future__ import annotations

import pytest

from e2e_util import TPCH_TABLES, tpch_diffs_over_flight, wait_for


def resident(srv) -> dict[str, int | None]:
    r = srv.get("/api/v1/catalog", timeout=60)
    assert r.status_code == 200, r.text[:300]
    return {f"{t['schema']}.{t['name']}": t.get("in_memory_bytes")
            for s in r.json()["schemas"] for t in s["tables"]}


@pytest.fixture(scope="module")
def memory_server(server, demo_dir, tmp_path_factory):
    from e2e_util import Server
    srv = Server(demo_dir, ["--demo", "--memory-tables", "tpch.*", "--memory-budget", "4GiB"],
                 tmp_path_factory.mktemp("log-memory"))
    srv.start()
    try:
        wait_for(lambda: all(resident(srv).get(f"tpch.{t}") for t in TPCH_TABLES), timeout=300,
                 what="every TPC-H table in memory")
        yield srv
    finally:
        srv.stop()


def test_tables_are_held_in_memory_and_listed(memory_server, server):
    held = resident(memory_server)
    assert all(held[f"tpch.{t}"] > 0 for t in TPCH_TABLES)
    # the shared server was started without the option
    assert not any(resident(server).values())


def test_tpch_from_memory_matches_duckdb(memory_server, duck):
    problems = tpch_diffs_over_flight(memory_server.flight, duck)
    assert not problems, "\n".join(problems)


def test_plans_read_from_memory(memory_server):
    rows = memory_server.query_json("explain select l_orderkey from lineitem where l_quantity > 10")
    plan = "\n".join(str(r) for r in rows)
    assert "partition_sizes" in plan and "parquet" not in plan, plan


def test_a_bad_pattern_is_refused_at_start(tmp_path):
    from e2e_util import Server
    srv = Server(tmp_path / "data", ["--demo", "--memory-tables", "tpch"], tmp_path / "log")
    with pytest.raises(RuntimeError) as e:
        srv.start()
    assert "memory_tables" in str(e.value) and "schema.table" in str(e.value)
