"""A test double of an Anthropic-Messages-compatible HTTP API for the tests of Dataport's corporate
memory collector (the job that sends an analyst's notes to an LLM and keeps the knowledge items
it answers as JSON).

It serves `POST {base_url}/v1/messages` the way the public Messages API documents it:

* Headers: `x-api-key` (the key the test configures), `anthropic-version: 2023-06-01`,
  `content-type: application/json`. A missing or wrong key is 401 authentication_error, a missing
  or unsupported version 400 invalid_request_error.
* The body is validated field by field, with messages worded like the real API's (pydantic
  style, "<field path>: <what is wrong>"): `model` (one of the configured models, else 404
  not_found_error "model: <name>"), `max_tokens` (an integer from 1 to `max_output_tokens`),
  `messages` (non-empty, user first, roles alternating, content a string or a list of text
  blocks, all non-empty except a final assistant "prefill", which must not end in whitespace),
  and the optional `system`, `temperature`, `top_p`, `top_k`, `stop_sequences`, `metadata`
  and `stream`. Any other top-level field is "<field>: Extra inputs are not permitted".
* Errors are always `{"type": "error", "error": {"type": ..., "message": ...}}`, with the
  HTTP status of their type (invalid_request_error 400, authentication_error 401,
  permission_error 403, not_found_error 404, request_too_large 413, rate_limit_error 429,
  api_error 500, overloaded_error 529). A 429 carries `retry-after` (seconds) and the
  `anthropic-ratelimit-*` headers.
* A success is a `message` object with one text block. Tokens are counted roughly
  (`estimate_tokens`: 4 characters per token, rounded up, per text block). A scripted reply
  longer than `max_tokens` is cut to `max_tokens * 4` characters with stop_reason "max_tokens"
  (which is how a real truncated JSON answer arises); a reply containing one of the request's
  `stop_sequences` is cut before it with stop_reason "stop_sequence".

The test scripts what the "model" says: queued replies first (`reply_with`, `reply_json`,
`malformed_next`), then the rule of `reply_by`, then `default_reply`. Failures are injected
like in the other doubles (`fail_next`, `fail_always`, `delay`, `down`/`up`), and every request
is recorded (`requests_log`, `last_request`, `wait_for_requests`).

    with LlmDouble(api_key="sk-test", models=["claude-test"]) as llm:
        llm.reply_json([{"title": "Deploys", "body": "Run migrations first."}])
        ... configure the server with base_url=llm.base_url, model "claude-test",
            the key in the environment, and run the collector ...
        [entry] = llm.wait_for_requests(1)
        assert entry["key_ok"] and "the analyst's note text" in entry["user_text"]
        assert entry["status"] == 200 and entry["stop_reason"] == "end_turn"

Deliberate limits: no streaming (`"stream": true` is refused with 400), text content blocks
only (images, documents, tools and extended thinking are refused with 400 saying the double does
not support them), no `/v1/models` or token-counting endpoint, and token counts are estimates.
Injected failures are served only to requests that passed authentication and validation, so a
malformed request always gets its own 400 and never consumes a scripted failure.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import socket
import string
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Iterable

from http_double import DoubleServer, write_response

API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
CHARS_PER_TOKEN = 4
DEFAULT_MAX_OUTPUT_TOKENS = 8192
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
MASKED = "***"

# Prose around broken JSON: what a chatty model answers instead of the JSON it was asked for.
MALFORMED_REPLY = ("Sure! Here are the knowledge items I found in the notes:\n\n```json\n"
                   '[{"title": "Deploy checklist", "body": "Run the migrations first,\n'
                   '  {"title": "On-call", "body": "Page the DBA for replication lag"}\n'
                   "```\n\nLet me know if you want more detail on any of them.")

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error"}

_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource could not be found.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed the rate limit for your organization of 50 requests per "
         "minute. Please try again later.",
    500: "Internal server error",
    529: "Overloaded"}

_TOP_LEVEL = ("model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k",
              "stop_sequences", "metadata", "stream")
# Real fields of the Messages API that this double does not model.
_UNSUPPORTED = ("tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers")
_TEXT_BLOCK_KEYS = ("type", "text", "cache_control", "citations")
_ID_ALPHABET = string.ascii_letters + string.digits


def estimate_tokens(text: str) -> int:
    """The double's token count of `text`: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def error_body(error_type: str, message: str) -> dict:
    """An error answer of the Messages API."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _texts(content: Any) -> list[str]:
    """The texts of a validated `content` or `system` value (a string or text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [block["text"] for block in content]


def count_input_tokens(body: dict) -> int:
    """`usage.input_tokens` of a valid request body: `estimate_tokens` of the system prompt and
    of every message's text (each string content or text block counted on its own)."""
    texts = _texts(body.get("system"))
    for message in body["messages"]:
        texts += _texts(message["content"])
    return sum(estimate_tokens(t) for t in texts)


# ---------------------------------------------------------------------------------------------
# Validation


class _ApiError(Exception):
    """An error answer, raised from deep inside request handling."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.message = message
        self.headers = headers or {}


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(name: str, value: Any, low: float, high: float | None) -> None:
    if not _is_number(value):
        raise _invalid(f"{name}: Input should be a valid number")
    if value < low:
        raise _invalid(f"{name}: Input should be greater than or equal to {low:g}")
    if high is not None and value > high:
        raise _invalid(f"{name}: Input should be less than or equal to {high:g}")


def _check_text_blocks(path: str, blocks: list, kind: str) -> None:
    """Each entry of `blocks` must be a text block {type: "text", text: str}."""
    for i, block in enumerate(blocks):
        where = f"{path}.{i}"
        if not isinstance(block, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary or object to extract "
                           f"fields from")
        if "type" not in block:
            raise _invalid(f"{where}.type: Field required")
        if block["type"] != "text":
            raise _invalid(f"{where}.type: Input should be 'text' (this double supports text "
                           f"{kind} blocks only, got {block['type']!r})")
        if "text" not in block:
            raise _invalid(f"{where}.text: Field required")
        if not isinstance(block["text"], str):
            raise _invalid(f"{where}.text: Input should be a valid string")
        for key in block:
            if key not in _TEXT_BLOCK_KEYS:
                raise _invalid(f"{where}.{key}: Extra inputs are not permitted")
        control = block.get("cache_control")
        if control is not None and (not isinstance(control, dict)
                                    or control.get("type") != "ephemeral"):
            raise _invalid(f"{where}.cache_control.type: Input should be 'ephemeral'")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary or object to extract "
                           f"fields from")
        for key in ("role", "content"):
            if key not in message:
                raise _invalid(f"{where}.{key}: Field required")
        for key in message:
            if key not in ("role", "content"):
                raise _invalid(f"{where}.{key}: Extra inputs are not permitted")
        if message["role"] not in ("user", "assistant"):
            raise _invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        content = message["content"]
        if isinstance(content, list):
            _check_text_blocks(f"{where}.content", content, "content")
        elif not isinstance(content, str):
            raise _invalid(f"{where}.content: Input should be a valid string or a list of "
                           f"content blocks")
    if messages[0]["role"] != "user":
        raise _invalid('messages: first message must use the "user" role')
    for previous, message in zip(messages, messages[1:]):
        if message["role"] == previous["role"]:
            raise _invalid(f'messages: roles must alternate between "user" and "assistant", '
                           f'but found multiple "{message["role"]}" roles in a row')
    last = len(messages) - 1
    for i, message in enumerate(messages):
        texts = _texts(message["content"])
        if isinstance(message["content"], list) and any(t == "" for t in texts):
            raise _invalid("messages: text content blocks must be non-empty")
        empty = not "".join(texts)
        if empty and not (i == last and message["role"] == "assistant"):
            raise _invalid(f"messages.{i}: all messages must have non-empty content except for "
                           f"the optional final assistant message")
    final_text = "".join(_texts(messages[last]["content"]))
    if messages[last]["role"] == "assistant" and final_text != final_text.rstrip():
        raise _invalid("messages: final assistant content cannot end with trailing whitespace")


def _validate(body: Any, models: dict[str, int]) -> None:
    """Raise the _ApiError the Messages API answers to `body`, if any."""
    if not isinstance(body, dict):
        raise _invalid("Input should be a valid dictionary or object to extract fields from")
    if "stream" in body:
        if not isinstance(body["stream"], bool):
            raise _invalid("stream: Input should be a valid boolean")
        if body["stream"]:
            raise _invalid("stream: streaming is not supported by this double (a deliberate "
                           "limit); send \"stream\": false or leave it out")
    for key in body:
        if key in _UNSUPPORTED:
            raise _invalid(f"{key}: not supported by this double (text messages only)")
        if key not in _TOP_LEVEL:
            raise _invalid(f"{key}: Extra inputs are not permitted")
    for key in ("model", "messages", "max_tokens"):
        if key not in body:
            raise _invalid(f"{key}: Field required")
    if not isinstance(body["model"], str):
        raise _invalid("model: Input should be a valid string")
    _check_messages(body["messages"])
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        max_tokens = int(max_tokens)
    if not _is_int(max_tokens):
        raise _invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    if "system" in body:
        system = body["system"]
        if isinstance(system, list):
            _check_text_blocks("system", system, "system")
            if any(block["text"] == "" for block in system):
                raise _invalid("system: text content blocks must be non-empty")
        elif not isinstance(system, str):
            raise _invalid("system: Input should be a valid string or a list of text blocks")
    if "temperature" in body:
        _check_range("temperature", body["temperature"], 0, 1)
    if "top_p" in body:
        _check_range("top_p", body["top_p"], 0, 1)
    if "top_k" in body:
        if not _is_int(body["top_k"]):
            raise _invalid("top_k: Input should be a valid integer")
        _check_range("top_k", body["top_k"], 0, None)
    if "stop_sequences" in body:
        stops = body["stop_sequences"]
        if not isinstance(stops, list):
            raise _invalid("stop_sequences: Input should be a valid list")
        for i, stop in enumerate(stops):
            if not isinstance(stop, str):
                raise _invalid(f"stop_sequences.{i}: Input should be a valid string")
            if not stop.strip():
                raise _invalid("stop_sequences: each stop sequence must contain non-whitespace")
    if "metadata" in body:
        metadata = body["metadata"]
        if not isinstance(metadata, dict):
            raise _invalid("metadata: Input should be a valid dictionary")
        for key in metadata:
            if key != "user_id":
                raise _invalid(f"metadata.{key}: Extra inputs are not permitted")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise _invalid("metadata.user_id: Input should be a valid string")
    model = body["model"]
    if model not in models:
        raise _ApiError(404, f"model: {model}")
    if max_tokens > models[model]:
        raise _invalid(f"max_tokens: {max_tokens} > {models[model]}, which is the maximum "
                       f"allowed number of output tokens for {model}")


# ---------------------------------------------------------------------------------------------
# State


Reply = str | Callable[[dict], Any]


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    message: str | None
    raw: bytes | None
    remaining: int | None  # None: until clear_failures


def _reply_text(value: Any) -> str | None:
    """What a reply source gave as the answer's text: a string as is, None (no answer from this
    source), anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _read_body(req: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (req.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while req.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(req.rfile.read(size))
            req.rfile.readline()
    length = int(req.headers.get("Content-Length") or 0)
    return req.rfile.read(length) if length else b""


def _reset(req: BaseHTTPRequestHandler) -> None:
    """Abort the connection with a TCP reset (SO_LINGER 0), without any answer."""
    req.close_connection = True
    try:
        req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        req.connection.close()
        req.rfile.close()  # the socket really closes once its last file object does
    except OSError:
        pass


def _rfc3339(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# The double


class LlmDouble:
    """An Anthropic-Messages-compatible API on 127.0.0.1 that accepts `api_key` and serves
    `models`.

    Attributes a test may change: `api_key`, `default_reply` (the text when nothing else is
    scripted, default "[]"), `max_output_tokens` (the largest `max_tokens` the models accept,
    default 8192), `max_request_bytes` (larger bodies get 413, default 32 MiB),
    `versions` (the accepted `anthropic-version` values)."""

    def __init__(self, api_key: str = "sk-ant-test-key", models: Iterable[str] = ("claude-test",),
                 default_reply: str = "[]",
                 max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS) -> None:
        self.api_key = api_key
        self.models = list(models)
        self.default_reply = default_reply
        self.max_output_tokens = max_output_tokens
        self.max_request_bytes = DEFAULT_MAX_REQUEST_BYTES
        self.versions = {API_VERSION}
        self.requests_limit = 50
        self.tokens_limit = 40_000
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._http = DoubleServer(self._handle, "llm-double")
        self.base_url = self._http.base_url
        self._port = int(self.base_url.rsplit(":", 1)[1])
        self._started = False
        self._stopped = False
        self._down: str | None = None
        self._delay = 0.0
        self._delay_left: int | None = None
        self._wake = threading.Event()  # cuts delays short on stop
        self._log: list[dict] = []
        self._queue: list[Reply] = []
        self._rule: Callable[[dict], Any] | None = None
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LlmDouble:
        """Serve requests on `base_url` from a daemon thread."""
        with self._lock:
            self._started = True
            if self._down != "refused":
                self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        with self._lock:
            self._stopped = True
            self._wake.set()
            self._http.stop()

    def __enter__(self) -> LlmDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages_url(self) -> str:
        """`{base_url}/v1/messages`."""
        return self.base_url + MESSAGES_PATH

    # -- scripting the replies ---------------------------------------------------------------

    def reply_with(self, text: str, n: int = 1) -> None:
        """The next `n` answers' text is `text` (queued after what is already queued). Queued
        replies go to successful answers in the order they are made: a request held by `delay`
        takes its reply when its delay is over, so a client's quicker retry gets it first."""
        with self._lock:
            self._queue.extend([text] * n)

    def reply_json(self, obj: Any, n: int = 1) -> None:
        """The next `n` answers' text is `json.dumps(obj)` (queued)."""
        self.reply_with(json.dumps(obj, ensure_ascii=False), n)

    def malformed_next(self, n: int = 1, text: str = MALFORMED_REPLY) -> None:
        """The next `n` answers are not JSON (queued): by default `MALFORMED_REPLY`, prose
        around a broken JSON array in a Markdown code fence."""
        self.reply_with(text, n)

    def reply_once_by(self, func: Callable[[dict], Any]) -> None:
        """The next answer (queued) is computed by `func(body)` as in `reply_by`."""
        with self._lock:
            self._queue.append(func)

    def reply_by(self, func: Callable[[dict], Any] | None) -> None:
        """The rule for every answer the queue does not give: `func(body)` with the request's
        parsed body; a str is the text, None falls through to `default_reply`, anything else
        is sent as JSON (an exception is answered 500 api_error naming it). `reply_by(None)`
        removes the rule."""
        with self._lock:
            self._rule = func

    def clear_replies(self) -> None:
        """Forget queued replies and the `reply_by` rule (`default_reply` stays)."""
        with self._lock:
            self._queue.clear()
            self._rule = None

    @property
    def pending_replies(self) -> int:
        """How many queued replies are not yet served."""
        with self._lock:
            return len(self._queue)

    # -- failure injection -------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 429, retry_after: float | None = None,
                  message: str | None = None, raw: bytes | None = None) -> None:
        """The next `n` valid requests fail with `status`: the Messages API's error body with the
        status's error type (429 rate_limit_error, 500 api_error, 529 overloaded_error, 403
        permission_error, ...; api_error for statuses it has none for) and `message` (default:
        a realistic one). A 429 carries `retry-after: retry_after` (default 1 second) and
        `anthropic-ratelimit-*` headers; other statuses carry `retry-after` when it is given.
        `raw`: send these bytes (as text/html) instead of a JSON body, as a proxy in front
        would. Failures come before any scripted reply, which waits for the next success."""
        with self._lock:
            self._failures.append(_Failure(status, retry_after, message, raw, n))

    def fail_always(self, status: int = 500, retry_after: float | None = None,
                    message: str | None = None, raw: bytes | None = None) -> None:
        """Every valid request fails as in `fail_next` until `clear_failures`."""
        with self._lock:
            self._failures.append(_Failure(status, retry_after, message, raw, None))

    def clear_failures(self) -> None:
        """Forget all injected failures."""
        with self._lock:
            self._failures.clear()

    def delay(self, seconds: float, n: int | None = None) -> None:
        """Wait `seconds` before answering each request (0: no delay), or only the next `n`
        requests when `n` is given, e.g. to make a client's first attempt time out."""
        with self._lock:
            self._delay = seconds
            self._delay_left = n

    def down(self, mode: str = "refused") -> None:
        """Become unreachable until `up`: "refused" closes the listening socket (new
        connections are refused and nothing is logged; a request on a keep-alive connection
        opened before is reset as below); "reset" accepts connections, reads the request, logs
        it with outcome "reset" and aborts the connection with a TCP reset, no answer."""
        if mode not in ("refused", "reset"):
            raise ValueError(f"mode must be 'refused' or 'reset', not {mode!r}")
        with self._lock:
            if self._down == "refused":
                self._down = mode
                if mode != "refused":
                    self._listen_again()
                return
            self._down = mode
            if mode == "refused":
                self._http.stop()

    def up(self) -> None:
        """Serve normally again, on the same `base_url`."""
        with self._lock:
            was = self._down
            self._down = None
            if was == "refused":
                self._listen_again()

    # -- the request log ---------------------------------------------------------------------

    @property
    def requests_log(self) -> list[dict]:
        """Every request that reached the double, oldest first. Each entry: time (epoch
        seconds at arrival), method, path, headers (lower-case names; the values of x-api-key
        and authorization masked as "***"), key_ok (the x-api-key was the configured key),
        body (the parsed JSON, None when it was not JSON), system_text (the system prompt's
        text, None without one), user_text (the text of all user messages, joined by blank
        lines; both are set only for a request that passed validation), outcome (None while
        the double is still working on it, "answered", or "reset" when it hung up), status (the
        HTTP status or None), error_type (for an error answer), and for a success reply (the
        answer's text), stop_reason, usage and id (the message id)."""
        with self._lock:
            return json.loads(json.dumps(self._log))

    def count(self, status: int | None = None) -> int:
        """How many requests reached the double (only those answered with `status`, when
        given)."""
        with self._lock:
            return sum(1 for e in self._log if status is None or e["status"] == status)

    def last_request(self) -> dict:
        """The latest entry of `requests_log`; LookupError when there is none."""
        with self._lock:
            if not self._log:
                raise LookupError("the LLM double has received no request")
            return json.loads(json.dumps(self._log[-1]))

    def wait_for_requests(self, n: int, timeout: float = 5.0, answered: bool = True) -> list[dict]:
        """The first `n` entries of `requests_log`, waiting up to `timeout` seconds until `n`
        requests arrived and (when `answered`) got their outcome. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                first = self._log[:n]
                if len(first) == n and (not answered or all(e["outcome"] for e in first)):
                    return json.loads(json.dumps(self._log[:n]))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e["status"], e["outcome"]) for e in self._log]
                    raise TimeoutError(f"the LLM double did not get {n} request(s) within "
                                       f"{timeout}s; got (status, outcome): {seen!r}")
                self._cond.wait(remaining)

    def clear_log(self) -> None:
        """Empty `requests_log`."""
        with self._lock:
            self._log.clear()

    # -- HTTP --------------------------------------------------------------------------------

    def _listen_again(self) -> None:
        """Listen on the same port again after "refused". http_double's DoubleServer always
        binds a free port, so its listening socket is rebound to ours before it serves."""
        http = DoubleServer(self._handle, "llm-double")
        server = http._server
        server.socket.close()
        server.socket = socket.socket(server.address_family, server.socket_type)
        server.server_address = ("127.0.0.1", self._port)
        server.server_bind()
        server.server_activate()
        http.base_url = self.base_url
        self._http = http
        if self._started and not self._stopped:
            http.start()

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        if self._stopped:  # a client's pooled connection outlived `stop`: hang up
            req.close_connection = True
            return
        try:
            raw = _read_body(req)
        except (ValueError, OSError):
            req.close_connection = True
            return
        path = req.path.split("?", 1)[0]
        headers = {name.lower(): value for name, value in req.headers.items()}
        key = headers.get("x-api-key")
        if key is not None:
            headers["x-api-key"] = MASKED
        if "authorization" in headers:  # not how this API authenticates, but a secret all the same
            scheme = headers["authorization"].split(" ", 1)[0]
            headers["authorization"] = f"{scheme} {MASKED}" if " " in headers["authorization"] \
                else MASKED
        entry: dict[str, Any] = {
            "time": time.time(), "method": method, "path": path, "headers": headers,
            "key_ok": key is not None and secrets.compare_digest(key.encode(),
                                                                 self.api_key.encode()),
            "body": None, "system_text": None, "user_text": None, "outcome": None,
            "status": None, "error_type": None, "reply": None, "stop_reason": None,
            "usage": None, "id": None}
        try:
            entry["body"] = json.loads(raw.decode("utf-8")) if raw else None
        except (ValueError, UnicodeDecodeError):
            pass
        with self._cond:
            self._log.append(entry)
            self._cond.notify_all()
            down = self._down
            delay = self._delay
            if self._delay_left is not None:
                if self._delay_left > 0:
                    self._delay_left -= 1
                else:
                    delay = 0.0
        if down is not None:  # "refused" too: a connection opened before `down` is reset
            with self._cond:
                entry["outcome"] = "reset"
                self._cond.notify_all()
            _reset(req)
            return
        if delay:
            self._wake.wait(delay)
        try:
            status, payload, out_headers = self._respond(method, path, headers, key, raw, entry)
        except _ApiError as err:
            status = err.status
            payload = err.raw if isinstance(err, _RawFailure) else error_body(err.error_type,
                                                                               err.message)
            out_headers = err.headers
            entry["error_type"] = err.error_type
        out_headers.setdefault("request-id", "req_" + self._random_id())
        with self._cond:
            entry["status"] = status
            entry["outcome"] = "answered"
            self._cond.notify_all()
        write_response(req, status, payload, out_headers, bytes_type="text/html")

    def _respond(self, method: str, path: str, headers: dict[str, str], key: str | None,
                 raw: bytes, entry: dict) -> tuple[int, dict | bytes, dict[str, str]]:
        if path != MESSAGES_PATH or method != "POST":
            raise _ApiError(404, f"Not found: {method} {path}")
        if key is None:
            raise _ApiError(401, "x-api-key header is required")
        if not entry["key_ok"]:
            raise _ApiError(401, "invalid x-api-key")
        version = headers.get("anthropic-version")
        if version is None:
            raise _invalid("anthropic-version: header is required")
        if version not in self.versions:
            raise _invalid(f"anthropic-version: unsupported version {version!r}; this double "
                           f"supports {', '.join(sorted(self.versions))}")
        if len(raw) > self.max_request_bytes:
            raise _ApiError(413, _DEFAULT_MESSAGES[413])
        mime = headers.get("content-type", "").split(";")[0].strip().lower()
        if mime != "application/json":
            raise _invalid(f"content-type: expected application/json, got {mime or 'none'}")
        body = entry["body"]
        if body is None:
            raise _invalid("There was an issue with the request body: it is not valid JSON"
                           if raw else "The request body is empty; expected a JSON object")
        _validate(body, {m: self.max_output_tokens for m in self.models})
        entry["system_text"] = "\n\n".join(_texts(body.get("system"))) if "system" in body \
            else None
        entry["user_text"] = "\n\n".join("".join(_texts(m["content"]))
                                         for m in body["messages"] if m["role"] == "user")
        with self._lock:
            self._inject_failure()
            source: Reply | None = self._queue.pop(0) if self._queue else self._rule
        text = None
        if source is not None:
            try:
                text = _reply_text(source if isinstance(source, str) else source(body))
            except Exception as exc:  # a bug in the test: make it visible to the client and log
                raise _ApiError(500, f"the test's reply function raised {exc!r}") from exc
        if text is None:
            text = self.default_reply
        return 200, self._message(body, text, entry), self._ratelimit_headers(remaining=True)

    def _inject_failure(self) -> None:
        for failure in self._failures:
            if failure.remaining == 0:
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
            status = failure.status
            headers: dict[str, str] = {}
            retry_after = failure.retry_after
            if status == 429:
                retry_after = 1 if retry_after is None else retry_after
                headers.update(self._ratelimit_headers(remaining=False, reset_in=retry_after))
            if retry_after is not None:
                headers["retry-after"] = f"{retry_after:g}"
            if failure.raw is not None:
                raise _RawFailure(status, failure.raw, headers)
            message = failure.message or _DEFAULT_MESSAGES.get(status, _DEFAULT_MESSAGES[500])
            raise _ApiError(status, message, headers)

    def _message(self, body: dict, reply: str, entry: dict) -> dict:
        """The success answer for `reply` under the request's max_tokens and stop_sequences."""
        text, stop_reason, stop_sequence = reply, "end_turn", None
        cut = [(reply.find(s), s) for s in body.get("stop_sequences", []) if s in reply]
        if cut:
            index, stop_sequence = min(cut, key=lambda c: c[0])
            text, stop_reason = reply[:index], "stop_sequence"
        output_tokens, max_tokens = estimate_tokens(text), int(body["max_tokens"])
        if output_tokens > max_tokens:
            text = text[:max_tokens * CHARS_PER_TOKEN]
            stop_reason, stop_sequence, output_tokens = "max_tokens", None, max_tokens
        usage = {"input_tokens": count_input_tokens(body), "output_tokens": output_tokens}
        message_id = "msg_01" + self._random_id()
        entry.update(reply=text, stop_reason=stop_reason, usage=usage, id=message_id)
        return {"id": message_id, "type": "message", "role": "assistant",
                "model": body["model"], "content": [{"type": "text", "text": text}],
                "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}

    def _ratelimit_headers(self, remaining: bool, reset_in: float = 60) -> dict[str, str]:
        reset = _rfc3339(datetime.now(timezone.utc) + timedelta(seconds=math.ceil(reset_in)))
        requests_left = self.requests_limit - 1 if remaining else 0
        tokens_left = self.tokens_limit if remaining else 0
        headers = {"anthropic-ratelimit-requests-limit": str(self.requests_limit),
                   "anthropic-ratelimit-requests-remaining": str(requests_left),
                   "anthropic-ratelimit-requests-reset": reset}
        for kind in ("tokens", "input-tokens", "output-tokens"):
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(self.tokens_limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(tokens_left)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
        return headers

    def _random_id(self) -> str:
        serial = next(self._ids)
        return "".join(secrets.choice(_ID_ALPHABET) for _ in range(18)) + f"{serial:04d}"


class _RawFailure(_ApiError):
    """An injected failure whose body is raw bytes (a proxy's page), not the API's JSON."""

    def __init__(self, status: int, raw: bytes, headers: dict[str, str]) -> None:
        super().__init__(status, "", headers)
        self.raw = raw
