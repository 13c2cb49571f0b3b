"""A test double of the Jira Cloud REST API (v3) for the Dataport Jira connector's tests.

It serves the calls the connector makes (issue with renderedFields and changelog, comment and
changelog pages, remote links, attachment content, /myself, /search/jql), builds webhook bodies
the way Jira Cloud posts them, and computes the rows the six Jira tables must hold for its
current state (see `expected_rows`).

    with JiraDouble(email="bot@example.com", token="tok-123",
                    sla_email="sla@example.com", sla_token="sla-456") as jira:
        key = jira.create_issue("SUP", "Printer jammed", created="2024-03-01T00:30:00.000+0100",
                                description=ADF_FIXTURES["lists_nested"], severity="S2")
        jira.add_comment(key, "bob", "Any news?")
        ... point the connector at jira.base_url ...
        assert sorted(rows, key=row_sort_key("issues")) == jira.expected_rows("issues")

Users are named by handle ("ana", "bob", "chen", "dee"; `add_user` adds more) or accountId.
"dee" hides her email address, as Jira does for users with that privacy setting.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import html
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, NamedTuple, Sequence
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from http_double import DoubleServer, write_response

SEVERITY_FIELD = "customfield_10050"
REQUEST_TYPE_FIELD = "customfield_10010"
SATISFACTION_FIELD = "customfield_10060"
FIRST_RESPONSE_FIELD = "customfield_10161"
TIME_TO_RESOLUTION_FIELD = "customfield_10328"
SLA_FIELDS = (FIRST_RESPONSE_FIELD, TIME_TO_RESOLUTION_FIELD)
TABLES = ("issues", "comments", "attachments", "changelog", "issuelinks", "remote_links")
DEFAULT_ACTOR = "ana"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNSET: Any = object()  # "argument not given", so that None can mean "clear the field"

# ---------------------------------------------------------------------------------------------
# Time


def jira_time(dt: datetime) -> str:
    """`dt` (timezone-aware) in Jira's format, e.g. `2024-03-05T14:22:10.123+0100`."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}" + dt.strftime("%z")


def _local_time(value: str) -> datetime:
    """A Jira timestamp as a datetime in its own offset."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def parse_jira_time(value: str) -> datetime:
    """A Jira timestamp as a timezone-aware UTC datetime."""
    return _local_time(value).astimezone(timezone.utc)


def _epoch_ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _friendly_date(dt: datetime) -> str:
    return f"{dt:%d/%b/%y} {dt.hour % 12 or 12}:{dt:%M} {'PM' if dt.hour >= 12 else 'AM'}"


def _date_obj(dt: datetime) -> dict:
    """The `{iso8601, jira, friendly, epochMillis}` object of Service Management fields."""
    return {"iso8601": dt.strftime("%Y-%m-%dT%H:%M:%S%z"), "jira": jira_time(dt),
            "friendly": _friendly_date(dt), "epochMillis": _epoch_ms(dt)}


def _duration(ms: int) -> dict:
    minutes = abs(ms) // 60000
    hours, mins = divmod(minutes, 60)
    parts = ([f"{hours}h"] if hours else []) + ([f"{mins}m"] if mins or not hours else [])
    return {"millis": ms, "friendly": ("-" if ms < 0 else "") + " ".join(parts)}


# ---------------------------------------------------------------------------------------------
# ADF -> plain text, and the fixture library


def adf_text(value: Any) -> str | None:
    """The plain text of an ADF document under the rules of the connector's mapping."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return _join(value.get("content") or [], "\n").rstrip()


def _join(nodes: Sequence[dict], sep: str) -> str:
    return sep.join(text for text in map(_render, nodes) if text != "")


_CONTAINERS = {"panel", "expand", "nestedExpand", "layoutSection", "layoutColumn", "mediaSingle",
               "mediaGroup"}


def _render(node: dict) -> str:
    kind = node.get("type")
    attrs = node.get("attrs") or {}
    content = node.get("content") or []
    if kind in ("paragraph", "heading"):
        return "".join(map(_render, content))
    if kind == "text":
        return node.get("text", "")
    if kind == "hardBreak":
        return "\n"
    if kind == "mention":
        return attrs["text"] if attrs.get("text") is not None else "@" + str(attrs.get("id", ""))
    if kind == "emoji":
        return attrs["text"] if attrs.get("text") is not None else attrs.get("shortName", "")
    if kind in ("inlineCard", "blockCard"):
        return attrs.get("url", "")
    if kind == "date":
        return (_EPOCH + timedelta(milliseconds=int(attrs["timestamp"]))).strftime("%Y-%m-%d")
    if kind == "status":
        return attrs.get("text", "")
    if kind in ("bulletList", "orderedList"):
        return _render_list(node)
    if kind == "codeBlock":
        return "".join(child.get("text", "") for child in content)
    if kind == "blockquote":
        inner = _join(content, "\n")
        return "\n".join("> " + line for line in inner.split("\n")) if inner else ""
    if kind == "rule":
        return "---"
    if kind == "table":
        rows = (" | ".join(_join(cell.get("content") or [], " ")
                           for cell in row.get("content") or [])
                for row in content)
        return "\n".join(row for row in rows if row != "")
    if kind in _CONTAINERS:
        return _join(content, "\n")
    if kind == "media":
        return attrs.get("alt") or ""
    if content:
        return _join(content, "\n")
    return node.get("text") or ""


def _render_list(node: dict) -> str:
    order = (node.get("attrs") or {}).get("order")
    first = 1 if order is None else int(order)
    lines = []
    for i, item in enumerate(node.get("content") or []):
        parts = []
        for child in item.get("content") or []:
            text = _render(child)
            if text == "":
                continue
            if child.get("type") in ("bulletList", "orderedList"):
                text = "\n".join("  " + line for line in text.split("\n"))
            parts.append(text)
        marker = f"{first + i}. " if node["type"] == "orderedList" else "- "
        lines.append(marker + "\n".join(parts))
    return "\n".join(lines)


class AdfFixture(NamedTuple):
    """An ADF document and its plain text under the mapping's rules (written out by hand)."""
    doc: dict
    text: str


def _doc(*content: dict) -> dict:
    return {"type": "doc", "version": 1, "content": list(content)}


def _p(*content: dict | str) -> dict:
    return {"type": "paragraph", "content": [_t(c) if isinstance(c, str) else c for c in content]}


def _t(text: str, *marks: dict) -> dict:
    return {"type": "text", "text": text, **({"marks": list(marks)} if marks else {})}


def _li(*content: dict | str) -> dict:
    return {"type": "listItem", "content": [_p(c) if isinstance(c, str) else c for c in content]}


def _bullets(*items: dict) -> dict:
    return {"type": "bulletList", "content": list(items)}


def _ordered(*items: dict, order: int | None = None) -> dict:
    return {"type": "orderedList", **({"attrs": {"order": order}} if order else {}),
            "content": list(items)}


def _cell(kind: str, *content: dict) -> dict:
    return _node(kind, {}, *content)


def _media(media_id: str, alt: str | None = None) -> dict:
    attrs = {"id": media_id, "type": "file", "collection": "", "width": 800, "height": 600}
    return {"type": "media", "attrs": {**attrs, **({"alt": alt} if alt else {})}}


def _node(kind: str, attrs: dict | None = None, *content: dict) -> dict:
    node: dict[str, Any] = {"type": kind}
    if attrs is not None:
        node["attrs"] = attrs
    if content:
        node["content"] = list(content)
    return node


_BR = {"type": "hardBreak"}
_STRONG, _EM, _CODE = {"type": "strong"}, {"type": "em"}, {"type": "code"}
_ANA_ID = "5b10ac8d82e05b22cc7d4ef5"

