"""Analyst sync, server side, end to end: each caller's manifest holds exactly the tables they
may read; a share with a row filter or hidden columns is handed out as the caller's own copy,
never as the raw file; files are served only when listed, checksummed, with ranges.

The client (`dataport pull`/`push`, DuckDB over the pulled files, the rsync fallback) is tested
in test_pull.py.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import uuid
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from e2e_util import TPCH_TABLES

FILTER = "c_nationkey = 7"
HIDDEN = ["c_phone", "c_acctbal"]


def add_user(srv, groups) -> tuple[str, str]:
    name, password = f"sync-{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex[:12]}-Z9"
    srv.cli("user", "add", name, "--password-stdin", "--groups", ",".join(groups), input=password + "\n")
    return name, password


@pytest.fixture(scope="module")
def sessions(server):
    """Sessions of `analyst`, `insider` and a member of a restricted share of customer."""
    demo = server.data_dir
    pw = {u: (demo / "auth" / f"{u}-password").read_text().strip() for u in ("analyst", "insider")}
    group = f"syncshare-{uuid.uuid4().hex[:8]}"
    server.cli("grant", group, "tpch.customer", "--row-filter", FILTER, "--hide-columns", ",".join(HIDDEN))
    user, password = add_user(server, [group])
    out = {u: server.session_as(u, pw[u]) for u in pw}
    out["share"] = server.session_as(user, password)
    yield out
    for s in out.values():
        s.close()
    server.cli("revoke", group, "tpch.customer", check=False)
    server.cli("user", "remove", user, check=False)


def manifest(server, session) -> dict:
    r = session.get(server.url("/api/v1/sync/manifest"), timeout=300)
    assert r.status_code == 200, r.text[:500]
    return {f"{t['schema']}.{t['table']}": t for t in r.json()["tables"]}


def download(server, session, path: str) -> bytes:
    r = session.get(server.url(f"/api/v1/sync/files/{path}"), timeout=300)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.content


def test_manifests_follow_the_grants(server, sessions):
    analyst = manifest(server, sessions["analyst"])
    assert set(analyst) == {f"tpch.{t}" for t in TPCH_TABLES} - {"tpch.customer"}
    insider = manifest(server, sessions["insider"])
    assert set(insider) == {f"tpch.{t}" for t in TPCH_TABLES}
    for t in insider.values():
        assert t["restricted"] is False
        for f in t["files"]:
            body = download(server, sessions["insider"], f["path"])
            assert len(body) == f["size"] and hashlib.sha256(body).hexdigest() == f["sha256"], f["path"]
    # the private file is not there for the analyst, exactly like a file that does not exist
    denied = sessions["analyst"].get(server.url("/api/v1/sync/files/parquet/tpch/customer.parquet"))
    missing = sessions["analyst"].get(server.url("/api/v1/sync/files/parquet/tpch/customerx.parquet"))
    assert denied.status_code == missing.status_code == 404
    assert denied.json()["error"]["message"].replace("customer", "X") == \
        missing.json()["error"]["message"].replace("customerx", "X")


def test_a_restricted_share_gets_its_own_copy(server, sessions):
    share = manifest(server, sessions["share"])
    assert set(share) == {"tpch.customer"}
    t = share["tpch.customer"]
    assert t["restricted"] is True
    assert [c["name"] for c in t["columns"]] == \
        [c for c in ["c_custkey", "c_name", "c_address", "c_nationkey", "c_phone", "c_acctbal",
                     "c_mktsegment", "c_comment"] if c not in HIDDEN]
    [f] = t["files"]
    assert f["path"].startswith("sync/views/") and f["local_path"] == "tpch/customer.parquet"
    body = download(server, sessions["share"], f["path"])
    assert hashlib.sha256(body).hexdigest() == f["sha256"]
    table = pq.read_table(io.BytesIO(body))
    assert table.schema.names == [c["name"] for c in t["columns"]]
    assert set(table.column("c_nationkey").to_pylist()) == {7}
    want = server.query_json(f"select count(*) as n from tpch.customer where {FILTER}")[0]["n"]
    assert table.num_rows == want
    # the raw file stays out of reach, and so does another caller's copy
    assert sessions["share"].get(server.url("/api/v1/sync/files/parquet/tpch/customer.parquet")).status_code == 404
    assert sessions["analyst"].get(server.url(f"/api/v1/sync/files/{f['path']}")).status_code == 404
    # the copy is made once per grant and data version
    assert manifest(server, sessions["share"])["tpch.customer"]["files"] == [f]


def test_ranges_resume_a_download(server, sessions):
    [f] = manifest(server, sessions["analyst"])["tpch.nation"]["files"]
    url = server.url(f"/api/v1/sync/files/{f['path']}")
    head = sessions["analyst"].get(url, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206 and len(head.content) == 100
    rest = sessions["analyst"].get(url, headers={"Range": "bytes=100-", "If-Range": f'"{f["sha256"]}"'})
    assert rest.status_code == 206
    assert hashlib.sha256(head.content + rest.content).hexdigest() == f["sha256"]


@pytest.mark.parametrize("raw", [
    "/api/v1/sync/files/parquet/../state/dataport.db",
    "/api/v1/sync/files/parquet/tpch/../../auth/admin-password",
    "/api/v1/sync/files//etc/passwd",
    "/api/v1/sync/files/parquet/./tpch/nation.parquet",
    "/api/v1/sync/files/..%2F..%2Fetc%2Fpasswd",
])
def test_path_traversal_is_refused(server, sessions, raw):
    """Raw request lines (no client-side normalisation of `..`)."""
    token = sessions["insider"].headers["Authorization"]
    u = urlparse(server.http)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.putrequest("GET", raw, skip_accept_encoding=True)
        conn.putheader("Authorization", token)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 404, (raw, resp.status, body[:200])
