"""Fast tests of the Telegram Bot API test double itself (no Dataport server involved)."""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib

import pytest
import requests

from telegram_double import (CAPTION_LIMIT, TEXT_LIMIT, TelegramDouble, bot_command_entities,
                             html_text_length, image_info, parse_text)

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.fixture
def tg():
    with TelegramDouble(TOKEN) as double:
        yield double


def api(tg: TelegramDouble, method: str, http_timeout: float = 5,
        **params) -> requests.Response:
    """POST `params` as a JSON body."""
    return requests.post(tg.method_url(method), json=params, timeout=http_timeout)


def form(tg: TelegramDouble, method: str, files=None, **params) -> requests.Response:
    """POST `params` form-encoded (multipart when `files`), objects serialized as JSON."""
    data = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in params.items()}
    return requests.post(tg.method_url(method), data=data, files=files, timeout=5)


def error(r: requests.Response, code: int) -> str:
    assert r.status_code == code, r.text
    body = r.json()
    assert body["ok"] is False and body["error_code"] == code
    return body["description"]


def png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


RUN_KEYBOARD = {"inline_keyboard": [[{"text": "Run again", "callback_data": "run:revenue.py"},
                                     {"text": "Open", "url": "https://example.com/portal"}]]}


# -- basics ---------------------------------------------------------------------------------


