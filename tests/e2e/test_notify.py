"""Notifications end to end: analysts' scripts pushed from a laptop, run by the server (on the
`notify:run` job's schedule, by hand, as tests) under their limits and sandbox, and what they
report delivered to a Telegram Bot API double (telegram_double.py), to desktop clients on the
WebSocket gateway (Python `websockets`) and to the portal; every bad case the rules name."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import pytest
import requests
import websockets

from e2e_util import BIN, Server, assert_error, metric, wait_for
from telegram_double import TelegramDouble

BOT_TOKEN = "123456789:TEST-" + uuid.uuid4().hex[:20]
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
JOB = "notify:run"


def config_text(tg: TelegramDouble, **extra) -> str:
    # Scripts run as their own users when the tests run as root: their folders must be where
    # other users may enter (pytest's temporary folders are not).
    work = tempfile.mkdtemp(prefix="dataport-notify-", dir="/tmp")
    notify = {
        "work_dir": work,
        "python": PYTHON,
        "timeout": "8s",
        "cpu_time": "4s",
        "max_output": "64KiB",
        "telegram_api_url": tg.base_url,
        "telegram_poll_timeout": "1s",
        "gateway_ping_interval": "1s",
        "gateway_auth_timeout": "2s",
    }
    notify.update(extra)
    lines = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in notify.items())
    return f"notify:\n{lines}\njobs:\n  - {{job: \"{JOB}\", every: 12h}}\n"


def start_notify_server(tmp: Path, demo_dir: Path, tg: TelegramDouble, name: str = "srv",
                        **extra) -> Server:
    data = tmp / f"data-{name}"
    data.mkdir()
    for sub in ("parquet", "docs"):
        shutil.copytree(demo_dir / sub, data / sub)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(config_text(tg, **extra))
    srv = Server(data, ["--config", str(cfg)], tmp / f"log-{name}",
                 env={"DATAPORT_NOTIFY_TELEGRAM_TOKEN": BOT_TOKEN})
    return srv.start()


@pytest.fixture(scope="module")
def tg():
    double = TelegramDouble(BOT_TOKEN).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def srv(server, demo_dir, tg, tmp_path_factory):
    """A server with notifications pointed at the Telegram double, on a copy of the demo data."""
    s = start_notify_server(tmp_path_factory.mktemp("notify"), demo_dir, tg)
    yield s
    s.stop()


class Analyst:
    """An account with its own laptop (DATAPORT_HOME, a folder with notifications/)."""

    def __init__(self, srv: Server, root: Path, groups=("dataread",)):
        self.srv = srv
        self.name = f"ana-{uuid.uuid4().hex[:8]}"
        self.password = f"Pw-{uuid.uuid4().hex[:12]}-Z9"
        srv.cli("user", "add", self.name, "--password-stdin", "--groups", ",".join(groups),
                input=self.password + "\n")
        self.token = srv.login(self.name, self.password)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self.home = root / self.name / "home"
        self.dir = root / self.name / "dataport"
        (self.dir / "notifications").mkdir(parents=True)
        self.chat: dict | None = None

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
        env["DATAPORT_HOME"] = str(self.home)
        p = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True,
                           env=env, timeout=300)
        if check:
            assert p.returncode == 0, f"dataport {' '.join(args)} -> {p.returncode}:\n{p.stdout}\n{p.stderr}"
        return p

    def login_cli(self) -> None:
        self.cli("login", "--server", self.srv.http, "--user", self.name, "--password-stdin",
                 input=self.password + "\n")

    def write_script(self, name: str, text: str) -> Path:
        path = self.dir / "notifications" / name
        path.write_text(text)
        return path

    def put(self, name: str, text: str | bytes) -> requests.Response:
        body = text.encode() if isinstance(text, str) else text
        return self.http.put(self.srv.url(f"/api/v1/notify/scripts/{name}"), data=body, timeout=30)

    def run(self, name: str, action: str = "run") -> dict:
        r = self.http.post(self.srv.url(f"/api/v1/notify/scripts/{name}/{action}"), timeout=120)
        assert r.status_code == 200, f"{action} {name}: {r.status_code} {r.text[:500]}"
        return r.json()

    def runs(self, script: str | None = None) -> list[dict]:
        params = {"script": script} if script else {}
        r = self.http.get(self.srv.url("/api/v1/notify/runs"), params=params, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["runs"]

    def inbox(self) -> list[dict]:
        r = self.http.get(self.srv.url("/api/v1/notify/notifications"), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["notifications"]

    def desktop_token(self, label: str = "laptop app") -> dict:
        r = self.http.post(self.srv.url("/api/v1/desktop/tokens"), json={"label": label}, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()

    def link_telegram(self, tg: TelegramDouble) -> dict:
        self.chat = tg.add_user(self.name.title(), username=self.name.replace("-", "_"))
        tg.user_sends(self.chat, "/start")
        reply = tg.wait_for_sent(lambda m: m["chat_id"] == self.chat["id"] and "code" in m["plain"],
                                 timeout=15)
        code = re.search(r"\b\d{6}\b", reply["plain"])[0]
        r = self.http.post(self.srv.url("/api/v1/notify/telegram/link"), json={"code": code}, timeout=30)
        assert r.status_code == 200, r.text
        tg.wait_for_sent(lambda m: m["chat_id"] == self.chat["id"] and "Linked" in m["plain"], timeout=10)
        return r.json()


@pytest.fixture
def analyst(srv, tmp_path):
    return Analyst(srv, tmp_path)


def run_job(srv: Server) -> dict:
    """Start `notify:run` by hand and wait for it to finish; its last run."""
    before = srv.get(f"/api/v1/jobs/{JOB}").json()["history"]
    seen = {r["id"] for r in before}
    r = srv.post(f"/api/v1/jobs/{JOB}/run")
    assert r.status_code == 202, r.text

    def finished():
        history = srv.get(f"/api/v1/jobs/{JOB}").json()["history"]
        new = [h for h in history if h["id"] not in seen and h.get("finished_ms")]
        return new[0] if new else None
    return wait_for(finished, timeout=120, what="notify:run to finish")


NATIONS = """\
import json, os, urllib.request

