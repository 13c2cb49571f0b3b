"""Notifications end to end: analysts' scripts pushed from a laptop, run by the server (on the
`notify:run` job's schedule, by hand, as tests) under their limits and sandbox, and what they
report delivered to a Telegram Bot API double (telegram_double.py), to desktop clients on the
WebSocket gateway (Python `websockets`) and to the portal; every bad case the rules name."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from e2e_util import assert_error, metric, wait_for
from notify_util import (run_async, BOT_TOKEN, JOB, NATIONS, Analyst, next_of_type, run_job,
                         start_notify_server, ws_connect)
from telegram_double import TelegramDouble


@pytest.fixture
def analyst(srv, tmp_path):
    return Analyst(srv, tmp_path)


def test_a_pushed_script_runs_on_schedule_and_reaches_telegram_the_desktop_and_the_portal(srv, tg, analyst):
    analyst.link_telegram(tg)
    desktop = analyst.desktop_token()
    analyst.login_cli()
    analyst.write_script("nations.py", NATIONS)
    (analyst.dir / "notifications" / "README.md").write_text("not a script\n")
    p = analyst.cli("push", "--dir", str(analyst.dir), "--json")
    pushed = json.loads(p.stdout)["notifications"]
    assert [s["name"] for s in pushed["scripts"]] == ["nations.py"], pushed
    assert pushed["refused"] == []

    async def scenario():
        ws, hello = await ws_connect(srv, desktop["token"])
        assert hello == {"type": "auth_ok", "username": analyst.name}
        # The client answers pings while the job runs.
        job, note = await asyncio.gather(asyncio.to_thread(run_job, srv),
                                         next_of_type(ws, "notification"))
        await ws.close()
        return job, note

    job, note = run_async(scenario())
    assert job["outcome"] == "ok", job
    # The desktop client's message, as the contract shapes it.
    assert note["title"] == "America has 5 nations"
    assert note["message"] == "Counted in *tpch.nation* (region 1)"
    assert note["script"] == "nations.py"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", note["timestamp"]), note
    assert uuid.UUID(note["id"]) and note["image_url"] is None
    # Telegram: the title in bold (Markdown), the message as the script wrote it.
    sent = tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and "America" in m["plain"], timeout=15)
    assert sent["parse_mode"] == "Markdown"
    assert sent["plain"] == "America has 5 nations\nCounted in tpch.nation (region 1)"
    assert {"type": "bold", "offset": 0, "length": len("America has 5 nations")} in sent["entities"]
    assert {"type": "bold", "offset": sent["plain"].index("tpch"), "length": len("tpch.nation")} in sent["entities"]
    # The portal's inbox.
    [stored] = analyst.inbox()
    assert stored["id"] == note["id"] and stored["title"] == note["title"]
    assert stored["data_value"] == {"n": 5}
    [run] = analyst.runs("nations.py")
    assert run["trigger"] == "schedule" and run["outcome"] == "sent", run
    assert run["exit_code"] == 0 and "checked 5 nations" in run["stdout"]
    channels = {d["channel"]: d for d in run["deliveries"]}
    assert channels["telegram"]["ok"] and channels["websocket"]["connections"] == 1
    assert channels["portal"]["ok"]

    # The next scheduled run: the script notifies again, the 6 h cooldown holds it back.
    before = len(tg.sent(analyst.chat["id"]))
    assert run_job(srv)["outcome"] == "ok"
    latest = analyst.runs("nations.py")[0]
    assert latest["outcome"] == "cooldown" and "in cooldown until" in latest["reason"], latest
    assert len(analyst.inbox()) == 1
    time.sleep(0.5)
    assert len(tg.sent(analyst.chat["id"])) == before

    # The command line sees the same scripts and runs.
    listed = analyst.cli("notify", "list").stdout
    assert "nations.py" in listed and "cooldown" in listed, listed
    tested = analyst.cli("notify", "test", "nations.py").stdout
    assert "tested" in tested and "would send: America has 5 nations" in tested, tested
    assert len(analyst.inbox()) == 1, "a test sends nothing"


# -- the runner's rules -------------------------------------------------------------------------


def notify_script(title: str = "t", **more) -> str:
    return f"import json\nprint(json.dumps({{'notify': True, 'title': {title!r}, **{more!r}}}))\n"


@pytest.mark.parametrize("name,code,outcome,reason", [
    ("hangs.py", "import time\ntime.sleep(600)\n", "failed", "timed out after 8 s"),
    ("spins.py", "while True:\n    pass\n", "failed", "CPU time limit"),
    ("floods.py", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", "failed",
     "more than 65536 bytes of output"),
    ("exits.py", "import sys\nprint('{\"notify\": true}')\nsys.exit(3)\n", "failed", "exited with code 3"),
    ("raises.py", "raise RuntimeError('no data today')\n", "failed", "exited with code 1"),
    ("garbage.py", "print('revenue is down')\n", "failed", "not a JSON object"),
    ("array.py", "print('[1, 2]')\n", "failed", "not an object"),
    ("nonotify.py", "print('{\"title\": \"x\"}')\n", "failed", "no boolean 'notify'"),
    ("silent.py", "pass\n", "quiet", "printed nothing"),
    ("calm.py", "print('{\"notify\": false}')\n", "quiet", "notify: false"),
])
def test_a_script_that_misbehaves_is_stopped_and_its_run_says_why(srv, analyst, name, code, outcome, reason):
    assert analyst.put(name, code).status_code == 201
    report = analyst.run(name)
    run = report["run"]
    assert run["outcome"] == outcome, run
    assert reason in (run["reason"] or ""), run
    assert report["notification"] is None and analyst.inbox() == []
    # The run is in the history, and the server goes on serving.
    assert analyst.runs(name)[0]["id"] == run["id"]
    assert srv.query_json("SELECT 1 AS one") == [{"one": 1}]


def test_a_script_that_forks_is_stopped_with_its_children(srv, analyst, tmp_path):
    marker = "still-alive"
    code = (
        "import os, subprocess, time, json\n"
        f"subprocess.Popen(['/bin/sh', '-c', 'sleep 3; touch {marker}'])\n"
        "pids = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        pids.append(pid)\n"
        "except OSError as e:\n"
        "    print(json.dumps({'notify': True, 'title': f'fork refused after {len(pids)}: {e.errno}'}))\n"
        "    raise SystemExit(0)\n"
        "print(json.dumps({'notify': True, 'title': f'forked {len(pids)}'}))\n"
    )
    assert analyst.put("forks.py", code).status_code == 201
    run = analyst.run("forks.py")["run"]
    # As root each account's scripts run as their own user, whose process count is limited.
    if os.geteuid() == 0:
        assert run["outcome"] == "sent", run
        [note] = analyst.inbox()
        assert note["title"].startswith("fork refused after"), note
    time.sleep(4)
    work = Path(srv_work_dir(srv)) / "home"
    assert not list(work.rglob(marker)), "a child of the script outlived its run"


def srv_work_dir(srv) -> str:
    cfg = Path(srv.args[srv.args.index("--config") + 1]).read_text()
    return re.search(r'work_dir: "([^"]+)"', cfg)[1]


ISOLATION = """\
import json, os, pathlib, urllib.request, urllib.error

