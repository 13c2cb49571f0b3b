"""Fast tests of the Jira Cloud test double itself (no Dataport server involved)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import date, datetime, timezone

import pytest
import requests

from jira_double import (ADF_FIXTURES, FIRST_RESPONSE_FIELD, SEVERITY_FIELD, SLA_FIELDS,
                         TIME_TO_RESOLUTION_FIELD, JiraDouble, Sla, SlaCycle, adf_text,
                         row_sort_key)

AUTH = ("bot@example.com", "tok-123")
SLA_AUTH = ("sla@example.com", "sla-456")
JIRA_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$")
FULL = {"expand": "renderedFields,changelog", "fields": "*all"}


@pytest.fixture
def jira():
    with JiraDouble(email=AUTH[0], token=AUTH[1], sla_email=SLA_AUTH[0],
                    sla_token=SLA_AUTH[1]) as double:
        yield double


def get(jira: JiraDouble, path: str, auth=AUTH, **params) -> requests.Response:
    return requests.get(jira.base_url + path, auth=auth, params=params, timeout=5)


def test_auth_is_required(jira):
    for auth in (None, ("bot@example.com", "wrong"), ("nobody@example.com", "tok-123")):
        r = get(jira, "/rest/api/3/myself", auth=auth)
        assert r.status_code == 401
        assert r.json()["errorMessages"] and r.json()["errors"] == {}
    assert get(jira, "/rest/api/3/myself").json()["emailAddress"] == AUTH[0]
    assert get(jira, "/rest/api/3/myself", auth=SLA_AUTH).json()["emailAddress"] == SLA_AUTH[0]
    assert [(m, e) for m, _, e in jira.requests_log] == [("GET", None)] * 3 + [
        ("GET", AUTH[0]), ("GET", SLA_AUTH[0])]


def test_issue_shape_fields_and_expand(jira):
    key = jira.create_issue("SUP", "Printer jammed", created="2024-03-01T00:30:00.000+0100",
                            description=ADF_FIXTURES["lists_nested"], labels=["hw", "floor-3"],
                            assignee="ana", severity="S2", request_type="Report a bug",
                            satisfaction=4, duedate="2024-03-10")
    jira.add_comment(key, "bob", "Any news?")
    body = get(jira, f"/rest/api/3/issue/{key}", **FULL).json()
    assert {"expand", "id", "self", "key", "fields", "renderedFields", "changelog"} <= body.keys()
    assert body["key"] == "SUP-1" and body["id"].isdigit()
    f = body["fields"]
    assert JIRA_TS.match(f["created"]) and JIRA_TS.match(f["updated"])
    assert f["updated"] > f["created"]  # the comment bumped it
    assert f["status"]["statusCategory"]["name"] == "To Do"
    assert f["project"] == {**f["project"], "key": "SUP", "name": "Support"}
    assert f["assignee"]["emailAddress"] == "ana.novak@example.com" and f["resolution"] is None
    assert f[SEVERITY_FIELD]["value"] == "S2" and f["customfield_10060"]["rating"] == 4
    assert f["customfield_10010"]["requestType"]["name"] == "Report a bug"
    assert f["customfield_10010"]["currentStatus"]["status"] == "Open"
    assert f["comment"]["total"] == 1 and f["comment"]["comments"][0]["jsdPublic"] is True
    assert f["description"]["type"] == "doc" and f["customfield_10030"] == []
    assert not SLA_FIELDS & f.keys()  # the main account does not see SLA fields by default
    assert body["renderedFields"]["description"].startswith("<p>- one<br/>")
    assert body["changelog"] == {"startAt": 0, "maxResults": 0, "total": 0, "histories": []}

    narrow = get(jira, f"/rest/api/3/issue/{key}", fields="summary,status").json()
    assert set(narrow["fields"]) == {"summary", "status"}
    assert "changelog" not in narrow and "renderedFields" not in narrow
    assert get(jira, "/rest/api/3/issue/SUP-99").status_code == 404


def test_sla_fields_visibility(jira):
    key = jira.create_issue("SUP", "Slow", first_response=Sla(
        completed=[SlaCycle(14_400_000, 3_600_000)], ongoing=SlaCycle(14_400_000, 60_000, True)))
    sla_only = f"summary,{FIRST_RESPONSE_FIELD},{TIME_TO_RESOLUTION_FIELD}"
    body = get(jira, f"/rest/api/3/issue/{key}", auth=SLA_AUTH, fields=sla_only).json()
    assert list(body["fields"]) == [FIRST_RESPONSE_FIELD]  # summary omitted, TTR absent
    value = body["fields"][FIRST_RESPONSE_FIELD]
    assert value["completedCycles"][0]["goalDuration"] == {"millis": 14_400_000, "friendly": "4h"}
    assert value["ongoingCycle"]["breached"] is True and value["ongoingCycle"]["paused"] is False
    assert get(jira, f"/rest/api/3/issue/{key}/comment", auth=SLA_AUTH).status_code == 403
    row = jira.expected_rows("issues")[0]
    assert (row["first_response_breached"], row["first_response_elapsed_millis"]) == (True, 60_000)
    assert row["time_to_resolution_goal_millis"] is None
    main_only = jira.expected_rows("issues", sla_from_account=False)[0]
    assert main_only["first_response_breached"] is None
    jira.sla_visible_to_main = True
    assert FIRST_RESPONSE_FIELD in get(jira, f"/rest/api/3/issue/{key}").json()["fields"]
    jira.set_sla(key, first_response=Sla(completed=[SlaCycle(100, 50)]))
    row = jira.expected_rows("issues", sla_from_account=False)[0]
    assert (row["first_response_breached"], row["first_response_goal_millis"]) == (False, 100)


def test_comment_paging(jira):
    key = jira.create_issue("SUP", "Chatty")
    ids = [jira.add_comment(key, "bob", f"comment {i}") for i in range(5)]
    jira.comment_page_size = 2
    embedded = get(jira, f"/rest/api/3/issue/{key}", **FULL).json()["fields"]["comment"]
    assert (len(embedded["comments"]), embedded["total"]) == (2, 5)
    seen, start = [], 0
    while True:
        page = get(jira, f"/rest/api/3/issue/{key}/comment", startAt=start, maxResults=100).json()
        assert set(page) == {"startAt", "maxResults", "total", "comments"}
        seen += [c["id"] for c in page["comments"]]
        start += len(page["comments"])
        if start >= page["total"]:
            break
    assert seen == ids and jira.count("/comment?") == 3
    jira.edit_comment(key, ids[0], ADF_FIXTURES["table"], by="ana")
    jira.delete_comment(key, ids[1])
    rows = jira.expected_rows("comments")
    assert [r["comment_id"] for r in rows] == [ids[0]] + ids[2:]
    assert rows[0]["body"] == ADF_FIXTURES["table"].text
    assert rows[0]["update_author_email"] == "ana.novak@example.com"
    assert jira.expected_rows("issues")[0]["comment_count"] == 4


def test_changelog_paging_and_rows(jira):
    key = jira.create_issue("ENG", "Flaky", created="2024-01-31T20:00:00.000-0500")
    for i in range(6):
        jira.update_issue(key, summary=f"Flaky {i}", by="chen")
    history = jira.update_issue(key, status="In Progress", labels=["ci"], priority="High")
    jira.changelog_page_size = 3
    body = get(jira, f"/rest/api/3/issue/{key}", **FULL).json()
    assert (len(body["changelog"]["histories"]), body["changelog"]["total"]) == (3, 7)
    page = get(jira, f"/rest/api/3/issue/{key}/changelog", startAt=3, maxResults=100).json()
    assert (page["startAt"], page["maxResults"], page["isLast"]) == (3, 3, False)
    assert len(page["values"]) == 3 and page["nextPage"].endswith("startAt=6")
    page = get(jira, f"/rest/api/3/issue/{key}/changelog", startAt=6).json()
    assert page["isLast"] is True and page["values"][0]["id"] == history
    rows = jira.expected_rows("changelog")
    assert len(rows) == 9 and rows == sorted(rows, key=row_sort_key("changelog"))
    last = [r for r in rows if r["change_id"] == history]
    assert [(r["field_name"], r["from_value"], r["to_value"]) for r in last] == [
        ("labels", "", "ci"), ("priority", "Medium", "High"), ("status", "Open", "In Progress")]
    issue = jira.expected_rows("issues")[0]
    assert issue["status_category"] == "In Progress" and issue["labels"] == '["ci"]'
    assert issue["created_at"] == datetime(2024, 2, 1, 1, 0, tzinfo=timezone.utc)
    assert jira.month_of(key) == "2024-02"
    assert jira.update_issue(key, summary="Flaky 5", labels=["ci"]) is None


def test_resolution_sets_resolved_at(jira):
    key = jira.create_issue("SUP", "Done soon", created="2024-03-05T14:22:10.123+0100")
    jira.update_issue(key, status="Resolved", resolution="Done",
                      at="2024-03-06T09:00:00.500+0100")
    row = jira.expected_rows("issues")[0]
    assert row["resolved_at"] == datetime(2024, 3, 6, 8, 0, 0, 500_000, tzinfo=timezone.utc)
    assert row["updated_at"] == row["resolved_at"] and row["resolution"] == "Done"
    jira.update_issue(key, status="Open", resolution=None)
    assert jira.expected_rows("issues")[0]["resolved_at"] is None


def test_search_paging_and_jql(jira):
    keys = [jira.create_issue("SUP", f"s{i}") for i in range(5)]
    eng = jira.create_issue("ENG", "old", created="2020-01-01T10:00:00.000+0000")
    jira.search_page_size = 2
    seen, pages = [], 0
    params = {"jql": 'project = "SUP" ORDER BY key ASC', "fields": "updated", "maxResults": 100}
    while True:
        body = get(jira, "/rest/api/3/search/jql", **params).json()
        pages += 1
        seen += [i["key"] for i in body["issues"]]
        assert all(set(i["fields"]) == {"updated"} for i in body["issues"])
        if body["isLast"]:
            assert "nextPageToken" not in body
            break
        params["nextPageToken"] = body["nextPageToken"]
    assert (seen, pages) == (keys, 3)

    def search(jql: str) -> list[str]:
        jira.search_page_size = 50
        return [i["key"] for i in get(jira, "/rest/api/3/search/jql", jql=jql).json()["issues"]]

    assert search("updated >= -7d ORDER BY key ASC") == keys
    assert search("project in (SUP, ENG) ORDER BY key DESC") == keys[::-1] + [eng]
    assert search("project = ENG AND updated >= -30d ORDER BY updated DESC") == []
    jira.update_issue(keys[1], summary="touched", at="2030-01-01T00:00:00.000+0000")
    assert search("project = SUP ORDER BY updated DESC")[0] == keys[1]
    for bad in ("project = NOPE", "summary ~ foo", "", "ORDER BY key ASC"):
        r = get(jira, "/rest/api/3/search/jql", jql=bad)
        assert r.status_code == 400 and r.json()["errorMessages"], bad
    r = get(jira, "/rest/api/3/search/jql", jql="project = SUP", nextPageToken="junk")
    assert r.status_code == 400
    assert search(f"key in ({keys[0]}, {keys[2]})") == [keys[0], keys[2]]
    r = get(jira, "/rest/api/3/search/jql", jql=f"key in ({keys[0]}, ENG-99)")
    assert r.status_code == 400 and "ENG-99" in r.json()["errorMessages"][0]


def test_the_sla_account_searches_and_sees_only_sla_fields(jira):
    key = jira.create_issue("SUP", "sla", first_response=Sla(ongoing=SlaCycle(10, 5)))
    body = get(jira, "/rest/api/3/search/jql", auth=SLA_AUTH, jql=f"key in ({key})",
               fields=f"summary,{FIRST_RESPONSE_FIELD}").json()
    [issue] = body["issues"]
    assert set(issue["fields"]) == {FIRST_RESPONSE_FIELD}
    assert issue["fields"][FIRST_RESPONSE_FIELD]["ongoingCycle"]["elapsedTime"]["millis"] == 5


def test_rate_limit_injection(jira):
    key = jira.create_issue("SUP", "x")
    jira.fail_next(2, status=429, retry_after=3, path_contains="/issue/")
    assert get(jira, "/rest/api/3/myself").status_code == 200
    for _ in range(2):
        r = get(jira, f"/rest/api/3/issue/{key}")
        assert (r.status_code, r.headers["Retry-After"]) == (429, "3")
    assert get(jira, f"/rest/api/3/issue/{key}").status_code == 200
    jira.fail_always("/remotelink", 500)
    r = get(jira, f"/rest/api/3/issue/{key}/remotelink")
    assert r.status_code == 500 and r.json()["errorMessages"]
    jira.clear_failures()
    assert get(jira, f"/rest/api/3/issue/{key}/remotelink").json() == []
    assert jira.count(f"/issue/{key}") == 5
    jira.clear_log()
    assert jira.requests_log == []


def test_down_up_and_delay(jira):
    jira.down()
    r = get(jira, "/rest/api/3/myself")
    assert (r.status_code, r.json()) == (503, {"message": "Service Unavailable"})
    jira.up()
    assert get(jira, "/rest/api/3/myself").status_code == 200
    jira.delay(0.5)
    with pytest.raises(requests.Timeout):
        requests.get(jira.base_url + "/rest/api/3/myself", auth=AUTH, timeout=0.1)
    jira.delay(0)


def test_link_symmetry_and_deletion(jira):
    a = jira.create_issue("SUP", "Broken login", priority="High")
    b = jira.create_issue("ENG", "Fix auth")
    link_id = jira.link(a, b, "Blocks")
    jira.update_issue(b, summary="Fix auth service", status="In Progress")
    la = get(jira, f"/rest/api/3/issue/{a}").json()["fields"]["issuelinks"]
    lb = get(jira, f"/rest/api/3/issue/{b}").json()["fields"]["issuelinks"]
    assert la[0]["id"] == lb[0]["id"] == link_id
    assert la[0]["outwardIssue"]["fields"]["summary"] == "Fix auth service"
    assert la[0]["outwardIssue"]["fields"]["status"]["name"] == "In Progress"
    assert lb[0]["inwardIssue"]["key"] == a and "outwardIssue" not in lb[0]
    rows = jira.expected_rows("issuelinks")
    assert [(r["issue_key"], r["direction"], r["linked_issue_key"], r["linked_issue_priority"])
            for r in rows] == [("ENG-1", "inward", a, "High"), ("SUP-1", "outward", b, "Medium")]
    hook = jira.webhook("issuelink_created", a)
    assert hook["issueLink"]["sourceIssueId"] == int(hook["issue"]["id"])
    jira.unlink(link_id)
    assert jira.expected_rows("issuelinks") == []
    assert jira.webhook("issuelink_deleted", b)["issue"]["key"] == a

    jira.link(a, b, "Relates")
    jira.delete_issue(b)
    assert get(jira, f"/rest/api/3/issue/{b}").status_code == 404
    assert get(jira, f"/rest/api/3/issue/{a}").json()["fields"]["issuelinks"] == []
    gone = jira.webhook("jira:issue_deleted", b)
    assert gone["issue"]["fields"]["summary"] == "Fix auth service"
    assert gone["issue_event_type_name"] == "issue_deleted"
    assert [r["issue_key"] for r in jira.expected_rows("issues")] == [a]


def test_attachments_and_remote_links(jira):
    key = jira.create_issue("SUP", "Screens")
    png = jira.add_attachment(key, "shot.png", b"\x89PNG....", "image/png")
    log = jira.add_attachment(key, "big.log", b"x" * 2000, "text/plain")
    r = get(jira, f"/rest/api/3/attachment/content/{png}")
    assert (r.content, r.headers["Content-Type"]) == (b"\x89PNG....", "image/png")
    rows = jira.expected_rows("attachments", attachment_limit=1000)
    assert [r["local_path"] for r in rows] == [f"raw/jira/attachments/{key}/{png}", None]
    assert rows[0]["thumbnail_url"].endswith(f"/thumbnail/{png}")
    assert rows[1]["thumbnail_url"] is None
    jira.delete_attachment(key, log)
    assert get(jira, f"/rest/api/3/attachment/content/{log}").status_code == 404
    assert jira.webhook("attachment_deleted", key)["attachment"]["filename"] == "big.log"
    rid = jira.add_remote_link(key, "https://wiki.example.com/x/1", "Runbook")
    remote = get(jira, f"/rest/api/3/issue/{key}/remotelink").json()
    assert remote[0]["id"] == rid and isinstance(rid, int)
    assert jira.expected_rows("remote_links") == [{
        "issue_key": key, "remote_link_id": str(rid), "url": "https://wiki.example.com/x/1",
        "title": "Runbook", "application_name": "Confluence",
        "application_type": "com.atlassian.confluence"}]
    jira.delete_remote_link(key, rid)
    assert jira.expected_rows("remote_links") == []


def test_issue_row_columns(jira):
    key = jira.create_issue("SUP", "Hidden email", created="2024-03-01T00:30:00.000+0100",
                            reporter="dee", description=ADF_FIXTURES["plain"], duedate="2024-03-10",
                            severity="S1", request_type="Get IT help", labels=["a", "é"])
    row = jira.expected_rows("issues", site=jira.base_url + "/")[0]
    assert row["issue_url"] == f"{jira.base_url}/browse/{key}"
    assert (row["reporter_email"], row["reporter_name"]) == (None, "Dee Marsh")
    assert row["assignee_email"] is None and row["creator_name"] == "Dee Marsh"
    assert row["created_at"] == datetime(2024, 2, 29, 23, 30, tzinfo=timezone.utc)
    assert row["due_date"] == date(2024, 3, 10) and row["labels"] == '["a","é"]'
    assert (row["severity"], row["request_type"]) == ("S1", "Get IT help")
    assert row["request_status"] == "Open"
    assert row["description"] == ADF_FIXTURES["plain"].text
    assert row["_raw_file"] == f"raw/jira/issues/{key}.json"
    assert jira.month_of(key) == "2024-02"


def test_webhooks_and_signatures(jira):
    key = jira.create_issue("SUP", "Hook me")
    created = jira.webhook("jira:issue_created", key)
    assert created["issue_event_type_name"] == "issue_created" and created["issue"]["key"] == key
    assert "changelog" not in created["issue"] and created["matchedWebhookIds"]
    jira.update_issue(key, status="In Progress", by="chen")
    updated = jira.webhook("jira:issue_updated", key)
    assert updated["issue_event_type_name"] == "issue_generic"
    assert updated["changelog"]["items"][0]["toString"] == "In Progress"
    assert updated["user"]["displayName"] == "Chen Wei"
    cid = jira.add_comment(key, "bob", "hi")
    assert jira.webhook("comment_created", key)["comment"]["id"] == cid
    jira.delete_comment(key, cid)
    deleted = jira.webhook("comment_deleted", key)
    assert deleted["comment"]["id"] == cid
    assert deleted["issue_event_type_name"] == "issue_comment_deleted"

    body = json.dumps(created).encode()
    headers = JiraDouble.headers(body, "s3cret", delivery_id="d-1", retry=1)
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature"], "sha256=" + expected)
    assert headers["X-Atlassian-Webhook-Identifier"] == "d-1"
    assert headers["X-Atlassian-Webhook-Retry"] == "1"
    assert headers["User-Agent"] == "Atlassian Webhook HTTP Client"
    plain = jira.headers(body, "s3cret", header="X-Signature", prefix="")
    assert plain["X-Signature"] == jira.sign(body, "s3cret") == expected
    assert "X-Atlassian-Webhook-Retry" not in plain


@pytest.mark.parametrize("name", sorted(ADF_FIXTURES))
def test_adf_fixture_text(name):
    fixture = ADF_FIXTURES[name]
    assert adf_text(fixture.doc) == fixture.text


def test_adf_spot_checks():
    assert ADF_FIXTURES["lists_nested"].text.split("\n")[4] == "    - deep"
    assert "\n3. Wait\n4. Check\n  1. rows" in ADF_FIXTURES["lists_ordered"].text
    assert ADF_FIXTURES["media"].text == "Screenshot:\nlogin-error.png\nserver.log\nSee above."
    assert ADF_FIXTURES["empty_paragraph"].text == "First paragraph.\nSecond paragraph."
    assert ADF_FIXTURES["panel_cards_dates"].text.endswith(
        "\nDue 2024-04-01, last seen 2024-02-29, state IN PROGRESS")
    assert adf_text(None) is None and adf_text("as is ") == "as is "
    assert adf_text({"type": "doc", "content": []}) == ""