ADF_FIXTURES: dict[str, AdfFixture] = {
    "plain": AdfFixture(
        _doc(_p("The printer on floor 3 is jammed again.")),
        "The printer on floor 3 is jammed again."),
    "marks_breaks": AdfFixture(
        _doc(_p("Sync fails for ", _t("all", _STRONG), " users, ", _t("every", _EM), " time. Run ",
                _t("dataport sync --full", _CODE), " and see ",
                _t("the runbook", {"type": "link",
                                   "attrs": {"href": "https://wiki.example.com/rb"}}),
                ", ", _t("urgently", _STRONG, _EM), "."),
             _p("Line one", _BR, "Line two", _BR, "Thanks!", _BR)),
        "Sync fails for all users, every time. Run dataport sync --full and see the runbook, "
        "urgently.\nLine one\nLine two\nThanks!"),
    "mentions_emoji": AdfFixture(
        _doc(_p("Hi ", _node("mention", {"id": _ANA_ID, "text": "@Ana Novak", "accessLevel": ""}),
                " and ", _node("mention", {"id": "557058:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"}),
                ", please look ",
                _node("emoji", {"shortName": ":eyes:", "id": "1f440", "text": "👀"}),
                " ", _node("emoji", {"shortName": ":thumbsup:"}))),
        "Hi @Ana Novak and @557058:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9, "
        "please look 👀 :thumbsup:"),
    "lists_nested": AdfFixture(
        _doc(_bullets(_li("one"),
                      _li("two", _bullets(_li("two a"),
                                          _li("two b", _bullets(_li(_p(_t("deep", _STRONG))))))),
                      _li("three"))),
        "- one\n- two\n  - two a\n  - two b\n    - deep\n- three"),
    "lists_ordered": AdfFixture(
        _doc(_p("Steps:"), _ordered(_li("Open the app"), _li("Click Sync")),
             _p("Then:"),
             _ordered(_li("Wait"), _li("Check", _ordered(_li("rows"), _li("files"))), order=3)),
        "Steps:\n1. Open the app\n2. Click Sync\nThen:\n3. Wait\n4. Check\n  1. rows\n  2. files"),
    "code_block": AdfFixture(
        _doc(_p("Reproduce with:"),
             _node("codeBlock", {"language": "bash"},
                   _t("for i in 1 2 3; do\n    dataport sync\ndone")),
             _p("Fails on the third run.")),
        "Reproduce with:\nfor i in 1 2 3; do\n    dataport sync\ndone\nFails on the third run."),
    "quote_heading_rule": AdfFixture(
        _doc(_node("heading", {"level": 2}, _t("Customer "), _t("report", _EM)),
             _node("blockquote", None,
                   _p("It worked ", _t("yesterday", _EM), _BR, "but not today"),
                   _p("Please fix")),
             _node("rule"),
             _node("heading", {"level": 3}, _t("Next steps")),
             _p("Escalate.")),
        "Customer report\n> It worked yesterday\n> but not today\n> Please fix\n---\n"
        "Next steps\nEscalate."),
    "table": AdfFixture(
        _doc(_p("Counts:"),
             _node("table", {"isNumberColumnEnabled": False, "layout": "default"},
                   _node("tableRow", None, _cell("tableHeader", _p("Table")),
                         _cell("tableHeader", _p("Rows"))),
                   _node("tableRow", None, _cell("tableCell", _p("issues")),
                         _cell("tableCell", _p("42"))),
                   _node("tableRow", None, _cell("tableCell", _p("change"), _p("log")),
                         _cell("tableCell", _p(_t("7", _STRONG)))))),
        "Counts:\nTable | Rows\nissues | 42\nchange log | 7"),
    "panel_cards_dates": AdfFixture(
        _doc(_node("panel", {"panelType": "info"},
                   _p("Heads up: see ",
                      _node("inlineCard", {"url": "https://status.example.com/i/42"}))),
             _node("blockCard", {"url": "https://wiki.example.com/x/AbCd"}),
             _node("expand", {"title": "Details"}, _p("Hidden details")),
             _p("Due ", _node("date", {"timestamp": "1711929600000"}),
                ", last seen ", _node("date", {"timestamp": 1709247600000}),
                ", state ", _node("status", {"text": "IN PROGRESS", "color": "blue",
                                             "localId": "b4c1e5b0-3c1a-4d3e-9d8f-2a7e6c5b4a39"}))),
        "Heads up: see https://status.example.com/i/42\nhttps://wiki.example.com/x/AbCd\n"
        "Hidden details\nDue 2024-04-01, last seen 2024-02-29, state IN PROGRESS"),
    "media": AdfFixture(
        _doc(_p("Screenshot:"),
             _node("mediaSingle", {"layout": "center"},
                   _media("a7f3e8c2-1b4d-4e5f-8a9b-0c1d2e3f4a5b", "login-error.png")),
             _node("mediaSingle", {"layout": "center"},
                   _media("b8e4f9d3-2c5e-4f6a-9b0c-1d2e3f4a5b6c")),
             _node("mediaGroup", None,
                   _media("c9f5a0e4-3d6f-4a7b-8c1d-2e3f4a5b6c7d", "server.log"),
                   _media("d0a6b1f5-4e7a-4b8c-9d2e-3f4a5b6c7d8e")),
             _p("See above.")),
        "Screenshot:\nlogin-error.png\nserver.log\nSee above."),
    "empty_paragraph": AdfFixture(
        _doc(_p("First paragraph."), {"type": "paragraph", "content": []},
             _p("Second paragraph.  "), {"type": "paragraph"}),
        "First paragraph.\nSecond paragraph."),
}


def _as_adf(value: AdfFixture | dict | str | None) -> dict | None:
    """A description/comment argument as the ADF document Jira stores (a str becomes one
    paragraph)."""
    if value is None:
        return None
    if isinstance(value, AdfFixture):
        return copy.deepcopy(value.doc)
    if isinstance(value, str):
        return _doc(_p(value))
    return copy.deepcopy(value)


def _html(adf: Any) -> str | None:
    text = adf_text(adf)
    if text is None:
        return None
    return "<p>" + "<br/>".join(html.escape(line) for line in text.split("\n")) + "</p>"


# ---------------------------------------------------------------------------------------------
# Catalogs

_CATEGORIES = {
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "indeterminate": {"id": 4, "key": "indeterminate", "colorName": "yellow",
                      "name": "In Progress"},
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
}
_STATUSES = {"Open": ("1", "new"), "Waiting for support": ("10001", "new"),
             "In Progress": ("3", "indeterminate"),
             "Waiting for customer": ("10002", "indeterminate"),
             "Resolved": ("5", "done"), "Closed": ("6", "done"), "Done": ("10003", "done")}
_ISSUE_TYPES = {"Task": "10002", "Story": "10003", "Bug": "10004", "Sub-task": "10005",
                "Service Request": "10006", "Incident": "10007"}
_PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
_RESOLUTIONS = {"Done": "10000", "Won't Do": "10001", "Duplicate": "10002",
                "Cannot Reproduce": "10003"}
_SEVERITIES = {"S1": "10020", "S2": "10021", "S3": "10022", "S4": "10023"}
_REQUEST_TYPES = {"Report a bug": "11", "Get IT help": "12", "Request access": "13"}
_LINK_TYPES = {"Blocks": ("10000", "is blocked by", "blocks"),
               "Cloners": ("10001", "is cloned by", "clones"),
               "Duplicate": ("10002", "is duplicated by", "duplicates"),
               "Relates": ("10003", "relates to", "relates to"),
               "Problem/Incident": ("10004", "is caused by", "causes")}
_SLA_NAMES = {FIRST_RESPONSE_FIELD: ("1", "Time to first response"),
              TIME_TO_RESOLUTION_FIELD: ("2", "Time to resolution")}
_INJECTED_MESSAGES = {429: "Rate limit exceeded.", 500: "Internal server error",
                      502: "Bad Gateway", 503: "Service temporarily unavailable, please retry.",
                      504: "Gateway Timeout"}


def _error(*messages: str) -> dict:
    return {"errorMessages": list(messages), "errors": {}}


@dataclass(frozen=True)
class SlaCycle:
    """One SLA cycle: its goal, the time spent so far, and whether the goal was missed."""
    goal_millis: int
    elapsed_millis: int
    breached: bool = False


@dataclass(frozen=True)
class Sla:
    """An SLA field's cycles: the completed ones (oldest first) and the ongoing one, if any."""
    completed: Sequence[SlaCycle] = ()
    ongoing: SlaCycle | None = None
    paused: bool = False


@dataclass
class _Issue:
    id: str
    key: str
    tz: timezone
    fields: dict[str, Any]  # every field but the computed comment, attachment and issuelinks
    comments: list[dict] = field(default_factory=list)
    histories: list[dict] = field(default_factory=list)
    attachments: list[dict] = field(default_factory=list)
    remote_links: list[dict] = field(default_factory=list)


@dataclass
class _Link:
    id: str
    type_name: str
    outward_key: str  # the "from" issue: its side shows outwardIssue
    inward_key: str
    outward_id: str
    inward_id: str


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    path_contains: str | None
    remaining: int | None  # None: forever


class _JqlError(Exception):
    pass


Stamp = str | datetime | None


# ---------------------------------------------------------------------------------------------
# HTTP plumbing


# ---------------------------------------------------------------------------------------------
# The double


