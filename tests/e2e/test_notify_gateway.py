"""The notification gateway end to end: the desktop app's WebSocket at /api/v1/desktop/ws (its
auth message, pings and pongs, the per-account connection limit, notifications fanned out to
every connection of their account, tokens checked again at every ping), the gateway's figures
in /health and /metrics, and the desktop app's HTTP routes with a desktop token.

The module's server runs with a 1 s ping interval and a 2 s auth timeout; every client here
answers pings unless the test is about one that does not, and every connection is closed when
its test ends."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest
import requests
import websockets
from websockets.exceptions import ConnectionClosed

from e2e_util import assert_error, metric, parse_metrics, wait_for
from notify_util import run_async, BOT_TOKEN, Analyst, start_notify_server, ws_connect
from telegram_double import TelegramDouble

GATEWAY = "/api/v1/desktop/ws"
POLICY = 1008  # the WebSocket close code "policy violation"
# Generous: the server's interval is 1 s, its auth timeout 2 s.
WAIT = 15


NOTIFY_SETTINGS = {"gateway_ping_interval": "1s", "gateway_auth_timeout": "2s",
                   "gateway_max_connections": 5}


@pytest.fixture
def analyst(srv, tmp_path):
    return Analyst(srv, tmp_path)


@pytest.fixture
def other(srv, tmp_path):
    """A second account, to show what does not reach or affect it."""
    return Analyst(srv, tmp_path)


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


class Client:
    """An accepted gateway connection whose messages are read in the background: pings are
    counted (and answered with a pong unless `answer` is false), everything else is kept in
    `messages`; `closed` is set when the server ends the connection."""

    def __init__(self, ws, hello: dict, answer: bool = True):
        self.ws = ws
        self.hello = hello
        self.answer = answer
        self.pings = 0
        self.messages: list[dict] = []
        self.arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self):
        try:
            while True:
                raw = await self.ws.recv()
                msg = json.loads(raw)
                if msg.get("type") == "ping":
                    self.pings += 1
                    if self.answer:
                        await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                self.messages.append(msg)
                self.arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m.get("type") == kind]

    async def wait_for(self, predicate, timeout: float = WAIT, what: str = "a message") -> dict:
        """The first kept message `predicate` accepts, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if predicate(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                raise AssertionError(
                    f"no {what} within {timeout}s (closed: {self.closed.is_set()}, "
                    f"code {self.ws.close_code}, reason {self.ws.close_reason!r}); "
                    f"got {self.messages}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def wait_closed(self, timeout: float = WAIT) -> tuple[int | None, str | None]:
        """(close code, close reason) once the server has ended the connection."""
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"the connection was still open after {timeout}s ({self.pings} pings, "
                f"messages {self.messages})") from None
        return self.ws.close_code, self.ws.close_reason

    @property
    def open(self) -> bool:
        return not self.closed.is_set()

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 10)
        except (ConnectionClosed, TimeoutError, OSError):
            pass
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


async def connect(srv, token: str, answer: bool = True) -> Client:
    """A connection authenticated with `token`; fails unless the server answers auth_ok."""
    ws, hello = await ws_connect(srv, token)
    if hello.get("type") != "auth_ok":
        await ws.close()
        raise AssertionError(f"sent auth with a token, expected auth_ok, got {hello}")
    return Client(ws, hello, answer=answer)


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def refused(srv, first: dict | str | bytes | None, timeout: float = WAIT) -> dict:
    """Connects, sends `first` (a dict as JSON, a str as a text frame, bytes as a binary frame,
    None: nothing) and reads until the server closes. Returns the answers, close code and
    reason, and how long the server took."""
    url = srv.http.replace("http://", "ws://") + GATEWAY
    ws = await websockets.connect(url, open_timeout=10)
    started = time.monotonic()
    answers = []
    try:
        if first is not None:
            await ws.send(json.dumps(first) if isinstance(first, dict) else first)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"sent {first!r}: the connection stayed open for {timeout}s; "
                                     f"answers {answers}")
            try:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
            except ConnectionClosed:
                break
            except TimeoutError:
                continue
    finally:
        await ws.close()
    return {"answers": answers, "code": ws.close_code, "reason": ws.close_reason,
            "seconds": time.monotonic() - started}