def test_get_me_over_get_post_json_and_form(tg):
    r = requests.get(tg.method_url("getMe"), timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    me = r.json()["result"]
    assert r.json()["ok"] is True
    assert me["id"] == 123456789 and me["is_bot"] is True
    assert me["username"] == "dataport_test_bot"
    assert api(tg, "getMe").json()["result"] == me
    assert form(tg, "getme").json()["result"] == me  # method names are case-insensitive
    assert requests.get(tg.method_url("GETME"), timeout=5).json()["result"] == me


def test_wrong_token_and_unknown_method(tg):
    r = requests.get(f"{tg.base_url}/bot123456789:wrong/getMe", timeout=5)
    assert r.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert r.status_code == 401
    bad = requests.get(f"{tg.base_url}/botnonsense/getMe", timeout=5)
    assert error(bad, 401) == "Unauthorized: invalid token specified"
    r = api(tg, "sendCarrierPigeon", chat_id=1)
    assert r.status_code == 404
    assert r.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert error(requests.get(f"{tg.base_url}/getMe", timeout=5), 404) == "Not Found"
    log = tg.requests_log
    assert [e["token_ok"] for e in log] == [False, False, True, False]
    assert tg.count("sendcarrierpigeon") == 1 and tg.count("getMe") == 2


# -- updates --------------------------------------------------------------------------------


def test_long_poll_returns_as_soon_as_a_user_sends(tg):
    ana = tg.add_user("Ana", username="ana_n")
    threading.Timer(0.3, tg.user_sends, args=(ana, "/start")).start()
    started = time.monotonic()
    r = api(tg, "getUpdates", http_timeout=10, offset=0, timeout=5)
    elapsed = time.monotonic() - started
    updates = r.json()["result"]
    assert 0.25 <= elapsed < 2, elapsed
    assert len(updates) == 1 and updates[0]["message"]["text"] == "/start"


def test_long_poll_returns_nothing_after_the_timeout(tg):
    started = time.monotonic()
    r = requests.get(tg.method_url("getUpdates"), params={"timeout": 1}, timeout=5)
    elapsed = time.monotonic() - started
    assert r.json() == {"ok": True, "result": []}
    assert 0.9 <= elapsed < 3, elapsed


def test_offsets_confirm_updates_and_limit_caps(tg):
    bob = tg.add_user("Bob")
    made = [tg.user_sends(bob, f"hello {i}")["update_id"] for i in range(3)]
    assert made == [made[0], made[0] + 1, made[0] + 2]  # monotonic
    first = api(tg, "getUpdates", limit=2).json()["result"]
    assert [u["update_id"] for u in first] == made[:2]
    again = api(tg, "getUpdates").json()["result"]  # nothing confirmed yet
    assert [u["update_id"] for u in again] == made
    rest = api(tg, "getUpdates", offset=made[1]).json()["result"]
    assert [u["update_id"] for u in rest] == made[1:]
    assert [u["update_id"] for u in tg.pending_updates] == made[1:]
    assert api(tg, "getUpdates", offset=made[2] + 1).json()["result"] == []
    assert tg.pending_updates == []
    later = [tg.user_sends(bob, f"again {i}")["update_id"] for i in range(3)]
    assert later[0] > made[2]
    last = api(tg, "getUpdates", offset=-1).json()["result"]  # forget all but the last
    assert [u["update_id"] for u in last] == later[2:]
    assert len(tg.updates) == 6


def test_user_messages_carry_bot_command_entities(tg):
    ana = tg.add_user("Ana", username="ana_n", last_name="Novak")
    assert ana["id"] > 2 ** 32  # as real Telegram ids: no 32-bit columns
    update = tg.user_sends(ana, "/start")
    msg = update["message"]
    assert msg["from"] == ana and msg["chat"]["id"] == ana["id"]
    assert msg["chat"]["type"] == "private" and msg["chat"]["username"] == "ana_n"
    assert msg["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]
    status = tg.user_sends(ana, "/status@dataport_test_bot")["message"]
    assert status["entities"] == [{"offset": 0, "length": 25, "type": "bot_command"}]
    assert status["message_id"] == msg["message_id"] + 1
    test = tg.user_sends(ana, "please /test now")["message"]
    assert test["entities"] == [{"offset": 7, "length": 5, "type": "bot_command"}]
    assert "entities" not in tg.user_sends(ana, "123456")["message"]
    assert bot_command_entities("😀 /scripts") == [{"offset": 3, "length": 8,
                                                    "type": "bot_command"}]
    assert bot_command_entities("and/or a/b /x@ab </y>") == []


# -- sendMessage ----------------------------------------------------------------------------


def test_send_message_in_every_encoding(tg):
    ana = tg.add_user("Ana")
    assert api(tg, "sendMessage", chat_id=ana["id"], text="json").status_code == 200
    assert form(tg, "sendMessage", chat_id=ana["id"], text="form").status_code == 200
    r = requests.get(tg.method_url("sendMessage"), params={"chat_id": ana["id"], "text": "get"},
                     timeout=5)
    assert r.status_code == 200
    r = requests.post(tg.method_url("sendMessage"), timeout=5,
                      files={"chat_id": (None, str(ana["id"])), "text": (None, "multipart")})
    assert r.status_code == 200
    msg = r.json()["result"]
    assert msg["chat"]["id"] == ana["id"] and msg["from"]["is_bot"] is True
    assert msg["text"] == "multipart"
    sent = tg.sent(ana["id"])
    assert [s["plain"] for s in sent] == ["json", "form", "get", "multipart"]
    assert [s["message_id"] for s in sent] == [1, 2, 3, 4]
    assert {s["method"] for s in sent} == {"sendMessage"}
    assert tg.sent(chat_id=1) == []


def test_send_message_limits(tg):
    ana = tg.add_user("Ana")
    send = (lambda text, **kw: api(tg, "sendMessage", chat_id=ana["id"], text=text, **kw))
    assert error(send(""), 400) == "Bad Request: message text is empty"
    assert error(send(" \n\n "), 400) == "Bad Request: message text is empty"
    assert error(send("<b> </b>", parse_mode="HTML"), 400) == "Bad Request: message text is empty"
    assert send("a" * TEXT_LIMIT).status_code == 200
    assert error(send("a" * (TEXT_LIMIT + 1)), 400) == "Bad Request: message is too long"
    # Tags and entities do not count; trailing newlines are trimmed.
    padded = "<b>" + "&amp;" * 10 + "</b>" + "x" * (TEXT_LIMIT - 10) + "\n\n"
    assert html_text_length(padded) == TEXT_LIMIT
    assert send(padded, parse_mode="HTML").status_code == 200
    assert error(send(padded + "<i>y</i>", parse_mode="HTML"), 400) == \
        "Bad Request: message is too long"
    assert tg.sent()[-1]["plain"] == "&" * 10 + "x" * (TEXT_LIMIT - 10)


def test_length_is_counted_in_utf16_units(tg):
    ana = tg.add_user("Ana")
    send = (lambda text: api(tg, "sendMessage", chat_id=ana["id"], text=text))
    cyrillic = "д" * TEXT_LIMIT  # 8192 bytes of UTF-8, 4096 UTF-16 units
    assert len(cyrillic.encode()) == 2 * TEXT_LIMIT
    assert send(cyrillic).status_code == 200
    assert error(send(cyrillic + "д"), 400) == "Bad Request: message is too long"
    emoji = "😀" * (TEXT_LIMIT // 2)  # 2048 characters, 4096 UTF-16 units
    assert send(emoji).status_code == 200
    assert error(send(emoji + "😀"), 400) == "Bad Request: message is too long"
    assert html_text_length("😀") == 2 and html_text_length("<b>д</b>&amp;&#128512;") == 4
    assert html_text_length("a\r\nb") == 3  # Telegram drops "\r"


def test_html_validation(tg):
    ana = tg.add_user("Ana")
    send = (lambda text: api(tg, "sendMessage", chat_id=ana["id"], text=text, parse_mode="HTML"))
    valid = ('<b>Revenue <i>dropped <u>25%</u></i></b> &lt;vs&gt; plan &amp; '
             '<a href="https://example.com/?a=1&amp;b=2">chart</a> '
             '<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler> '
             '<s>x</s><strike>y</strike><del>z</del><ins>w</ins><em>e</em><strong>g</strong>'
             '<code>c</code> <pre><code class="language-python">print(1)</code></pre>'
             '<blockquote>quoted</blockquote> &quot;done&quot; &#39;ok&#x27;')
    r = send(valid)
    assert r.status_code == 200, r.text
    msg = r.json()["result"]
    assert msg["text"].startswith("Revenue dropped 25% <vs> plan & chart s")
    assert msg["text"].endswith('quoted "done" \'ok\'')
    types = [e["type"] for e in msg["entities"]]
    for kind in ("bold", "italic", "underline", "text_link", "spoiler", "strikethrough", "code",
                 "pre", "blockquote"):
        assert kind in types
    link = next(e for e in msg["entities"] if e["type"] == "text_link")
    assert link["url"] == "https://example.com/?a=1&b=2"
    assert next(e for e in msg["entities"] if e["type"] == "pre")["language"] == "python"
    prefix = "Bad Request: can't parse entities: "
    for text, reason in [
            ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
            ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", '
                                'found "</b>"'),
            ("x</b>", "Unexpected end tag at byte offset 1"),
            ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
            ("line<br>break", 'Unsupported start tag "br" at byte offset 4'),
            ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
            ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
            ("д <3 you", 'Unsupported start tag "3" at byte offset 3'),  # byte offsets
            ("end <3", "Unclosed start tag at byte offset 4"),
            ("R&D", "Character '&' at byte offset 1 must be escaped"),
            ("a > b", "Character '>' at byte offset 2 must be escaped")]:
        description = error(send(text), 400)
        assert description.startswith(prefix + reason), (text, description)
    tg.strict_html = False  # Telegram itself takes a bare & and > literally
    assert send("R&D > ops").json()["result"]["text"] == "R&D > ops"


def test_markdown_modes(tg):
    ana = tg.add_user("Ana")
    send = (lambda text, mode: api(tg, "sendMessage", chat_id=ana["id"], text=text,
                                   parse_mode=mode))
    msg = send("*Revenue dropped 25%*\nDetails in [the portal](https://example.com)",
               "Markdown").json()["result"]
    assert msg["text"] == "Revenue dropped 25%\nDetails in the portal"
    assert msg["entities"] == [
        {"offset": 0, "length": 19, "type": "bold"},
        {"offset": 31, "length": 10, "type": "text_link", "url": "https://example.com"}]
    assert error(send("*Title*\nproduct_a fell", "Markdown"), 400) == (
        "Bad Request: can't parse entities: Can't find end of the entity starting at byte "
        "offset 15")
    assert send("*Title*\nproduct\\_a fell", "Markdown").json()["result"]["text"] == \
        "Title\nproduct_a fell"
    assert error(send("*Down 2.5%*", "MarkdownV2"), 400) == (
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with "
        "the preceding '\\'")
    assert send("*Down 2\\.5%*", "MarkdownV2").json()["result"]["text"] == "Down 2.5%"
    assert error(send("x", "Markdown3"), 400) == "Bad Request: unsupported parse_mode"
    assert parse_text(">a\n>b\nc", "MarkdownV2")[1] == [
        {"offset": 0, "length": 4, "type": "blockquote"}]


# -- inline keyboards and callback queries --------------------------------------------------


def test_inline_buttons_and_callback_queries(tg):
    ana = tg.add_user("Ana")
    r = form(tg, "sendMessage", chat_id=ana["id"], text="Revenue dropped",
             reply_markup=RUN_KEYBOARD)
    msg = r.json()["result"]
    assert msg["reply_markup"] == RUN_KEYBOARD
    assert tg.sent()[0]["reply_markup"] == RUN_KEYBOARD
    with pytest.raises(ValueError):
        tg.user_presses(ana, msg["message_id"], "run:other.py")
    with pytest.raises(ValueError):
        tg.user_presses(ana, msg["message_id"] + 1, "run:revenue.py")
    query_id = tg.user_presses(ana, msg["message_id"], "run:revenue.py")
    update = api(tg, "getUpdates").json()["result"][-1]
    query = update["callback_query"]
    assert query["id"] == query_id and query["data"] == "run:revenue.py"
    assert query["from"]["id"] == ana["id"]
    assert query["message"]["message_id"] == msg["message_id"]
    assert isinstance(query["chat_instance"], str)
    too_long = api(tg, "answerCallbackQuery", callback_query_id=query_id, text="x" * 201)
    assert error(too_long, 400) == "Bad Request: MESSAGE_TOO_LONG"
    r = api(tg, "answerCallbackQuery", callback_query_id=query_id, text="Running revenue.py")
    assert r.json() == {"ok": True, "result": True}
    invalid = ("Bad Request: query is too old and response timeout expired or query ID is "
               "invalid")
    assert error(api(tg, "answerCallbackQuery", callback_query_id=query_id), 400) == invalid
    assert error(api(tg, "answerCallbackQuery", callback_query_id="42"), 400) == invalid
    answers = tg.answered_callbacks
    assert len(answers) == 1 and answers[0]["text"] == "Running revenue.py"
    assert answers[0]["data"] == "run:revenue.py" and answers[0]["show_alert"] is False
    assert tg.wait_for_answer(query_id, timeout=0.1)["callback_query_id"] == query_id
    long_data = {"inline_keyboard": [[{"text": "Run", "callback_data": "run:" + "x" * 61}]]}
    r = api(tg, "sendMessage", chat_id=ana["id"], text="t", reply_markup=long_data)
    assert error(r, 400) == "Bad Request: BUTTON_DATA_INVALID"  # 65 bytes
    text_only = {"inline_keyboard": [[{"text": "Run"}]]}
    r = api(tg, "sendMessage", chat_id=ana["id"], text="t", reply_markup=text_only)
    assert "Text buttons are unallowed" in error(r, 400)


def test_edit_message_text(tg):
    ana = tg.add_user("Ana")
    msg = api(tg, "sendMessage", chat_id=ana["id"], text="Running…",
              reply_markup=RUN_KEYBOARD).json()["result"]
    same = api(tg, "editMessageText", chat_id=ana["id"], message_id=msg["message_id"],
               text="Running…", reply_markup=RUN_KEYBOARD)
    assert error(same, 400).startswith("Bad Request: message is not modified")
    r = api(tg, "editMessageText", chat_id=ana["id"], message_id=msg["message_id"],
            text="<b>Done</b>", parse_mode="HTML")
    edited = r.json()["result"]
    assert edited["text"] == "Done" and "edit_date" in edited
    assert "reply_markup" not in tg.message(ana["id"], msg["message_id"])  # keyboard dropped
    with pytest.raises(ValueError):
        tg.user_presses(ana, msg["message_id"], "run:revenue.py")
    assert [s["method"] for s in tg.sent()] == ["sendMessage", "editMessageText"]
    missing = api(tg, "editMessageText", chat_id=ana["id"], message_id=99, text="x")
    assert error(missing, 400) == "Bad Request: message to edit not found"


# -- sendPhoto ------------------------------------------------------------------------------


def test_send_photo_multipart_and_caption_limit(tg):
    ana = tg.add_user("Ana")
    image = png(640, 480)
    assert image_info(image) == ("png", 640, 480)
    caption = "д" * CAPTION_LIMIT
    r = form(tg, "sendPhoto", chat_id=ana["id"], caption=caption,
             files={"photo": ("chart.png", image, "image/png")})
    assert r.status_code == 200, r.text
    msg = r.json()["result"]
    assert msg["caption"] == caption
    assert msg["photo"][-1]["width"] == 640 and msg["photo"][-1]["height"] == 480
    record = tg.sent(ana["id"])[0]
    assert record["method"] == "sendPhoto" and record["photo"] == image
    assert record["photo_content_type"] == "image/png" and record["photo_filename"] == "chart.png"
    assert record["caption"] == caption and record["text"] is None
    over = form(tg, "sendPhoto", chat_id=ana["id"], caption=caption + "!",
                files={"photo": ("chart.png", image, "image/png")})
    assert error(over, 400) == "Bad Request: message caption is too long"
    bold_over = "<b>" + "x" * CAPTION_LIMIT + "</b>"  # tags don't count, the letters do
    over = form(tg, "sendPhoto", chat_id=ana["id"], caption=bold_over, parse_mode="HTML",
                files={"photo": ("chart.png", image, "image/png")})
    assert r.status_code == 200 and over.status_code == 200
    over = form(tg, "sendPhoto", chat_id=ana["id"], caption=bold_over + "!", parse_mode="HTML",
                files={"photo": ("chart.png", image, "image/png")})
    assert error(over, 400) == "Bad Request: message caption is too long"
    again = api(tg, "sendPhoto", chat_id=ana["id"], photo=msg["photo"][-1]["file_id"])
    assert again.status_code == 200 and tg.sent()[-1]["photo"] == image
    assert "caption" not in again.json()["result"]
    by_url = api(tg, "sendPhoto", chat_id=ana["id"], photo="https://example.com/chart.png")
    assert by_url.status_code == 200 and tg.sent()[-1]["photo_ref"].startswith("https://")
    assert error(api(tg, "sendPhoto", chat_id=ana["id"]), 400) == \
        "Bad Request: there is no photo in the request"
    assert error(api(tg, "sendPhoto", chat_id=ana["id"], photo="nonsense"), 400) == \
        "Bad Request: wrong file identifier/HTTP URL specified"
    not_image = form(tg, "sendPhoto", chat_id=ana["id"],
                     files={"photo": ("chart.png", b"not an image", "image/png")})
    assert error(not_image, 400) == "Bad Request: IMAGE_PROCESS_FAILED"


# -- chats ----------------------------------------------------------------------------------


def test_blocked_deleted_unknown_and_unstarted_chats(tg):
    ana = tg.add_user("Ana")
    send = (lambda chat_id: api(tg, "sendMessage", chat_id=chat_id, text="hi"))
    tg.block(ana["id"])
    assert error(send(ana["id"]), 403) == "Forbidden: bot was blocked by the user"
    tg.unblock(ana["id"])
    assert send(ana["id"]).status_code == 200
    tg.block(ana["id"])
    tg.user_sends(ana, "/start")  # writing to the bot again unblocks it
    assert send(ana["id"]).status_code == 200
    tg.delete_chat(ana["id"])
    assert error(send(ana["id"]), 400) == "Bad Request: chat not found"
    with pytest.raises(ValueError):
        tg.user_sends(ana, "hello?")
    assert error(send(555), 400) == "Bad Request: chat not found"
    assert error(send("@somebody"), 400) == "Bad Request: chat not found"
    assert error(api(tg, "sendMessage", text="hi"), 400) == "Bad Request: chat_id is empty"
    bob = tg.add_user("Bob", started=False)
    assert error(send(bob["id"]), 403) == "Forbidden: bot can't initiate conversation with a user"
    tg.user_sends(bob, "/start")
    assert send(str(bob["id"])).status_code == 200  # chat ids may come as strings


# -- failure injection ----------------------------------------------------------------------


def test_failure_injection(tg):
    ana = tg.add_user("Ana")
    tg.fail_next(2, "sendMessage", 429, retry_after=3)
    assert api(tg, "getMe").status_code == 200  # other methods are unaffected
    for _ in range(2):
        r = api(tg, "sendMessage", chat_id=ana["id"], text="hi")
        assert r.json() == {"ok": False, "error_code": 429,
                            "description": "Too Many Requests: retry after 3",
                            "parameters": {"retry_after": 3}}
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert api(tg, "sendMessage", chat_id=ana["id"], text="hi").status_code == 200
    assert len(tg.sent()) == 1 and tg.count("sendMessage") == 3
    tg.fail_next(error_code=400, description="Bad Request: chat not found")
    assert error(api(tg, "getMe"), 400) == "Bad Request: chat not found"
    tg.fail_always("getMe", 500)
    assert error(api(tg, "getMe"), 500) == "Internal Server Error"
    assert error(api(tg, "getMe"), 500) == "Internal Server Error"
    tg.clear_failures()
    assert api(tg, "getMe").status_code == 200
    tg.down()
    r = api(tg, "getMe")
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html"
    assert "502 Bad Gateway" in r.text
    tg.up()
    assert api(tg, "getMe").status_code == 200
    tg.delay(0.3)
    started = time.monotonic()
    assert api(tg, "getMe").status_code == 200
    assert time.monotonic() - started >= 0.3
    tg.delay(0)


def test_concurrent_polls_conflict_and_webhooks(tg):
    results = {}

    def poll():
        results["first"] = api(tg, "getUpdates", http_timeout=10, timeout=5)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    assert api(tg, "getUpdates").json()["result"] == []
    thread.join(3)
    assert error(results["first"], 409).startswith("Conflict: terminated by other getUpdates")
    tg.set_webhook("https://old.example.com/hook")
    assert error(api(tg, "getUpdates"), 409).startswith("Conflict: can't use getUpdates method "
                                                        "while webhook is active")
    r = api(tg, "deleteWebhook", drop_pending_updates=True)
    assert r.json() == {"ok": True, "result": True, "description": "Webhook was deleted"}
    assert api(tg, "deleteWebhook").json()["description"] == "Webhook is already deleted"
    assert api(tg, "getUpdates").json()["result"] == []


def test_set_my_commands(tg):
    commands = [{"command": "start", "description": "Link this chat"},
                {"command": "status", "description": "Show status"},
                {"command": "scripts", "description": "List scripts"}]
    assert form(tg, "setMyCommands", commands=commands).json() == {"ok": True, "result": True}
    assert tg.my_commands() == commands
    assert api(tg, "getMyCommands").json()["result"] == commands
    bad = api(tg, "setMyCommands", commands=[{"command": "Run!", "description": "x"}])
    assert error(bad, 400) == "Bad Request: BOT_COMMAND_INVALID"


def test_wait_for_sent_and_the_request_log(tg):
    ana = tg.add_user("Ana")
    threading.Timer(0.2, api, args=(tg, "sendMessage"),
                    kwargs={"chat_id": ana["id"], "text": "Your code is 123456"}).start()
    record = tg.wait_for_sent(lambda m: "code" in m["plain"], timeout=5)
    assert record["chat_id"] == ana["id"] and record["text"] == "Your code is 123456"
    with pytest.raises(TimeoutError):
        tg.wait_for_sent(lambda m: m["chat_id"] == 1, timeout=0.2)
    entry = tg.requests_log[-1]
    assert entry["method"] == "sendMessage" and entry["status"] == 200
    assert entry["params"]["text"] == "Your code is 123456" and entry["http_method"] == "POST"


def test_stop_hangs_up_a_pending_long_poll():
    tg = TelegramDouble(TOKEN).start()
    outcome = {}

    def poll():
        try:
            outcome["response"] = api(tg, "getUpdates", http_timeout=10, timeout=5)
        except requests.ConnectionError as e:
            outcome["error"] = e

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    tg.stop()
    thread.join(3)
    assert "error" in outcome and not thread.is_alive()
