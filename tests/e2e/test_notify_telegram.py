"""Notifications, the Telegram side, end to end: the bot's conversation (linking a chat to an
account with a /start code, /status, /test, /scripts and its Run buttons, help), how a
notification becomes Telegram messages (Markdown with a literal bold title, the fallback for
Markdown Telegram cannot parse, long texts split, photos with captions), Telegram's rate limits
and outages, blocked and deleted chats, the token kept out of the log, and the update offset
kept across a restart. Telegram is the Bot API double of telegram_double.py; the server polls
it with `telegram_poll_timeout: 1s`.

One server and one double for the module; each test makes its own accounts and Telegram users.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
import zlib

import pytest
import requests

from e2e_util import assert_error, wait_for
from notify_util import BOT_TOKEN, Analyst, run_job, start_notify_server
from telegram_double import CAPTION_LIMIT, TEXT_LIMIT, TelegramDouble, image_info, utf16_len

REPLY_TIMEOUT = 20  # the bot's answer to a command or button


@pytest.fixture
def make_analyst(srv, tmp_path, tg):
    """Factory of new accounts; their scripts are removed after the test, so that the
    `notify:run` job of a later test runs only that test's scripts."""
    made: list[Analyst] = []

    def make() -> Analyst:
        a = Analyst(srv, tmp_path)
        made.append(a)
        return a

    yield make
    tg.clear_failures()
    tg.up()
    for a in made:
        try:
            r = a.http.get(srv.url("/api/v1/notify/scripts"), timeout=30)
            for s in r.json().get("scripts", []) if r.status_code == 200 else []:
                a.http.delete(srv.url(f"/api/v1/notify/scripts/{s['name']}"), timeout=30)
        except Exception as e:  # clean-up must not hide the test's own outcome
            print(f"clean-up of {a.name}'s scripts failed: {e}")


@pytest.fixture
def analyst(make_analyst):
    return make_analyst()


# ---------------------------------------------------------------------------------------------
# Helpers


def new_user(tg: TelegramDouble, first_name: str = "Tess") -> dict:
    return tg.add_user(first_name, username=f"{first_name.lower()}_{uuid.uuid4().hex[:8]}")


def say(tg: TelegramDouble, user: dict, text: str, timeout: float = REPLY_TIMEOUT,
        match=None) -> dict:
    """The user writes `text`; the bot's first message after it in the chat (matching
    `match`, when given)."""
    mid = tg.user_sends(user, text)["message"]["message_id"]
    return tg.wait_for_sent(lambda m: m["chat_id"] == user["id"] and m["message_id"] > mid
                            and (match is None or match(m)), timeout=timeout)


def after(tg: TelegramDouble, chat_id: int, message_id: int) -> list[dict]:
    """What the bot sent to the chat after message `message_id`, oldest first."""
    return [m for m in tg.sent(chat_id) if m["message_id"] > message_id]


def last_message_id(tg: TelegramDouble, chat_id: int) -> int:
    """The newest message id of the bot's in the chat (0: none)."""
    return max((m["message_id"] for m in tg.sent(chat_id)), default=0)


def code_of(message: dict) -> str:
    # Anchored on the words before it: the message also names the account, whose random
    # suffix may hold six digits in a row.
    codes = re.findall(r"\bcode: (\d{6})\b", message["plain"])
    assert len(codes) == 1, f"expected one 6-digit code in {message['plain']!r}"
    return codes[0]


def start_code(tg: TelegramDouble, user: dict) -> str:
    """/start in the user's chat; the code the bot answers with."""
    return code_of(say(tg, user, "/start", match=lambda m: re.search(r"\bcode: \d{6}\b", m["plain"])))


def post_code(a: Analyst, code) -> requests.Response:
    return a.http.post(a.srv.url("/api/v1/notify/telegram/link"), json={"code": code}, timeout=30)


