"""Catalog listing, name resolution, refresh (explicit and by watching the data dir), Hive
partitions and the data description file."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from e2e_util import TPCH_TABLES, assert_error, wait_for, write_parquet_atomic

TPCH_NAMES = {f"tpch.{t}" for t in TPCH_TABLES}


def catalog(srv) -> dict:
    r = srv.get("/api/v1/catalog")
    assert r.status_code == 200, r.text[:1000]
    return r.json()


def tables_by_name(cat: dict) -> dict[str, dict]:
    return {f"{s['name']}.{t['name']}": t for s in cat["schemas"] for t in s["tables"]}


def refresh(srv) -> dict:
    r = srv.post("/api/v1/catalog/refresh")
    assert r.status_code == 200, r.text[:1000]
    body = r.json()
    assert isinstance(body.get("snapshot_version"), int), body
    for key in ("added", "changed", "removed", "errors"):
        assert isinstance(body.get(key), list), body
    return body


# -- the demo catalog --------------------------------------------------------------------------

def test_catalog_lists_tpch_tables(server, duck, tpch_file):
    cat = catalog(server)
    assert cat["catalog"] == "dataport"
    tables = tables_by_name(cat)
    assert set(tables) == TPCH_NAMES
    for full, t in tables.items():
        assert t["schema"] == "tpch" and f"tpch.{t['name']}" == full
        assert isinstance(t["description"], str) and t["description"].strip(), full
        assert t["row_count"] == duck.execute(f"select count(*) from {t['name']}").fetchone()[0], full
        assert isinstance(t["size_bytes"], int) and t["size_bytes"] > 0, full
        assert t["file_count"] == 1, full
        assert t["partition_columns"] == [], full
        assert isinstance(t["private"], bool), full
        source = pq.read_schema(tpch_file(t["name"]))
        assert [c["name"] for c in t["columns"]] == source.names, full
        for c in t["columns"]:
            assert isinstance(c["type"], str) and c["type"], c
            assert isinstance(c["nullable"], bool), c
            assert "description" in c and (c["description"] is None or isinstance(c["description"], str)), c
        assert t["primary_key"] and set(t["primary_key"]) <= set(source.names), full


def test_catalog_keys(server):
    tables = tables_by_name(catalog(server))
    li = tables["tpch.lineitem"]
    assert li["primary_key"] == ["l_orderkey", "l_linenumber"]
    fks = [(fk["columns"], fk["references"]) for fk in li["foreign_keys"]]
    assert (["l_orderkey"], {"schema": "tpch", "table": "orders", "columns": ["o_orderkey"]}) in fks, fks
    # every foreign key points at existing columns on both sides
    for full, t in tables.items():
        cols = {c["name"] for c in t["columns"]}
        for fk in t["foreign_keys"]:
            ref = fk["references"]
            target = tables.get(f"{ref['schema']}.{ref['table']}")
            assert target, f"{full}: foreign key to unknown table {ref}"
            assert set(fk["columns"]) <= cols, fk
            assert set(ref["columns"]) <= {c["name"] for c in target["columns"]}, fk
            assert len(fk["columns"]) == len(ref["columns"]), fk


def test_catalog_private_flag(server):
    tables = tables_by_name(catalog(server))
    assert tables["tpch.customer"]["private"] is True
    assert tables["tpch.lineitem"]["private"] is False


def test_catalog_table_endpoint(server):
    listed = tables_by_name(catalog(server))["tpch.lineitem"]
    r = server.get("/api/v1/catalog/tpch/lineitem")
    assert r.status_code == 200, r.text[:1000]
    assert r.json() == listed


@pytest.mark.parametrize("path", ["/api/v1/catalog/tpch/no_such_table",
                                  "/api/v1/catalog/no_such_schema/lineitem"])
def test_catalog_unknown_table_404(server, path):
    assert_error(server.get(path), 404, "not_found")


@pytest.mark.parametrize("name", ["lineitem", "tpch.lineitem", "dataport.tpch.lineitem",
                                  "LINEITEM"])
def test_name_resolution(server, duck, name):
    # (unquoted identifiers are case-insensitive in SQL, hence LINEITEM)
    expected = duck.execute("select count(*) from lineitem").fetchone()[0]
    assert server.query_json(f"select count(*) as n from {name}") == [{"n": expected}]


# -- refresh on a private copy of the data dir -------------------------------------------------

@pytest.fixture
def copy_server(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False)
    assert set(tables_by_name(catalog(srv))) == TPCH_NAMES
    return srv


T1 = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "label": ["a", "b", "c"]})


def test_refresh_adds_tables_and_ignores_temp_files(copy_server, data_copy):
    srv = copy_server
    extra = data_copy / "parquet" / "extra"
    write_parquet_atomic(T1, extra / "t1.parquet")  # via .t1.parquet.tmp + rename
    junk = pa.table({"id": [9]})
    for name in (".hidden.parquet", "_staging.parquet", "x.parquet.tmp"):
        pq.write_table(junk, extra / name)

    seen_before = set(tables_by_name(catalog(srv)))  # the watcher may already have run
    res = refresh(srv)
    assert "extra.t1" in res["added"] or "extra.t1" in seen_before, res
    assert not res["errors"], res
    for lst in (res["added"], res["changed"], res["removed"]):
        assert set(lst) <= {"extra.t1"}, res

    assert set(tables_by_name(catalog(srv))) == TPCH_NAMES | {"extra.t1"}
    assert srv.query_json("select id, label from extra.t1 order by id") == T1.to_pylist()
    assert srv.query_json("select count(*) as n from t1") == [{"n": 3}]
    for ident in ('".hidden"', '"_staging"', '"x"', '"x.parquet"', "hidden", "_staging"):
        assert_error(srv.query(f"select * from extra.{ident}"), 404, "not_found")

    # a second refresh with nothing changed reports nothing
    again = refresh(srv)
    assert (again["added"], again["changed"], again["removed"]) == ([], [], []), again
    assert again["snapshot_version"] >= res["snapshot_version"]


def test_refresh_sees_changed_and_removed_files(copy_server, data_copy):
    srv = copy_server
    path = data_copy / "parquet" / "extra" / "t1.parquet"
    write_parquet_atomic(T1, path)
    refresh(srv)
    assert srv.query_json("select count(*) as n from extra.t1") == [{"n": 3}]

    write_parquet_atomic(pa.table({"id": pa.array(range(10), pa.int64())}), path)
    res = refresh(srv)
    assert "extra.t1" not in res["added"] + res["removed"], res
    assert srv.query_json("select count(*) as n from extra.t1") == [{"n": 10}]
    assert tables_by_name(catalog(srv))["extra.t1"]["row_count"] == 10

    os.remove(path)
    res = refresh(srv)
    assert "extra.t1" not in res["added"] + res["changed"], res
    assert "extra.t1" not in tables_by_name(catalog(srv))
    assert_error(srv.query("select * from extra.t1"), 404, "not_found")
    srv.assert_alive()


def test_watcher_refreshes_automatically(copy_server, data_copy):
    srv = copy_server
    path = data_copy / "parquet" / "extra" / "auto1.parquet"
    write_parquet_atomic(T1, path)
    wait_for(lambda: "extra.auto1" in tables_by_name(catalog(srv)), 30,
             what="extra.auto1 to appear in the catalog without an explicit refresh")
    assert srv.query_json("select count(*) as n from extra.auto1") == [{"n": 3}]

    os.remove(path)
    wait_for(lambda: "extra.auto1" not in tables_by_name(catalog(srv)), 30,
             what="extra.auto1 to disappear from the catalog without an explicit refresh")
    assert_error(srv.query("select * from extra.auto1"), 404, "not_found")


def test_hive_partitions(copy_server, data_copy):
    srv = copy_server
    base = data_copy / "parquet" / "extra" / "events"
    write_parquet_atomic(pa.table({"id": [1, 2, 3], "kind": ["a", "b", "a"]}),
                         base / "day=2024-01-01" / "part-0.parquet")
    write_parquet_atomic(pa.table({"id": [4, 5], "kind": ["b", "b"]}),
                         base / "day=2024-01-02" / "part-0.parquet")
    refresh(srv)
    entry = tables_by_name(catalog(srv)).get("extra.events")
    assert entry, "extra.events not registered"
    assert entry["partition_columns"] == ["day"], entry
    assert entry["file_count"] == 2, entry
    assert entry["row_count"] == 5, entry
    assert "day" in [c["name"] for c in entry["columns"]], entry

    rows = srv.query_json("select day, count(*) as n from extra.events group by day order by day")
    assert [(str(r["day"])[:10], r["n"]) for r in rows] == [("2024-01-01", 3), ("2024-01-02", 2)]
    assert srv.query_json(
        "select sum(id) as s from extra.events where day = '2024-01-02'") == [{"s": 9}]


def test_bad_description_file_degrades_health(copy_server, data_copy):
    srv = copy_server
    doc = data_copy / "docs" / "data_description.md"
    good = doc.read_text()
    desc_before = tables_by_name(catalog(srv))["tpch.lineitem"]["description"]
    assert desc_before

    def health():
        r = srv.get("/health")
        assert r.status_code == 200, r.text[:500]
        return r.json()

    assert health()["status"] == "ok"
    doc.write_text("# Broken\n\n```yaml\ntables: [ {name: : oops\n  - ]]\n  x: - {\n```\n")
    refresh(srv)
    h = health()
    assert h["status"] == "degraded", h
    assert "data_description" in json.dumps(h["errors"]), h
    assert tables_by_name(catalog(srv))["tpch.lineitem"]["description"] == desc_before
    assert srv.query_json("select count(*) as n from tpch.nation") == [{"n": 25}]

    doc.write_text(good)
    refresh(srv)
    wait_for(lambda: health()["status"] == "ok", 30, what="/health to be ok after the fix")
    assert tables_by_name(catalog(srv))["tpch.lineitem"]["description"] == desc_before


def test_a_table_that_cannot_be_loaded_is_reported_at_start_and_on_health(start_server, data_copy):
    """A new user's first look must say what is wrong: one log line per table with the reason
    and what to do, and the same problem on /health (in full for an administrator)."""
    broken = data_copy / "parquet" / "tpch" / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file PAR1")
    srv = start_server(data_dir=data_copy, demo=False)
    log = srv.stdout_path.read_text(errors="replace") + srv.stderr_path.read_text(errors="replace")
    lines = [l for l in log.splitlines() if "catalog problem" in l and "tpch.broken" in l]
    assert len(lines) == 1, log[-3000:]
    assert "what_to_do" in lines[0] and "replace or remove" in lines[0], lines[0]
    assert "loaded with problems" in log, log[-3000:]
    admin = srv.get("/health").json()
    assert admin["status"] == "degraded" and admin["error_count"] == 1, admin
    [error] = admin["errors"]
    assert error["source"] == "tpch.broken" and error["message"] and "replace" in error["hint"], error
    anonymous = requests.get(srv.url("/health"), timeout=60).json()
    assert anonymous["errors"] == [{"source": "hidden", "message": anonymous["errors"][0]["message"]}]
    assert "broken" not in json.dumps(anonymous), anonymous
    # the other tables are served
    assert srv.query_json("select count(*) as n from tpch.nation") == [{"n": 25}]
