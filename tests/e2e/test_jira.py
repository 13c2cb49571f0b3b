"""The Jira push source end to end: signed webhooks from a Jira Cloud double (jira_double.py)
into the six tables, the REST API behind them failing and recovering, the server killed
between accepting and processing, the consistency and SLA jobs, the backfill command,
attachments served under grants, and the tables pulled to a laptop and profiled.

Every case ends with the six tables compared row by row, through SQL, with what the double
holds (`JiraDouble.expected_rows`)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from e2e_util import ADMIN_PASSWORD, ADMIN_USER, Server, assert_error, metric, wait_for
from jira_double import ADF_FIXTURES, TABLES, JiraDouble, Sla, SlaCycle, row_sort_key

SECRET = "whsec-" + uuid.uuid4().hex
TOKEN = "api-token-" + uuid.uuid4().hex[:8]
SLA_TOKEN = "sla-token-" + uuid.uuid4().hex[:8]
ATTACHMENT_LIMIT = 2000
ENV = {"JIRA_TOKEN": TOKEN, "JIRA_SLA_TOKEN": SLA_TOKEN, "JIRA_SECRET": SECRET}


def config_text(double: JiraDouble, *, secret: bool = True, attempts: int = 4,
                retention_days: int = 30) -> str:
    return f"""
sources:
  - name: jira
    type: jira
    site: {double.base_url}
    email: bot@example.com
    token_env: JIRA_TOKEN
    {"secret_env: JIRA_SECRET" if secret else ""}
    sla_account: {{email: sla@example.com, token_env: JIRA_SLA_TOKEN}}
    projects: [SUP, ENG]
    attachment_max_bytes: {ATTACHMENT_LIMIT}
    max_body_bytes: 65536
    retry_backoff_ms: 100
    max_backoff_ms: 800
    attempts: 3
    event_attempts: {attempts}
    request_timeout_secs: 5
    raw_retention_days: {retention_days}
jobs:
  - {{job: "sync:jira:sla", every: 12h}}
  - {{job: "sync:jira:consistency", every: 12h}}
"""


def start_jira_server(tmp_path: Path, double: JiraDouble, name: str = "srv", data_dir: Path | None = None,
                      **config) -> Server:
    data = data_dir or tmp_path / f"data-{name}"
    data.mkdir(exist_ok=True)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(config_text(double, **config))
    srv = Server(data, ["--config", str(cfg)], tmp_path / f"log-{name}", env=dict(ENV))
    return srv.start()


@pytest.fixture(scope="module")
def jira(tmp_path_factory):
    double = JiraDouble("bot@example.com", TOKEN, "sla@example.com", SLA_TOKEN).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def srv(jira, tmp_path_factory):
    """One server with the Jira source, shared by the tests of this module (its tables always
    hold what the double holds once the queue is drained)."""
    s = start_jira_server(tmp_path_factory.mktemp("jira"), jira)
    yield s
    s.stop()


@pytest.fixture
def own_jira():
    """A Jira site of the test's own, for tests with their own server."""
    double = JiraDouble("bot@example.com", TOKEN, "sla@example.com", SLA_TOKEN).start()
    yield double
    double.stop()


@pytest.fixture(autouse=True)
def healthy_double(jira):
    jira.clear_failures()
    jira.up()
    jira.delay(0)
    yield
    jira.clear_failures()
    jira.up()
    jira.delay(0)


# -- helpers ---------------------------------------------------------------------------------


def post_webhook(srv: Server, double: JiraDouble, event: str, key: str, *, delivery: str | None = None,
                 secret: str = SECRET, **kw) -> requests.Response:
    body = json.dumps(double.webhook(event, key, **kw)).encode()
    headers = double.headers(body, secret, delivery_id=delivery)
    return requests.post(srv.url("/webhooks/jira"), data=body, headers=headers, timeout=30)


def deliver(srv, double, event, key, **kw) -> dict:
    r = post_webhook(srv, double, event, key, **kw)
    assert r.status_code == 200, f"{event} {key}: {r.status_code} {r.text[:500]}"
    return r.json()


def source_health(srv: Server) -> dict:
    h = srv.get("/health").json()
    [source] = [s for s in h.get("sources", []) if s["name"] == "jira"]
    return source


def drained(srv: Server) -> bool:
    return source_health(srv)["queued"] == 0