found = {"env": sorted(os.environ), "uid": os.getuid(), "cwd": os.getcwd()}
def readable(p):
    try:
        with open(p, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False
found["state"] = readable(os.environ.get("PROBE_STATE", "") or %(state)r)
found["data_dir"] = os.path.exists(%(data)r)
found["other"] = readable(%(other)r)
token = os.environ["DATAPORT_TOKEN"]
pathlib.Path("token.txt").write_text(token)
def call(method, path, body=None):
    req = urllib.request.Request(os.environ["DATAPORT_URL"] + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
found["query"] = call("POST", "/api/v1/query", {"sql": "SELECT 1"})
found["mint_token"] = call("POST", "/api/v1/auth/tokens", {"label": "stolen"})
found["upload_script"] = call("PUT", "/api/v1/notify/scripts/evil.py", None)
found["refresh"] = call("POST", "/api/v1/auth/refresh", None)
print(json.dumps({"notify": True, "title": "probe", "data": found}))
"""


def test_a_script_gets_only_its_folder_the_server_url_and_a_token_that_reads_data(srv, analyst, tmp_path):
    other = Analyst(srv, tmp_path / "other")
    assert other.put("keep.py", "open('secret.txt', 'w').write('mine')\n").status_code == 201
    other.run("keep.py")
    other_id = srv.get("/api/v1/admin/users?format=json").json()
    [acct] = [u for u in other_id["users"] if u["name"] == other.name]
    work = Path(srv_work_dir(srv))
    code = ISOLATION % {"state": str(srv.data_dir / "state" / "dataport.sqlite"),
                        "data": str(srv.data_dir / "parquet"),
                        "other": str(work / "home" / str(acct["id"]) / "secret.txt")}
    assert analyst.put("probe.py", code).status_code == 201
    report = analyst.run("probe.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    found = report["notification"]["data"]
    found = json.loads(found)
    assert set(found["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
                                 "PYTHONUNBUFFERED", "DATAPORT_URL", "DATAPORT_TOKEN",
                                 "DATAPORT_USER", "DATAPORT_SCRIPT", "DATAPORT_RUN_ID", "PWD",
                                 "SHLVL", "_", "LC_CTYPE"}, found["env"]
    assert not found["state"], "the state store is out of a script's reach"
    assert not found["other"], "another account's files are out of reach"
    if os.geteuid() == 0:
        assert found["uid"] != 0
    assert found["query"] == 200
    assert found["mint_token"] == 403 and found["upload_script"] == 403
    assert found["refresh"] == 401
    # The token died with the run.
    [acct_a] = [u for u in srv.get("/api/v1/admin/users?format=json").json()["users"]
                if u["name"] == analyst.name]
    token = (work / "home" / str(acct_a["id"]) / "token.txt").read_text()
    r = requests_post(srv, "/api/v1/query", token, {"sql": "SELECT 1"})
    assert r.status_code == 401, r.text


def requests_post(srv, path, token, body):
    import requests
    return requests.post(srv.url(path), json=body, headers={"Authorization": f"Bearer {token}"},
                         timeout=30)


def test_a_script_reads_only_what_its_owner_may(srv, analyst):
    code = """\
import json, os, urllib.request, urllib.error
def q(sql):
    req = urllib.request.Request(os.environ["DATAPORT_URL"] + "/api/v1/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"Authorization": "Bearer " + os.environ["DATAPORT_TOKEN"], "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req).read()
        return "ok"
    except urllib.error.HTTPError as e:
        return e.code
print(json.dumps({"notify": True, "title": "grants", "data": {
    "nation": q("SELECT count(*) FROM tpch.nation"),
    "drop": q("DROP TABLE tpch.nation"),
    "file": q("SELECT * FROM read_parquet('/etc/passwd')"),
}}))
"""
    assert analyst.put("grants.py", code).status_code == 201
    data = json.loads(analyst.run("grants.py")["notification"]["data"])
    assert data["nation"] == "ok"
    assert data["drop"] in (400, 403) and data["file"] in (400, 403, 404), data


def test_a_disabled_accounts_scripts_stop(srv, analyst):
    assert analyst.put("nations.py", NATIONS).status_code == 201
    [acct] = [u for u in srv.get("/api/v1/admin/users?format=json").json()["users"]
              if u["name"] == analyst.name]
    r = srv.session.patch(srv.url(f"/api/v1/admin/users/{acct['id']}"), json={"state": "disabled"},
                          timeout=30)
    assert r.status_code == 200, r.text
    job = run_job(srv)
    assert job["outcome"] == "ok"
    assert "skipped" in job["summary"]
    assert srv_runs(srv, analyst) == []


def srv_runs(srv, analyst):
    """The account's runs as the state store has them (the account itself cannot sign in)."""
    import sqlite3
    db = sqlite3.connect(f"file:{srv.data_dir / 'state' / 'dataport.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT r.id FROM notify_runs r JOIN accounts a ON a.id = r.account_id "
                          "WHERE a.username = ?", (analyst.name,)).fetchall()
    finally:
        db.close()


def test_scripts_are_versioned_by_content_and_refused_when_they_break_the_rules(srv, analyst):
    r = analyst.put("v.py", notify_script("one"))
    assert r.status_code == 201 and r.json()["changed"]
    first = r.json()["script"]["sha256"]
    r = analyst.put("v.py", notify_script("one"))
    assert r.status_code == 200 and not r.json()["changed"]
    r = analyst.put("v.py", notify_script("two"))
    assert r.json()["script"]["sha256"] != first
    got = analyst.http.get(srv.url("/api/v1/notify/scripts/v.py"), timeout=30)
    assert got.text == notify_script("two") and got.headers["etag"] == f'"{r.json()["script"]["sha256"]}"'
    assert_error(analyst.put("run.sh", "#!/bin/sh\necho hi\n"), 400, "invalid_argument")
    assert_error(analyst.put(".hidden.py", "pass\n"), 400, "invalid_argument")
    assert_error(analyst.put("notes.txt", "hello\n"), 400, "invalid_argument")
    assert_error(analyst.put("sched.py", "# schedule: hourly\npass\n"), 400, "invalid_argument")
    r = analyst.put("big.py", "#" * (300 * 1024))
    assert r.status_code in (413, 429), r.text
    r = analyst.put("hourly.py", "# schedule: every 2h\n" + notify_script("h"))
    assert r.json()["script"]["schedule"] == "every 2h"
    # Another account sees none of them.
    import requests
    other_token = srv.login(*make_user(srv))
    r = requests.get(srv.url("/api/v1/notify/scripts/v.py"), headers={"Authorization": f"Bearer {other_token}"}, timeout=30)
    assert r.status_code == 404
    r = analyst.http.delete(srv.url("/api/v1/notify/scripts/v.py"), timeout=30)
    assert r.status_code == 204
    assert "v.py" not in [s["name"] for s in analyst.http.get(srv.url("/api/v1/notify/scripts")).json()["scripts"]]


def make_user(srv):
    name, password = f"u-{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex[:12]}-Z9"
    srv.cli("user", "add", name, "--password-stdin", "--groups", "dataread", input=password + "\n")
    return name, password


def test_a_scheduled_script_runs_when_its_interval_has_passed(srv, analyst):
    assert analyst.put("hourly.py", "# schedule: every 1h\n" + notify_script("h", cooldown="1m")).status_code == 201
    assert analyst.put("always.py", notify_script("a", cooldown="1m")).status_code == 201
    run_job(srv)
    run_job(srv)
    runs = analyst.runs()
    assert [r["script"] for r in runs if r["trigger"] == "schedule"].count("hourly.py") == 1
    assert [r["script"] for r in runs if r["trigger"] == "schedule"].count("always.py") == 2


def test_images_go_to_their_owner_only(srv, analyst, tmp_path):
    code = PNG_SCRIPT + "print(json.dumps({'notify': True, 'title': 'chart', 'image_path': 'chart.png'}))\n"
    assert analyst.put("chart.py", code).status_code == 201
    note = analyst.run("chart.py")["notification"]
    assert note["image"]
    url = f"/api/v1/notify/notifications/{note['id']}/image"
    r = analyst.http.get(srv.url(url), timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    import requests
    other = srv.login(*make_user(srv))
    assert requests.get(srv.url(url), headers={"Authorization": f"Bearer {other}"}, timeout=30).status_code == 404
    assert requests.get(srv.url(url), timeout=30).status_code == 401
    # A path out of the working folder, or a file that is no image, is not attached.
    for path, why in [("/etc/passwd", "outside the script's working folder"),
                      ("notes.txt", "is not a PNG, JPEG, GIF or WebP"),
                      ("missing.png", "does not exist")]:
        code = ("import json\nopen('notes.txt', 'w').write('x')\n"
                f"print(json.dumps({{'notify': True, 'title': 'x', 'image_path': {path!r}}}))\n")
        assert analyst.put("img.py", code).status_code in (200, 201)
        report = analyst.run("img.py")
        assert report["run"]["outcome"] == "sent"
        assert why in report["run"]["reason"], report["run"]
        assert report["notification"]["image"] is None


PNG_SCRIPT = """\
import json, struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
raw = b"".join(b"\\x00" + b"\\xff\\x00\\x00" * 4 for _ in range(4))
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)) + \\
    chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open("chart.png", "wb").write(png)
"""


def test_a_test_run_sends_nothing_and_leaves_the_cooldown(srv, analyst):
    assert analyst.put("cool.py", notify_script("c", cooldown="6h")).status_code == 201
    report = analyst.run("cool.py", "test")
    assert report["run"]["outcome"] == "tested" and report["preview"]["title"] == "c"
    assert report["preview"]["cooldown_seconds"] == 6 * 3600
    assert analyst.inbox() == []
    # Not in cooldown: the scheduled run sends.
    run_job(srv)
    assert analyst.runs("cool.py")[0]["outcome"] == "sent"
    # Unstored content can be tested too.
    r = analyst.http.post(srv.url("/api/v1/notify/test"), params={"name": "draft.py"},
                          data=notify_script("draft").encode(), timeout=60)
    assert r.status_code == 200 and r.json()["preview"]["title"] == "draft", r.text
    assert "draft.py" not in [s["name"] for s in analyst.http.get(srv.url("/api/v1/notify/scripts")).json()["scripts"]]


def test_cooldowns_follow_the_contract(srv, analyst):
    for value, seconds in [("30m", 1800), ("2d", 172800), ("6 hours", 3600), ("", 3600), (5, 3600)]:
        assert analyst.put("cd.py", notify_script("c", cooldown=value)).status_code in (200, 201)
        preview = analyst.run("cd.py", "test")["preview"]
        assert preview["cooldown_seconds"] == seconds, (value, preview)


# -- the portal -------------------------------------------------------------------------------


def test_the_notifications_page_in_a_browser(srv, tg, analyst, new_page):
    from browser_util import check_accessibility, screenshot, sign_in
    analyst.link_telegram(tg)
    assert analyst.put("nations.py", NATIONS).status_code == 201
    chart = PNG_SCRIPT + ("print(json.dumps({'notify': True, 'title': 'Weekly chart', "
                          "'message': 'Orders by region_1 and region_2', 'image_path': 'chart.png'}))\n")
    assert analyst.put("chart.py", chart).status_code == 201
    assert analyst.put("broken.py", "import sys\nprint('oops', file=sys.stderr)\nsys.exit(2)\n").status_code == 201
    run_job(srv)
    page = new_page(srv)
    sign_in(page, srv.http, "/notifications", analyst.name, analyst.password)
    assert page.get_by_role("heading", name="Notifications", exact=True).is_visible()
    inbox = page.locator("ol.notes li")
    assert inbox.count() == 2
    assert "Weekly chart" in inbox.nth(0).inner_text() or "Weekly chart" in inbox.nth(1).inner_text()
    img = page.locator("ol.notes img")
    assert img.count() == 1
    assert page.evaluate("(i) => i.complete && i.naturalWidth", img.element_handle()) == 4
    assert "exited with code 2" in page.locator("table").nth(0).inner_text()
    assert "Linked to" in page.inner_text("main")
    screenshot(page, "notifications")
    check_accessibility(page, "the notifications page")
    # Test a script from the page: what it would send, nothing sent.
    page.get_by_role("button", name="Test nations.py").click()
    assert "It would send" in page.inner_text("main")
    assert "America has 5 nations" in page.inner_text("main")
    screenshot(page, "notifications-test")
    # Add a script in the page; a bad one is refused with the reason and the draft kept.
    page.get_by_text("Add or replace a script").click()
    page.get_by_label("File name").fill("bad name.py")
    page.get_by_role("textbox", name="Script").fill("print('hi')")
    page.get_by_role("button", name="Save script").click()
    assert "is not a script name" in page.inner_text("main")
    assert page.get_by_role("textbox", name="Script").input_value() == "print('hi')"
    page.get_by_label("File name").fill("hello.py")
    page.get_by_role("button", name="Save script").click()
    assert "hello.py" in page.locator("table").nth(0).inner_text()
    # A desktop token, shown once.
    page.get_by_role("button", name="Create desktop token").click()
    token = page.locator("#new-desktop-token").inner_text()
    r = requests_get(srv, "/api/v1/desktop/me", token)
    assert r.status_code == 200 and r.json()["username"] == analyst.name
    phone = new_page(srv, phone=True)
    sign_in(phone, srv.http, "/notifications", analyst.name, analyst.password)
    screenshot(phone, "notifications-phone")
    check_accessibility(phone, "the notifications page at phone width")


def requests_get(srv, path, token):
    import requests
    return requests.get(srv.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_the_notifications_page_shows_why_telegram_was_unlinked(srv, tg, analyst):
    analyst.link_telegram(tg)
    assert analyst.put("n.py", notify_script("n")).status_code == 201
    tg.block(analyst.chat["id"])
    assert analyst.run("n.py")["run"]["outcome"] == "delivery_failed"
    page = analyst.http.get(srv.url("/notifications?format=json"), timeout=30).json()
    assert page["telegram"]["link"]["chat_id"] is None
    assert page["telegram"]["unlinked_text"].endswith("the bot was blocked in Telegram")
    # Delivered to the portal only now: sent, and the cooldown starts.
    assert analyst.run("n.py")["run"]["outcome"] == "sent"


def test_the_documented_example_script_runs(srv, analyst):
    """docs/notifications.md's complete example, as written there."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S)[1]
    r = analyst.put("revenue_drop.py", code)
    assert r.status_code == 201 and r.json()["script"]["schedule"] == "every 1h", r.text
    report = analyst.run("revenue_drop.py", "test")
    assert report["run"]["outcome"] in ("tested", "quiet"), report["run"]
    if report["run"]["outcome"] == "tested":
        assert report["preview"]["title"].startswith("Revenue dropped")
        assert report["preview"]["cooldown_seconds"] == 12 * 3600


def test_executables_run_where_allowed_and_scripts_run_without_a_sandbox_when_it_is_off(
        server, demo_dir, tg, tmp_path):
    """A second server: `allow_executables: true`, `sandbox: off`."""
    srv2 = start_notify_server(tmp_path, demo_dir, tg, name="exec", allow_executables=True,
                               sandbox="off")
    try:
        ana = Analyst(srv2, tmp_path / "laptop")
        script = ("#!/bin/sh\n"
                  "n=$(ls / | wc -l)\n"
                  "printf '{\"notify\": true, \"title\": \"shell\", \"message\": \"%s\", "
                  "\"data\": {\"uid\": %s}}\\n' \"$DATAPORT_USER\" \"$(id -u)\"\n")
        r = ana.put("check.sh", script)
        assert r.status_code == 201 and r.json()["script"]["kind"] == "executable", r.text
        report = ana.run("check.sh")
        assert report["run"]["outcome"] == "sent", report["run"]
        assert report["notification"]["message"] == ana.name
        data = json.loads(report["notification"]["data"])
        if os.geteuid() == 0:
            assert data["uid"] >= 2_000_000_000, data
        # Limits hold without the sandbox too.
        assert ana.put("spin.py", "while True:\n    pass\n").status_code == 201
        assert "CPU time limit" in ana.run("spin.py")["run"]["reason"]
    finally:
        srv2.stop()


def test_with_bubblewrap_a_script_sees_only_the_system_and_its_folder(srv, analyst):
    if not Path("/usr/bin/bwrap").exists():
        pytest.skip("this machine has no bubblewrap (apt install bubblewrap)")
    code = ("import json, os\n"
            "print(json.dumps({'notify': True, 'title': 'root', 'data': {'root': sorted(os.listdir('/')), "
            "'tmp': os.listdir('/tmp')}}))\n")
    assert analyst.put("root.py", code).status_code == 201
    data = json.loads(analyst.run("root.py")["notification"]["data"])
    work_top = Path(srv_work_dir(srv)).parts[1]
    assert set(data["root"]) <= {"bin", "sbin", "lib", "lib32", "lib64", "usr", "etc", "proc",
                                 "dev", "tmp", work_top}, data["root"]
    assert "root" not in data["root"] and "home" not in data["root"]
    assert data["tmp"] == [] or all(not n.startswith("pytest") for n in data["tmp"]), data["tmp"]


def test_the_command_line_runs_and_tests_scripts(srv, analyst):
    analyst.login_cli()
    analyst.write_script("nations.py", NATIONS)
    analyst.cli("push", "--dir", str(analyst.dir))
    out = analyst.cli("notify", "run", "nations.py").stdout
    assert out.startswith("nations.py: sent") and "telegram" not in out, out
    # A local file is tested as it is, without being stored.
    draft = analyst.write_script("draft.py", "import json\nprint(json.dumps({'notify': True, 'title': 'draft!'}))\n")
    out = analyst.cli("notify", "test", str(draft)).stdout
    assert "draft.py: tested" in out and "would send: draft!" in out, out
    assert "draft.py" not in analyst.cli("notify", "list").stdout
    # A failing run says why, with the end of its stderr, and exits non-zero.
    bad = analyst.write_script("bad.py", "raise SystemExit('the warehouse is closed')\n")
    p = analyst.cli("notify", "test", str(bad), check=False)
    assert p.returncode != 0 and "the warehouse is closed" in p.stdout, (p.stdout, p.stderr)
    # Pushing with --prune-scripts removes what the folder no longer has.
    (analyst.dir / "notifications" / "draft.py").unlink()
    (analyst.dir / "notifications" / "bad.py").unlink()
    analyst.cli("push", "--dir", str(analyst.dir))
    (analyst.dir / "notifications" / "nations.py").unlink()
    p = analyst.cli("push", "--dir", str(analyst.dir), "--prune-scripts")
    assert "removed from the server: nations.py" in p.stdout, p.stdout
    assert "no scripts" in analyst.cli("notify", "list").stdout


def test_the_bot_sets_its_commands_and_removes_a_leftover_webhook(server, demo_dir, tmp_path):
    with TelegramDouble(BOT_TOKEN) as double:
        double.set_webhook("https://old.example.com/hook")
        srv2 = start_notify_server(tmp_path, demo_dir, double, name="webhook")
        try:
            user = double.add_user("Wes", username="wes")
            double.user_sends(user, "/status")
            reply = double.wait_for_sent(lambda m: m["chat_id"] == user["id"], timeout=20)
            assert "not linked" in reply["plain"]
            assert double.webhook_url == ""
            commands = double.my_commands()
            assert [c["command"] for c in commands] == ["start", "status", "test", "scripts"]
        finally:
            srv2.stop()
        log = srv2.stderr_path.read_text()
        assert BOT_TOKEN not in log and BOT_TOKEN.split(":")[1] not in log