# A script as an analyst writes it: plain HTTP to DATAPORT_URL with DATAPORT_TOKEN.
req = urllib.request.Request(
    os.environ["DATAPORT_URL"] + "/api/v1/query?format=json",
    data=json.dumps({"sql": "SELECT count(*) AS n FROM tpch.nation WHERE n_regionkey = 1"}).encode(),
    headers={"Authorization": "Bearer " + os.environ["DATAPORT_TOKEN"],
             "Content-Type": "application/json"},
)
n = json.load(urllib.request.urlopen(req))[0]["n"]
print("checked", n, "nations")
print(json.dumps({"notify": True, "title": f"America has {n} nations",
                  "message": "Counted in *tpch.nation* (region 1)", "cooldown": "6h",
                  "data": {"n": n}}))
"""


async def ws_connect(srv: Server, token: str | None, *, first: dict | None = None):
    """A gateway connection after its auth message; (connection, first answer)."""
    url = srv.http.replace("http://", "ws://") + "/api/v1/desktop/ws"
    ws = await websockets.connect(url, open_timeout=10)
    if first is None and token is not None:
        first = {"type": "auth", "token": token}
    if first is not None:
        await ws.send(json.dumps(first))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, answer


async def next_of_type(ws, kind: str, timeout: float = 30) -> dict:
    """The next message of `kind`, answering pings on the way."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind} message within {timeout}s")
        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        if msg["type"] == "ping" and kind != "ping":
            await ws.send(json.dumps({"type": "pong"}))
            continue
        if msg["type"] == kind:
            return msg


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

    job, note = asyncio.run(scenario())
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