def assert_auth_error(result: dict, sent) -> str:
    """One auth_error with a message, then close 1008; the message."""
    answers = result["answers"]
    assert len(answers) == 1 and answers[0].get("type") == "auth_error", \
        f"sent {sent!r}: expected one auth_error then close, got {answers}"
    message = answers[0].get("message")
    assert isinstance(message, str) and message.strip(), f"sent {sent!r}: {answers[0]}"
    assert result["code"] == POLICY, \
        f"sent {sent!r}: close code {result['code']} ({result['reason']!r}), expected {POLICY}"
    return message


def auth(token) -> dict:
    return {"type": "auth", "token": token}


def health(srv) -> dict:
    r = requests.get(srv.url("/health"), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["gateway"]


def gateway_metrics(srv) -> dict:
    samples = srv.metrics()
    out = {"connections": metric(samples, "dataport_gateway_connections"),
           "users": metric(samples, "dataport_gateway_users"),
           "notifications": metric(samples, "dataport_gateway_notifications_total")}
    for result in ("accepted", "refused_auth", "refused_limit", "closed_silent"):
        out[result] = metric(samples, "dataport_gateway_connections_total", result=result)
    return out


def wait_figures(srv, connections: int, users: int, what: str) -> dict:
    return wait_for(lambda: (lambda g: g if (g["connections"], g["users"]) == (connections, users)
                             else False)(health(srv)),
                    timeout=WAIT, what=f"/health gateway {connections} connections, {users} users ({what})")


def settled_figures(srv) -> dict:
    """/health's gateway figures once connections of earlier tests have been let go."""
    wait_for(lambda: health(srv)["connections"] == 0, timeout=WAIT,
             what="earlier tests' gateway connections to be gone")
    return health(srv)


def user_id(srv, name: str) -> int:
    r = srv.get("/api/v1/admin/users")
    assert r.status_code == 200, r.text
    [user] = [u for u in r.json()["users"] if u["name"] == name]
    return user["id"]


def set_state(srv, name: str, state: str) -> None:
    r = srv.session.patch(srv.url(f"/api/v1/admin/users/{user_id(srv, name)}"),
                          json={"state": state}, timeout=60)
    assert r.status_code == 200 and r.json()["user"]["state"] == state, r.text


def api_token(srv, name: str) -> str:
    p = srv.cli("token", "create", name)
    token = p.stdout.strip().splitlines()[-1].strip()
    assert token.startswith("dpk_"), p.stdout
    return token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def notifying_script(title: str, message: str = "from the gateway tests", extra: str = "") -> str:
    return (
        "import json\n" + extra +
        f"print(json.dumps({{'notify': True, 'title': {title!r}, 'message': {message!r}, "
        "'cooldown': '1m'" + (", 'image_path': 'chart.png'" if extra else "") + "}))\n"
    )


# A script that writes a 1x1 PNG into its working folder and attaches it.
PNG_WRITER = """\
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(b"\\x00\\xff\\x00\\x00")) + chunk(b"IEND", b""))
open("chart.png", "wb").write(png)
"""


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


def test_a_desktop_token_is_accepted_and_the_connection_lives_on_pongs(srv, analyst):
    desktop = analyst.desktop_token("gateway laptop")
    assert desktop["token"] and desktop["id"] and desktop["label"] == "gateway laptop", desktop

    async def scenario():
        c = await connect(srv, desktop["token"])
        try:
            assert c.hello == {"type": "auth_ok", "username": analyst.name}
            # Several ping intervals go by; the client answers and stays connected.
            deadline = time.monotonic() + WAIT
            while c.pings < 4 and time.monotonic() < deadline and c.open:
                await asyncio.sleep(0.2)
            assert c.open, f"closed with {c.ws.close_code} {c.ws.close_reason!r} while answering pings"
            assert c.pings >= 4, f"only {c.pings} pings within {WAIT}s (interval 1s)"
            assert c.messages == [], c.messages
        finally:
            await c.close()

    run_async(scenario())


def test_a_session_token_and_an_api_token_are_accepted(srv, analyst):
    tokens = {"session": analyst.token, "api": api_token(srv, analyst.name)}

    async def scenario():
        for kind, token in tokens.items():
            ws, hello = await ws_connect(srv, token)
            try:
                assert hello == {"type": "auth_ok", "username": analyst.name}, (kind, hello)
            finally:
                await ws.close()

    run_async(scenario())


def test_a_wrong_token_gets_auth_error_and_close_1008(srv, analyst):
    real = analyst.desktop_token()["token"]
    head, payload, sig = real.split(".")
    tampered_sig = sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")
    # A payload naming another account, signed with a key the server does not have.
    other_payload = payload[:-2] + ("QQ" if not payload.endswith("QQ") else "RR")
    wrong = {
        "garbage": "not-a-token",
        "empty": "",
        "tampered signature": f"{head}.{payload}.{tampered_sig}",
        "tampered payload": f"{head}.{other_payload}.{sig}",
        "unknown API token": "dpk_" + "a" * 16 + "_" + "b" * 32,
        "API token with a wrong secret": api_token(srv, analyst.name)[:-3] + "xyz",
    }

    async def scenario():
        for what, token in wrong.items():
            result = await refused(srv, auth(token))
            assert_auth_error(result, f"auth with {what} token {token[:40]!r}")

    run_async(scenario())


def test_a_revoked_desktop_token_is_refused(srv, analyst):
    desktop = analyst.desktop_token()
    r = analyst.http.delete(srv.url(f"/api/v1/desktop/tokens/{desktop['id']}"), timeout=30)
    assert r.status_code == 204, r.text
    result = run_async(refused(srv, auth(desktop["token"])))
    assert_auth_error(result, "auth with a revoked desktop token")


def test_no_auth_message_within_the_timeout_is_refused(srv):
    result = run_async(refused(srv, None, timeout=WAIT))
    message = assert_auth_error(result, "nothing (waited for the server)")
    assert "auth" in message, message
    # The server waits for its auth timeout (2 s) before refusing.
    assert result["seconds"] >= 1.0, result


@pytest.mark.parametrize("first", [
    "hello",
    "{not json",
    json.dumps([{"type": "auth", "token": "x"}]),
    json.dumps({"type": "pong"}),
    json.dumps({"type": "auth"}),
    json.dumps({"type": "auth", "token": 12345}),
    json.dumps({"type": "auth", "token": None}),
], ids=["text", "broken-json", "json-array", "pong", "auth-without-token", "numeric-token",
        "null-token"])
def test_a_first_message_that_is_not_auth_json_is_refused(srv, first):
    result = run_async(refused(srv, first))
    assert_auth_error(result, first)


def test_a_valid_token_without_type_auth_is_refused(srv, analyst):
    token = analyst.desktop_token()["token"]

    async def scenario():
        for first in ({"token": token}, {"type": "login", "token": token},
                      {"type": "Auth", "token": token}):
            assert_auth_error(await refused(srv, first), first)

    run_async(scenario())


def test_the_tokens_of_a_disabled_account_are_refused(srv, analyst):
    tokens = {"desktop": analyst.desktop_token()["token"], "session": analyst.token,
              "api": api_token(srv, analyst.name)}
    set_state(srv, analyst.name, "disabled")

    async def scenario():
        for kind, token in tokens.items():
            assert_auth_error(await refused(srv, auth(token)),
                              f"auth with the {kind} token of disabled {analyst.name}")

    try:
        run_async(scenario())
    finally:
        set_state(srv, analyst.name, "active")
    # Enabled again, the account connects.
    ws_hello = run_async(_hello(srv, tokens["desktop"]))
    assert ws_hello == {"type": "auth_ok", "username": analyst.name}


async def _hello(srv, token: str) -> dict:
    ws, hello = await ws_connect(srv, token)
    await ws.close()
    return hello


def test_an_expired_desktop_token_is_refused_and_ends_its_connection(server, demo_dir, tg, tmp_path):
    short = start_notify_server(tmp_path, demo_dir, tg, name="short",
                                desktop_token_ttl="4s", gateway_ping_interval="1s",
                                gateway_auth_timeout="2s")
    try:
        ana = Analyst(short, tmp_path / "people")
        desktop = ana.desktop_token()
        assert desktop["expires_ms"] <= time.time() * 1000 + 10_000, desktop

        async def scenario():
            c = await connect(short, desktop["token"])
            try:
                # Answering every ping, the connection ends when the token runs out.
                code, reason = await c.wait_closed(timeout=WAIT + 4)
                errors = c.of_type("auth_error")
                assert len(errors) == 1 and errors[0].get("message"), \
                    f"expected auth_error before the close, got {c.messages}"
                assert code == POLICY, (code, reason)
            finally:
                await c.close()
            # Expired, it is refused at once.
            assert_auth_error(await refused(short, auth(desktop["token"])),
                              "auth with an expired desktop token")

        run_async(scenario())
        r = requests.get(short.url("/api/v1/desktop/me"), headers=bearer(desktop["token"]), timeout=30)
        assert r.status_code == 401, r.text
    finally:
        short.stop()


# --------------------------------------------------------------------------------------------
# Pings, limits, token checks on open connections
# --------------------------------------------------------------------------------------------


def test_a_silent_client_is_closed_after_three_missed_pongs_while_an_answering_one_stays(srv, analyst):
    token = analyst.desktop_token()["token"]
    before = gateway_metrics(srv)

    async def scenario():
        silent = await connect(srv, token, answer=False)
        talker = await connect(srv, token, answer=True)
        try:
            code, reason = await silent.wait_closed(timeout=WAIT)
            assert code == POLICY, f"silent client closed with {code} {reason!r}"
            assert reason == "no pong to three pings", reason
            assert silent.pings >= 3, f"closed after only {silent.pings} pings"
            assert silent.messages == [], silent.messages
            # The answering client lives on through more pings.
            pings = talker.pings
            deadline = time.monotonic() + WAIT
            while talker.pings < pings + 3 and talker.open and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert talker.open, f"answering client closed: {talker.ws.close_code} {talker.ws.close_reason!r}"
            assert talker.pings >= pings + 3, (pings, talker.pings)
            assert talker.messages == [], talker.messages
        finally:
            await close_all([silent, talker])

    run_async(scenario())
    after = gateway_metrics(srv)
    assert after["closed_silent"] - before["closed_silent"] == 1, (before, after)


def test_the_sixth_connection_is_refused_other_accounts_unaffected_and_a_closed_slot_frees(srv, analyst, other):
    token = analyst.desktop_token()["token"]
    other_token = other.desktop_token()["token"]
    base = settled_figures(srv)

    async def scenario():
        five = [await connect(srv, token) for _ in range(5)]
        extra = []
        try:
            sixth = await refused(srv, auth(token))
            message = assert_auth_error(sixth, "auth for a sixth connection of one account")
            assert re.search(r"\b5\b", message) and "close one" in message.lower(), message
            # The five stay connected; the refusal took none of them.
            await asyncio.sleep(1.5)
            assert all(c.open for c in five), [(c.ws.close_code, c.ws.close_reason) for c in five]
            assert health(srv)["connections"] == base["connections"] + 5
            # Another account is not limited by this one's connections.
            extra.append(await connect(srv, other_token))
            assert extra[0].hello["username"] == other.name
            # The sixth with a session token of the same account is refused as well.
            assert_auth_error(await refused(srv, auth(analyst.token)),
                              "auth with a session token for a sixth connection")
            # Closing one lets a new one in.
            await five[0].close()
            await asyncio.to_thread(wait_figures, srv, base["connections"] + 5, base["users"] + 2,
                                    "one of five closed, the other account's open")
            extra.append(await connect(srv, token))
            assert extra[1].hello == {"type": "auth_ok", "username": analyst.name}
            # ... and it is five again: the next one is refused.
            assert_auth_error(await refused(srv, auth(token)), "auth for a sixth connection again")
        finally:
            await close_all(five + extra)

    run_async(scenario())


def test_a_notification_reaches_all_five_connections_of_its_account_and_none_of_another(srv, analyst, other):
    token = analyst.desktop_token()["token"]
    other_token = other.desktop_token()["token"]
    api = api_token(srv, analyst.name)
    assert analyst.put("fanout.py", notifying_script("Fan-out check")).status_code in (200, 201)
    assert other.put("fanout.py", notifying_script("Other account")).status_code in (200, 201)

    async def scenario():
        mine = [await connect(srv, token) for _ in range(3)]
        mine += [await connect(srv, analyst.token), await connect(srv, api)]
        theirs = [await connect(srv, other_token), await connect(srv, other.token)]
        try:
            report = await asyncio.to_thread(analyst.run, "fanout.py")
            assert report["run"]["outcome"] == "sent", report["run"]
            notes = [await c.wait_for(lambda m: m.get("type") == "notification",
                                      what=f"notification on connection {i}")
                     for i, c in enumerate(mine)]
            assert {n["id"] for n in notes} == {report["notification"]["id"]}, notes
            assert all(n["title"] == "Fan-out check" for n in notes), notes
            # Exactly one each, and nothing for the other account.
            await asyncio.sleep(2)
            assert [len(c.of_type("notification")) for c in mine] == [1] * 5, \
                [c.messages for c in mine]
            assert [c.messages for c in theirs] == [[], []], [c.messages for c in theirs]
            assert all(c.open for c in mine + theirs)
        finally:
            await close_all(mine + theirs)
        return report

    report = run_async(scenario())
    [run] = analyst.runs("fanout.py")
    channels = {d["channel"]: d for d in run["deliveries"]}
    assert channels["websocket"]["connections"] == 5, run["deliveries"]
    assert other.inbox() == [] and other.runs() == []
    assert [n["id"] for n in analyst.inbox()] == [report["notification"]["id"]]


def test_the_notification_message_has_the_contract_shape(srv, analyst):
    token = analyst.desktop_token()["token"]
    assert analyst.put("plain.py", notifying_script("Plain one", "no *image* here")).status_code in (200, 201)
    assert analyst.put("chart.py", notifying_script("With a chart", "see the image",
                                                    extra=PNG_WRITER)).status_code in (200, 201)

    async def scenario():
        c = await connect(srv, token)
        try:
            await asyncio.to_thread(analyst.run, "plain.py")
            plain = await c.wait_for(lambda m: m.get("script") == "plain.py", what="plain.py's notification")
            await asyncio.to_thread(analyst.run, "chart.py")
            chart = await c.wait_for(lambda m: m.get("script") == "chart.py", what="chart.py's notification")
        finally:
            await c.close()
        return plain, chart

    plain, chart = run_async(scenario())
    keys = {"type", "id", "title", "message", "script", "timestamp", "image_url"}
    for note in (plain, chart):
        assert set(note) == keys, note
        assert note["type"] == "notification"
        assert str(uuid.UUID(note["id"])) == note["id"], note
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", note["timestamp"]), note
        stamp = time.mktime(time.strptime(note["timestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert abs(stamp - time.time()) < 300, (note["timestamp"], time.time())
    assert (plain["title"], plain["message"], plain["image_url"]) == ("Plain one", "no *image* here", None)
    assert (chart["title"], chart["message"]) == ("With a chart", "see the image")
    assert isinstance(chart["image_url"], str) and chart["image_url"].startswith("http"), chart
    assert chart["image_url"].endswith(f"/api/v1/notify/notifications/{chart['id']}/image"), chart
    # The app fetches the image with its desktop token.
    r = requests.get(chart["image_url"], headers=bearer(token), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.content.startswith(b"\x89PNG"), r.content[:20]


# --------------------------------------------------------------------------------------------
# Token checks at every ping
# --------------------------------------------------------------------------------------------


def test_revoking_the_desktop_token_ends_its_connection_and_not_the_accounts_others(srv, analyst):
    desktop = analyst.desktop_token("to revoke")
    keep = analyst.desktop_token("to keep")

    async def scenario():
        doomed = await connect(srv, desktop["token"])
        kept = await connect(srv, keep["token"])
        session = await connect(srv, analyst.token)
        try:
            await asyncio.sleep(1.5)
            assert doomed.open
            r = await asyncio.to_thread(
                analyst.http.delete, srv.url(f"/api/v1/desktop/tokens/{desktop['id']}"), timeout=30)
            assert r.status_code == 204, r.text
            code, reason = await doomed.wait_closed(timeout=WAIT)
            errors = doomed.of_type("auth_error")
            assert len(errors) == 1 and errors[0].get("message"), \
                f"revoked mid-connection: expected auth_error then close, got {doomed.messages}"
            assert code == POLICY, (code, reason)
            # The account's other connections carry on.
            pings = kept.pings, session.pings
            await asyncio.sleep(3)
            assert kept.open and session.open, (kept.ws.close_code, session.ws.close_code)
            assert kept.pings > pings[0] and session.pings > pings[1]
            assert kept.messages == [] and session.messages == []
        finally:
            await close_all([doomed, kept, session])

    run_async(scenario())
    r = requests.get(srv.url("/api/v1/desktop/me"), headers=bearer(desktop["token"]), timeout=30)
    assert r.status_code == 401, r.text
    r = requests.get(srv.url("/api/v1/desktop/me"), headers=bearer(keep["token"]), timeout=30)
    assert r.status_code == 200, r.text


def test_disabling_the_account_ends_its_open_connections(srv, analyst, other):
    tokens = [analyst.desktop_token()["token"], analyst.token, api_token(srv, analyst.name)]
    other_token = other.desktop_token()["token"]

    async def scenario():
        mine = [await connect(srv, t) for t in tokens]
        theirs = await connect(srv, other_token)
        try:
            await asyncio.sleep(1.5)
            assert all(c.open for c in mine)
            await asyncio.to_thread(set_state, srv, analyst.name, "disabled")
            for kind, c in zip(("desktop", "session", "api"), mine):
                code, reason = await c.wait_closed(timeout=WAIT)
                errors = c.of_type("auth_error")
                assert len(errors) == 1 and errors[0].get("message"), \
                    f"{kind}-token connection of a disabled account: got {c.messages}, close {code} {reason!r}"
                assert code == POLICY, (kind, code, reason)
            assert theirs.open and theirs.messages == []
        finally:
            await close_all(mine + [theirs])

    try:
        run_async(scenario())
    finally:
        set_state(srv, analyst.name, "active")


# --------------------------------------------------------------------------------------------
# The desktop app over HTTP
# --------------------------------------------------------------------------------------------


def test_a_desktop_run_pushes_the_run_and_its_notification_to_the_gateway(srv, analyst, other):
    token = analyst.desktop_token()["token"]
    other_token = other.desktop_token()["token"]
    assert analyst.put("button.py", notifying_script("Pressed in the app")).status_code in (200, 201)

    async def scenario():
        c1, c2 = await connect(srv, token), await connect(srv, analyst.token)
        stranger = await connect(srv, other_token)
        try:
            r = await asyncio.to_thread(
                requests.post, srv.url("/api/v1/desktop/scripts/button.py/run"),
                headers=bearer(token), timeout=120)
            assert r.status_code == 200, r.text
            report = r.json()
            out = []
            for c in (c1, c2):
                run = await c.wait_for(lambda m: m.get("type") == "run", what="the run message")
                note = await c.wait_for(lambda m: m.get("type") == "notification", what="the notification")
                out.append((run, note))
            await asyncio.sleep(1.5)
            assert stranger.messages == [], stranger.messages
            return report, out
        finally:
            await close_all([c1, c2, stranger])

    report, out = run_async(scenario())
    assert report["run"]["trigger"] == "desktop", report["run"]
    for run, note in out:
        assert set(run) == {"type", "run_id", "script", "outcome", "reason", "notification"}, run
        assert run["run_id"] == report["run"]["id"], (run, report["run"])
        assert run["script"] == "button.py" and run["outcome"] == "sent", run
        assert run["outcome"] == report["run"]["outcome"]
        assert run["notification"] == note["id"] == report["notification"]["id"], (run, note)
        assert note["title"] == "Pressed in the app" and note["script"] == "button.py", note


def test_the_desktop_http_routes_take_the_desktop_token(srv, analyst):
    desktop = analyst.desktop_token()
    h = bearer(desktop["token"])
    assert analyst.put("listed.py", notifying_script("Listed")).status_code in (200, 201)
    analyst.run("listed.py")

    r = requests.get(srv.url("/api/v1/desktop/me"), headers=h, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"username": analyst.name, "gateway_path": GATEWAY}
    r = requests.get(srv.url("/api/v1/desktop/scripts"), headers=h, timeout=30)
    assert r.status_code == 200, r.text
    assert [s["name"] for s in r.json()["scripts"]] == ["listed.py"], r.json()
    r = requests.get(srv.url("/api/v1/desktop/notifications"), headers=h, timeout=30)
    assert r.status_code == 200, r.text
    notes = r.json()["notifications"]
    assert [n["title"] for n in notes] == ["Listed"], notes
    assert [n["id"] for n in notes] == [n["id"] for n in analyst.inbox()]
    # The token list shows it, without the secret.
    r = analyst.http.get(srv.url("/api/v1/desktop/tokens"), timeout=30)
    assert r.status_code == 200, r.text
    assert desktop["id"] in [t["id"] for t in r.json()["tokens"]], r.json()
    assert desktop["token"] not in r.text
    # No token: refused.
    assert requests.get(srv.url("/api/v1/desktop/me"), timeout=30).status_code == 401


def test_a_desktop_token_is_refused_on_the_other_api_routes(srv, analyst):
    h = bearer(analyst.desktop_token()["token"])
    assert analyst.put("mine.py", notifying_script("Mine")).status_code in (200, 201)
    calls = [
        ("POST", "/api/v1/query", {"json": {"sql": "select 1 as one"}}),
        ("GET", "/api/v1/notify/scripts", {}),
        ("GET", "/api/v1/notify/scripts/mine.py", {}),
        ("POST", "/api/v1/notify/scripts/mine.py/run", {}),
        ("GET", "/api/v1/notify/runs", {}),
        ("GET", "/api/v1/notify/notifications", {}),
        ("POST", "/api/v1/desktop/tokens", {"json": {"label": "minted by a desktop token"}}),
        ("GET", "/api/v1/desktop/tokens", {}),
    ]
    for method, path, kw in calls:
        r = requests.request(method, srv.url(path), headers=h, timeout=60, **kw)
        assert r.status_code == 401, f"{method} {path} with a desktop token -> {r.status_code}: {r.text[:300]}"
    # The same routes take the account's session token.
    assert analyst.http.post(srv.url("/api/v1/query"), json={"sql": "select 1 as one"},
                             timeout=60).json() == [{"one": 1}]
    assert analyst.runs("mine.py") == [], "the refused run must not have run"


def test_a_plain_http_get_to_the_gateway_is_a_400_json_error(srv, analyst):
    r = requests.get(srv.url(GATEWAY), timeout=30)
    err = assert_error(r, 400, "invalid_argument")
    assert "websocket" in err["message"].lower(), err
    r = requests.get(srv.url(GATEWAY), headers=bearer(analyst.desktop_token()["token"]), timeout=30)
    assert_error(r, 400, "invalid_argument")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def test_health_reports_gateway_connections_and_users_as_they_open_and_close(srv, analyst, other):
    a, b = analyst.desktop_token()["token"], other.desktop_token()["token"]
    base = settled_figures(srv)
    assert base["status"] == "ok", base
    assert (base["connections"], base["users"]) == (0, 0), base

    async def scenario():
        mine = [await connect(srv, a) for _ in range(3)]
        theirs = [await connect(srv, b)]
        try:
            figures = health(srv)
            assert figures == {"status": "ok", "connections": 4, "users": 2}, figures
            # A refused connection counts for nothing.
            await refused(srv, auth("garbage"))
            assert health(srv) == figures
            await mine.pop().close()
            await asyncio.to_thread(wait_figures, srv, 3, 2, "one of three closed")
            await close_all(mine)
            await asyncio.to_thread(wait_figures, srv, 1, 1, "the first account's all closed")
            await close_all(theirs)
            await asyncio.to_thread(wait_figures, srv, 0, 0, "all closed")
        finally:
            await close_all(mine + theirs)

    run_async(scenario())
    # /health needs no credentials.
    r = requests.get(srv.url("/health"), timeout=30)
    assert r.status_code == 200 and r.json()["gateway"] == {"status": "ok", "connections": 0, "users": 0}


def test_metrics_count_connections_refusals_silent_closes_and_notifications(srv, analyst, other):
    a, b = analyst.desktop_token()["token"], other.desktop_token()["token"]
    assert analyst.put("counted.py", notifying_script("Counted")).status_code in (200, 201)
    settled_figures(srv)
    before = gateway_metrics(srv)
    assert None not in before.values(), before
    assert (before["connections"], before["users"]) == (0, 0), before

    async def scenario():
        mine = [await connect(srv, a) for _ in range(5)]
        theirs = [await connect(srv, b, answer=False)]
        try:
            during = gateway_metrics(srv)
            assert (during["connections"], during["users"]) == (6, 2), during
            assert during["accepted"] - before["accepted"] == 6, (before, during)
            assert_auth_error(await refused(srv, auth("garbage")), "garbage")
            assert_auth_error(await refused(srv, None), "nothing")
            assert_auth_error(await refused(srv, auth(a)), "a sixth connection")
            await asyncio.to_thread(analyst.run, "counted.py")
            for c in mine:
                await c.wait_for(lambda m: m.get("type") == "notification", what="the notification")
            # The other account's client answers no pings: it is closed as silent.
            await theirs[0].wait_closed(timeout=WAIT)
        finally:
            await close_all(mine + theirs)

    run_async(scenario())
    settled_figures(srv)
    after = gateway_metrics(srv)
    assert (after["connections"], after["users"]) == (0, 0), after
    assert after["accepted"] - before["accepted"] == 6, (before, after)
    assert after["refused_auth"] - before["refused_auth"] == 2, (before, after)
    assert after["refused_limit"] - before["refused_limit"] == 1, (before, after)
    assert after["closed_silent"] - before["closed_silent"] == 1, (before, after)
    assert after["notifications"] - before["notifications"] == 5, (before, after)
    # The gauges agree with /health.
    g = health(srv)
    assert (g["connections"], g["users"]) == (after["connections"], after["users"])
    assert parse_metrics(srv.get("/metrics").text)  # parseable as a whole