class JiraDouble:
    """A Jira Cloud site on 127.0.0.1 with projects SUP ("Support", a service desk) and ENG
    ("Engineering"), four users, and the issues the test creates."""

    def __init__(self, email: str, token: str, sla_email: str | None = None,
                 sla_token: str | None = None) -> None:
        self.email, self.token = email, token
        self.sla_email, self.sla_token = sla_email, sla_token
        self.comment_page_size = 5000
        self.changelog_page_size = 100
        self.search_page_size = 50
        self.sla_visible_to_main = False
        self._lock = threading.RLock()
        self._http = DoubleServer(self._handle, "jira-double")
        self._stopped = False
        self.base_url = self._http.base_url
        self._log: list[tuple[str, str, str | None]] = []
        self._failures: list[_Failure] = []
        self._down = False
        self._delay = 0.0
        self._projects: dict[str, dict] = {}
        self._users: dict[str, dict] = {}  # handle -> user
        self._issues: dict[str, _Issue] = {}
        self._links: dict[str, _Link] = {}
        self._contents: dict[str, bytes] = {}
        self._deleted_issues: dict[str, dict] = {}  # key -> issue as it was (webhook view)
        self._deleted_comments: dict[str, tuple[str, dict]] = {}
        self._deleted_links: dict[str, _Link] = {}
        self._deleted_attachments: dict[str, tuple[str, dict]] = {}
        self._key_counters: dict[str, itertools.count] = {}
        self._catalogs = {"issuetype": dict(_ISSUE_TYPES), "priority": dict(_PRIORITIES),
                          "resolution": dict(_RESOLUTIONS), "customFieldOption": dict(_SEVERITIES),
                          "requesttype": dict(_REQUEST_TYPES)}
        self._statuses = dict(_STATUSES)
        self._ids = {kind: itertools.count(base) for kind, base in (
            ("issue", 10001), ("comment", 20001), ("history", 30001), ("attachment", 40001),
            ("link", 50001), ("remotelink", 60001), ("option", 70001))}
        self.add_project("SUP", "Support", "service_desk", offset="+0100")
        self.add_project("ENG", "Engineering", "software", offset="-0500")
        self.add_user("ana", "Ana Novak", "ana.novak@example.com", "Europe/Ljubljana", _ANA_ID)
        self.add_user("bob", "Bob Okafor", "bob.okafor@example.com", "America/New_York",
                      "5b109f2e9729b51b54dc274d")
        self.add_user("chen", "Chen Wei", "chen.wei@example.com", "Asia/Shanghai",
                      "712020:3f9d1c2a-6b7e-4c1d-9a8b-2e5f7a1c0d44")
        self.add_user("dee", "Dee Marsh", None, "Australia/Sydney", "60e5a8c2d1b9f30069a1b2c3")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> JiraDouble:
        """Serve requests on `base_url` from a daemon thread."""
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._stopped = True
        self._http.stop()

    def __enter__(self) -> JiraDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- directory ---------------------------------------------------------------------------

    def add_project(self, key: str, name: str, project_type: str = "software", *,
                    offset: str = "+0000") -> str:
        """Add a project; `offset` (e.g. "+0530") is the UTC offset of its issues' timestamps
        when a mutation gives none. Returns the project id."""
        with self._lock:
            project_id = str(10000 + len(self._projects))
            self._projects[key] = {
                "self": f"{self.base_url}/rest/api/3/project/{project_id}", "id": project_id,
                "key": key, "name": name, "projectTypeKey": project_type, "simplified": False,
                "avatarUrls": self._avatars(f"project/{project_id}"),
                "_tz": datetime.strptime(offset, "%z").tzinfo}
            self._key_counters[key] = itertools.count(1)
            return project_id

    def add_user(self, handle: str, display_name: str, email: str | None,
                 time_zone: str = "Etc/UTC", account_id: str | None = None) -> str:
        """Add a user (email None: hidden, the field is absent). Returns the accountId."""
        with self._lock:
            account_id = account_id or uuid.uuid5(uuid.NAMESPACE_DNS, handle).hex[:24]
            user = {"self": f"{self.base_url}/rest/api/3/user?accountId={account_id}",
                    "accountId": account_id, "avatarUrls": self._avatars(account_id),
                    "displayName": display_name, "active": True, "timeZone": time_zone,
                    "accountType": "atlassian"}
            if email is not None:
                user["emailAddress"] = email
            self._users[handle] = user
            return account_id

    def user(self, who: str) -> dict:
        """The user object (as Jira embeds it) of a handle or accountId."""
        with self._lock:
            for handle, user in self._users.items():
                if who in (handle, user["accountId"]):
                    return copy.deepcopy(user)
        raise KeyError(f"unknown user {who!r}")

    # -- mutations ---------------------------------------------------------------------------

    def create_issue(self, project: str, summary: str, *, created: Stamp = None,
                     updated: Stamp = None, description: AdfFixture | dict | str | None = None,
                     issue_type: str = "Task", status: str = "Open",
                     status_category: str | None = None, priority: str | None = "Medium",
                     labels: Sequence[str] = (), assignee: str | None = None,
                     reporter: str | None = "bob", creator: str | None = None,
                     duedate: str | date | None = None, resolution: str | None = None,
                     resolutiondate: Stamp = None, severity: str | None = None,
                     request_type: str | None = None, satisfaction: int | None = None,
                     first_response: Sla | None = None, time_to_resolution: Sla | None = None,
                     extra_fields: dict[str, Any] | None = None) -> str:
        """Create an issue (key PROJECT-N, numeric string id). `created` defaults to now in
        the project's offset and fixes the offset of the issue's later timestamps; `updated`
        defaults to `created`. `extra_fields` sets raw field values last (no changelog).
        Returns the key."""
        with self._lock:
            proj = self._projects[project]
            created_s = self._stamp(created, proj["_tz"])
            tz = datetime.strptime(created_s[-5:], "%z").tzinfo
            issue_id = str(next(self._ids["issue"]))
            key = f"{project}-{next(self._key_counters[project])}"
            updated_s = self._stamp(updated, tz) if updated is not None else created_s
            f: dict[str, Any] = {
                "statuscategorychangedate": created_s,
                "issuetype": self._issue_type(issue_type),
                "timespent": None,
                "project": {k: v for k, v in proj.items() if not k.startswith("_")},
                "fixVersions": [], "aggregatetimespent": None,
                "resolution": self._resolution(resolution),
                "resolutiondate": (self._stamp(resolutiondate, tz) if resolutiondate is not None
                                   else updated_s if resolution else None),
                "workratio": -1,
                "watches": {"self": f"{self.base_url}/rest/api/3/issue/{key}/watchers",
                            "watchCount": 1, "isWatching": False},
                "lastViewed": None, "created": created_s, "priority": self._priority(priority),
                "labels": list(labels), "aggregatetimeoriginalestimate": None,
                "timeestimate": None, "versions": [], "assignee": self._user_or_none(assignee),
                "updated": updated_s, "status": self._status(status, status_category),
                "components": [], "timeoriginalestimate": None,
                "description": _as_adf(description), "timetracking": {}, "security": None,
                "aggregatetimeestimate": None, "summary": summary,
                "creator": self._user_or_none(creator or reporter),
                "subtasks": [], "reporter": self._user_or_none(reporter),
                "aggregateprogress": {"progress": 0, "total": 0}, "environment": None,
                "duedate": str(duedate) if duedate is not None else None,
                "progress": {"progress": 0, "total": 0},
                "votes": {"self": f"{self.base_url}/rest/api/3/issue/{key}/votes", "votes": 0,
                          "hasVoted": False},
                "worklog": {"startAt": 0, "maxResults": 20, "total": 0, "worklogs": []},
                "customfield_10000": "{}", "customfield_10019": f"0|i{int(issue_id):05x}:",
                "customfield_10020": None, "customfield_10021": None, "customfield_10030": [],
                "customfield_10031": None,
                SEVERITY_FIELD: self._severity(severity),
                SATISFACTION_FIELD: self._satisfaction(issue_id, satisfaction),
            }
            issue = _Issue(issue_id, key, tz, f)
            f[REQUEST_TYPE_FIELD] = self._request_type(issue, request_type, created_s)
            for field_id, sla in ((FIRST_RESPONSE_FIELD, first_response),
                                  (TIME_TO_RESOLUTION_FIELD, time_to_resolution)):
                if sla is not None:
                    f[field_id] = self._sla_value(issue, field_id, sla)
            f.update(copy.deepcopy(extra_fields or {}))
            self._issues[key] = issue
            return key

    def update_issue(self, key: str, *, by: str = DEFAULT_ACTOR, at: Stamp = None,
                     summary: str = _UNSET, description: AdfFixture | dict | str | None = _UNSET,
                     status: str = _UNSET, status_category: str | None = None,
                     priority: str | None = _UNSET, assignee: str | None = _UNSET,
                     reporter: str | None = _UNSET, labels: Sequence[str] = _UNSET,
                     resolution: str | None = _UNSET, resolutiondate: Stamp = _UNSET,
                     duedate: str | date | None = _UNSET, issue_type: str = _UNSET,
                     severity: str | None = _UNSET, request_type: str | None = _UNSET,
                     satisfaction: int | None = _UNSET,
                     extra_fields: dict[str, Any] | None = None) -> str | None:
        """Change fields (None clears one) as `by` at `at` (default now): one changelog history
        with an item per changed field, and `updated` bumped. Setting a resolution sets
        resolutiondate (unless given), clearing it clears it. Returns the history id, or None
        when nothing changed."""
        with self._lock:
            issue = self._issue(key)
            f = issue.fields
            now = self._stamp(at, issue.tz)
            changes: list[tuple[str, Any, dict | None]] = []

            def change(fid: str, new: Any, name: str, old_id: Any, old_s: Any, new_id: Any,
                       new_s: Any, fieldtype: str = "jira") -> None:
                if f.get(fid) != new:
                    changes.append((fid, new, {
                        "field": name, "fieldtype": fieldtype, "fieldId": fid, "from": old_id,
                        "fromString": old_s, "to": new_id, "toString": new_s}))

            def ref(obj: dict | None, attr: str, id_attr: str = "id") -> tuple[Any, Any]:
                return (obj[id_attr], obj[attr]) if obj else (None, None)

            if summary is not _UNSET:
                change("summary", summary, "summary", None, f["summary"], None, summary)
            if description is not _UNSET:
                new = _as_adf(description)
                change("description", new, "description", None, adf_text(f["description"]), None,
                       adf_text(new))
            if issue_type is not _UNSET:
                new = self._issue_type(issue_type)
                change("issuetype", new, "issuetype", *ref(f["issuetype"], "name"),
                       *ref(new, "name"))
            if status is not _UNSET:
                new = self._status(status, status_category)
                change("status", new, "status", *ref(f["status"], "name"), *ref(new, "name"))
                if new["statusCategory"]["key"] != f["status"]["statusCategory"]["key"]:
                    changes.append(("statuscategorychangedate", now, None))
            if priority is not _UNSET:
                new = self._priority(priority)
                change("priority", new, "priority", *ref(f["priority"], "name"), *ref(new, "name"))
            for fid, who in (("assignee", assignee), ("reporter", reporter)):
                if who is not _UNSET:
                    new = self._user_or_none(who)
                    change(fid, new, fid, *ref(f[fid], "displayName", "accountId"),
                           *ref(new, "displayName", "accountId"))
            if labels is not _UNSET:
                change("labels", list(labels), "labels", None, " ".join(f["labels"]), None,
                       " ".join(labels))
            if resolution is not _UNSET:
                new = self._resolution(resolution)
                change("resolution", new, "resolution", *ref(f["resolution"], "name"),
                       *ref(new, "name"))
                if resolutiondate is _UNSET and (new is None) != (f["resolution"] is None):
                    resolutiondate = now if new else None
            if resolutiondate is not _UNSET:
                new_date = self._stamp(resolutiondate, issue.tz) if resolutiondate else None
                if new_date != f["resolutiondate"]:
                    changes.append(("resolutiondate", new_date, None))
            if duedate is not _UNSET:
                new = str(duedate) if duedate is not None else None
                old = f["duedate"]
                change("duedate", new, "duedate", old, old and f"{old} 00:00:00.0", new,
                       new and f"{new} 00:00:00.0")
            if severity is not _UNSET:
                new = self._severity(severity)
                change(SEVERITY_FIELD, new, "Severity", *ref(f.get(SEVERITY_FIELD), "value"),
                       *ref(new, "value"), "custom")
            if request_type is not _UNSET:
                current = (f.get(REQUEST_TYPE_FIELD) or {}).get("currentStatus")
                new = self._request_type(issue, request_type,
                                         current["statusDate"]["jira"] if current else now)
                old_name, new_name = (v and v["requestType"]["name"]
                                      for v in (f.get(REQUEST_TYPE_FIELD), new))
                if old_name != new_name:
                    changes.append((REQUEST_TYPE_FIELD, new, {
                        "field": "Customer Request Type", "fieldtype": "custom",
                        "fieldId": REQUEST_TYPE_FIELD, "from": None, "fromString": old_name,
                        "to": None, "toString": new_name}))
            if satisfaction is not _UNSET:
                new = self._satisfaction(issue.id, satisfaction)
                old_rating, new_rating = (v and str(v["rating"])
                                          for v in (f.get(SATISFACTION_FIELD), new))
                change(SATISFACTION_FIELD, new, "Satisfaction", None, old_rating, None, new_rating,
                       "custom")
            for fid, new, _ in changes:
                f[fid] = new
            if any(fid == "status" for fid, _, _ in changes) and f.get(REQUEST_TYPE_FIELD):
                f[REQUEST_TYPE_FIELD]["currentStatus"] = self._current_status(issue, now)
            f.update(copy.deepcopy(extra_fields or {}))
            if changes or extra_fields:
                f["updated"] = now
            items = [item for _, _, item in changes if item is not None]
            return self._history(issue, by, now, items) if items else None

    def set_sla(self, key: str, *, first_response: Sla | None = _UNSET,
                time_to_resolution: Sla | None = _UNSET) -> None:
        """Replace SLA field values (None removes the field). Like Service Management's SLA
        recalculation this leaves `updated` and the changelog alone."""
        with self._lock:
            issue = self._issue(key)
            for field_id, sla in ((FIRST_RESPONSE_FIELD, first_response),
                                  (TIME_TO_RESOLUTION_FIELD, time_to_resolution)):
                if sla is None:
                    issue.fields.pop(field_id, None)
                elif sla is not _UNSET:
                    issue.fields[field_id] = self._sla_value(issue, field_id, sla)

    def add_comment(self, key: str, author: str, adf: AdfFixture | dict | str, *,
                    public: bool = True, at: Stamp = None) -> str:
        """Add a comment (bumps `updated`, no changelog, as in Jira). Returns its id."""
        with self._lock:
            issue = self._issue(key)
            now = self._stamp(at, issue.tz)
            comment_id = str(next(self._ids["comment"]))
            user = self._user_or_none(author)
            issue.comments.append({
                "self": f"{self.base_url}/rest/api/3/issue/{issue.id}/comment/{comment_id}",
                "id": comment_id, "author": user, "body": _as_adf(adf), "updateAuthor": user,
                "created": now, "updated": now, "jsdPublic": public})
            issue.fields["updated"] = now
            return comment_id

    def edit_comment(self, key: str, comment_id: str, adf: AdfFixture | dict | str, *,
                     by: str | None = None, at: Stamp = None) -> None:
        """Replace a comment's body; `by` (default its author) becomes its updateAuthor."""
        with self._lock:
            issue = self._issue(key)
            comment = self._comment(issue, comment_id)
            now = self._stamp(at, issue.tz)
            comment["body"] = _as_adf(adf)
            comment["updateAuthor"] = self._user_or_none(by) if by else comment["author"]
            comment["updated"] = now
            issue.fields["updated"] = now

    def delete_comment(self, key: str, comment_id: str, *, at: Stamp = None) -> None:
        """Delete a comment (bumps `updated`)."""
        with self._lock:
            issue = self._issue(key)
            comment = self._comment(issue, comment_id)
            issue.comments.remove(comment)
            self._deleted_comments[comment_id] = (key, comment)
            issue.fields["updated"] = self._stamp(at, issue.tz)

    def link(self, from_key: str, to_key: str, type_name: str = "Blocks", *,
             by: str = DEFAULT_ACTOR, at: Stamp = None) -> str:
        """Link `from_key` -> `to_key` ("SUP-1 blocks SUP-2"): outwardIssue on `from_key`,
        inwardIssue on `to_key`, a "Link" changelog item and `updated` bumped on both.
        Returns the link id."""
        with self._lock:
            source, dest = self._issue(from_key), self._issue(to_key)
            if source is dest:
                raise ValueError("an issue cannot link to itself")
            _, inward, outward = self._link_type(type_name)
            link = _Link(str(next(self._ids["link"])), type_name, from_key, to_key, source.id,
                         dest.id)
            self._links[link.id] = link
            for issue, other, verb in ((source, to_key, outward), (dest, from_key, inward)):
                now = self._stamp(at, issue.tz)
                issue.fields["updated"] = now
                self._history(issue, by, now, [{
                    "field": "Link", "fieldtype": "jira", "from": None, "fromString": None,
                    "to": other, "toString": f"This issue {verb} {other}"}])
            return link.id

    def unlink(self, link_id: str, *, by: str = DEFAULT_ACTOR, at: Stamp = None) -> None:
        """Remove a link from both issues (changelog item and `updated` bump on each)."""
        with self._lock:
            link = self._links.pop(link_id)
            self._deleted_links[link_id] = link
            _, inward, outward = self._link_type(link.type_name)
            for key, other, verb in ((link.outward_key, link.inward_key, outward),
                                     (link.inward_key, link.outward_key, inward)):
                issue = self._issue(key)
                now = self._stamp(at, issue.tz)
                issue.fields["updated"] = now
                self._history(issue, by, now, [{
                    "field": "Link", "fieldtype": "jira", "from": other,
                    "fromString": f"This issue {verb} {other}", "to": None, "toString": None}])

    def add_remote_link(self, key: str, url: str, title: str,
                        app_type: str = "com.atlassian.confluence", app_name: str = "Confluence",
                        *, relationship: str | None = None, summary: str = "",
                        at: Stamp = None) -> int:
        """Add a remote link (bumps `updated`). Returns its (numeric) id."""
        with self._lock:
            issue = self._issue(key)
            link_id = next(self._ids["remotelink"])
            confluence = app_type == "com.atlassian.confluence"
            issue.remote_links.append({
                "id": link_id,
                "self": f"{self.base_url}/rest/api/3/issue/{key}/remotelink/{link_id}",
                "globalId": (f"appId=8b2f1a6c-0d3e-3c4b-9a5f-7e6d5c4b3a2f&pageId={link_id}"
                             if confluence else f"system={url}"),
                "application": {"type": app_type, "name": app_name},
                "relationship": relationship or ("Wiki Page" if confluence else "mentioned in"),
                "object": {"url": url, "title": title, "summary": summary,
                           "icon": {"url16x16": f"{self.base_url}/images/icons/link.png",
                                    "title": app_name},
                           "status": {"resolved": False, "icon": {}}}})
            issue.fields["updated"] = self._stamp(at, issue.tz)
            return link_id

    def delete_remote_link(self, key: str, link_id: int, *, at: Stamp = None) -> None:
        """Remove a remote link (bumps `updated`)."""
        with self._lock:
            issue = self._issue(key)
            issue.remote_links = [r for r in issue.remote_links if r["id"] != link_id]
            issue.fields["updated"] = self._stamp(at, issue.tz)

    def add_attachment(self, key: str, filename: str, content: bytes,
                       mime: str = "application/octet-stream", *, author: str = DEFAULT_ACTOR,
                       at: Stamp = None) -> str:
        """Attach `content` (served at `{base_url}/rest/api/3/attachment/content/{id}`; images
        get a thumbnail URL); an "Attachment" changelog item, `updated` bumped. Returns the id."""
        with self._lock:
            issue = self._issue(key)
            now = self._stamp(at, issue.tz)
            att_id = str(next(self._ids["attachment"]))
            api = f"{self.base_url}/rest/api/3/attachment"
            issue.attachments.append({
                "self": f"{api}/{att_id}", "id": att_id, "filename": filename,
                "author": self._user_or_none(author), "created": now, "size": len(content),
                "mimeType": mime, "content": f"{api}/content/{att_id}",
                "thumbnail": f"{api}/thumbnail/{att_id}" if mime.startswith("image/") else None})
            self._contents[att_id] = bytes(content)
            issue.fields["updated"] = now
            self._history(issue, author, now, [{
                "field": "Attachment", "fieldtype": "jira", "fieldId": "attachment", "from": None,
                "fromString": None, "to": att_id, "toString": filename}])
            return att_id

    def delete_attachment(self, key: str, attachment_id: str, *, by: str = DEFAULT_ACTOR,
                          at: Stamp = None) -> None:
        """Delete an attachment (its content 404s); changelog item, `updated` bumped."""
        with self._lock:
            issue = self._issue(key)
            meta = next(a for a in issue.attachments if a["id"] == attachment_id)
            issue.attachments.remove(meta)
            del self._contents[attachment_id]
            self._deleted_attachments[attachment_id] = (key, meta)
            now = self._stamp(at, issue.tz)
            issue.fields["updated"] = now
            self._history(issue, by, now, [{
                "field": "Attachment", "fieldtype": "jira", "fieldId": "attachment",
                "from": attachment_id, "fromString": meta["filename"], "to": None,
                "toString": None}])

    def delete_issue(self, key: str) -> None:
        """Delete an issue: it 404s, leaves search, and its links vanish from the other issues
        (whose `updated` Jira leaves alone)."""
        with self._lock:
            issue = self._issue(key)
            self._deleted_issues[key] = self._issue_json(issue, "*all", set(), "system")
            for link in [l for l in self._links.values() if key in (l.outward_key, l.inward_key)]:
                self._deleted_links[link.id] = self._links.pop(link.id)
            for meta in issue.attachments:
                self._deleted_attachments[meta["id"]] = (key, meta)
                del self._contents[meta["id"]]
            del self._issues[key]

    # -- failure injection and the request log ---------------------------------------------

    def fail_next(self, n: int = 1, status: int = 429, retry_after: int | None = None,
                  path_contains: str | None = None) -> None:
        """The next `n` requests (whose decoded path+query contains `path_contains`) get
        `status` (429 with `Retry-After: retry_after` seconds when given)."""
        with self._lock:
            self._failures.append(_Failure(status, retry_after, path_contains, n))

    def fail_always(self, path_contains: str, status: int = 500,
                    retry_after: int | None = None) -> None:
        """Every matching request gets `status` until `clear_failures`."""
        with self._lock:
            self._failures.append(_Failure(status, retry_after, path_contains, None))

    def clear_failures(self) -> None:
        """Forget all injected failures."""
        with self._lock:
            self._failures.clear()

    def down(self) -> None:
        """Answer every request 503 `{"message": "Service Unavailable"}` until `up`."""
        with self._lock:
            self._down = True

    def up(self) -> None:
        """Serve normally again."""
        with self._lock:
            self._down = False

    def delay(self, seconds: float) -> None:
        """Wait `seconds` before answering each request (0: no delay)."""
        with self._lock:
            self._delay = seconds

    @property
    def requests_log(self) -> list[tuple[str, str, str | None]]:
        """(method, decoded path with query, authenticated account email or None) per request."""
        with self._lock:
            return list(self._log)

    def count(self, path_contains: str, method: str = "GET") -> int:
        """How many `method` requests had `path_contains` in their decoded path and query."""
        with self._lock:
            return sum(1 for m, p, _ in self._log if m == method and path_contains in p)

    def clear_log(self) -> None:
        """Empty `requests_log`."""
        with self._lock:
            self._log.clear()

    # -- webhooks ----------------------------------------------------------------------------

    def webhook(self, event: str, key: str, *, comment_id: str | None = None,
                changelog: str | dict | None = None, user: str | None = None,
                link_id: str | None = None, attachment_id: str | None = None) -> dict:
        """The body Jira Cloud posts for `event` about issue `key`. Defaults: the issue's latest
        history (jira:issue_updated), latest (or latest deleted) comment, link, attachment."""
        with self._lock:
            body: dict[str, Any] = {"timestamp": int(time.time() * 1000), "webhookEvent": event}
            issue_json = self._webhook_issue(key)
            actor = user
            if event in ("jira:issue_created", "jira:issue_deleted"):
                body["issue_event_type_name"] = event.removeprefix("jira:")
                actor = actor or self._name_of(issue_json["fields"]["reporter"])
            elif event == "jira:issue_updated":
                issue = self._issue(key)
                if comment_id is not None:
                    comment = self._comment(issue, comment_id)
                    body["issue_event_type_name"] = "issue_commented"
                    body["comment"] = copy.deepcopy(comment)
                    actor = actor or self._name_of(comment["author"])
                history = self._history_for(issue, changelog) if comment_id is None else None
                if history is not None:
                    fields = {item["field"] for item in history["items"]}
                    body["issue_event_type_name"] = (
                        "issue_generic" if "status" in fields
                        else "issue_assigned" if fields == {"assignee"} else "issue_updated")
                    body["changelog"] = {"id": history["id"], "items": history["items"]}
                    actor = actor or self._name_of(history["author"])
                body.setdefault("issue_event_type_name", "issue_updated")
            elif event.startswith("comment_"):
                comment = self._webhook_comment(key, event, comment_id)
                body["issue_event_type_name"] = {"comment_created": "issue_commented",
                                                 "comment_updated": "issue_comment_edited",
                                                 "comment_deleted": "issue_comment_deleted"}[event]
                body["comment"] = comment
                actor = actor or self._name_of(comment["updateAuthor"])
            elif event.startswith("issuelink_"):
                # Jira sends only `issueLink`; `issue` (the link's source issue) is added so
                # that a receiver can find an issue key without a lookup by id.
                link = self._webhook_link(key, event, link_id)
                type_id, inward, outward = self._link_type(link.type_name)
                body["issueLink"] = {
                    "id": int(link.id), "sourceIssueId": int(link.outward_id),
                    "destinationIssueId": int(link.inward_id),
                    "issueLinkType": {"id": int(type_id), "name": link.type_name,
                                      "outwardName": outward, "inwardName": inward,
                                      "isSubTaskLinkType": False, "isSystemLinkType": False},
                    "systemLink": False}
                if link.outward_key != key:
                    issue_json = self._webhook_issue(link.outward_key)
            elif event.startswith("attachment_"):
                body["attachment"] = self._webhook_attachment(key, event, attachment_id)
            else:
                raise ValueError(f"unknown webhook event {event!r}")
            body["user"] = self.user(actor or DEFAULT_ACTOR)
            body["issue"] = issue_json
            body["matchedWebhookIds"] = [1]
            return body

    @staticmethod
    def sign(body: bytes, secret: str) -> str:
        """The hex HMAC-SHA256 of `body` under `secret`."""
        return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    @staticmethod
    def headers(body: bytes, secret: str, *, header: str = "X-Hub-Signature",
                prefix: str = "sha256=", delivery_id: str | None = None,
                retry: int = 0) -> dict[str, str]:
        """The headers of a Jira Cloud webhook delivery of `body`; `retry` > 0 marks the
        n-th redelivery (reuse the first delivery's `delivery_id` for it)."""
        headers = {"Content-Type": "application/json",
                   header: prefix + JiraDouble.sign(body, secret),
                   "X-Atlassian-Webhook-Identifier": delivery_id or str(uuid.uuid4()),
                   "User-Agent": "Atlassian Webhook HTTP Client"}
        if retry:
            headers["X-Atlassian-Webhook-Retry"] = str(retry)
        return headers

    # -- expected rows -----------------------------------------------------------------------

    def month_of(self, key: str) -> str:
        """The UTC month ("YYYY-MM") of the issue's creation: its partition."""
        with self._lock:
            return parse_jira_time(self._issue(key).fields["created"]).strftime("%Y-%m")

    def expected_rows(self, table: str, *, site: str | None = None, source: str = "jira",
                      sla_from_account: bool = True,
                      attachment_limit: int | None = None) -> list[dict]:
        """The rows `table` must hold for the current state, per the connector mapping
        (without `_synced_at`), sorted by `row_sort_key(table)`. `sla_from_account`: the
        connector reads SLA fields with the SLA account (else with the main one, which sees
        them only when `sla_visible_to_main`). `attachment_limit`: the per-file size limit."""
        site = (site or self.base_url).rstrip("/")
        with self._lock:
            rows: list[dict] = []
            for issue in self._issues.values():
                f = self._fields(issue, "system")
                key = issue.key
                if table == "issues":
                    sla_visible = sla_from_account or self.sla_visible_to_main
                    rows.append(self._issue_row(issue, f, site, source, sla_visible))
                elif table == "comments":
                    rows += [{"comment_id": c["id"], "issue_key": key,
                              **_person("author", c["author"]), "body": adf_text(c["body"]),
                              "created_at": parse_jira_time(c["created"]),
                              "updated_at": parse_jira_time(c["updated"]),
                              "update_author_email": (c["updateAuthor"] or {}).get("emailAddress")}
                             for c in issue.comments]
                elif table == "attachments":
                    rows += [{"attachment_id": a["id"], "issue_key": key, "filename": a["filename"],
                              "local_path": (None if attachment_limit is not None
                                             and a["size"] > attachment_limit
                                             else f"raw/{source}/attachments/{key}/{a['id']}"),
                              "size_bytes": a["size"], "mime_type": a["mimeType"],
                              "author_email": (a["author"] or {}).get("emailAddress"),
                              "created_at": parse_jira_time(a["created"]),
                              "content_url": a["content"], "thumbnail_url": a["thumbnail"]}
                             for a in issue.attachments]
                elif table == "changelog":
                    rows += [{"change_id": h["id"], "issue_key": key,
                              **_person("author", h["author"]),
                              "field_name": item["field"], "field_type": item["fieldtype"],
                              "from_value": _first(item.get("fromString"), item.get("from")),
                              "to_value": _first(item.get("toString"), item.get("to")),
                              "changed_at": parse_jira_time(h["created"]), "_position": pos}
                             for h in issue.histories for pos, item in enumerate(h["items"])]
                elif table == "issuelinks":
                    for link in f["issuelinks"]:
                        direction = "inward" if "inwardIssue" in link else "outward"
                        other = link[f"{direction}Issue"]
                        rows.append({"issue_key": key, "link_id": link["id"],
                                     "link_type": link["type"]["name"], "direction": direction,
                                     "linked_issue_key": other["key"],
                                     "linked_issue_summary": other["fields"]["summary"],
                                     "linked_issue_status": other["fields"]["status"]["name"],
                                     "linked_issue_priority":
                                         (other["fields"]["priority"] or {}).get("name")})
                elif table == "remote_links":
                    rows += [{"issue_key": key, "remote_link_id": str(r["id"]),
                              "url": r["object"]["url"], "title": r["object"]["title"],
                              "application_name": r["application"]["name"],
                              "application_type": r["application"]["type"]}
                             for r in issue.remote_links]
                else:
                    raise ValueError(f"unknown table {table!r}; one of {TABLES}")
        if table == "changelog":
            rows.sort(key=lambda r: (_id_order(r["change_id"]), r["field_name"], r["_position"]))
            for row in rows:
                del row["_position"]
            return rows
        return sorted(rows, key=row_sort_key(table))

    def _issue_row(self, issue: _Issue, f: dict, site: str, source: str,
                   sla_visible: bool) -> dict:
        def name(fid: str, attr: str = "name") -> Any:
            return (f.get(fid) or {}).get(attr)

        severity, satisfaction = f.get(SEVERITY_FIELD), f.get(SATISFACTION_FIELD)
        request = f.get(REQUEST_TYPE_FIELD) or {}
        row = {
            "issue_key": issue.key, "issue_id": issue.id, "issue_url": f"{site}/browse/{issue.key}",
            "summary": f.get("summary"), "description": adf_text(f.get("description")),
            "issue_type": name("issuetype"), "status": name("status"),
            "status_category": f["status"]["statusCategory"]["name"] if f.get("status") else None,
            "priority": name("priority"), "resolution": name("resolution"),
            "project_key": name("project", "key"), "project_name": name("project"),
            **_person("creator", f.get("creator")), **_person("reporter", f.get("reporter")),
            **_person("assignee", f.get("assignee")),
            "created_at": parse_jira_time(f["created"]),
            "updated_at": parse_jira_time(f["updated"]),
            "resolved_at": (parse_jira_time(f["resolutiondate"]) if f.get("resolutiondate")
                            else None),
            "due_date": date.fromisoformat(f["duedate"]) if f.get("duedate") else None,
            "labels": json.dumps(f.get("labels") or [], separators=(",", ":"), ensure_ascii=False),
            "attachment_count": len(f.get("attachment") or []),
            "comment_count": len(issue.comments),
            "issuelink_count": len(f.get("issuelinks") or []),
            "request_type": (request.get("requestType") or {}).get("name"),
            "request_status": (request.get("currentStatus") or {}).get("status"),
            "severity": severity.get("value") if isinstance(severity, dict) else severity,
            "satisfaction": (satisfaction.get("rating") if isinstance(satisfaction, dict)
                             else satisfaction),
        }
        for prefix, field_id in (("first_response", FIRST_RESPONSE_FIELD),
                                 ("time_to_resolution", TIME_TO_RESOLUTION_FIELD)):
            value = f.get(field_id) if sla_visible else None
            cycle = None
            if isinstance(value, dict):
                cycle = value.get("ongoingCycle") or (value.get("completedCycles") or [None])[-1]
            cycle = cycle or {}
            row[f"{prefix}_breached"] = cycle.get("breached")
            row[f"{prefix}_goal_millis"] = (cycle.get("goalDuration") or {}).get("millis")
            row[f"{prefix}_elapsed_millis"] = (cycle.get("elapsedTime") or {}).get("millis")
        row["_raw_file"] = f"raw/{source}/issues/{issue.key}.json"
        return row

    # -- rendering ---------------------------------------------------------------------------

    def _fields(self, issue: _Issue, role: str) -> dict[str, Any]:
        """All fields of `issue` as `role` ("main", "sla" or "system") may see them."""
        f = copy.deepcopy(issue.fields)
        comments = copy.deepcopy(issue.comments[:self.comment_page_size])
        f["comment"] = {"comments": comments,
                        "self": f"{self.base_url}/rest/api/3/issue/{issue.id}/comment",
                        "maxResults": len(comments), "total": len(issue.comments), "startAt": 0}
        f["attachment"] = copy.deepcopy(issue.attachments)
        f["issuelinks"] = self._issuelinks(issue)
        if role == "sla":
            return {k: v for k, v in f.items() if k in SLA_FIELDS}
        if role == "main" and not self.sla_visible_to_main:
            return {k: v for k, v in f.items() if k not in SLA_FIELDS}
        return f

    def _issuelinks(self, issue: _Issue) -> list[dict]:
        links = []
        for link in sorted(self._links.values(), key=lambda l: int(l.id)):
            if issue.key not in (link.outward_key, link.inward_key):
                continue
            type_id, inward, outward = self._link_type(link.type_name)
            outward_side = link.outward_key == issue.key
            other = self._issues[link.inward_key if outward_side else link.outward_key]
            of = other.fields
            links.append({
                "id": link.id, "self": f"{self.base_url}/rest/api/3/issueLink/{link.id}",
                "type": {"id": type_id, "name": link.type_name, "inward": inward,
                         "outward": outward,
                         "self": f"{self.base_url}/rest/api/3/issueLinkType/{type_id}"},
                "outwardIssue" if outward_side else "inwardIssue": {
                    "id": other.id, "key": other.key,
                    "self": f"{self.base_url}/rest/api/3/issue/{other.id}",
                    "fields": copy.deepcopy({"summary": of["summary"], "status": of["status"],
                                             "priority": of["priority"],
                                             "issuetype": of["issuetype"]})}})
        return links

    def _issue_json(self, issue: _Issue, fields_param: str, expand: set[str],
                    role: str) -> dict:
        """The REST representation of `issue` for GET /issue (also the webhooks' `issue`)."""
        all_fields = self._fields(issue, role)
        chosen = _select(fields_param, all_fields)
        body: dict[str, Any] = {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,"
                      "versionedRepresentations,customfield_10010.requestTypePractice",
            "id": issue.id, "self": f"{self.base_url}/rest/api/3/issue/{issue.id}",
            "key": issue.key}
        if role != "sla" and "renderedFields" in expand:
            body["renderedFields"] = {k: self._rendered(k, all_fields[k]) for k in chosen}
        body["fields"] = {k: all_fields[k] for k in chosen}
        if role != "sla" and "changelog" in expand:
            page = copy.deepcopy(issue.histories[:self.changelog_page_size])
            body["changelog"] = {"startAt": 0, "maxResults": len(page),
                                 "total": len(issue.histories), "histories": page}
        return body

    @staticmethod
    def _rendered(field_id: str, value: Any) -> Any:
        if field_id == "description":
            return _html(value)
        if field_id in ("created", "updated", "resolutiondate", "lastViewed",
                        "statuscategorychangedate"):
            return _friendly_date(_local_time(value)) if value else None
        if field_id == "duedate":
            return f"{date.fromisoformat(value):%d/%b/%y}" if value else None
        if field_id == "comment":
            return {**value,
                    "comments": [{**c, "body": _html(c["body"])} for c in value["comments"]]}
        if field_id == "environment":
            return ""
        return None

    # -- HTTP --------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        if self._stopped:  # a client's pooled connection outlived `stop`: hang up
            req.close_connection = True
            return
        if method != "GET":
            req.rfile.read(int(req.headers.get("Content-Length") or 0))
        parts = urlsplit(req.path)
        shown = unquote(parts.path) + ("?" + unquote_plus(parts.query) if parts.query else "")
        email, role = self._authenticate(req.headers.get("Authorization"))
        with self._lock:
            self._log.append((method, shown, email))
            delay = self._delay
        if delay:
            time.sleep(delay)
        with self._lock:
            status, body, headers = self._respond(method, parts.path, parse_qs(parts.query),
                                                  shown, role)
        write_response(req, status, body, headers, json_type="application/json;charset=UTF-8")

    def _authenticate(self, header: str | None) -> tuple[str | None, str | None]:
        """(email, role) of a valid basic-auth header, else (None, None)."""
        if not header or not header.startswith("Basic "):
            return None, None
        try:
            email, _, token = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None
        for role, (good_email, good_token) in (("main", (self.email, self.token)),
                                               ("sla", (self.sla_email, self.sla_token))):
            if good_email is not None and good_token is not None and email == good_email \
                    and hmac.compare_digest(token.encode(), good_token.encode()):
                return email, role
        return None, None

    def _respond(self, method: str, path: str, query: dict[str, list[str]], shown: str,
                 role: str | None) -> tuple[int, dict | list | bytes, dict[str, str]]:
        if self._down:
            return 503, {"message": "Service Unavailable"}, {}
        for failure in self._failures:
            if failure.remaining != 0 and (failure.path_contains is None
                                           or failure.path_contains in shown):
                if failure.remaining is not None:
                    failure.remaining -= 1
                headers = ({"Retry-After": str(failure.retry_after)}
                           if failure.retry_after is not None else {})
                message = _INJECTED_MESSAGES.get(failure.status, f"HTTP {failure.status}")
                return failure.status, _error(message), headers
        if role is None:
            return 401, _error("You are not authenticated. Authentication required to perform "
                               "this operation."), {"WWW-Authenticate": 'Basic realm="Jira"'}
        if method != "GET":
            return 405, _error(f"Method {method} is not supported by this double."), {}
        if path == "/rest/api/3/myself":
            return 200, self._myself(role), {}
        forbidden = (403, _error("You do not have the permission to see the specified issue."), {})
        if m := re.fullmatch(r"/rest/api/3/attachment/(content|thumbnail)/(\d+)", path):
            if role != "main":
                return forbidden
            if m[2] not in self._contents:
                return 404, _error("The attachment does not exist."), {}
            mime = next(a["mimeType"] for i in self._issues.values() for a in i.attachments
                        if a["id"] == m[2])
            return 200, self._contents[m[2]], {"Content-Type": mime}
        if path == "/rest/api/3/search/jql":
            # The SLA account searches too, and sees only the SLA fields of what it finds.
            return self._search(query, role)
        m = re.fullmatch(r"/rest/api/3/issue/([^/]+)(?:/(comment|changelog|remotelink))?", path)
        if not m:
            return 404, _error(f"null for uri: {self.base_url}{path}"), {}
        issue = self._find(unquote(m[1]))
        if issue is None:
            return 404, _error("Issue does not exist or you do not have permission to see it."), {}
        if m[2] is None:
            fields_param = ",".join(query.get("fields", [])) or "*all"
            expand = set(",".join(query.get("expand", [])).split(","))
            return 200, self._issue_json(issue, fields_param, expand, role), {}
        if role != "main":
            return forbidden
        if m[2] == "remotelink":
            return 200, copy.deepcopy(issue.remote_links), {}
        try:
            start = int(query.get("startAt", ["0"])[0])
            wanted = int(query.get("maxResults", ["5000" if m[2] == "comment" else "100"])[0])
            if start < 0 or wanted < 0:
                raise ValueError
        except ValueError:
            return 400, _error("startAt and maxResults must be non-negative integers."), {}
        if m[2] == "comment":
            size = min(wanted, self.comment_page_size)
            page = copy.deepcopy(issue.comments[start:start + size])
            return 200, {"startAt": start, "maxResults": size, "total": len(issue.comments),
                         "comments": page}, {}
        size = min(wanted, self.changelog_page_size)
        page = copy.deepcopy(issue.histories[start:start + size])
        url = f"{self.base_url}/rest/api/3/issue/{issue.key}/changelog?maxResults={size}&startAt="
        last = start + len(page) >= len(issue.histories)
        body = {"self": url + str(start), "maxResults": size, "startAt": start,
                "total": len(issue.histories), "isLast": last, "values": page}
        if not last:
            body["nextPage"] = url + str(start + size)
        return 200, body, {}

    def _myself(self, role: str) -> dict:
        email = self.email if role == "main" else self.sla_email
        name = "Dataport Sync" if role == "main" else "Dataport SLA Reader"
        account_id = uuid.uuid5(uuid.NAMESPACE_DNS, email or "").hex[:24]
        return {"self": f"{self.base_url}/rest/api/3/user?accountId={account_id}",
                "accountId": account_id, "accountType": "atlassian", "emailAddress": email,
                "avatarUrls": self._avatars(account_id), "displayName": name, "active": True,
                "timeZone": "Etc/UTC", "locale": "en_US", "groups": {"size": 1, "items": []},
                "applicationRoles": {"size": 1, "items": []},
                "expand": "groups,applicationRoles"}

    def _search(self, query: dict[str, list[str]], role: str = "main") -> tuple[int, dict, dict[str, str]]:
        jql = query.get("jql", [""])[0]
        try:
            match, order = self._parse_jql(jql)
            start = 0
            if token := query.get("nextPageToken", [""])[0]:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                if state["q"] != hashlib.sha256(jql.encode()).hexdigest()[:16]:
                    raise _JqlError("The nextPageToken does not belong to this query.")
                start = int(state["at"])
            wanted = int(query.get("maxResults", ["50"])[0])
        except _JqlError as e:
            return 400, {**_error(str(e)), "warningMessages": []}, {}
        except (ValueError, KeyError, TypeError):
            return 400, _error("Invalid nextPageToken or maxResults."), {}
        found = [i for i in self._issues.values() if all(p(i) for p in match)]
        for field_name, descending in reversed(order):
            found.sort(key=_ORDER_KEYS[field_name], reverse=descending)
        size = max(1, min(wanted, self.search_page_size))
        page = found[start:start + size]
        fields_param = ",".join(query.get("fields", []))
        issues = []
        for issue in page:
            entry = {"expand": "", "id": issue.id,
                     "self": f"{self.base_url}/rest/api/3/issue/{issue.id}", "key": issue.key}
            if fields_param:
                all_fields = self._fields(issue, role)
                entry["fields"] = {k: all_fields[k] for k in _select(fields_param, all_fields)}
            issues.append(entry)
        body: dict[str, Any] = {"issues": issues, "isLast": start + size >= len(found)}
        if not body["isLast"]:
            state = {"q": hashlib.sha256(jql.encode()).hexdigest()[:16], "at": start + size}
            body["nextPageToken"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
        return 200, body, {}

    def _parse_jql(self, jql: str) -> tuple[list[Callable[[_Issue], bool]], list[tuple[str, bool]]]:
        """Predicates and (field, descending) sort keys of the JQL subset the connector uses."""
        text, order = jql.strip(), [("key", False)]
        if m := re.search(r"(?:^|\s)ORDER\s+BY\s+(.*)$", text, re.I | re.S):
            text, order = text[:m.start()].strip(), []
            for part in m[1].split(","):
                term = re.fullmatch(r"\s*(key|updated|created)(?:\s+(ASC|DESC))?\s*", part, re.I)
                if not term:
                    raise _JqlError(f"Error in the JQL Query: cannot order by '{part.strip()}'.")
                order.append((term[1].lower(), (term[2] or "ASC").upper() == "DESC"))
        if not text:
            raise _JqlError("Unbounded JQL queries are not allowed here. Please add a search "
                            "restriction to your query.")
        preds: list[Callable[[_Issue], bool]] = []
        for clause in re.split(r"\s+AND\s+", text, flags=re.I):
            if m := re.fullmatch(r'\s*project\s*=\s*("[^"]+"|\'[^\']+\'|[\w-]+)\s*', clause, re.I):
                keys = [m[1]]
            elif m := re.fullmatch(r"\s*project\s+in\s*\(([^)]*)\)\s*", clause, re.I):
                keys = [k for k in (k.strip() for k in m[1].split(",")) if k]
            elif m := re.fullmatch(r"\s*key\s+in\s*\(([^)]*)\)\s*", clause, re.I):
                issue_keys = frozenset(k.strip().strip("\"'").upper() for k in m[1].split(",") if k.strip())
                if not issue_keys:
                    raise _JqlError("Error in the JQL Query: an empty list of keys.")
                # As Jira does: a key that does not exist fails the whole query.
                for k in sorted(issue_keys - set(self._issues)):
                    raise _JqlError(f"An issue with key '{k}' does not exist for field 'key'.")
                preds.append(lambda i, w=issue_keys: i.key in w)
                continue
            elif m := re.fullmatch(r'\s*updated\s*>=\s*(["\']?)-(\d+)([mhdw])\1\s*', clause, re.I):
                unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m[3].lower()]
                since = datetime.now(timezone.utc) - timedelta(**{unit: int(m[2])})
                preds.append(lambda i, s=since: parse_jira_time(i.fields["updated"]) >= s)
                continue
            else:
                raise _JqlError(f"Error in the JQL Query: the clause '{clause.strip()}' is not "
                                f"understood.")
            wanted = set()
            for k in keys:
                k = k.strip("\"'")
                if k.upper() not in self._projects:
                    raise _JqlError(f"The value '{k}' does not exist for the field 'project'.")
                wanted.add(k.upper())
            preds.append(lambda i, w=frozenset(wanted): i.key.rsplit("-", 1)[0] in w)
        return preds, order

    # -- helpers -----------------------------------------------------------------------------

    def _issue(self, key: str) -> _Issue:
        if key not in self._issues:
            raise KeyError(f"no issue {key!r}")
        return self._issues[key]

    def _find(self, ident: str) -> _Issue | None:
        ident = ident.upper()
        return self._issues.get(ident) or next(
            (i for i in self._issues.values() if i.id == ident), None)

    @staticmethod
    def _comment(issue: _Issue, comment_id: str) -> dict:
        return next(c for c in issue.comments if c["id"] == comment_id)

    @staticmethod
    def _stamp(value: Stamp, tz: Any) -> str:
        """A mutation's time as a Jira timestamp (None: now, in offset `tz`)."""
        if value is None:
            return jira_time(datetime.now(tz))
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("timestamps must be timezone-aware")
            return jira_time(value)
        parse_jira_time(value)  # validates the format
        return value

    def _history(self, issue: _Issue, by: str, created: str, items: list[dict]) -> str:
        history_id = str(next(self._ids["history"]))
        issue.histories.append({"id": history_id, "author": self._user_or_none(by),
                                "created": created, "items": items})
        return history_id

    def _history_for(self, issue: _Issue, changelog: str | dict | None) -> dict | None:
        if isinstance(changelog, dict):
            return {"author": None, **changelog}
        if changelog is None:
            return copy.deepcopy(issue.histories[-1]) if issue.histories else None
        return copy.deepcopy(next(h for h in issue.histories if h["id"] == changelog))

    def _webhook_issue(self, key: str) -> dict:
        """The webhooks' `issue`: the REST view without expand (as it was, once deleted)."""
        if key in self._issues:
            return self._issue_json(self._issues[key], "*all", set(), "system")
        return copy.deepcopy(self._deleted_issues[key])

    def _webhook_comment(self, key: str, event: str, comment_id: str | None) -> dict:
        if event == "comment_deleted":
            gone = [c for k, c in self._deleted_comments.values() if k == key]
            return copy.deepcopy(self._deleted_comments[comment_id][1] if comment_id
                                 else gone[-1])
        issue = self._issue(key)
        return copy.deepcopy(self._comment(issue, comment_id) if comment_id else issue.comments[-1])

    def _webhook_link(self, key: str, event: str, link_id: str | None) -> _Link:
        pool = self._deleted_links if event == "issuelink_deleted" else self._links
        if link_id is not None:
            return pool[link_id]
        return [l for l in pool.values() if key in (l.outward_key, l.inward_key)][-1]

    def _webhook_attachment(self, key: str, event: str, attachment_id: str | None) -> dict:
        if event == "attachment_deleted":
            gone = [m for k, m in self._deleted_attachments.values() if k == key]
            meta = self._deleted_attachments[attachment_id][1] if attachment_id else gone[-1]
        else:
            atts = self._issue(key).attachments
            meta = next(a for a in atts if a["id"] == attachment_id) if attachment_id else atts[-1]
        return {**copy.deepcopy(meta), "id": int(meta["id"])}

    @staticmethod
    def _name_of(user: dict | None) -> str | None:
        return user["accountId"] if user else None

    def _user_or_none(self, who: str | None) -> dict | None:
        return None if who is None else self.user(who)

    @staticmethod
    def _avatars(owner: str) -> dict[str, str]:
        return {f"{n}x{n}": f"https://avatars.example.invalid/{owner}/{n}.png"
                for n in (48, 24, 16, 32)}

    def _status(self, name: str, category: str | None) -> dict:
        """The status `name` (a known one, or a new one in `category`)."""
        if name not in self._statuses:
            if category not in _CATEGORIES:
                raise ValueError(f"new status {name!r} needs status_category, one of "
                                 f"{list(_CATEGORIES)}")
            self._statuses[name] = (str(next(self._ids["option"])), category)
        status_id, known_category = self._statuses[name]
        if category not in (None, known_category):
            raise ValueError(f"status {name!r} is in category {known_category!r}")
        cat = _CATEGORIES[known_category]
        return {"self": f"{self.base_url}/rest/api/3/status/{status_id}", "description": "",
                "iconUrl": f"{self.base_url}/images/icons/statuses/generic.png",
                "name": name, "id": status_id,
                "statusCategory": {"self": f"{self.base_url}/rest/api/3/statuscategory/{cat['id']}",
                                   **cat}}

    def _named(self, kind: str, name: str) -> tuple[str, str]:
        """(id, self URL) of `name` in the `kind` catalog, adding unknown names."""
        catalog = self._catalogs[kind]
        if name not in catalog:
            catalog[name] = str(next(self._ids["option"]))
        return catalog[name], f"{self.base_url}/rest/api/3/{kind}/{catalog[name]}"

    def _issue_type(self, name: str) -> dict:
        type_id, url = self._named("issuetype", name)
        return {"self": url, "id": type_id, "description": "", "name": name,
                "iconUrl": f"{self.base_url}/images/icons/issuetypes/generic.svg",
                "subtask": name == "Sub-task", "avatarId": 10318,
                "hierarchyLevel": -1 if name == "Sub-task" else 0}

    def _priority(self, name: str | None) -> dict | None:
        if name is None:
            return None
        priority_id, url = self._named("priority", name)
        icon = f"{self.base_url}/images/icons/priorities/{name.lower()}.svg"
        return {"self": url, "iconUrl": icon, "name": name, "id": priority_id}

    def _resolution(self, name: str | None) -> dict | None:
        if name is None:
            return None
        resolution_id, url = self._named("resolution", name)
        return {"self": url, "id": resolution_id, "description": "", "name": name}

    def _severity(self, value: str | None) -> dict | None:
        if value is None:
            return None
        option_id, url = self._named("customFieldOption", value)
        return {"self": url, "value": value, "id": option_id}

    def _satisfaction(self, issue_id: str, rating: int | None) -> dict | None:
        if rating is None:
            return None
        return {"self": f"{self.base_url}/rest/servicedeskapi/request/{issue_id}/feedback",
                "rating": rating}

    @staticmethod
    def _link_type(name: str) -> tuple[str, str, str]:
        """(id, inward, outward) of a link type."""
        if name not in _LINK_TYPES:
            raise ValueError(f"unknown link type {name!r}; one of {list(_LINK_TYPES)}")
        return _LINK_TYPES[name]

    def _request_type(self, issue: _Issue, name: str | None, status_since: str) -> dict | None:
        if name is None:
            return None
        type_id, _ = self._named("requesttype", name)
        sd = f"{self.base_url}/rest/servicedeskapi"
        return {"_links": {"jiraRest": f"{self.base_url}/rest/api/2/issue/{issue.id}",
                           "web": f"{self.base_url}/servicedesk/customer/portal/1/{issue.key}",
                           "agent": f"{self.base_url}/browse/{issue.key}",
                           "self": f"{sd}/request/{issue.id}"},
                "requestType": {"_links": {"self": f"{sd}/servicedesk/1/requesttype/{type_id}"},
                                "id": type_id, "name": name, "description": "", "helpText": "",
                                "issueTypeId": _ISSUE_TYPES["Service Request"],
                                "serviceDeskId": "1", "portalId": "1", "groupIds": ["1"],
                                "icon": {"id": "10527",
                                         "_links": {"iconUrls": self._avatars("rt")}}},
                "currentStatus": self._current_status(issue, status_since)}

    def _current_status(self, issue: _Issue, since: str) -> dict:
        status = issue.fields["status"]
        return {"status": status["name"],
                "statusCategory": status["statusCategory"]["key"].upper(),
                "statusDate": _date_obj(_local_time(since))}

    def _sla_value(self, issue: _Issue, field_id: str, sla: Sla) -> dict:
        """The Service Management SLA field value; cycles run back to back from creation."""
        sla_id, name = _SLA_NAMES[field_id]
        start = _local_time(issue.fields["created"])

        def cycle(c: SlaCycle, begin: datetime) -> dict:
            return {"startTime": _date_obj(begin), "breached": c.breached,
                    "goalDuration": _duration(c.goal_millis),
                    "elapsedTime": _duration(c.elapsed_millis),
                    "remainingTime": _duration(c.goal_millis - c.elapsed_millis)}

        completed = []
        for c in sla.completed:
            stop = start + timedelta(milliseconds=c.elapsed_millis)
            completed.append({**cycle(c, start), "stopTime": _date_obj(stop)})
            start = stop + timedelta(minutes=5)
        value = {"id": sla_id, "name": name,
                 "_links": {"self": f"{self.base_url}/rest/servicedeskapi/request/{issue.id}"
                                    f"/sla/{sla_id}"},
                 "completedCycles": completed}
        if sla.ongoing is not None:
            c = sla.ongoing
            value["ongoingCycle"] = {
                **cycle(c, start),
                "breachTime": _date_obj(start + timedelta(milliseconds=c.goal_millis)),
                "paused": sla.paused, "withinCalendarHours": True}
        value["slaDisplayFormat"] = "NEW_SLA_FORMAT"
        return value