def telegram_state(a: Analyst) -> dict:
    r = a.http.get(a.srv.url("/api/v1/notify/telegram"), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def emit(out: dict) -> str:
    """Python source printing `out` as the script's one JSON object."""
    return f"import json\nprint(json.dumps(json.loads({json.dumps(json.dumps(out))})))\n"


def notify_script(title: str, message: str, **extra) -> str:
    return emit({"notify": True, "title": title, "message": message, "cooldown": "6h", **extra})


def put(a: Analyst, name: str, source: str) -> dict:
    r = a.put(name, source)
    assert r.status_code in (200, 201), f"PUT {name}: {r.status_code} {r.text}"
    return r.json()["script"]


# A PNG made with the standard library only; the scripts carry the same source.
PNG_SOURCE = '''
import struct, zlib

def png(width, height):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    raw = b"".join(bytes([0] + [v for x in range(width) for v in ((x * 4) % 256, (y * 5) % 256, 160)])
                   for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))
'''


def image_script(out: dict, width: int, height: int, file: str = "chart.png") -> str:
    return (PNG_SOURCE + f"\nwith open({file!r}, 'wb') as f:\n    f.write(png({width}, {height}))\n"
            + emit({**out, "image_path": file}))


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of a PNG, its chunks' CRCs checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, idat, width, height = 8, b"", None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def expected_png(width: int, height: int) -> bytes:
    ns: dict = {}
    exec(PNG_SOURCE, ns)  # noqa: S102 - our own source, the one the scripts run
    return ns["png"](width, height)


def bold(offset: int, length: int) -> dict:
    return {"type": "bold", "offset": offset, "length": length}


def send_log(tg: TelegramDouble, method: str, chat_id: int) -> list[dict]:
    """The double's log of `method` calls to one chat, oldest first."""
    return [e for e in tg.requests_log
            if (e["method"] or "").lower() == method.lower() and e["params"]
            and e["params"].get("chat_id") == str(chat_id)]


def finished_runs(a: Analyst, script: str, n: int = 1, timeout: float = 60) -> list[dict]:
    """`script`'s runs once at least `n` have ended, newest first."""
    def done():
        runs = [r for r in a.runs(script) if r["outcome"] != "running"]
        return runs if len(runs) >= n else None
    return wait_for(done, timeout=timeout, what=f"{n} finished run(s) of {script}")


def channels(run: dict) -> dict:
    return {d["channel"]: d for d in run["deliveries"]}


# ---------------------------------------------------------------------------------------------
# Linking a chat


def test_start_gives_a_code_that_links_the_chat_and_delete_unlinks(srv, tg, analyst):
    assert telegram_state(analyst) == {"configured": True, "link": None}
    user = new_user(tg, "Lina")
    reply = say(tg, user, "/start")
    code = code_of(reply)
    assert re.search(r"10 minutes|600", reply["plain"]), \
        f"the code's message does not say how long it is valid: {reply['plain']!r}"

    before_ms = time.time() * 1000
    r = post_code(analyst, code)
    assert r.status_code == 200, r.text
    link = r.json()
    assert link["chat_id"] == user["id"], link
    assert isinstance(link["account_id"], int), link
    assert user["username"] in link["chat_name"], link
    assert abs(link["linked_ms"] - before_ms) < 300_000, link
    assert link.get("unlinked_reason") is None, link
    confirm = tg.wait_for_sent(lambda m: m["chat_id"] == user["id"] and m["message_id"] > reply["message_id"],
                               timeout=REPLY_TIMEOUT)
    assert confirm["plain"].startswith("Linked"), confirm["plain"]
    assert analyst.name in confirm["plain"], confirm["plain"]

    state = telegram_state(analyst)
    assert state["configured"] is True
    for key in ("account_id", "chat_id", "chat_name", "linked_ms"):
        assert state["link"][key] == link[key], (key, state, link)
    # The account is the one that entered the code.
    script = put(analyst, "whoami.py", emit({"notify": False}))
    assert link["account_id"] == script["account_id"], (link, script)

    # A code links once.
    err = assert_error(post_code(analyst, code), 400, "invalid_argument")
    assert "/start" in err["message"], err

    # Unlinking in the portal.
    r = analyst.http.delete(srv.url("/api/v1/notify/telegram/link"), timeout=30)
    assert r.status_code in (200, 204), r.text
    state = telegram_state(analyst)
    assert state["link"] is None or state["link"]["chat_id"] is None, state
    status = say(tg, user, "/status")
    assert "not linked" in status["plain"].lower(), status["plain"]


@pytest.mark.parametrize("code", ["000000", "12345", "1234567", "abcdef", "", "12 345", "１２３４５６"])
def test_a_wrong_or_malformed_code_is_refused(srv, analyst, code):
    if code == "000000":
        code = f"{uuid.uuid4().int % 1_000_000:06d}"  # a well-formed code nobody was given
    err = assert_error(post_code(analyst, code), 400, "invalid_argument")
    assert "/start" in err["message"], err
    assert telegram_state(analyst)["link"] is None


def test_a_new_start_invalidates_the_previous_code(srv, tg, analyst):
    user = new_user(tg, "Nico")
    first = start_code(tg, user)
    second = start_code(tg, user)
    if first == second:
        pytest.skip("the two random codes happen to be equal")
    err = assert_error(post_code(analyst, first), 400, "invalid_argument")
    assert "/start" in err["message"], err
    r = post_code(analyst, second)
    assert r.status_code == 200, r.text
    assert r.json()["chat_id"] == user["id"]


def test_a_code_entered_by_another_account_moves_the_chat(srv, tg, make_analyst):
    first, second = make_analyst(), make_analyst()
    first.link_telegram(tg)
    chat = first.chat
    code = start_code(tg, chat)
    r = post_code(second, code)
    assert r.status_code == 200, r.text
    assert r.json()["chat_id"] == chat["id"]

    moved = telegram_state(second)["link"]
    assert moved["chat_id"] == chat["id"], moved
    left = telegram_state(first)["link"]
    assert left is not None and left["chat_id"] is None, left
    assert left["unlinked_reason"] == "the chat was linked to another account", left
    status = say(tg, chat, "/status")
    assert second.name in status["plain"] and first.name not in status["plain"], status["plain"]


# ---------------------------------------------------------------------------------------------
# The bot's commands


def test_status_names_the_account_and_its_script_count_or_says_not_linked(srv, tg, analyst):
    stranger = new_user(tg, "Stan")
    reply = say(tg, stranger, "/status")
    assert "not linked" in reply["plain"].lower(), reply["plain"]
    assert "/start" in reply["plain"], reply["plain"]

    analyst.link_telegram(tg)
    put(analyst, "one.py", emit({"notify": False}))
    put(analyst, "two.py", emit({"notify": False}))
    reply = say(tg, analyst.chat, "/status")
    assert analyst.name in reply["plain"], reply["plain"]
    assert re.search(r"(?i)scripts?\W*2\b|\b2 scripts?", reply["plain"]), reply["plain"]


def test_test_command_sends_a_test_notification_to_a_linked_chat_only(srv, tg, analyst):
    stranger = new_user(tg, "Tom")
    reply = say(tg, stranger, "/test")
    assert "/start" in reply["plain"], reply["plain"]
    assert "Test notification" not in reply["plain"]

    analyst.link_telegram(tg)
    reply = say(tg, analyst.chat, "/test")
    title = "Test notification"
    assert reply["plain"].startswith(title), reply["plain"]
    assert reply["parse_mode"] == "Markdown", reply
    assert bold(0, len(title)) in reply["entities"], reply["entities"]


def test_scripts_lists_the_scripts_with_one_run_button_each(srv, tg, analyst):
    analyst.link_telegram(tg)
    reply = say(tg, analyst.chat, "/scripts")
    assert not (reply["reply_markup"] or {}).get("inline_keyboard"), reply["reply_markup"]
    assert re.search(r"(?i)push|upload|notifications/", reply["plain"]), \
        f"no word on how to add scripts: {reply['plain']!r}"

    names = ["alpha.py", "beta_2.py", "gamma-3.py"]
    for name in names:
        put(analyst, name, emit({"notify": False}))
    reply = say(tg, analyst.chat, "/scripts")
    rows = (reply["reply_markup"] or {}).get("inline_keyboard") or []
    buttons = [b for row in rows for b in row]
    assert sorted(b.get("callback_data") for b in buttons) == sorted(f"run:{n}" for n in names), rows
    for name in names:
        assert name in reply["plain"], reply["plain"]


def test_unknown_text_gets_the_list_of_commands(srv, tg):
    user = new_user(tg, "Hugo")
    for text in ("hello there", "/nonsense"):
        reply = say(tg, user, text)
        for command in ("/start", "/status", "/test", "/scripts"):
            assert command in reply["plain"], (text, reply["plain"])


def test_messages_outside_private_chats_are_ignored(srv, tg):
    user = new_user(tg, "Greta")
    group = tg.add_group("Team chat")
    for text in ("/start", "/status", "/scripts", "hello bot"):
        tg.group_sends(group["id"], user, text)
    # A private command after them is answered: the bot has read past the group's messages.
    reply = say(tg, user, "/status")
    assert "not linked" in reply["plain"]
    assert tg.sent(group["id"]) == [], "nothing is said in a group (no link codes where others read)"


# ---------------------------------------------------------------------------------------------
# Run buttons


def test_a_run_button_runs_the_script_and_its_notification_arrives(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = f"Button run {uuid.uuid4().hex[:6]}"
    put(analyst, "button.py", notify_script(title, "ran from *Telegram*"))
    put(analyst, "silent.py", emit({"notify": False}))
    listing = say(tg, analyst.chat, "/scripts")

    qid = tg.user_presses(analyst.chat, listing["message_id"], "run:button.py")
    answer = tg.wait_for_answer(qid, timeout=REPLY_TIMEOUT)
    assert answer["text"] and answer["text"].startswith("Running button.py"), answer
    note = tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and title in m["plain"],
                            timeout=60)
    assert note["plain"] == f"{title}\nran from Telegram", note["plain"]
    [run] = finished_runs(analyst, "button.py")
    assert run["trigger"] == "telegram" and run["outcome"] == "sent", run

    # A script with nothing to say: the chat is told so.
    mark = last_message_id(tg, analyst.chat["id"])
    qid = tg.user_presses(analyst.chat, listing["message_id"], "run:silent.py")
    answer = tg.wait_for_answer(qid, timeout=REPLY_TIMEOUT)
    assert answer["text"] and answer["text"].startswith("Running silent.py"), answer
    told = tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and m["message_id"] > mark,
                            timeout=60)
    assert "nothing to report" in told["plain"].lower() and "silent.py" in told["plain"], told["plain"]
    [run] = finished_runs(analyst, "silent.py")
    assert run["trigger"] == "telegram" and run["outcome"] == "quiet", run


