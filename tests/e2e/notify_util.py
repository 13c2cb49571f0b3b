"""Shared pieces of the notification tests: a server with notifications pointed at a Telegram
Bot API double, an analyst with a laptop (DATAPORT_HOME, a notifications/ folder) and HTTP
helpers for their scripts, runs, inbox, desktop tokens and Telegram link, the `notify:run` job,
and WebSocket gateway clients (Python `websockets`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import websockets

from e2e_util import BIN, Server, run_async, wait_for  # noqa: F401 (run_async: for the notify tests)
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


def run_job(srv: Server) -> dict:
    """Start `notify:run` by hand and wait for it to finish; its last run."""
    return srv.run_job(JOB)


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