def table_rows(srv: Server, table: str) -> list[dict]:
    r = srv.query(f"SELECT * FROM jira.{table}", fmt="arrow")
    if r.status_code == 404 or (r.status_code == 400 and "not found" in r.text.lower()):
        return []
    assert r.status_code == 200, f"jira.{table}: {r.status_code} {r.text[:500]}"
    import pyarrow as pa
    rows = pa.ipc.open_stream(r.content).read_all().to_pylist()
    for row in rows:
        row.pop("_synced_at", None)
    return sorted(rows, key=row_sort_key(table))


def diff_tables(srv: Server, double: JiraDouble) -> list[str]:
    problems = []
    for table in TABLES:
        expected = double.expected_rows(table, attachment_limit=ATTACHMENT_LIMIT)
        actual = table_rows(srv, table)
        if actual != expected:
            exp_keys = {json.dumps(r, default=str, sort_keys=True) for r in expected}
            act_keys = {json.dumps(r, default=str, sort_keys=True) for r in actual}
            missing = sorted(exp_keys - act_keys)[:3]
            extra = sorted(act_keys - exp_keys)[:3]
            problems.append(f"jira.{table}: {len(actual)} rows, expected {len(expected)}; "
                            f"missing {missing}; unexpected {extra}")
    return problems


def assert_tables_match(srv: Server, double: JiraDouble, timeout: float = 60) -> None:
    """Waits for the queue to drain and the six tables to equal the double's state."""
    wait_for(lambda: drained(srv), timeout=timeout, what="the webhook queue to drain")
    last: list[str] = []

    def matches():
        nonlocal last
        last = diff_tables(srv, double)
        return not last

    try:
        wait_for(matches, timeout=timeout, interval=0.5, what="the tables to match the double")
    except AssertionError:
        raise AssertionError("\n".join(last)) from None


def run_job(srv: Server, name: str, timeout: float = 120) -> dict:
    return srv.run_job(name, timeout)


def add_user(srv: Server, groups=()) -> tuple[str, str]:
    name, password = f"jira-{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex[:12]}-Z9"
    args = ["user", "add", name, "--password-stdin"]
    if groups:
        args += ["--groups", ",".join(groups)]
    srv.cli(*args, input=password + "\n")
    return name, password


# -- the life of an issue --------------------------------------------------------------------