def test_a_button_runs_only_the_chats_own_accounts_script(srv, tg, make_analyst):
    owner, other = make_analyst(), make_analyst()
    owner.link_telegram(tg)
    other.link_telegram(tg)
    put(owner, "shared.py", notify_script("owner's", "owner's script"))
    listing = say(tg, owner.chat, "/scripts")
    assert any(b.get("callback_data") == "run:shared.py"
               for row in listing["reply_markup"]["inline_keyboard"] for b in row), listing
    # The script leaves this account; another account has one by that name.
    r = owner.http.delete(srv.url("/api/v1/notify/scripts/shared.py"), timeout=30)
    assert r.status_code == 204, r.text
    put(other, "shared.py", notify_script("other's", "not for the owner's chat"))

    mark = last_message_id(tg, owner.chat["id"])
    other_mark = last_message_id(tg, other.chat["id"])
    qid = tg.user_presses(owner.chat, listing["message_id"], "run:shared.py")
    answer = tg.wait_for_answer(qid, timeout=REPLY_TIMEOUT)
    assert answer["text"] == "You have no script by that name.", answer
    time.sleep(2)
    assert other.runs("shared.py") == [], "another account's script ran"
    assert owner.runs("shared.py") == [], "a deleted script ran"
    assert after(tg, owner.chat["id"], mark) == []
    assert after(tg, other.chat["id"], other_mark) == []


