"""The assistant's docs on the laptop, end to end: `dataport pull` brings `docs/` (the caller's
catalog as README.md and catalog.json, a page and a profile per pulled table) from
`GET /api/v1/sync/docs`; nothing in it names a table the caller may not read; a grant or sync
settings change and the next pull update and remove the files; an unchanged catalog rewrites
nothing.

The demo's `tpch.customer` is private: `dataread` accounts may not read it, administrators may.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from e2e_util import ADMIN_PASSWORD, ADMIN_USER, TPCH_TABLES
from test_pull import Client

PRIVATE = "tpch.customer"
# Names only the private table's docs would hold (its columns; `orders.o_custkey`'s target).
PRIVATE_MARKERS = [PRIVATE, "c_custkey", "c_mktsegment", "c_acctbal"]
HIDDEN = ["c_phone", "c_acctbal"]
# Kept off the dataread account's laptop by its sync settings (and the largest table).
NOT_PULLED = "tpch.lineitem"


def add_user(srv, groups) -> tuple[str, str]:
    name, password = f"docs-{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex[:12]}-Z9"
    srv.cli("user", "add", name, "--password-stdin", "--groups", ",".join(groups),
            input=password + "\n")
    return name, password


def docs_of(c: Client) -> dict[str, str]:
    """Every file under the pull folder's docs/, by path relative to it."""
    root = c.dir / "docs"
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def pages(docs: dict[str, str]) -> set[str]:
    return {p.removeprefix("tables/").removesuffix(".md") for p in docs if p.startswith("tables/")}


def profiles(docs: dict[str, str]) -> set[str]:
    return {p.removeprefix("profiles/").removesuffix(".json") for p in docs
            if p.startswith("profiles/")}


def catalog_of(server, session: requests.Session) -> dict[str, dict]:
    r = session.get(server.url("/api/v1/catalog"), timeout=120)
    assert r.status_code == 200, r.text[:300]
    return {f"{s['name']}.{t['name']}": t for s in r.json()["schemas"] for t in s["tables"]}


def assert_no_private_table(docs: dict[str, str]) -> None:
    for path, text in docs.items():
        assert "customer" not in path, path
        for marker in PRIVATE_MARKERS:
            assert marker not in text, f"{path} names {marker}:\n{text[:2000]}"