def test_an_issue_from_creation_to_deletion(srv, jira):
    # Comments and histories beyond the first of each come page by page.
    jira.comment_page_size, jira.changelog_page_size = 1, 1
    sup = jira.create_issue("SUP", "VPN drops every hour", created="2024-03-01T00:30:00.000+0100",
                            description=ADF_FIXTURES["lists_nested"], issue_type="Bug",
                            priority="High", labels=["vpn", "network"], assignee="ana",
                            severity="S2", request_type="Report a bug", satisfaction=4,
                            duedate="2024-03-20",
                            first_response=Sla(completed=[SlaCycle(14_400_000, 3_600_000)]),
                            time_to_resolution=Sla(ongoing=SlaCycle(28_800_000, 9_000_000)))
    receipt = deliver(srv, jira, "jira:issue_created", sup)
    assert receipt == {"status": "ok", "event": "jira:issue_created", "issue": sup, "duplicate": False}
    assert_tables_match(srv, jira)
    # Created 00:30 at +01:00 on 1 March is February in UTC: that is the partition.
    assert jira.month_of(sup) == "2024-02"
    assert (srv.data_dir / "parquet/jira/issues/2024-02.parquet").is_file()

    jira.update_issue(sup, status="In Progress", priority="Highest", labels=["vpn"])
    deliver(srv, jira, "jira:issue_updated", sup)
    c1 = jira.add_comment(sup, "bob", ADF_FIXTURES["mentions_emoji"])
    c2 = jira.add_comment(sup, "chen", ADF_FIXTURES["table"])
    deliver(srv, jira, "comment_created", sup, comment_id=c1)
    deliver(srv, jira, "comment_created", sup, comment_id=c2)
    jira.edit_comment(sup, c1, ADF_FIXTURES["code_block"], by="bob")
    deliver(srv, jira, "comment_updated", sup, comment_id=c1)
    small = jira.add_attachment(sup, "vpn.log", b"timeout\n" * 20, "text/plain")
    jira.add_attachment(sup, "capture.pcap", b"\x00" * (ATTACHMENT_LIMIT + 1), "application/vnd.tcpdump.pcap")
    deliver(srv, jira, "attachment_created", sup)
    eng = jira.create_issue("ENG", "Fix VPN keepalive", created="2024-02-10T09:00:00.000-0500")
    deliver(srv, jira, "jira:issue_created", eng)
    link = jira.link(sup, eng, "Blocks")
    deliver(srv, jira, "issuelink_created", sup, link_id=link)
    jira.add_remote_link(sup, "https://wiki.example.com/vpn", "VPN runbook")
    deliver(srv, jira, "jira:issue_updated", sup)
    assert_tables_match(srv, jira)

    # The stored attachment, with its content type, as a download, to readers of jira.issues.
    r = srv.get(f"/api/v1/sources/jira/files/{small}")
    assert r.status_code == 200, r.text[:300]
    assert r.content == b"timeout\n" * 20
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-disposition"].startswith('attachment; filename="vpn.log"')
    outsider = srv.session_as(*add_user(srv))
    assert_error(outsider.get(srv.url(f"/api/v1/sources/jira/files/{small}"), timeout=30), 404, "not_found")
    reader = srv.session_as(*add_user(srv, ["dataread"]))
    assert reader.get(srv.url(f"/api/v1/sources/jira/files/{small}"), timeout=30).content == b"timeout\n" * 20
    group = f"eng-only-{uuid.uuid4().hex[:6]}"
    srv.cli("grant", group, "jira.issues", "--row-filter", "project_key = 'ENG'")
    srv.cli("grant", group, "jira.attachments")
    eng_reader = srv.session_as(*add_user(srv, [group]))
    assert_error(eng_reader.get(srv.url(f"/api/v1/sources/jira/files/{small}"), timeout=30), 404, "not_found")
    assert_error(srv.get("/api/v1/sources/jira/files/999999"), 404, "not_found")

    # A deleted comment removes that comment only (the seed dropped the whole issue).
    jira.delete_comment(sup, c2)
    deliver(srv, jira, "comment_deleted", sup, comment_id=c2)
    assert_tables_match(srv, jira)
    assert any(r["issue_key"] == sup for r in table_rows(srv, "issues"))

    # A deleted issue leaves no row anywhere, and its link disappears from the other side.
    jira.delete_issue(sup)
    deliver(srv, jira, "jira:issue_deleted", sup)
    deliver(srv, jira, "issuelink_deleted", sup, link_id=link)
    assert_tables_match(srv, jira)
    for table in TABLES:
        assert not [r for r in table_rows(srv, table) if r["issue_key"] == sup], table
    assert srv.get(f"/api/v1/sources/jira/files/{small}").status_code == 404
    assert jira.count("/comment?") > 0 and jira.count("/changelog?") > 0, "paged in"
    jira.comment_page_size, jira.changelog_page_size = 5000, 100


# -- concurrency, order and replays ----------------------------------------------------------


