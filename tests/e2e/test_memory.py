"""Corporate memory end to end: analysts' notes in (`dataport push`, the notes API), the
collector (offline extractor, and an LLM through the Messages API double), the screen that holds
secrets and other people's contacts for their author, merging across analysts, the knowledge API
of the spec (paging, sorting, search, votes, stats), admins' moderation, rule files delivered
by `dataport pull`, and the session collector.

The portal's pages are tested in test_memory_portal.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from e2e_util import BIN, Server, wait_for
from llm_double import LlmDouble

COLLECT = "memory:collect"
SESSIONS = "memory:sessions"
JOBS = f'jobs:\n  - {{job: "{COLLECT}", every: 12h}}\n  - {{job: "{SESSIONS}", every: 12h}}\n'

# Secrets as people paste them (none of them real).
SECRETS = {
    "aws": "AKIAZ7QWERTY12345678",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "url_password": "postgres://etl:Sup3rSecret42@db.internal:5432/sales",
    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----",
    "slack": "xoxb-" + "2048204820-4096409640-AbCdEfGhIjKlMnOpQrStUvWx",
    "stripe": "sk_live_" + "51HqLyjWDarjtT1zdp7dcXYZ",
    "other_email": "maria.lopez@example.com",
    "phone": "+420 777 123 456",
}


def start(tmp: Path, demo_dir: Path, name: str, memory: dict | None = None,
          env: dict | None = None, demo: bool = False) -> Server:
    data = tmp / f"data-{name}"
    data.mkdir()
    for sub in ("parquet", "docs"):
        shutil.copytree(demo_dir / sub, data / sub)
    cfg = tmp / f"{name}.yaml"
    text = JOBS
    if memory:
        text += "memory:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in memory.items())
    cfg.write_text(text)
    args = ["--config", str(cfg)] + (["--demo"] if demo else [])
    return Server(data, args, tmp / f"log-{name}", env=env).start()


class Analyst:
    """An account with a laptop: DATAPORT_HOME and a folder for notes, transcripts and pulls."""

    def __init__(self, srv: Server, root: Path, name: str | None = None,
                 password: str | None = None, groups=("dataread",), email: str | None = None):
        self.srv = srv
        if email:
            # An account with an email: invited, then given a password.
            r = srv.post("/api/v1/admin/users", json={"email": email, "groups": list(groups)})
            assert r.status_code == 201, r.text
            name, password = r.json()["user"]["name"], f"Pw-{uuid.uuid4().hex[:12]}-Z9"
            srv.cli("user", "passwd", name, "--password-stdin", input=password + "\n")
        elif name is None:
            name = f"mem-{uuid.uuid4().hex[:8]}"
            password = f"Pw-{uuid.uuid4().hex[:12]}-Z9"
            srv.cli("user", "add", name, "--password-stdin", "--groups", ",".join(groups),
                    input=password + "\n")
        self.name, self.password = name, password
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {srv.login(name, password)}"
        self.home = root / name / "home"
        self.dir = root / name / "laptop"
        self.dir.mkdir(parents=True)
        self.logged_in = False

    def get(self, path: str, **params) -> requests.Response:
        return self.http.get(self.srv.url(path), params=params, timeout=60)

    def json(self, path: str, **params) -> dict:
        r = self.get(path, **params)
        assert r.status_code == 200, f"{path} -> {r.status_code}: {r.text[:500]}"
        return r.json()

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.srv.url(path), json=body, timeout=60)

    def vote(self, item_id: str, vote: int) -> dict:
        r = self.post("/api/corporate-memory/vote", {"item_id": item_id, "vote": vote})
        assert r.status_code == 200, r.text
        return r.json()

    def items(self, **params) -> list[dict]:
        params.setdefault("per_page", 100)
        return self.json("/api/corporate-memory/knowledge", **params)["items"]

    def write_notes(self, text: str) -> None:
        r = self.http.put(self.srv.url("/api/corporate-memory/notes"), json={"text": text}, timeout=60)
        assert r.status_code == 200, r.text

    def cli(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        """`dataport` on this analyst's laptop (logged in on first use)."""
        if not self.logged_in and args[0] != "login":
            self.logged_in = True
            self.cli("login", "--server", self.srv.http, "--user", self.name, "--password-stdin",
                     stdin=self.password + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
        env["DATAPORT_HOME"] = str(self.home)
        p = subprocess.run([str(BIN), *args], input=stdin, capture_output=True, text=True, env=env,
                           timeout=600)
        if check:
            assert p.returncode == 0, f"dataport {' '.join(args)} -> {p.returncode}:\n{p.stderr}"
        return p

    def push(self, notes: str | None = None) -> dict:
        if notes is not None:
            (self.dir / "notes.md").write_text(notes)
        return json.loads(self.cli("push", "--dir", str(self.dir), "--json").stdout)

    def pull(self) -> dict:
        return json.loads(self.cli("pull", "--dir", str(self.dir), "--json").stdout)

    def rules(self) -> dict[str, str]:
        d = self.dir / "rules"
        return {p.name: p.read_text() for p in sorted(d.glob("*.md"))} if d.exists() else {}


def demo_analyst(srv: Server, root: Path, name: str) -> Analyst:
    password = (srv.data_dir / "auth" / f"{name}-password").read_text().strip()
    return Analyst(srv, root, name=name, password=password)


def by_title(items: list[dict], fragment: str) -> dict:
    found = [i for i in items if fragment in i["title"] or fragment in i["content"]]
    assert len(found) == 1, (fragment, [i["title"] for i in items])
    return found[0]


@pytest.fixture(scope="module")
def srv(server, demo_dir, tmp_path_factory):
    """A demo server of its own: admin, and the demo analysts `analyst` and `insider` with the
    demo notes, collected at start."""
    s = start(tmp_path_factory.mktemp("memory"), demo_dir, "memory", demo=True)
    yield s
    s.stop()


# -- the demo path of the "done when" -------------------------------------------------


def test_two_analysts_push_notes_and_an_upvote_becomes_a_rule_file(srv, tmp_path):
    analyst = demo_analyst(srv, tmp_path, "analyst")
    insider = demo_analyst(srv, tmp_path, "insider")
    # The demo's own notes were collected at start, with the offline extractor.
    stats = wait_for(lambda: (s := analyst.json("/api/corporate-memory/stats"))["knowledge_count"] and s,
                     timeout=60, what="the demo notes to be collected")
    assert stats["contributors"] == 2 and stats["last_collection"], stats

    notes = (srv.data_dir / "uploads" / "analyst" / "notes.md").read_text()
    analyst.push(notes + "\n## Nations\n- `nation.n_regionkey` joins to `region.r_regionkey`; five regions.\n")
    insider.push((srv.data_dir / "uploads" / "insider" / "notes.md").read_text())
    run = srv.run_job(COLLECT)
    assert run["outcome"] == "ok", run
    assert "1 changed" in run["summary"], run

    items = analyst.items()
    revenue = by_title(items, "Revenue is")
    assert sorted(revenue["source_users"]) == ["analyst", "insider"]
    assert by_title(items, "n_regionkey")["source_users"] == ["analyst"]
    # The private line and the password stay with their authors.
    for i in items:
        assert "maria.lopez" not in i["content"] and "Sup3rSecret42" not in i["content"]

    assert analyst.vote(revenue["id"], 1)["is_rule"] is True
    (analyst.dir / "rules").mkdir(exist_ok=True)
    (analyst.dir / "rules" / "my-own.md").write_text("mine\n")
    report = analyst.pull()
    assert report["rules"] == 1 and report["rules_written"] == 1, report
    rules = analyst.rules()
    assert set(rules) == {f"{revenue['id']}.md", "my-own.md"}
    assert rules[f"{revenue['id']}.md"].startswith(f"# {revenue['title']}\n")
    assert "l_extendedprice" in rules[f"{revenue['id']}.md"]

    # Unchanged: nothing rewritten. Vote taken back: the file goes, the analyst's own stays.
    assert analyst.pull()["rules_written"] == 0
    analyst.vote(revenue["id"], 0)
    report = analyst.pull()
    assert report["rules_removed"] == 1, report
    assert set(analyst.rules()) == {"my-own.md"}


# -- merging ------------------------------------------------------------------------------------


def test_items_merge_across_three_analysts_and_retire_keeping_votes(srv, tmp_path):
    shared = "- Use `revenue_net`, not `revenue`: the latter includes cancelled orders.\n"
    team = [Analyst(srv, tmp_path) for _ in range(3)]
    for n, a in enumerate(team):
        a.push(f"# Notes {n}\n\n## Metrics\n{shared}- Item only {a.name} knows about.\n")
    run = srv.run_job(COLLECT)
    assert run["outcome"] == "ok" and "3 changed" in run["summary"], run

    reader = team[0]
    item = by_title(reader.items(search="revenue_net"), "revenue_net")
    assert sorted(item["source_users"]) == sorted(a.name for a in team)
    top = reader.items(sort="contributors", per_page=1)
    assert top[0]["id"] == item["id"]
    reader.vote(item["id"], 1)
    team[1].vote(item["id"], -1)

    # One drops the line: still published, two sources.
    team[2].push(f"# Notes 2\n\n- Item only {team[2].name} knows about.\n")
    srv.run_job(COLLECT)
    item = by_title(reader.items(search="revenue_net"), "revenue_net")
    assert sorted(item["source_users"]) == sorted(a.name for a in team[:2])
    assert (item["upvotes"], item["downvotes"], item["score"]) == (1, 1, 0)

    # Everyone drops it: retired, not deleted; the votes wait for it.
    for a in team[:2]:
        a.push(f"# Notes\n\n- Item only {a.name} knows about.\n")
    run = srv.run_job(COLLECT)
    assert "1 retired" in run["summary"] or "retired" in run["summary"], run
    assert not [i for i in reader.items() if i["id"] == item["id"]]
    assert reader.get(f"/api/corporate-memory/items/{item['id']}").status_code == 404
    votes = {v["item_id"]: v for v in reader.json("/api/corporate-memory/my-votes")["votes"]}
    assert votes[item["id"]]["vote"] == 1
    retired = srv.get("/api/corporate-memory/knowledge", params={"state": "retired", "per_page": 100}).json()
    assert item["id"] in [i["id"] for i in retired["items"]]

    team[1].push(f"# Back\n{shared}")
    srv.run_job(COLLECT)
    back = by_title(reader.items(search="revenue_net"), "revenue_net")
    assert back["id"] == item["id"] and (back["upvotes"], back["your_vote"]) == (1, 1)


# -- the screen ---------------------------------------------------------------------------------


def test_secrets_never_reach_another_account(srv, tmp_path):
    author_mail = f"mem-{uuid.uuid4().hex[:6]}@corp.example"
    author = Analyst(srv, tmp_path, email=author_mail)
    reader = Analyst(srv, tmp_path)
    lines = [f"- Connection detail {k}: {v}" for k, v in SECRETS.items()]
    notes = ("# Warehouse\n\n" + "\n".join(lines) +
             f"\n- Questions about refunds go to me, {author_mail}.\n"
             "- The finance calendar closes on the fifth working day.\n"
             "- Board numbers are draft until Thursday <!-- private -->\n")
    author.push(notes)
    srv.run_job(COLLECT)

    # The author's review queue holds every flagged item, with what was found.
    queue = author.json("/api/corporate-memory/review")["items"]
    held = {i["item"]["title"]: i for i in queue}
    assert len(queue) == len(SECRETS) + 1, list(held)
    kinds = {f["kind"] for i in queue for f in i["findings"]}
    assert {"secret", "password", "email", "phone"} <= kinds, kinds
    assert any(i["private"] for i in queue)
    # The author's own address is not a finding; a plain fact is published.
    mine = by_title(reader.items(), "Questions about refunds")
    assert mine["state"] == "published"
    by_title(reader.items(), "finance calendar")

    # Nothing of it reaches the reader: list, search, every state, stats, votes, item pages,
    # rule files.
    bodies = [reader.get("/api/corporate-memory/knowledge", per_page=100).text,
              reader.get("/api/corporate-memory/knowledge", state="held", per_page=100).text,
              reader.get("/api/corporate-memory/knowledge", state="retired", per_page=100).text,
              reader.get("/api/corporate-memory/stats").text,
              reader.get("/api/corporate-memory/review").text,
              reader.get("/api/v1/sync/rules").text]
    for word in ("Sup3rSecret42", "etl", "AKIA", "ghp_", "xoxb", "sk_live", "PRIVATE KEY",
                 "maria.lopez", "777 123", "Board numbers"):
        bodies.append(reader.get("/api/corporate-memory/knowledge", search=word).text)
    for i in queue:
        r = reader.get(f"/api/corporate-memory/items/{i['item']['id']}")
        assert r.status_code == 404, r.text
        r = reader.post("/api/corporate-memory/vote", {"item_id": i["item"]["id"], "vote": 1})
        assert r.status_code == 404, r.text
        bodies.append(r.text)
    for body in bodies:
        for secret in list(SECRETS.values()) + ["Board numbers"]:
            assert secret not in body, (secret, body[:300])
    reader.pull()
    for text in reader.rules().values():
        for secret in SECRETS.values():
            assert secret not in text

    # A secret cannot be waved through; another person's email can, by its author only.
    aws = next(i for i in queue if any(f["rule"] == "aws access key" for f in i["findings"]))
    assert aws["blocked"]
    r = author.post(f"/api/corporate-memory/items/{aws['item']['id']}/review", {"publish": True})
    assert r.status_code == 403 and "aws access key" in r.json()["error"]["message"], r.text
    email = next(i for i in queue if [f["kind"] for f in i["findings"]] == ["email"])
    assert email["blocked"] is None
    r = reader.post(f"/api/corporate-memory/items/{email['item']['id']}/review", {"publish": True})
    assert r.status_code == 404
    r = author.post(f"/api/corporate-memory/items/{email['item']['id']}/review", {"publish": True})
    assert r.status_code == 200 and r.json()["item"]["state"] == "published", r.text
    assert SECRETS["other_email"] in reader.get("/api/corporate-memory/knowledge", per_page=100).text
    history = author.json(f"/api/corporate-memory/items/{email['item']['id']}")["history"]
    assert [(h["actor"], h["action"]) for h in history] == [(author.name, "release")]


# -- the API of the spec ------------------------------------------------------------------------


def test_knowledge_api_pages_sorts_searches_and_refuses_clearly(srv, tmp_path):
    a = Analyst(srv, tmp_path)
    marker = uuid.uuid4().hex[:6]
    bullets = "\n".join(f"- Fact {n} {marker}: partsupp column {n} means something." for n in range(7))
    a.push(f"# Parts {marker}\n\n{bullets}\n- The {marker} refund flag is `l_returnflag = 'R'`.\n")
    srv.run_job(COLLECT)

    page = a.json("/api/corporate-memory/knowledge", search=marker, per_page=3, page=0)
    assert (page["total"], page["per_page"], page["total_pages"], page["page"]) == (8, 3, 3, 0)
    last = a.json("/api/corporate-memory/knowledge", search=marker, per_page=3, page=2)
    assert len(last["items"]) == 2
    assert a.json("/api/corporate-memory/knowledge", search=marker, per_page=3, page=9)["items"] == []
    ids = {i["id"] for p in range(3)
           for i in a.json("/api/corporate-memory/knowledge", search=marker, per_page=3, page=p)["items"]}
    assert len(ids) == 8
    # The best match first: the only item about refunds.
    best = a.json("/api/corporate-memory/knowledge", search=f"{marker} refund returnflag")["items"][0]
    assert "refund" in best["title"] + best["content"]
    for key in ("id", "title", "content", "category", "tags", "source_users", "source_users_display",
                "extracted_at", "updated_at", "score", "upvotes", "downvotes", "your_vote"):
        assert key in best, key
    assert best["id"].startswith("km_") and len(best["id"]) == 15

    a.vote(best["id"], 1)
    by_score = a.json("/api/corporate-memory/knowledge", search=marker, sort="score")["items"]
    assert by_score[0]["id"] == best["id"]
    assert a.json("/api/corporate-memory/knowledge", my_rules="true", per_page=100)["items"][0]["id"] == best["id"]
    newest = a.json("/api/corporate-memory/knowledge", sort="updated_at", per_page=100)["items"]
    assert newest == sorted(newest, key=lambda i: i["updated_at"], reverse=True)
    cat = best["category"]
    assert all(i["category"] == cat for i in a.items(category=cat))

    stats = a.json("/api/corporate-memory/stats")
    assert (stats["your_votes"], stats["your_upvotes"], stats["your_rules"]) == (1, 1, 1)
    assert set(stats["categories"]) == {"data_analysis", "api_integration", "debugging", "performance",
                                        "workflow", "infrastructure", "business_logic"}
    votes = a.json("/api/corporate-memory/my-votes")["votes"]
    assert [(v["item_id"], v["vote"]) for v in votes] == [(best["id"], 1)]

    for params, needle in [({"per_page": 101}, "per_page"), ({"per_page": 0}, "per_page"),
                           ({"category": "gossip"}, "unknown category"), ({"sort": "random"}, "unknown sort"),
                           ({"page": -1}, "page")]:
        r = a.get("/api/corporate-memory/knowledge", **params)
        assert r.status_code == 400 and needle in r.text, (params, r.text)
    for body in ({"item_id": best["id"], "vote": 2}, {"item_id": "km_000000000000", "vote": 1}, {"vote": 1}):
        r = a.post("/api/corporate-memory/vote", body)
        assert r.status_code in (400, 404), (body, r.text)
        assert r.json()["error"]["message"], r.text
    assert requests.get(srv.url("/api/corporate-memory/knowledge"), timeout=30).status_code == 401


def test_admins_pin_edit_and_retire_with_an_audit(srv, tmp_path):
    a, b = Analyst(srv, tmp_path), Analyst(srv, tmp_path)
    marker = uuid.uuid4().hex[:6]
    a.push(f"# Ops {marker}\n\n- Deploy windows {marker} are Tuesday mornings.\n")
    srv.run_job(COLLECT)
    item = by_title(b.items(search=marker), "Deploy windows")

    r = b.post(f"/api/corporate-memory/items/{item['id']}/moderate", {"action": "pin"})
    assert r.status_code == 403 and "administrator" in r.text
    admin = srv.session
    r = admin.post(srv.url(f"/api/corporate-memory/items/{item['id']}/moderate"), json={"action": "pin"})
    assert r.status_code == 200 and r.json()["item"]["pinned"] is True, r.text
    # Pinned: a rule for everyone, voted or not.
    assert f"{item['id']}.md" in (b.pull() and b.rules())
    r = admin.post(srv.url(f"/api/corporate-memory/items/{item['id']}/moderate"),
                   json={"action": "edit", "title": f"Deploys {marker} happen on Tuesdays",
                         "content": "Between 8 and 10, never on a release freeze.",
                         "category": "workflow", "tags": ["deploys", "Deploys"]})
    assert r.status_code == 200, r.text
    edited = by_title(b.items(search=marker), "Deploys")
    assert (edited["id"], edited["category"], edited["tags"], edited["edited"]) == \
        (item["id"], "workflow", ["deploys"], True)
    r = admin.post(srv.url(f"/api/corporate-memory/items/{item['id']}/moderate"), json={"action": "fly"})
    assert r.status_code == 400
    # The next collection does not undo the edit.
    a.push(f"# Ops {marker}\n\n- Deploy windows {marker} are Tuesday mornings.\n- More.\n")
    srv.run_job(COLLECT)
    assert by_title(b.items(search=marker), "Deploys")["title"].startswith("Deploys")

    r = admin.post(srv.url(f"/api/corporate-memory/items/{item['id']}/moderate"), json={"action": "retire"})
    assert r.status_code == 200
    assert item["id"] not in [i["id"] for i in b.items(search=marker)]
    b.pull()
    assert f"{item['id']}.md" not in b.rules()
    history = admin.get(srv.url(f"/api/corporate-memory/items/{item['id']}")).json()["history"]
    assert [h["action"] for h in history] == ["retire", "edit", "pin"]
    assert all(h["actor"] == "admin" for h in history)
    assert "changed title, content, category, tags" in history[1]["detail"]
    admin.post(srv.url(f"/api/corporate-memory/items/{item['id']}/moderate"), json={"action": "restore"})
    assert by_title(b.items(search=marker), "Deploys")["pinned"] is True


# -- session transcripts ------------------------------------------------------------------------


def test_transcripts_are_stored_once_and_only_for_their_owner_and_admins(srv, tmp_path):
    a, b = Analyst(srv, tmp_path), Analyst(srv, tmp_path)
    t = a.dir / "transcripts"
    t.mkdir()
    session = '{"role": "user", "content": "which table has refunds?"}\n{"role": "assistant", "content": "lineitem"}\n'
    (t / "s1.jsonl").write_text(session)
    (t / "copy-of-s1.jsonl").write_text(session)
    (t / "s2.jsonl").write_text('{"role": "user", "content": "hello"}\n')
    a.push()
    # On push: the account's transcripts are collected without waiting for the job.
    listed = wait_for(lambda: (l := a.json("/api/corporate-memory/transcripts")["transcripts"])
                      and len(l) == 2 and l, timeout=30, what="pushed transcripts to be stored")
    assert sorted(x["bytes"] for x in listed) == sorted([len(session), 37])
    run = srv.run_job(SESSIONS)
    assert run["outcome"] == "ok" and " 0 stored" in run["summary"], run
    stored = list((srv.data_dir / "memory" / "transcripts").rglob("*.jsonl"))
    assert len([p for p in stored if p.read_text() == session]) == 1

    assert b.json("/api/corporate-memory/transcripts")["transcripts"] == []
    assert b.get("/api/corporate-memory/transcripts", all="true").status_code == 403
    everyone = srv.get("/api/corporate-memory/transcripts", params={"all": "true"}).json()["transcripts"]
    assert {x["user"] for x in everyone} >= {a.name}
    sha = next(x["sha256"] for x in listed if x["bytes"] == len(session))
    assert a.get(f"/api/corporate-memory/transcripts/{a.name}/{sha}").text == session
    assert srv.get(f"/api/corporate-memory/transcripts/{a.name}/{sha}").text == session
    assert b.get(f"/api/corporate-memory/transcripts/{a.name}/{sha}").status_code == 404


# -- with an LLM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm():
    with LlmDouble(api_key="sk-ant-test-" + uuid.uuid4().hex, models=("claude-test",)) as double:
        yield double


@pytest.fixture(scope="module")
def llm_srv(server, demo_dir, llm, tmp_path_factory):
    s = start(tmp_path_factory.mktemp("memory-llm"), demo_dir, "llm",
              memory={"extractor": "llm", "llm_base_url": llm.base_url, "llm_model": "claude-test",
                      "llm_api_key_env": "TEST_LLM_KEY", "llm_timeout": "2s", "llm_max_tokens": 4096},
              env={"TEST_LLM_KEY": llm.api_key})
    yield s
    s.stop()


def llm_items(*titles: str) -> list[dict]:
    return [{"title": t, "content": f"{t}: explained.", "category": "business_logic", "tags": ["orders"]}
            for t in titles]


def test_the_llm_gets_a_valid_request_and_its_items_are_published(llm_srv, llm, tmp_path):
    a = Analyst(llm_srv, tmp_path)
    llm.clear_replies()
    llm.clear_failures()
    llm.reply_json(llm_items("Status 7 is refunded", "Use revenue_net"))
    before = len(llm.requests_log)
    a.push("# Orders\n- `orders.status` 7 means refunded\n- use revenue_net, not revenue\n"
           f"- the key is {SECRETS['aws']}\n- salary bands are secret <!-- private -->\n"
           "## Ops (private)\n- the on-call phone is in the drawer\n")
    run = llm_srv.run_job(COLLECT)
    assert run["outcome"] == "ok", run
    entry = llm.requests_log[before]
    assert entry["key_ok"] and entry["status"] == 200, entry
    assert entry["headers"]["anthropic-version"] == "2023-06-01"
    body = entry["body"]
    assert body["model"] == "claude-test" and body["max_tokens"] == 4096
    assert "orders.status" in entry["user_text"] and "revenue_net" in entry["user_text"]
    # What the screen would hold never leaves the server.
    for leaked in (SECRETS["aws"], "salary bands", "on-call phone"):
        assert leaked not in entry["user_text"], leaked
    titles = {i["title"] for i in a.items()}
    assert {"Status 7 is refunded", "Use revenue_net"} <= titles
    notes = a.json("/api/corporate-memory/notes")
    assert notes["collected"] and notes["extractor"] == "llm:claude-test" and notes["error"] is None


def test_llm_failures_keep_the_previous_items(llm_srv, llm, tmp_path):
    a = Analyst(llm_srv, tmp_path)
    llm.clear_replies()
    llm.clear_failures()
    # Malformed once: asked again, and the second answer counts.
    llm.malformed_next(1)
    llm.reply_json(llm_items("Kept item"))
    before = len(llm.requests_log)
    a.push("# A\n- first version\n")
    assert llm_srv.run_job(COLLECT)["outcome"] == "ok"
    assert len(llm.requests_log) - before == 2
    assert "Kept item" in {i["title"] for i in a.items()}

    # Malformed twice: the run fails for this account, the items stay, the reason is shown.
    llm.malformed_next(2)
    a.push("# A\n- second version\n")
    run = llm_srv.run_job(COLLECT)
    assert run["outcome"] in ("error", "partial") and a.name in (run["error"] or ""), run
    assert "Kept item" in {i["title"] for i in a.items()}
    notes = a.json("/api/corporate-memory/notes")
    assert not notes["collected"] and "JSON" in notes["error"], notes

    # A 429 with Retry-After is waited out; the same notes are tried again and succeed.
    llm.fail_next(1, status=429, retry_after=1)
    llm.reply_json(llm_items("Second item"))
    assert llm_srv.run_job(COLLECT)["outcome"] == "ok"
    titles = {i["title"] for i in a.items()}
    assert "Second item" in titles and "Kept item" not in titles
    assert a.json("/api/corporate-memory/notes")["collected"]

    # Too slow: every attempt times out; the items stay.
    llm.delay(5)
    try:
        a.push("# A\n- third version\n")
        run = llm_srv.run_job(COLLECT, timeout=120)
        assert run["outcome"] in ("error", "partial") and "time" in (run["error"] or "").lower(), run
    finally:
        llm.delay(0)
    assert "Second item" in {i["title"] for i in a.items()}
    # The API key never shows in anything the server says.
    log = (llm_srv.stderr_path.read_text() + llm_srv.stdout_path.read_text())
    assert llm.api_key not in log


def test_an_llm_without_its_key_stops_the_start(demo_dir, tmp_path):
    with pytest.raises(BaseException) as failed:
        start(tmp_path, demo_dir, "nokey", memory={"extractor": "llm", "llm_api_key_env": "NO_SUCH_KEY_VAR"})
    assert "NO_SUCH_KEY_VAR" in str(failed.value) or "NO_SUCH_KEY_VAR" in \
        (tmp_path / "log-nokey" / "stderr.log").read_text()