# ---------------------------------------------------------------------------------------------
# How notifications look


@pytest.mark.parametrize("title", ["cpu_load is high", "5 *critical* alerts", "a_b *c* d_e [x] `y`"])
def test_the_title_is_bold_and_literal_and_the_message_keeps_its_markdown(srv, tg, analyst, title):
    analyst.link_telegram(tg)
    put(analyst, "title.py", notify_script(title, "Check *host-1* now"))
    mark = last_message_id(tg, analyst.chat["id"])
    report = analyst.run("title.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    [sent] = after(tg, analyst.chat["id"], mark)
    assert sent["method"] == "sendMessage" and sent["parse_mode"] == "Markdown", sent
    assert sent["plain"] == f"{title}\nCheck host-1 now", (sent["text"], sent["plain"], sent["entities"])
    # Bold throughout; legacy Markdown cannot make a "*" itself bold, so the bold may pause there.
    in_bold = {i for e in sent["entities"] if e["type"] == "bold"
               for i in range(e["offset"], e["offset"] + e["length"])}
    not_bold = [i for i in range(len(title)) if i not in in_bold and title[i] != "*"]
    assert not not_bold, (f"title characters not bold: {[title[i] for i in not_bold]}", sent["entities"])
    host = sent["plain"].index("host-1")
    assert bold(host, len("host-1")) in sent["entities"], sent["entities"]


def test_markdown_telegram_cannot_parse_arrives_literally(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = "Regions"
    message = "region_1 is over budget"  # a lone "_": Telegram cannot parse it
    put(analyst, "regions.py", notify_script(title, message))
    mark = last_message_id(tg, analyst.chat["id"])
    report = analyst.run("regions.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    [sent] = after(tg, analyst.chat["id"], mark)
    assert sent["plain"] == f"{title}\n{message}", sent["plain"]
    assert sent["entities"] == [bold(0, len(title))], sent["entities"]


def test_a_message_longer_than_4096_is_split_at_line_ends(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = "Long report"
    # 64 UTF-16 units a line (an emoji counts 2) but 34 characters: counted in characters
    # the whole text would seem to fit one message.
    lines = [f"{i:03d} " + "\U0001F600" * 30 for i in range(100)]
    message = "\n".join(lines)
    assert len(message) < TEXT_LIMIT < utf16_len(message)
    put(analyst, "long.py", notify_script(title, message))
    mark = last_message_id(tg, analyst.chat["id"])
    report = analyst.run("long.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    parts = after(tg, analyst.chat["id"], mark)
    assert len(parts) >= 2, [utf16_len(p["plain"]) for p in parts]
    assert all(p["method"] == "sendMessage" for p in parts), parts
    assert all(utf16_len(p["plain"]) <= TEXT_LIMIT for p in parts)
    assert "\n".join(p["plain"] for p in parts) == f"{title}\n{message}"
    whole_lines = set(lines) | {title}
    for p in parts:
        assert set(p["plain"].split("\n")) <= whole_lines, "a part was cut inside a line"
    assert bold(0, len(title)) in parts[0]["entities"], parts[0]["entities"]


def test_an_image_is_sent_as_a_photo_with_the_text_as_caption(srv, tg, analyst):
    analyst.link_telegram(tg)
    title, message = "Sales chart", "Week 12: *up* 4%"
    put(analyst, "chart.py", image_script({"notify": True, "title": title, "message": message,
                                           "cooldown": "6h"}, 64, 48))
    mark = last_message_id(tg, analyst.chat["id"])
    report = analyst.run("chart.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    [photo] = after(tg, analyst.chat["id"], mark)
    assert photo["method"] == "sendPhoto", photo
    assert photo["caption"] == f"*{title}*\n{message}", photo["caption"]
    assert photo["parse_mode"] == "Markdown", photo
    assert photo["plain"] == f"{title}\nWeek 12: up 4%", photo["plain"]
    assert bold(0, len(title)) in photo["entities"], photo["entities"]
    assert image_info(photo["photo"]) == ("png", 64, 48)
    width, height, raw = png_pixels(photo["photo"])
    assert (width, height, raw) == png_pixels(expected_png(64, 48))
    # The portal keeps the same image.
    note = report["notification"]
    r = analyst.http.get(srv.url(f"/api/v1/notify/notifications/{note['id']}/image"), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.content == photo["photo"]


def test_a_long_caption_is_cut_at_a_word_end_and_the_whole_text_follows(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = "Chart with notes"
    words = ["alpha", "beta", "gamma\U0001F4C8", "delta"]
    message = " ".join(words[i % 4] + str(i) for i in range(300))
    assert utf16_len(message) > CAPTION_LIMIT
    put(analyst, "notes.py", image_script({"notify": True, "title": title, "message": message,
                                           "cooldown": "6h"}, 40, 30))
    mark = last_message_id(tg, analyst.chat["id"])
    report = analyst.run("notes.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    sent = after(tg, analyst.chat["id"], mark)
    assert sent and sent[0]["method"] == "sendPhoto", [m["method"] for m in sent]
    whole = f"{title}\n{message}"
    caption = sent[0]["plain"]
    assert utf16_len(caption) <= CAPTION_LIMIT, utf16_len(caption)
    assert caption.endswith("…"), caption[-40:]
    shown = caption[:-1].rstrip()
    assert whole.startswith(shown), "the caption is not the start of the text"
    assert whole[len(shown)] in " \n", f"cut inside a word: ...{shown[-20:]!r} + {whole[len(shown):len(shown) + 10]!r}"
    assert bold(0, len(title)) in sent[0]["entities"], sent[0]["entities"]
    rest = sent[1:]
    assert rest and all(m["method"] == "sendMessage" for m in rest), [m["method"] for m in rest]
    assert all(utf16_len(m["plain"]) <= TEXT_LIMIT for m in rest)
    assert "\n".join(m["plain"] for m in rest) == whole


# ---------------------------------------------------------------------------------------------
# Rate limits and outages


def test_a_short_rate_limit_is_waited_out(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = f"Throttled {uuid.uuid4().hex[:6]}"
    put(analyst, "throttled.py", notify_script(title, "arrives anyway"))
    tg.fail_next(1, "sendMessage", 429, retry_after=1)
    report = analyst.run("throttled.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and title in m["plain"], timeout=10)
    log = [e for e in send_log(tg, "sendMessage", analyst.chat["id"]) if title in e["params"].get("text", "")]
    assert [e["status"] for e in log] == [429, 200], log
    assert log[1]["time"] - log[0]["time"] >= 0.9, "retry_after was not waited for"


def test_a_long_rate_limit_fails_the_delivery_and_the_schedule_retries(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = f"Long wait {uuid.uuid4().hex[:6]}"
    put(analyst, "patient.py", notify_script(title, "comes later"))
    tg.fail_next(1, "sendMessage", 429, retry_after=120)
    report = analyst.run("patient.py")
    run = report["run"]
    assert run["outcome"] == "delivery_failed", run
    assert channels(run)["telegram"]["ok"] is False, run["deliveries"]
    assert BOT_TOKEN not in json.dumps(run)
    assert [n["id"] for n in analyst.inbox()] == [report["notification"]["id"]]
    assert telegram_state(analyst)["link"]["chat_id"] == analyst.chat["id"], "a rate limit unlinked"

    assert run_job(srv)["outcome"] == "ok"
    latest = finished_runs(analyst, "patient.py", 2)[0]
    assert latest["trigger"] == "schedule" and latest["outcome"] == "sent", latest
    tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and title in m["plain"], timeout=10)


def test_server_errors_are_retried(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = f"Bumpy {uuid.uuid4().hex[:6]}"
    put(analyst, "bumpy.py", notify_script(title, "through 502s"))
    tg.fail_next(2, "sendMessage", 502)
    report = analyst.run("bumpy.py")
    assert report["run"]["outcome"] == "sent", report["run"]
    tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and title in m["plain"], timeout=10)
    log = [e for e in send_log(tg, "sendMessage", analyst.chat["id"]) if title in e["params"].get("text", "")]
    assert [e["status"] for e in log] == [502, 502, 200], log


def test_telegram_down_fails_the_delivery_loses_nothing_and_the_schedule_retries(srv, tg, analyst):
    analyst.link_telegram(tg)
    title = f"Outage {uuid.uuid4().hex[:6]}"
    put(analyst, "outage.py", notify_script(title, "kept in the portal"))
    tg.down()
    try:
        report = analyst.run("outage.py")
    finally:
        tg.up()
    run = report["run"]
    assert run["outcome"] == "delivery_failed", run
    assert channels(run)["portal"]["ok"] is True and channels(run)["telegram"]["ok"] is False, run
    assert BOT_TOKEN not in json.dumps(run)
    [stored] = analyst.inbox()
    assert stored["id"] == report["notification"]["id"] and stored["title"] == title, stored
    assert telegram_state(analyst)["link"]["chat_id"] == analyst.chat["id"], "an outage unlinked"

    assert run_job(srv)["outcome"] == "ok"
    latest = finished_runs(analyst, "outage.py", 2)[0]
    assert latest["trigger"] == "schedule" and latest["outcome"] == "sent", latest
    tg.wait_for_sent(lambda m: m["chat_id"] == analyst.chat["id"] and title in m["plain"], timeout=10)
    # The bot answers again after the outage.
    assert analyst.name in say(tg, analyst.chat, "/status", timeout=60)["plain"]


# ---------------------------------------------------------------------------------------------
# Blocked and deleted chats


@pytest.mark.parametrize("gone, reason", [
    ("block", "the bot was blocked in Telegram"),
    ("delete_chat", "the Telegram chat no longer exists"),
])
def test_a_chat_that_cannot_receive_is_unlinked(srv, tg, analyst, gone, reason):
    analyst.link_telegram(tg)
    put(analyst, "gone.py", notify_script("To a gone chat", "still in the portal"))
    getattr(tg, gone)(analyst.chat["id"])
    first = analyst.run("gone.py")["run"]
    assert first["outcome"] == "delivery_failed", first
    link = telegram_state(analyst)["link"]
    assert link["chat_id"] is None, link
    assert link["unlinked_reason"] == reason, link

    second = analyst.run("gone.py")["run"]
    assert second["outcome"] == "sent", second
    assert channels(second)["portal"]["ok"] is True, second["deliveries"]
    assert "telegram" not in channels(second), second["deliveries"]
    assert len(analyst.inbox()) == 2


# ---------------------------------------------------------------------------------------------
# The token, and a restart


def test_the_bot_token_never_appears_in_the_log(srv, tg):
    # Run after the failure tests above: the log holds Telegram's errors by now.
    log = srv.stderr_path.read_text(errors="replace") + srv.stdout_path.read_text(errors="replace")
    assert "Telegram" in log, "the server's log shows no Telegram activity at all"
    secret = BOT_TOKEN.split(":", 1)[1]
    assert BOT_TOKEN not in log and secret not in log, "the bot token is in the server's log"


def test_after_a_restart_earlier_updates_are_not_answered_again(srv, tg):
    user = new_user(tg, "Rita")
    chat = user["id"]

    def answers() -> list[dict]:
        return [m for m in tg.sent(chat) if "not linked" in m["plain"].lower()]

    # The bot's answer meets a short rate limit: while the bot waits it out, every later poll
    # is made to fail, so Telegram (the double) still holds the update when the server stops;
    # only the offset the server kept can skip it after the restart.
    tg.fail_next(1, "sendMessage", 429, retry_after=3)
    update = tg.user_sends(user, "/status")
    try:
        wait_for(lambda: [e for e in send_log(tg, "sendMessage", chat) if e["status"] == 429],
                 timeout=REPLY_TIMEOUT, interval=0.05, what="the bot's rate-limited answer")
        tg.fail_always("getUpdates", 502)
        tg.wait_for_sent(lambda m: m["chat_id"] == chat, timeout=REPLY_TIMEOUT)
        srv.stop()
        pending = [u["update_id"] for u in tg.pending_updates]
        assert update["update_id"] in pending, "precondition: the double no longer holds the update"
    finally:
        tg.clear_failures()
    assert len(answers()) == 1
    restarted = time.time()
    srv.start()

    def polled():
        return [e for e in tg.requests_log if (e["method"] or "").lower() == "getupdates"
                and e["time"] > restarted and e["status"] == 200]
    wait_for(lambda: len(polled()) >= 2, timeout=30, what="the restarted server's polls")
    time.sleep(1)
    assert len(answers()) == 1, "the /status sent before the restart was answered again"

    say(tg, user, "/status", timeout=30)
    assert len(answers()) == 2
    log = srv.stderr_path.read_text(errors="replace")
    assert BOT_TOKEN.split(":", 1)[1] not in log
