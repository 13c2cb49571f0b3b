"""Fast tests of the Anthropic-Messages test double itself (no Dataport server involved)."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
import requests

from llm_double import (API_VERSION, MALFORMED_REPLY, LlmDouble, count_input_tokens,
                        error_body, estimate_tokens)

KEY = "sk-ant-test-0123456789"
MODEL = "claude-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": API_VERSION,
           "content-type": "application/json"}


@pytest.fixture
def llm():
    with LlmDouble(api_key=KEY, models=[MODEL, "claude-other"]) as double:
        yield double


def body(**overrides: Any) -> dict:
    """A valid request body, with fields replaced (a value of ... removes the field)."""
    base: dict[str, Any] = {"model": MODEL, "max_tokens": 1024,
                            "messages": [{"role": "user", "content": "Extract the items."}]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def post(llm: LlmDouble, payload: Any = None, headers: dict | None = None,
         timeout: float = 5, data: bytes | None = None) -> requests.Response:
    if data is None:
        data = json.dumps(body() if payload is None else payload).encode()
    return requests.post(llm.messages_url, data=data,
                         headers=HEADERS if headers is None else headers, timeout=timeout)


def assert_error(r: requests.Response, status: int, error_type: str,
                 message: str | None = None) -> None:
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["type"] == "error" and set(payload) == {"type", "error"}
    assert set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == error_type
    if message is not None:
        assert payload["error"]["message"] == message


def test_success_shape(llm):
    llm.reply_with("Hello, analyst.")
    r = post(llm, body(system="You extract knowledge.", temperature=0.2,
                       metadata={"user_id": "collector"}, stop_sequences=["END"], stream=False))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    msg = r.json()
    assert set(msg) == {"id", "type", "role", "model", "content", "stop_reason",
                        "stop_sequence", "usage"}
    assert re.fullmatch(r"msg_01[A-Za-z0-9]{22}", msg["id"])
    assert (msg["type"], msg["role"], msg["model"]) == ("message", "assistant", MODEL)
    assert msg["content"] == [{"type": "text", "text": "Hello, analyst."}]
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("end_turn", None)
    assert msg["usage"] == {"input_tokens": estimate_tokens("You extract knowledge.")
                            + estimate_tokens("Extract the items."),
                            "output_tokens": estimate_tokens("Hello, analyst.")}
    assert r.headers["request-id"].startswith("req_")
    assert r.headers["anthropic-ratelimit-requests-remaining"].isdigit()
    assert post(llm).json()["id"] != msg["id"]
    assert post(llm, body(model="claude-other")).json()["model"] == "claude-other"


def test_token_counting():
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 400)] == [0, 1, 1, 2, 100]
    request = body(system=[{"type": "text", "text": "abcdefgh"},
                           {"type": "text", "text": "ab", "cache_control": {"type": "ephemeral"}}],
                   messages=[{"role": "user", "content": "abcde"},
                             {"role": "assistant", "content": [{"type": "text", "text": "abc"}]},
                             {"role": "user", "content": [{"type": "text", "text": "a"},
                                                          {"type": "text", "text": "b"}]}])
    assert count_input_tokens(request) == 2 + 1 + 2 + 1 + 1 + 1


def test_max_tokens_truncates_the_reply(llm):
    items = [{"title": f"item {i}", "body": "x" * 40} for i in range(10)]
    full = json.dumps(items)
    llm.reply_json(items, n=2)
    msg = post(llm, body(max_tokens=20)).json()
    text = msg["content"][0]["text"]
    assert (msg["stop_reason"], msg["usage"]["output_tokens"]) == ("max_tokens", 20)
    assert text == full[:80]
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    exact = post(llm, body(max_tokens=estimate_tokens(full))).json()
    assert exact["stop_reason"] == "end_turn" and json.loads(exact["content"][0]["text"]) == items
    assert llm.last_request()["stop_reason"] == "end_turn"


def test_stop_sequences(llm):
    llm.reply_with("[1, 2]\n###\nmore text ### and more", n=2)
    msg = post(llm, body(stop_sequences=["and", "###"])).json()
    assert msg["content"][0]["text"] == "[1, 2]\n"
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "###")
    assert post(llm, body(stop_sequences=["never"])).json()["stop_reason"] == "end_turn"


INVALID = [
    (body(stream=True), 'stream: streaming is not supported by this double (a deliberate limit); '
                        'send "stream": false or leave it out'),
    (body(stream="yes"), "stream: Input should be a valid boolean"),
    (body(foo=1), "foo: Extra inputs are not permitted"),
    (body(tools=[]), "tools: not supported by this double (text messages only)"),
    (body(model=...), "model: Field required"),
    (body(messages=...), "messages: Field required"),
    (body(max_tokens=...), "max_tokens: Field required"),
    (body(model=7), "model: Input should be a valid string"),
    (body(max_tokens="100"), "max_tokens: Input should be a valid integer"),
    (body(max_tokens=1.5), "max_tokens: Input should be a valid integer"),
    (body(max_tokens=True), "max_tokens: Input should be a valid integer"),
    (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    (body(max_tokens=9000), "max_tokens: 9000 > 8192, which is the maximum allowed number of "
                            "output tokens for claude-test"),
    (body(messages="hi"), "messages: Input should be a valid list"),
    (body(messages=[]), "messages: at least one message is required"),
    (body(messages=["hi"]), "messages.0: Input should be a valid dictionary or object to extract "
                            "fields from"),
    (body(messages=[{"content": "hi"}]), "messages.0.role: Field required"),
    (body(messages=[{"role": "user"}]), "messages.0.content: Field required"),
    (body(messages=[{"role": "user", "content": "hi", "name": "x"}]),
     "messages.0.name: Extra inputs are not permitted"),
    (body(messages=[{"role": "system", "content": "hi"}]),
     "messages.0.role: Input should be 'user' or 'assistant'"),
    (body(messages=[{"role": "user", "content": 5}]),
     "messages.0.content: Input should be a valid string or a list of content blocks"),
    (body(messages=[{"role": "user", "content": [{"text": "hi"}]}]),
     "messages.0.content.0.type: Field required"),
    (body(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
     "messages.0.content.0.type: Input should be 'text' (this double supports text content "
     "blocks only, got 'image')"),
    (body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
     "messages.0.content.0.text: Field required"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
     "messages.0.content.0.text: Input should be a valid string"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]),
     "messages.0.content.0.x: Extra inputs are not permitted"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
     "messages: text content blocks must be non-empty"),
    (body(messages=[{"role": "user", "content": ""}]),
     "messages.0: all messages must have non-empty content except for the optional final "
     "assistant message"),
    (body(messages=[{"role": "user", "content": []}]),
     "messages.0: all messages must have non-empty content except for the optional final "
     "assistant message"),
    (body(messages=[{"role": "assistant", "content": "hi"}]),
     'messages: first message must use the "user" role'),
    (body(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
     'messages: roles must alternate between "user" and "assistant", but found multiple "user" '
     'roles in a row'),
    (body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "["},
                    {"role": "assistant", "content": "b"}]),
     'messages: roles must alternate between "user" and "assistant", but found multiple '
     '"assistant" roles in a row'),
    (body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "[\n"}]),
     "messages: final assistant content cannot end with trailing whitespace"),
    (body(system=3), "system: Input should be a valid string or a list of text blocks"),
    (body(system=[{"type": "image"}]), "system.0.type: Input should be 'text' (this double "
                                       "supports text system blocks only, got 'image')"),
    (body(system=[{"type": "text", "text": ""}]), "system: text content blocks must be non-empty"),
    (body(system=[{"type": "text", "text": "a", "cache_control": {"type": "forever"}}]),
     "system.0.cache_control.type: Input should be 'ephemeral'"),
    (body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
    (body(temperature=-0.1), "temperature: Input should be greater than or equal to 0"),
    (body(temperature="hot"), "temperature: Input should be a valid number"),
    (body(top_p=2), "top_p: Input should be less than or equal to 1"),
    (body(top_k=-1), "top_k: Input should be greater than or equal to 0"),
    (body(top_k=0.5), "top_k: Input should be a valid integer"),
    (body(stop_sequences="END"), "stop_sequences: Input should be a valid list"),
    (body(stop_sequences=["END", 3]), "stop_sequences.1: Input should be a valid string"),
    (body(stop_sequences=[" \n"]), "stop_sequences: each stop sequence must contain "
                                   "non-whitespace"),
    (body(metadata="x"), "metadata: Input should be a valid dictionary"),
    (body(metadata={"user": "x"}), "metadata.user: Extra inputs are not permitted"),
    (body(metadata={"user_id": 5}), "metadata.user_id: Input should be a valid string"),
    ([1, 2], "Input should be a valid dictionary or object to extract fields from"),
]


def test_every_validation_error(llm):
    llm.reply_with("queued")
    for payload, message in INVALID:
        r = post(llm, payload)
        assert_error(r, 400, "invalid_request_error", message)
    assert llm.count() == llm.count(status=400) == len(INVALID)
    assert llm.pending_replies == 1  # invalid requests consume no reply
    assert all(e["error_type"] == "invalid_request_error" and e["reply"] is None
               for e in llm.requests_log)


def test_valid_optional_fields(llm):
    ok = [body(temperature=0, top_p=1, top_k=5, metadata={"user_id": None}, max_tokens=8192.0),
          body(system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]),
          body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]),
          body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "["}]),
          body(stop_sequences=[])]
    for payload in ok:
        assert post(llm, payload).status_code == 200, payload
    llm.reply_with("x" * 100)
    msg = post(llm, body(max_tokens=3.0)).json()  # an integral float is an integer
    assert (msg["content"][0]["text"], msg["stop_reason"]) == ("x" * 12, "max_tokens")


def test_unknown_model_and_paths(llm):
    assert_error(post(llm, body(model="claude-nope")), 404, "not_found_error",
                 "model: claude-nope")
    r = requests.get(llm.messages_url, headers=HEADERS, timeout=5)
    assert_error(r, 404, "not_found_error", "Not found: GET /v1/messages")
    r = requests.post(llm.base_url + "/v1/message", json=body(), headers=HEADERS, timeout=5)
    assert_error(r, 404, "not_found_error", "Not found: POST /v1/message")
    r = requests.post(llm.messages_url + "?beta=true", json=body(), headers=HEADERS, timeout=5)
    assert r.status_code == 200


def test_body_encoding_errors(llm):
    assert_error(post(llm, data=b"{not json"), 400, "invalid_request_error",
                 "There was an issue with the request body: it is not valid JSON")
    assert_error(post(llm, data=b""), 400, "invalid_request_error",
                 "The request body is empty; expected a JSON object")
    plain = {**HEADERS, "content-type": "text/plain"}
    assert_error(post(llm, headers=plain), 400, "invalid_request_error",
                 "content-type: expected application/json, got text/plain")
    charset = {**HEADERS, "content-type": "application/json; charset=utf-8"}
    assert post(llm, headers=charset).status_code == 200
    llm.max_request_bytes = 100
    assert_error(post(llm, body(messages=[{"role": "user", "content": "x" * 200}])), 413,
                 "request_too_large", "Request exceeds the maximum allowed number of bytes.")


def test_auth_and_version(llm):
    no_key = {k: v for k, v in HEADERS.items() if k != "x-api-key"}
    assert_error(post(llm, headers=no_key), 401, "authentication_error",
                 "x-api-key header is required")
    r = post(llm, headers={**HEADERS, "x-api-key": "sk-ant-wrong"})
    assert r.status_code == 401
    assert r.json() == {"type": "error", "error": {"type": "authentication_error",
                                                   "message": "invalid x-api-key"}}
    bearer = {**no_key, "authorization": f"Bearer {KEY}"}
    assert_error(post(llm, headers=bearer), 401, "authentication_error")
    no_version = {k: v for k, v in HEADERS.items() if k != "anthropic-version"}
    assert_error(post(llm, headers=no_version), 400, "invalid_request_error",
                 "anthropic-version: header is required")
    assert_error(post(llm, headers={**HEADERS, "anthropic-version": "2020-01-01"}), 400,
                 "invalid_request_error",
                 "anthropic-version: unsupported version '2020-01-01'; this double supports "
                 "2023-06-01")
    assert post(llm).status_code == 200
    log = llm.requests_log
    assert [e["key_ok"] for e in log] == [False, False, False, True, True, True]
    assert [e["headers"].get("x-api-key") for e in log] == [None, "***", None, "***", "***",
                                                            "***"]
    assert log[2]["headers"]["authorization"] == "Bearer ***"
    assert KEY not in json.dumps(log)
    llm.api_key = "sk-ant-rotated"
    assert post(llm).status_code == 401


def test_rate_limit_with_retry_after(llm):
    llm.reply_with("after the limit")
    llm.fail_next(2, status=429, retry_after=7)
    for _ in range(2):
        r = post(llm)
        assert_error(r, 429, "rate_limit_error")
        assert r.headers["retry-after"] == "7"
        assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert r.headers["anthropic-ratelimit-tokens-remaining"] == "0"
        assert r.headers["anthropic-ratelimit-requests-limit"] == "50"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                            r.headers["anthropic-ratelimit-requests-reset"])
    r = post(llm)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "after the limit"
    llm.fail_next(status=429)
    assert post(llm).headers["retry-after"] == "1"  # the default
    assert [e["status"] for e in llm.requests_log] == [429, 429, 200, 429]


@pytest.mark.parametrize("status,error_type", [
    (500, "api_error"), (529, "overloaded_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (400, "invalid_request_error"),
    (401, "authentication_error"), (503, "api_error")])
def test_injected_errors_have_their_type(llm, status, error_type):
    llm.fail_next(status=status)
    r = post(llm)
    assert_error(r, status, error_type)
    assert "retry-after" not in r.headers
    assert post(llm).status_code == 200


def test_fail_always_messages_and_raw_bodies(llm):
    llm.fail_always(529, message="Overloaded right now", retry_after=2)
    for _ in range(3):
        r = post(llm)
        assert_error(r, 529, "overloaded_error", "Overloaded right now")
        assert r.headers["retry-after"] == "2"
    llm.clear_failures()
    assert post(llm).status_code == 200
    llm.fail_next(status=502, raw=b"<html><body>502 Bad Gateway</body></html>")
    r = post(llm)
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html"
    assert r.content == b"<html><body>502 Bad Gateway</body></html>"
    assert post(llm).status_code == 200
    assert error_body("api_error", "x") == {"type": "error",
                                            "error": {"type": "api_error", "message": "x"}}


def test_delay_makes_a_client_time_out(llm):
    llm.reply_with("the answer")
    llm.delay(0.6, n=1)
    start = time.monotonic()
    with pytest.raises(requests.Timeout):
        post(llm, timeout=0.15)
    r = post(llm, timeout=2)  # the retry is not delayed
    assert time.monotonic() - start < 0.6
    # Queued replies go to requests in the order they are answered: the retry gets the answer,
    # the timed-out request (answered when its delay is over, to nobody) the default.
    assert r.json()["content"][0]["text"] == "the answer"
    first, second = llm.wait_for_requests(2, timeout=3)
    assert (first["reply"], second["reply"]) == ("[]", "the answer")
    llm.delay(0.2)
    start = time.monotonic()
    assert post(llm).status_code == 200 and post(llm).status_code == 200
    assert time.monotonic() - start >= 0.4
    llm.delay(0)


def test_down_refused_and_reset(llm):
    base = llm.base_url
    llm.down()
    with pytest.raises(requests.ConnectionError):
        post(llm, timeout=2)
    assert llm.count() == 0  # refused: nothing reached the double
    llm.up()
    assert llm.base_url == base and post(llm).status_code == 200
    llm.down("reset")
    with pytest.raises(requests.ConnectionError):
        post(llm, timeout=2)
    entry = llm.last_request()
    assert (entry["outcome"], entry["status"], entry["key_ok"]) == ("reset", None, True)
    llm.down("refused")  # from reset straight to refused, and back to reset
    with pytest.raises(requests.ConnectionError):
        post(llm, timeout=2)
    llm.down("reset")
    with pytest.raises(requests.ConnectionError):
        post(llm, timeout=2)
    llm.up()
    assert post(llm).status_code == 200
    assert [e["outcome"] for e in llm.requests_log] == ["answered", "reset", "reset", "answered"]
    with pytest.raises(ValueError):
        llm.down("sideways")


def test_refused_resets_a_kept_alive_connection(llm):
    with requests.Session() as session:
        assert session.post(llm.messages_url, json=body(), headers=HEADERS,
                            timeout=2).status_code == 200
        llm.down()
        with pytest.raises(requests.ConnectionError):
            session.post(llm.messages_url, json=body(), headers=HEADERS, timeout=2)
        llm.up()
        assert session.post(llm.messages_url, json=body(), headers=HEADERS,
                            timeout=2).status_code == 200


def test_down_before_start():
    double = LlmDouble(api_key=KEY, models=[MODEL])
    double.down()
    double.start()
    try:
        with pytest.raises(requests.ConnectionError):
            post(double, timeout=2)
        double.up()
        assert post(double).status_code == 200
    finally:
        double.stop()


def test_malformed_replies(llm):
    llm.malformed_next()
    llm.malformed_next(text='{"items": [')
    llm.reply_json({"items": []})
    texts = [post(llm).json()["content"][0]["text"] for _ in range(3)]
    assert texts[0] == MALFORMED_REPLY and texts[1] == '{"items": ['
    for text in texts[:2]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    assert "```json\n[" in texts[0] and texts[0].startswith("Sure!")
    assert json.loads(texts[2]) == {"items": []}


def test_reply_queue_rule_and_default(llm):
    def echo_notes(request: dict) -> Any:
        notes = request["messages"][-1]["content"]
        return None if "skip" in notes else [{"title": notes.upper()}]

    llm.reply_by(echo_notes)
    llm.reply_with("first")
    llm.reply_once_by(lambda request: f"max={request['max_tokens']}")
    llm.reply_json({"a": "é"})

    def ask(notes: str) -> str:
        payload = body(messages=[{"role": "user", "content": notes}])
        return post(llm, payload).json()["content"][0]["text"]

    assert ask("x") == "first"
    assert ask("x") == "max=1024"
    assert ask("x") == '{"a": "é"}'
    assert json.loads(ask("deploy notes")) == [{"title": "DEPLOY NOTES"}]
    assert ask("skip this") == "[]"  # None from the rule: the default reply
    llm.default_reply = "nothing here"
    assert ask("skip again") == "nothing here"
    llm.reply_by(None)
    assert ask("x") == "nothing here"
    llm.reply_once_by(lambda request: 1 / 0)
    r = post(llm)
    assert_error(r, 500, "api_error", "the test's reply function raised "
                                      "ZeroDivisionError('division by zero')")
    llm.reply_with("dropped", n=3)
    assert llm.pending_replies == 3
    llm.clear_replies()
    assert llm.pending_replies == 0 and ask("x") == "nothing here"


def test_request_log(llm):
    with pytest.raises(LookupError):
        llm.last_request()
    before = time.time()
    payload = body(system="Return JSON.", messages=[
        {"role": "user", "content": "Notes: deploy on Fridays is banned."},
        {"role": "assistant", "content": "not json"},
        {"role": "user", "content": [{"type": "text", "text": "That was not JSON. "},
                                     {"type": "text", "text": "Answer again."}]}])
    llm.reply_with("[]")
    assert post(llm, payload).status_code == 200
    entry = llm.last_request()
    assert before <= entry["time"] <= time.time()
    assert (entry["method"], entry["path"], entry["status"], entry["outcome"]) == (
        "POST", "/v1/messages", 200, "answered")
    assert entry["body"] == payload and entry["key_ok"] is True
    assert entry["headers"]["anthropic-version"] == API_VERSION
    assert entry["headers"]["x-api-key"] == "***"
    assert entry["system_text"] == "Return JSON."
    assert entry["user_text"] == ("Notes: deploy on Fridays is banned.\n\n"
                                  "That was not JSON. Answer again.")
    assert entry["reply"] == "[]" and entry["stop_reason"] == "end_turn"
    assert entry["usage"]["input_tokens"] == count_input_tokens(payload)
    assert entry["id"].startswith("msg_") and entry["error_type"] is None
    entry["body"]["model"] = "changed"  # a copy: the log is not affected
    assert llm.last_request()["body"]["model"] == MODEL

    def later() -> None:
        time.sleep(0.1)
        post(llm)
        post(llm, body(model="nope"))

    worker = threading.Thread(target=later)
    worker.start()
    entries = llm.wait_for_requests(3, timeout=3)
    worker.join()
    assert [e["status"] for e in entries] == [200, 200, 404]
    assert (llm.count(), llm.count(status=200), llm.count(status=404)) == (3, 2, 1)
    with pytest.raises(TimeoutError, match="did not get 4 request"):
        llm.wait_for_requests(4, timeout=0.1)
    llm.clear_log()
    assert llm.requests_log == [] and llm.count() == 0


def test_wait_for_requests_can_count_arrivals(llm):
    llm.delay(0.5, n=1)
    worker = threading.Thread(target=lambda: post(llm, timeout=3))
    worker.start()
    [entry] = llm.wait_for_requests(1, timeout=2, answered=False)
    assert entry["outcome"] is None and entry["status"] is None
    [entry] = llm.wait_for_requests(1, timeout=2)
    assert entry["status"] == 200
    worker.join()