def test_concurrent_webhooks_for_one_issue_and_one_month(srv, jira):
    keys = [jira.create_issue("ENG", f"Load test {i}", created=f"2024-05-{10 + i:02d}T12:00:00.000-0500")
            for i in range(8)]
    for k in keys:
        jira.add_comment(k, "ana", ADF_FIXTURES["plain"])
    errors: list[str] = []

    def send(event, key, **kw):
        r = post_webhook(srv, jira, event, key, **kw)
        if r.status_code != 200:
            errors.append(f"{event} {key}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=send, args=("jira:issue_created", k)) for k in keys]
    # The same issue, many times at once, while it changes.
    for i in range(6):
        jira.update_issue(keys[0], summary=f"Load test 0, edit {i}")
        threads.append(threading.Thread(target=send, args=("jira:issue_updated", keys[0])))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert_tables_match(srv, jira)
    assert {r["issue_key"] for r in table_rows(srv, "issues")} >= set(keys)


def test_replayed_and_out_of_order_deliveries(srv, jira):
    key = jira.create_issue("SUP", "Password reset mail never arrives")
    jira.update_issue(key, status="Waiting for support")
    calls = jira.count(f"/rest/api/3/issue/{key}")
    first = post_webhook(srv, jira, "jira:issue_created", key, delivery="delivery-" + uuid.uuid4().hex)
    assert first.status_code == 200
    assert_tables_match(srv, jira)
    per_delivery = jira.count(f"/rest/api/3/issue/{key}") - calls
    assert per_delivery >= 2, "the issue and its remote links"

    # Jira retries a delivery with the same identifier: accepted, and nothing happens again.
    body = json.dumps(jira.webhook("jira:issue_created", key)).encode()
    delivery = "delivery-" + uuid.uuid4().hex
    for attempt in range(3):
        headers = jira.headers(body, SECRET, delivery_id=delivery, retry=attempt)
        r = requests.post(srv.url("/webhooks/jira"), data=body, headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["duplicate"] is (attempt > 0), r.text
    assert_tables_match(srv, jira)
    # Processed once more for the new delivery id, not for its two redeliveries.
    assert jira.count(f"/rest/api/3/issue/{key}") - calls == 2 * per_delivery
    raw_events = list((srv.data_dir / "raw/jira/events").rglob("*.json"))
    assert len([p for p in raw_events if json.loads(p.read_bytes()).get("issue", {}).get("key") == key]) == 2

    # An old delivery arriving after a newer one does not bring old values back.
    old = json.dumps(jira.webhook("jira:issue_updated", key)).encode()
    jira.update_issue(key, status="Resolved", resolution="Done", resolutiondate="2024-06-01T10:00:00.000+0100")
    deliver(srv, jira, "jira:issue_updated", key)
    assert_tables_match(srv, jira)
    r = requests.post(srv.url("/webhooks/jira"), data=old, headers=jira.headers(old, SECRET), timeout=30)
    assert r.status_code == 200
    assert_tables_match(srv, jira)
    [row] = [r for r in table_rows(srv, "issues") if r["issue_key"] == key]
    assert (row["status"], row["resolution"]) == ("Resolved", "Done")


# -- what is refused -------------------------------------------------------------------------


def test_signatures_keys_sizes_and_bodies_are_checked(srv, jira):
    key = jira.create_issue("SUP", "Signed deliveries only")
    body = json.dumps(jira.webhook("jira:issue_created", key)).encode()
    url = srv.url("/webhooks/jira")
    bad = jira.headers(body, "not-the-secret")
    assert_error(requests.post(url, data=body, headers=bad, timeout=30), 401, "unauthenticated")
    missing = {k: v for k, v in jira.headers(body, SECRET).items() if k != "X-Hub-Signature"}
    assert_error(requests.post(url, data=body, headers=missing, timeout=30), 401, "unauthenticated")
    sha1 = jira.headers(body, SECRET, prefix="sha1=")
    assert_error(requests.post(url, data=body, headers=sha1, timeout=30), 401, "unauthenticated")
    tampered = body.replace(b"Signed deliveries", b"Forged deliveries")
    assert_error(requests.post(url, data=tampered, headers=jira.headers(body, SECRET), timeout=30),
                 401, "unauthenticated")
    # The other header name and no prefix are fine.
    ok = jira.headers(body, SECRET, header="X-Hub-Signature-256", prefix="")
    assert requests.post(url, data=body, headers=ok, timeout=30).status_code == 200

    # A key built to climb out of the raw folder is refused before anything is written.
    evil = json.loads(body)
    evil["issue"]["key"] = "../../../state/SUP-1"
    evil_body = json.dumps(evil).encode()
    r = requests.post(url, data=evil_body, headers=jira.headers(evil_body, SECRET), timeout=30)
    assert_error(r, 400, "invalid_argument")
    assert "not a Jira issue key" in r.json()["error"]["message"]
    assert not list(srv.data_dir.rglob("SUP-1.json"))

    # Malformed JSON, correctly signed.
    junk = b'{"webhookEvent": "jira:issue_created", "issue": '
    assert_error(requests.post(url, data=junk, headers=jira.headers(junk, SECRET), timeout=30),
                 400, "invalid_argument")

    # Over the limit: 413, whether announced or streamed.
    big = b'{"webhookEvent":"jira:issue_created","pad":"' + b"x" * 70_000 + b'"}'
    assert_error(requests.post(url, data=big, headers=jira.headers(big, SECRET), timeout=30),
                 413, "payload_too_large")

    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    r = requests.post(url, data=chunks(), headers=jira.headers(b"", SECRET), timeout=30)
    assert_error(r, 413, "payload_too_large")
    assert_error(requests.post(srv.url("/webhooks/nope"), data=body, headers=ok, timeout=30), 404, "not_found")
    srv.assert_alive()
    assert_tables_match(srv, jira)


def test_without_a_secret_every_webhook_is_refused(own_jira, tmp_path):
    jira = own_jira
    srv = start_jira_server(tmp_path, jira, "nosecret", secret=False)
    try:
        key = jira.create_issue("SUP", "Nobody may push here")
        for secret in (SECRET, ""):
            r = post_webhook(srv, jira, "jira:issue_created", key, secret=secret)
            assert_error(r, 503, "unavailable")
            assert "secret" in r.json()["error"]["message"]
        unsigned = requests.post(srv.url("/webhooks/jira"), data=b"{}", timeout=30)
        assert_error(unsigned, 503, "unavailable")
        assert source_health(srv)["secret_configured"] is False
        assert srv.get("/health").json()["status"] == "degraded"
        assert not (srv.data_dir / "raw").exists()
        for table in TABLES:
            assert table_rows(srv, table) == [], table
    finally:
        srv.stop()


# -- failures of the API and of the server ---------------------------------------------------


def test_the_api_down_and_rate_limiting_delay_but_do_not_lose_events(srv, jira):
    key = jira.create_issue("ENG", "Dashboard slow", created="2024-07-02T08:00:00.000-0500")
    jira.down()
    deliver(srv, jira, "jira:issue_created", key)
    time.sleep(1.5)
    assert source_health(srv)["queued"] >= 1
    assert key not in {r["issue_key"] for r in table_rows(srv, "issues")}
    jira.up()
    assert_tables_match(srv, jira)

    # 429 with Retry-After is honoured: the request waits, then succeeds.
    jira.update_issue(key, priority="Low")
    jira.fail_next(2, status=429, retry_after=1, path_contains=f"/issue/{key}")
    started = time.monotonic()
    deliver(srv, jira, "jira:issue_updated", key)
    assert_tables_match(srv, jira)
    assert time.monotonic() - started >= 1.5, "Retry-After: 1 twice"


def test_an_issue_that_keeps_failing_is_parked_until_the_consistency_job(srv, jira):
    key = jira.create_issue("SUP", "Broken custom field", created="2024-08-05T10:00:00.000+0100")
    jira.fail_always(f"/issue/{key}", status=500)
    deliver(srv, jira, "jira:issue_created", key)
    parked = wait_for(lambda: [p for p in source_health(srv)["parked"] if p["item"] == key],
                      timeout=60, what="the issue to be parked")
    assert "500" in parked[0]["error"], parked
    assert srv.get("/health").json()["status"] == "degraded"
    assert metric(srv.metrics(), "dataport_push_items_parked", source="jira") >= 1
    run = run_job(srv, "sync:jira:consistency")
    assert run["outcome"] in ("partial", "error") and key in (run["error"] or ""), run
    # The administrators' sources page shows the queue and what is parked.
    [page] = srv.get("/admin/sources?format=json").json()["sources"]
    assert [p["item"] for p in page["push"]["parked"]] == [key], page["push"]
    assert {j["name"] for j in page["jobs"]} == {"sync:jira:sla", "sync:jira:consistency"}
    assert page["failing"] >= 1

    jira.clear_failures()
    # An issue that never sent a webhook is found by the consistency check too.
    silent = jira.create_issue("ENG", "Created while the webhook was misconfigured")
    run = run_job(srv, "sync:jira:consistency")
    assert run["outcome"] == "ok", run
    assert not source_health(srv)["parked"]
    assert_tables_match(srv, jira)
    assert {key, silent} <= {r["issue_key"] for r in table_rows(srv, "issues")}
    assert source_health(srv)["last_poll_ms"] is not None
    [page] = srv.get("/admin/sources?format=json").json()["sources"]
    assert page["push"]["parked"] == [] and page["failing"] == 0, page
    tables = {t["record"]["table_name"] if "record" in t else t["table_name"]: t for t in page["tables"]}
    assert set(tables) == set(TABLES)
    assert tables["issues"]["rows"] == len(jira.expected_rows("issues"))
    assert tables["issues"]["strategy"] == "push"


def test_the_sources_page_shows_the_webhook_queue_and_parked_issues(srv, jira, new_page):
    from browser_util import check_accessibility, screenshot, sign_in
    from playwright.sync_api import expect

    fine = jira.create_issue("ENG", "Export progress bar", created="2024-10-01T08:00:00.000-0500")
    deliver(srv, jira, "jira:issue_created", fine)
    assert_tables_match(srv, jira)
    key = jira.create_issue("SUP", "Export times out", created="2024-10-01T10:00:00.000+0100")
    jira.fail_always(f"/issue/{key}", status=502)
    deliver(srv, jira, "jira:issue_created", key)
    wait_for(lambda: [p for p in source_health(srv)["parked"] if p["item"] == key], timeout=60,
             what="the issue to be parked")
    page = new_page(srv)
    sign_in(page, srv.http, "/admin/sources", ADMIN_USER, ADMIN_PASSWORD)
    expect(page.get_by_role("heading", name="Parked")).to_be_visible()
    expect(page.get_by_text(key, exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="sync:jira:consistency")).to_be_visible()
    expect(page.get_by_role("link", name="jira.issues")).to_be_visible()
    screenshot(page, "sources-jira")
    check_accessibility(page, "the sources page with a Jira source")
    jira.clear_failures()
    assert run_job(srv, "sync:jira:consistency")["outcome"] == "ok"
    assert_tables_match(srv, jira)


def test_the_sla_job_refreshes_open_issues(srv, jira):
    key = jira.create_issue("SUP", "Waiting on the customer",
                            first_response=Sla(ongoing=SlaCycle(3_600_000, 60_000)))
    deliver(srv, jira, "jira:issue_created", key)
    assert_tables_match(srv, jira)
    # SLA clocks move without webhooks.
    jira.set_sla(key, first_response=Sla(ongoing=SlaCycle(3_600_000, 4_000_000, breached=True)))
    assert diff_tables(srv, jira)
    searches = jira.count("/rest/api/3/search/jql")
    run = run_job(srv, "sync:jira:sla")
    assert run["outcome"] == "ok", run
    assert jira.count("/rest/api/3/search/jql") > searches, "open issues are read in bulk"
    assert_tables_match(srv, jira)

    # An open issue deleted while its webhook is still on the way fails Jira's bulk search;
    # the poll reads the issues one by one instead.
    gone = jira.create_issue("SUP", "Deleted, webhook delayed")
    deliver(srv, jira, "jira:issue_created", gone)
    assert_tables_match(srv, jira)
    jira.delete_issue(gone)
    jira.set_sla(key, first_response=Sla(completed=[SlaCycle(3_600_000, 4_100_000, breached=True)]))
    run = run_job(srv, "sync:jira:sla")
    assert run["outcome"] == "ok", run
    deliver(srv, jira, "jira:issue_deleted", gone)
    assert_tables_match(srv, jira)
    [row] = [r for r in table_rows(srv, "issues") if r["issue_key"] == key]
    assert row["first_response_breached"] is True and row["first_response_elapsed_millis"] == 4_100_000


def test_an_event_accepted_before_a_kill_is_processed_after_the_restart(own_jira, tmp_path):
    jira = own_jira
    srv = start_jira_server(tmp_path, jira, "kill")
    key = jira.create_issue("ENG", "Survives kill -9", created="2024-09-09T09:09:09.000-0500")
    # Processing stalls on the slow API: the event is accepted and stored, not yet processed.
    jira.delay(30)
    deliver(srv, jira, "jira:issue_created", key)
    assert list((srv.data_dir / "raw/jira/events").rglob("*.json"))
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    jira.delay(0)
    assert not (srv.data_dir / "parquet/jira/issues").exists(), "killed before processing"
    restarted = Server(srv.data_dir, srv.args[6:], tmp_path / "log-kill-2", env=dict(ENV)).start()
    try:
        wait_for(lambda: key in {r["issue_key"] for r in table_rows(restarted, "issues")},
                 timeout=60, what="the accepted event to be processed after the restart")
        assert_tables_match(restarted, jira)
    finally:
        restarted.stop()
    # Processed raw bodies go after their retention (0 days: at the next start).
    events = srv.data_dir / "raw/jira/events"
    assert list(events.rglob("*.json"))
    cfg = tmp_path / "kill-retention.yaml"
    cfg.write_text(config_text(jira, retention_days=0))
    swept = Server(srv.data_dir, ["--config", str(cfg)], tmp_path / "log-kill-3", env=dict(ENV)).start()
    try:
        wait_for(lambda: not list(events.rglob("*.json")), timeout=30,
                 what="processed raw bodies past their retention to be removed")
        assert source_health(swept)["last_received_ms"] is None
        assert_tables_match(swept, jira)
    finally:
        swept.stop()


# -- backfill, descriptions, laptops and profiles --------------------------------------------


def test_backfill_descriptions_pull_and_profiles(own_jira, tmp_path):
    jira = own_jira
    for i in range(4):
        jira.create_issue("ENG", f"Backlog item {i}", created=f"2024-0{i + 1}-15T10:00:00.000-0500")
    sup = jira.create_issue("SUP", "Old ticket", created="2023-12-31T23:30:00.000-0500",
                            description=ADF_FIXTURES["panel_cards_dates"])
    jira.add_comment(sup, "ana", ADF_FIXTURES["quote_heading_rule"])
    jira.add_attachment(sup, "screen.png", b"\x89PNG" + b"0" * 50, "image/png")
    data = tmp_path / "data-backfill"
    (data / "docs" / "datasets").mkdir(parents=True)
    # A hand-written entry for one table stays as it is.
    (data / "docs" / "datasets" / "support.md").write_text(
        "# Support\n\n```yaml\ntables:\n  - id: jira.comments\n    name: comments\n    folder: jira\n"
        "    description: \"Hand-written: what customers and agents said.\"\n"
        "    primary_key: comment_id\n```\n")
    srv = start_jira_server(tmp_path, jira, "backfill", data_dir=data)
    try:
        jira.search_page_size = 3  # paging through the search
        p = srv.cli("sync", "jira", "--backfill", "--project", "ENG", "--config", srv.args[-1])
        assert "issues written" in p.stderr, p.stderr
        eng = [r["issue_key"] for r in jira.expected_rows("issues") if r["project_key"] == "ENG"]
        # The server's catalog sees what the command wrote.
        wait_for(lambda: [r["issue_key"] for r in table_rows(srv, "issues")] == eng, timeout=60,
                 what="the ENG issues in the server's catalog")
        p = srv.cli("sync", "jira", "--backfill", "--config", srv.args[-1])
        jira.search_page_size = 50
        assert_tables_match(srv, jira)

        generated = (data / "docs" / "datasets" / "jira.md").read_text()
        assert "name: issues" in generated and "name: comments" not in generated
        assert "Hand-written" in (data / "docs" / "datasets" / "support.md").read_text()
        meta = srv.get("/api/v1/catalog/jira/comments").json()
        assert meta["description"].startswith("Hand-written")
        issues_meta = srv.get("/api/v1/catalog/jira/issues").json()
        assert issues_meta["primary_key"] == ["issue_key"], issues_meta
        links_meta = srv.get("/api/v1/catalog/jira/changelog").json()
        assert links_meta["primary_key"] == ["change_id", "field_name"], links_meta
        assert [(fk["columns"], fk["references"]["schema"], fk["references"]["table"], fk["references"]["columns"])
                for fk in links_meta["foreign_keys"]] == [(["issue_key"], "jira", "issues", ["issue_key"])], links_meta

        # Partition files, one per created month.
        months = {p.stem for p in (data / "parquet/jira/issues").glob("*.parquet")}
        assert months == {jira.month_of(r["issue_key"]) for r in jira.expected_rows("issues")}

        # Profiled like any table.
        assert run_job(srv, "profile:catalog")["outcome"] == "ok"
        profile = srv.get("/api/v1/catalog/jira/issues/profile").json()
        assert profile["profile"]["row_count"] == len(jira.expected_rows("issues")), profile

        # Pulled to a laptop like any table, and queried there with DuckDB.
        from test_pull import Client
        user, password = add_user(srv, ["dataread"])
        client = Client(tmp_path, srv.http)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
        (bin_dir / "python3").chmod(0o755)
        client.path = str(bin_dir)  # DuckDB on the laptop: Python's duckdb module
        client.login(user, password)
        report = client.pull()
        assert report["views"]["state"] == "applied", report["views"]
        pulled = {f for f in client.files() if f.startswith("jira/issues/")}
        assert pulled == {f"jira/issues/{m}.parquet" for m in months}
        import duckdb
        con = duckdb.connect(str(client.dir / "analytics.duckdb"), read_only=True)
        n = con.execute("select count(*) from jira.issues").fetchone()[0]
        assert n == len(jira.expected_rows("issues"))
    finally:
        srv.stop()