# ---------------------------------------------------------------------------------------------
# Module helpers


def _select(fields_param: str, available: dict[str, Any]) -> list[str]:
    """The field ids a `fields` parameter picks (`*all`/`*navigable`, ids, `-id` exclusions)."""
    tokens = [t.strip() for t in fields_param.split(",") if t.strip()]
    wanted = {t for t in tokens if not t.startswith("-")}
    excluded = {t[1:] for t in tokens if t.startswith("-")}
    everything = not wanted or wanted & {"*all", "*navigable"}
    return [k for k in available if (everything or k in wanted) and k not in excluded]


def _person(prefix: str, user: dict | None) -> dict[str, str | None]:
    user = user or {}
    return {f"{prefix}_email": user.get("emailAddress"), f"{prefix}_name": user.get("displayName")}


def _first(*values: Any) -> str | None:
    """The first non-null value, as a string."""
    value = next((v for v in values if v is not None), None)
    return None if value is None else str(value)


def _id_order(value: str) -> tuple[int, str]:
    """Numeric order for numeric-string ids."""
    return len(value), value


def _key_order(issue: _Issue) -> tuple[str, int]:
    project, number = issue.key.rsplit("-", 1)
    return project, int(number)


_ORDER_KEYS: dict[str, Callable[[_Issue], Any]] = {
    "key": _key_order,
    "updated": lambda i: parse_jira_time(i.fields["updated"]),
    "created": lambda i: parse_jira_time(i.fields["created"]),
}


def row_sort_key(table: str) -> Callable[[dict], tuple]:
    """The sort key `expected_rows(table)` uses, for sorting the connector's rows alike (for
    changelog rows a stable sort keeps items of one history in their order)."""
    if table == "issues":
        return lambda r: (r["issue_key"],)
    if table == "changelog":
        return lambda r: (_id_order(r["change_id"]), r["field_name"])
    id_column = {"comments": "comment_id", "attachments": "attachment_id",
                 "issuelinks": "link_id", "remote_links": "remote_link_id"}[table]
    return lambda r: (r["issue_key"], _id_order(str(r[id_column])))