@pytest.fixture(scope="module")
def analyst(server, tmp_path_factory):
    """A `dataread` account (plus a group of its own, for grants) that syncs every table but
    lineitem, logged in on a laptop."""
    group = f"docs-grp-{uuid.uuid4().hex[:8]}"
    name, password = add_user(server, ["dataread", group])
    session = server.session_as(name, password)
    r = session.put(server.url("/api/v1/sync/settings"), json={"exclude": [NOT_PULLED]}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    c = Client(tmp_path_factory.mktemp("docs-analyst"), server.http)
    c.login(name, password)
    yield c, name, group, session
    session.close()
    server.cli("revoke", group, PRIVATE, check=False)
    server.cli("user", "remove", name, check=False)


def test_the_endpoint_needs_a_token_and_answers_plain_paths(server, analyst):
    _, _, _, session = analyst
    assert requests.get(server.url("/api/v1/sync/docs"), timeout=60).status_code == 401
    r = session.get(server.url("/api/v1/sync/docs"), timeout=300)
    assert r.status_code == 200, r.text[:300]
    files = r.json()["files"]
    assert [f["path"] for f in files][:2] == ["README.md", "catalog.json"]
    for f in files:
        assert set(f) == {"path", "sha256", "content"}, f.keys()
        assert ".." not in f["path"] and not f["path"].startswith("/"), f["path"]
        assert all(ch.isalnum() or ch in "._-/" for ch in f["path"]), f["path"]


def test_a_pull_brings_the_docs_of_what_the_account_may_read(server, analyst):
    c, name, _, session = analyst
    report = c.pull("--no-duckdb")
    docs = docs_of(c)
    readable = catalog_of(server, session)
    public = {f"tpch.{t}" for t in TPCH_TABLES} - {PRIVATE}
    assert set(readable) == public
    pulled = public - {NOT_PULLED}
    assert report["tables"] == len(pulled)
    # Counted in the report, and every file written on a first pull.
    assert report["docs"] == len(docs) == report["docs_written"], (report, sorted(docs))
    assert report["docs_removed"] == 0

    # README: every readable table and the metrics, how to query here, nothing private.
    readme = docs["README.md"]
    for t in public:
        assert f"**{t}**" in readme, t
    assert "duckdb analytics.duckdb" in readme
    assert f"Pulled to this laptop ({len(pulled)})" in readme, readme[:2000]
    assert f"Only on the server (1): `{NOT_PULLED}`" in readme, readme[:2000]
    assert "tables/<schema>.<table>.md" in readme
    assert "## Metrics" in readme and "`revenue`" in readme
    assert_no_private_table(docs)

    # A page and a profile exactly for the pulled tables.
    assert pages(docs) == pulled
    assert profiles(docs) == pulled
    orders = docs["tables/tpch.orders.md"]
    assert orders.startswith("# tpch.orders\n"), orders[:200]
    assert "**Primary key:** o_orderkey" in orders
    for col in readable["tpch.orders"]["columns"]:
        assert f"| {col['name']} | {col['type']} |" in orders, col
    assert "% filled" in orders and "## Profile" in orders, orders
    # Related tables, both ways: lineitem (not pulled, but readable) refers to orders.
    assert "- tpch.lineitem (l_orderkey) refers to this table" in orders, orders
    assert "o_custkey →" not in orders  # its key into the private table is not theirs
    assert "n_regionkey → tpch.region (r_regionkey)" in docs["tables/tpch.nation.md"]
    assert "`orders_placed`" in orders

    # profiles/*.json: the caller's profile, as the profile API answers it.
    full = json.loads(docs["profiles/tpch.nation.json"])
    r = session.get(server.url("/api/v1/catalog/tpch/nation/profile"), timeout=300)
    assert r.status_code == 200, r.text[:300]
    served = r.json()
    assert (full["schema"], full["table"]) == ("tpch", "nation")
    assert full["computed_at"] == served["computed_at"]
    assert full["profile"]["row_count"] == served["profile"]["row_count"] == 25
    assert [c["name"] for c in full["profile"]["columns"]] == \
        [c["name"] for c in served["profile"]["columns"]]

    # catalog.json: the same tables and columns as /api/v1/catalog, and the metrics.
    doc = json.loads(docs["catalog.json"])
    assert doc["user"] == name and doc["server"] and doc["generated_at"]
    assert [f"{t['schema']}.{t['name']}" for t in doc["tables"]] == list(readable)
    for t in doc["tables"]:
        want = readable[f"{t['schema']}.{t['name']}"]
        assert [(c["name"], c["type"]) for c in t["columns"]] == \
            [(c["name"], c["type"]) for c in want["columns"]]
        assert t.get("primary_key", []) == want["primary_key"]
        for fk in t.get("foreign_keys", []):
            assert fk["references"] in readable, fk
    assert {m["name"] for m in doc["metrics"]} >= {"revenue", "orders_placed"}

    # Nothing changed: nothing is rewritten, and the summary line counts the docs.
    again = c.pull("--no-duckdb")
    assert (again["docs"], again["docs_written"], again["docs_removed"]) == (len(docs), 0, 0)
    assert docs_of(c) == docs
    text = c.run("pull", "--dir", str(c.dir), "--no-duckdb").stdout
    assert f"\ndocs: {len(docs)} in docs/ (unchanged)" in text, text


def test_a_grant_and_its_revocation_update_the_docs(server, analyst):
    c, _, group, _ = analyst
    if not (c.dir / "docs").exists():
        c.pull("--no-duckdb")
    before = docs_of(c)
    # A file of the analyst's own in docs/, which no pull touches.
    (c.dir / "docs" / "my-notes.md").write_text("mine")

    # A share of the private table, without two of its columns.
    server.cli("grant", group, PRIVATE, "--hide-columns", ",".join(HIDDEN))
    granted = c.pull("--no-duckdb")
    docs = docs_of(c)
    assert "tpch.customer" in pages(docs) and "tpch.customer" in profiles(docs)
    assert granted["docs_written"] >= 4, granted  # README, catalog.json, its page and profile
    assert granted["docs_removed"] == 0
    page = docs["tables/tpch.customer.md"]
    assert "| c_custkey |" in page and "c_mktsegment" in page
    for hidden in HIDDEN:
        assert hidden not in page and hidden not in docs["profiles/tpch.customer.json"], hidden
        assert hidden not in docs["catalog.json"] and hidden not in docs["README.md"], hidden
    assert "**tpch.customer**" in docs["README.md"]
    assert "o_custkey → tpch.customer (c_custkey)" in docs["tables/tpch.orders.md"]
    assert "- tpch.orders (o_custkey) refers to this table" in page

    # Revoked: its page and profile go at the next pull, and every mention with them.
    server.cli("revoke", group, PRIVATE)
    revoked = c.pull("--no-duckdb")
    docs = docs_of(c)
    assert revoked["docs_removed"] == 2, revoked
    assert revoked["docs"] == len(docs) - 1  # all but the analyst's own file
    assert docs.pop("my-notes.md") == "mine"
    assert_no_private_table(docs)
    assert docs == before


def test_sync_settings_choose_the_pages(server, analyst):
    c, _, _, session = analyst
    r = session.put(server.url("/api/v1/sync/settings"),
                    json={"exclude": [NOT_PULLED, "tpch.orders"]}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    try:
        report = c.pull("--no-duckdb")
        docs = docs_of(c)
        assert "tpch.orders" not in pages(docs) and "tpch.orders" not in profiles(docs)
        assert report["docs_removed"] == 2, report
        assert "Only on the server (2): `tpch.lineitem`, `tpch.orders`" in docs["README.md"]
        assert "**tpch.orders**" in docs["README.md"]
        assert not (c.dir / "tpch" / "orders.parquet").exists()
    finally:
        r = session.put(server.url("/api/v1/sync/settings"), json={"exclude": [NOT_PULLED]},
                        timeout=60)
        assert r.status_code == 200, r.text[:300]


def test_an_administrator_gets_the_private_tables_docs(server, tmp_path):
    c = Client(tmp_path, server.http)
    c.login(ADMIN_USER, ADMIN_PASSWORD)
    session = server.session_as(ADMIN_USER, ADMIN_PASSWORD)
    r = session.get(server.url("/api/v1/sync/manifest"), timeout=300)
    assert r.status_code == 200, r.text[:300]
    pulled = {f"{t['schema']}.{t['table']}" for t in r.json()["tables"]}
    assert PRIVATE in pulled
    report = c.pull("--no-duckdb")
    docs = docs_of(c)
    assert report["docs"] == len(docs)
    assert pages(docs) == pulled
    page = docs["tables/tpch.customer.md"]
    for col in ("c_custkey", "c_phone", "c_acctbal"):
        assert f"| {col} |" in page, col
    assert "c_nationkey → tpch.nation (n_nationkey)" in page
    assert "o_custkey → tpch.customer (c_custkey)" in docs["tables/tpch.orders.md"]
    assert json.loads(docs["profiles/tpch.customer.json"])["profile"]["row_count"] == 15000
    assert "**tpch.customer**" in docs["README.md"]
    doc = json.loads(docs["catalog.json"])
    assert doc["user"] == ADMIN_USER
    assert PRIVATE in {f"{t['schema']}.{t['name']}" for t in doc["tables"]}
