"""A test double of the Telegram Bot API for the tests of Dataport's Telegram notifications.

It serves the Bot API methods the server uses on `{base_url}/bot{token}/{method}` the way
api.telegram.org does: GET with a query string, or POST with a JSON, form-urlencoded or
multipart/form-data body; method names are case-insensitive; every answer is
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": "...",
"parameters": {...}}` with the HTTP status equal to `error_code`. It keeps private chats with the
users the test adds, lets the test act as those users (send text and bot commands, press inline
buttons) and records everything the bot sent.

    with TelegramDouble("123456789:TEST-token") as tg:
        ana = tg.add_user("Ana", username="ana_n")
        tg.user_sends(ana, "/start")
        ... point the server at tg.base_url with the token ...
        reply = tg.wait_for_sent(lambda m: m["chat_id"] == ana["id"], timeout=5)
        code = re.search(r"\\b\\d{6}\\b", reply["plain"])[0]

Text is parsed as Telegram parses it: the HTML, Markdown (legacy) and MarkdownV2 parsers below
are ports of tdlib's (td/telegram/MessageEntity.cpp), including its error messages with UTF-8
byte offsets, the clean-up of control characters, the trimming of leading and trailing spaces and
newlines, and lengths counted in UTF-16 code units (an emoji outside the BMP counts 2). Limits:
4096 for a message, 1024 for a caption, 200 for a callback answer, 64 bytes of callback data.

One deliberate deviation, on by default (`strict_html`): Telegram takes a `&` that starts no
entity, and a `>` outside a tag, literally; the Bot API documentation says both must be escaped,
and a server that does not escape them garbles text such as "R&amp;D" or "a &lt; b" that a user
wrote. The double rejects them like any other HTML error.
"""

from __future__ import annotations

import base64
import copy
import hmac
import itertools
import json
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from http_double import DoubleServer, write_response

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_ANSWER_LIMIT = 200
CALLBACK_DATA_LIMIT = 64  # bytes of UTF-8
PHOTO_SIZE_LIMIT = 10 * 1024 * 1024
HTML_TAGS = frozenset({"a", "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span",
                       "tg-spoiler", "tg-emoji", "code", "pre", "blockquote"})
UPDATE_TYPES_DEFAULT_OFF = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_BAD_GATEWAY_HTML = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                     b"<center><h1>502 Bad Gateway</h1></center>\r\n"
                     b"<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n")
_GATEWAY_TIMEOUT_HTML = (b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n"
                         b"<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n"
                         b"<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n")
_DESCRIPTIONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                 409: "Conflict", 420: "Flood", 500: "Internal Server Error",
                 502: "Bad Gateway", 504: "Gateway Timeout"}
_QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply "
                 "markup are exactly the same as a current content and reply markup of the message")
_CONFLICT_POLL = ("Conflict: terminated by other getUpdates request; make sure that only one bot "
                  "instance is running")
_CONFLICT_WEBHOOK = ("Conflict: can't use getUpdates method while webhook is active; use "
                     "deleteWebhook to delete the webhook first")


# ---------------------------------------------------------------------------------------------
# Text: lengths, entity parsing (ported from tdlib), bot commands


class EntityParseError(ValueError):
    """Why Telegram can't parse a formatted text, worded as Telegram words it (the part after
    "Bad Request: can't parse entities: "), e.g. `Unsupported start tag "div" at byte offset 0`."""


def utf16_len(text: str) -> int:
    """The length of `text` in UTF-16 code units, the unit of Telegram's limits and offsets."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _w(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _bo(text: str, index: int) -> int:
    """The UTF-8 byte offset of character `index` (tdlib's error messages count bytes)."""
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _is_space(ch: str) -> bool:  # td::is_space; "\0" stands for the end of the text
    return ch in (" ", "\t", "\r", "\n", "\0", "\v", "\f")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _ascii_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _link_user_id(url: str) -> int | None:
    """The user id of a `tg://user?id=N` link (a mention by id), else None."""
    m = re.fullmatch(r"tg:(?://)?user\?id=(\d{1,18})", url.strip(), re.IGNORECASE)
    return int(m[1]) if m and int(m[1]) > 0 else None


def _checked_link(url: str) -> str | None:
    """The link Telegram keeps for a text_link, or None when it drops the link (approximates
    tdlib's LinkManager::get_checked_link: http, https, tg and ton links; no scheme means
    http://; other schemes, spaces and empty hosts are refused)."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    lowered = url.lower()
    if lowered.startswith(("tg:", "ton:")):
        return url
    if "://" in url:
        scheme, rest = url.split("://", 1)
        if scheme.lower() not in ("http", "https"):
            return None
    else:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?!\d)", url):  # javascript:, mailto:, ...
            return None
        rest, url = url, "http://" + url
    host = re.split(r"[/?#]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    host = re.sub(r":\d*$", "", host)
    if not host or not re.fullmatch(r"[\w.-]+", host):
        return None
    return url


def _custom_emoji_id(url: str) -> str:
    m = re.fullmatch(r"tg://emoji\?id=(\d{1,19})", url.strip())
    if not m or int(m[1]) == 0:
        raise EntityParseError("Invalid custom emoji URL specified")
    return m[1]


_API_TYPE = {"Bold": "bold", "Italic": "italic", "Underline": "underline",
             "Strikethrough": "strikethrough", "Spoiler": "spoiler", "Code": "code",
             "Pre": "pre", "PreCode": "pre", "TextUrl": "text_link", "MentionName": "text_mention",
             "CustomEmoji": "custom_emoji", "BlockQuote": "blockquote",
             "ExpandableBlockQuote": "expandable_blockquote"}

# An entity while parsing: [tdlib type name, utf-16 offset, utf-16 length, argument]
_Ent = list


def _api_entity(ent: _Ent) -> dict:
    kind, offset, length, arg = ent
    out: dict[str, Any] = {"offset": offset, "length": length, "type": _API_TYPE[kind]}
    if kind == "PreCode":
        out["language"] = arg
    elif kind == "TextUrl":
        out["url"] = arg
    elif kind == "MentionName":
        out["user"] = {"id": arg}
    elif kind == "CustomEmoji":
        out["custom_emoji_id"] = arg
    return out


def _decode_html_entity(text: str, pos: int) -> tuple[str | None, int, bool]:
    """tdlib's decode_html_entity: (character or None, position after it, ended by ';')."""
    n = len(text)
    at = (lambda k: text[k] if k < n else "\0")
    end = pos + 1
    if at(pos + 1) == "#":
        end += 1
        code = 0
        if at(pos + 2) == "x":
            end += 1
            while at(end) in "0123456789abcdefABCDEF" and at(end) != "\0":
                code = code * 16 + int(text[end], 16)
                end += 1
        else:
            while at(end).isascii() and at(end).isdigit():
                code = code * 10 + int(text[end])
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None, pos, False
        ch = chr(code)
    else:
        while at(end).isascii() and at(end).isalpha():
            end += 1
        ch = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(text[pos + 1:end])
        if ch is None:
            return None, pos, False
    if at(end) == ";":
        return ch, end + 1, True
    return ch, end, False


def _parse_html(text: str, strict: bool) -> tuple[str, list[_Ent]]:
    """tdlib's parse_html; with `strict`, a bare `&` or `>` is an error too."""
    out: list[str] = []
    u16 = 0
    ents: list[_Ent] = []
    stack: list[list[Any]] = []  # [tag, argument, utf16 offset, index in out]
    n = len(text)
    at = (lambda k: text[k] if k < n else "\0")
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            ch, end, terminated = _decode_html_entity(text, i)
            if ch is not None and (terminated or not strict):
                if 0xD800 <= ord(ch) <= 0xDFFF:
                    raise EntityParseError("Text contains invalid Unicode characters after "
                                           "decoding HTML entities, check for unmatched "
                                           "surrogate code units")
                out.append(ch)
                u16 += _w(ch)
                i = end
                continue
            if strict:
                raise EntityParseError(f"Character '&' at byte offset {_bo(text, i)} must be "
                                       "escaped as &amp; (strict HTML check of the test double)")
        elif c == ">" and strict:
            raise EntityParseError(f"Character '>' at byte offset {_bo(text, i)} must be "
                                   "escaped as &gt; (strict HTML check of the test double)")
        if c != "<":
            out.append(c)
            u16 += _w(c)
            i += 1
            continue
        begin = i
        i += 1
        if at(i) != "/":
            while not _is_space(at(i)) and at(i) != ">":
                i += 1
            if i >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {_bo(text, begin)}")
            tag = text[begin + 1:i].lower()
            if tag not in HTML_TAGS:
                raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset '
                                       f"{_bo(text, begin)}")
            arg = ""
            while at(i) != ">":
                while i < n and _is_space(text[i]):
                    i += 1
                if at(i) == ">":
                    break
                name_begin = i
                while not _is_space(at(i)) and at(i) not in ("=", ">", "/", '"', "'"):
                    i += 1
                name = text[name_begin:i]
                if not name:
                    raise EntityParseError(f'Empty attribute name in the tag "{tag}" at byte '
                                           f"offset {_bo(text, begin)}")
                while i < n and _is_space(text[i]):
                    i += 1
                if at(i) != "=":
                    if i >= n:
                        raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset '
                                               f"{_bo(text, begin)}")
                    if tag == "blockquote" and name == "expandable":
                        arg = "1"
                    continue
                i += 1
                while i < n and _is_space(text[i]):
                    i += 1
                if i >= n:
                    raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset '
                                           f"{_bo(text, begin)}")
                if text[i] not in ("'", '"'):
                    token_begin = i
                    while at(i).isascii() and (at(i).isalnum() or at(i) in (".", "-")):
                        i += 1
                    value = text[token_begin:i].lower()
                    if not _is_space(at(i)) and at(i) != ">":
                        raise EntityParseError("Unexpected end of name token at byte offset "
                                               f"{_bo(text, token_begin)}")
                else:
                    quote = text[i]
                    i += 1
                    chars: list[str] = []
                    while i < n and text[i] != quote:
                        if text[i] == "&":
                            ch, end, _ = _decode_html_entity(text, i)
                            if ch is not None:
                                chars.append(ch)
                                i = end
                                continue
                        chars.append(text[i])
                        i += 1
                    if i < n:
                        i += 1
                    value = "".join(chars)
                if i >= n:
                    raise EntityParseError(f"Unclosed start tag at byte offset {_bo(text, begin)}")
                if tag == "a" and name == "href":
                    arg = value
                elif tag == "code" and name == "class" and value.startswith("language-"):
                    arg = value[9:]
                elif tag == "span" and name == "class" and value.startswith("tg-"):
                    arg = value[3:]
                elif tag == "tg-emoji" and name == "emoji-id":
                    arg = value
                elif tag == "blockquote" and name == "expandable":
                    arg = "1"
            if tag == "span" and arg != "spoiler":
                raise EntityParseError('Tag "span" must have class "tg-spoiler" at byte offset '
                                       f"{_bo(text, begin)}")
            stack.append([tag, arg, u16, len(out)])
            i += 1
            continue
        # an end tag
        if not stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {_bo(text, begin)}")
        while not _is_space(at(i)) and at(i) != ">":
            i += 1
        end_tag = text[begin + 2:i].lower()
        while i < n and _is_space(text[i]):
            i += 1
        if at(i) != ">":
            raise EntityParseError(f"Unclosed end tag at byte offset {_bo(text, begin)}")
        tag, arg, offset, start = stack[-1]
        if end_tag and end_tag != tag:
            raise EntityParseError(f"Unmatched end tag at byte offset {_bo(text, begin)}, "
                                   f'expected "</{tag}>", found "</{end_tag}>"')
        if u16 > offset:
            length = u16 - offset
            if tag in ("i", "em"):
                ents.append(["Italic", offset, length, ""])
            elif tag in ("b", "strong"):
                ents.append(["Bold", offset, length, ""])
            elif tag in ("s", "strike", "del"):
                ents.append(["Strikethrough", offset, length, ""])
            elif tag in ("u", "ins"):
                ents.append(["Underline", offset, length, ""])
            elif tag in ("tg-spoiler", "span"):
                ents.append(["Spoiler", offset, length, ""])
            elif tag == "tg-emoji":
                if not re.fullmatch(r"\d{1,19}", arg) or int(arg) == 0:
                    raise EntityParseError("Invalid custom emoji identifier specified")
                ents.append(["CustomEmoji", offset, length, arg])
            elif tag == "a":
                url = arg or "".join(out[start:])
                user_id = _link_user_id(url)
                if user_id is not None:
                    ents.append(["MentionName", offset, length, user_id])
                elif (checked := _checked_link(url)) is not None:
                    ents.append(["TextUrl", offset, length, checked])
            elif tag == "pre":
                last = ents[-1] if ents else None
                if last and last[0] == "Code" and last[1:3] == [offset, length] and last[3]:
                    last[0] = "PreCode"
                else:
                    ents.append(["Pre", offset, length, ""])
            elif tag == "code":
                last = ents[-1] if ents else None
                if last and last[0] == "Pre" and last[1:3] == [offset, length] and arg:
                    last[0], last[3] = "PreCode", arg
                else:
                    ents.append(["Code", offset, length, arg])
            elif tag == "blockquote":
                ents.append(["ExpandableBlockQuote" if arg else "BlockQuote", offset, length, ""])
        stack.pop()
        i += 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    for ent in ents:
        if ent[0] == "Code":
            ent[3] = ""
    return "".join(out), ents


def _parse_markdown(text: str) -> tuple[str, list[_Ent]]:
    """tdlib's parse_markdown (the legacy "Markdown" parse mode)."""
    out: list[str] = []
    u16 = 0
    ents: list[_Ent] = []
    n = len(text)
    at = (lambda k: text[k] if k < n else "\0")
    i = 0
    while i < n:
        c = text[i]
        if c == "\\" and at(i + 1) in ("_", "*", "`", "["):
            out.append(text[i + 1])
            u16 += 1
            i += 2
            continue
        if c not in ("_", "*", "`", "["):
            out.append(c)
            u16 += _w(c)
            i += 1
            continue
        begin = i
        end_char = "]" if c == "[" else c
        is_pre = False
        language = ""
        i += 1
        if c == "`" and at(i) == "`" and at(i + 1) == "`":
            i += 2
            is_pre = True
            lang_end = i
            while not _is_space(at(lang_end)) and at(lang_end) != "`":
                lang_end += 1
            if i != lang_end and lang_end < n and text[lang_end] != "`":
                language = text[i:lang_end]
                i = lang_end
            if at(i) in ("\n", "\r"):
                i += 2 if at(i + 1) in ("\n", "\r") and at(i) != at(i + 1) else 1
        start = u16
        while i < n and (text[i] != end_char
                         or (is_pre and not (at(i + 1) == "`" and at(i + 2) == "`"))):
            out.append(text[i])
            u16 += _w(text[i])
            i += 1
        if i == n:
            raise EntityParseError("Can't find end of the entity starting at byte offset "
                                   f"{_bo(text, begin)}")
        if start != u16:
            length = u16 - start
            if c == "_":
                ents.append(["Italic", start, length, ""])
            elif c == "*":
                ents.append(["Bold", start, length, ""])
            elif c == "[":
                if at(i + 1) != "(":
                    url = text[begin + 1:i]
                else:
                    i += 2
                    url_chars = []
                    while i < n and text[i] != ")":
                        url_chars.append(text[i])
                        i += 1
                    url = "".join(url_chars)
                user_id = _link_user_id(url)
                if user_id is not None:
                    ents.append(["MentionName", start, length, user_id])
                elif (checked := _checked_link(url)) is not None:
                    ents.append(["TextUrl", start, length, checked])
            elif is_pre:
                ents.append(["PreCode", start, length, language] if language
                            else ["Pre", start, length, ""])
            else:
                ents.append(["Code", start, length, ""])
        if is_pre:
            i += 2
        i += 1
    return "".join(out), ents


_MDV2_RESERVED = "_*[]()~`>#+-=|{}.!\n"


def _reserved(ch: str) -> EntityParseError:
    return EntityParseError(f"Character '{ch}' is reserved and must be escaped with the "
                            "preceding '\\'")


def _parse_markdown_v2(text: str) -> tuple[str, list[_Ent]]:
    """tdlib's parse_markdown_v2, block quotes and expandable block quotes included."""
    out: list[str] = []
    u16 = 0
    ents: list[_Ent] = []
    stack: list[list[Any]] = []  # [type, argument, utf16 offset, char index in text, index in out]
    have_quote = False
    can_start_quote = True
    n = len(text)
    at = (lambda k: text[k] if k < n else "\0")
    i = 0
    while i < n:
        c = text[i]
        if c == "\\" and 0 < ord(at(i + 1)) <= 126:
            i += 1
            out.append(text[i])
            u16 += 1
            if text[i] != "\r":
                can_start_quote = text[i] == "\n"
            i += 1
            continue
        reserved = "`" if stack and stack[-1][0] in ("Code", "Pre", "PreCode") else _MDV2_RESERVED
        if c not in reserved:
            out.append(c)
            u16 += _w(c)
            if c != "\r":
                can_start_quote = False
            i += 1
            continue
        is_end = False
        if stack:
            top = stack[-1][0]
            if have_quote and c == "\n" and (i + 1 == n or text[i + 1] != ">"):
                is_end = True
            elif top == "Bold":
                is_end = c == "*"
            elif top == "Italic":
                is_end = c == "_" and at(i + 1) != "_"
            elif top == "Code":
                is_end = c == "`"
            elif top in ("Pre", "PreCode"):
                is_end = c == "`" and at(i + 1) == "`" and at(i + 2) == "`"
            elif top in ("TextUrl", "CustomEmoji"):
                is_end = c == "]"
            elif top == "Underline":
                is_end = c == "_" and at(i + 1) == "_"
            elif top == "Strikethrough":
                is_end = c == "~"
            elif top == "Spoiler":
                is_end = c == "|" and at(i + 1) == "|"
        if not is_end:
            kind: str | None = None
            arg = ""
            char_pos = i
            if c == "_":
                if at(i + 1) == "_":
                    kind = "Underline"
                    i += 1
                else:
                    kind = "Italic"
            elif c == "*":
                kind = "Bold"
            elif c == "~":
                kind = "Strikethrough"
            elif c == "|":
                if at(i + 1) != "|":
                    raise _reserved(c)
                i += 1
                kind = "Spoiler"
            elif c == "[":
                kind = "TextUrl"
            elif c == "`":
                if at(i + 1) == "`" and at(i + 2) == "`":
                    i += 3
                    kind = "Pre"
                    lang_end = i
                    while not _is_space(at(lang_end)) and at(lang_end) != "`":
                        lang_end += 1
                    if i != lang_end and lang_end < n and text[lang_end] != "`":
                        kind = "PreCode"
                        arg = text[i:lang_end]
                        i = lang_end
                    if at(i) in ("\n", "\r"):
                        i += 2 if at(i + 1) in ("\n", "\r") and at(i) != at(i + 1) else 1
                    i -= 1
                else:
                    kind = "Code"
            elif c == "!":
                if at(i + 1) != "[":
                    raise _reserved(c)
                i += 1
                kind = "CustomEmoji"
            elif c == "\n":
                out.append("\n")
                u16 += 1
                can_start_quote = True
            elif c == ">":
                if not can_start_quote:
                    raise _reserved(c)
                if not have_quote:
                    kind = "BlockQuote"
                    have_quote = True
            else:
                raise _reserved(c)
            if kind is not None:
                stack.append([kind, arg, u16, char_pos, len(out)])
            i += 1
            continue
        # the end of an entity
        kind = stack[-1][0]
        if c == "\n" and kind != "BlockQuote":
            top = stack[-1]
            if kind != "Spoiler" or not (top[3] == i - 2
                                         or (top[3] == i - 3 and out and out[-1] == "\r")):
                raise EntityParseError(f"Can't find end of {kind} entity at byte offset "
                                       f"{_bo(text, top[3])}")
            stack.pop()
            kind = stack[-1][0]
            if kind != "BlockQuote":
                raise EntityParseError(f"Can't find end of {kind} entity at byte offset "
                                       f"{_bo(text, stack[-1][3])}")
            kind = "ExpandableBlockQuote"
        top = stack[-1]
        arg = top[1]
        skip = u16 == top[2]
        if kind in ("Underline", "Spoiler"):
            i += 1
        elif kind in ("Pre", "PreCode"):
            i += 2
        elif kind in ("TextUrl", "CustomEmoji"):
            if at(i + 1) != "(":
                if kind == "CustomEmoji":
                    raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
                url = "".join(out[top[4]:])
            else:
                i += 2
                url_begin = i
                url_chars = []
                while i < n and text[i] != ")":
                    if text[i] == "\\" and 0 < ord(at(i + 1)) <= 126:
                        url_chars.append(text[i + 1])
                        i += 2
                        continue
                    url_chars.append(text[i])
                    i += 1
                if at(i) != ")":
                    what = "a custom emoji URL" if kind == "CustomEmoji" else "a URL"
                    raise EntityParseError(f"Can't find end of {what} at byte offset "
                                           f"{_bo(text, url_begin)}")
                url = "".join(url_chars)
            if kind == "CustomEmoji":
                arg = _custom_emoji_id(url)
            elif (user_id := _link_user_id(url)) is not None:
                kind, arg = "MentionName", user_id
            elif (checked := _checked_link(url)) is not None:
                arg = checked
            else:
                skip = True
        elif kind in ("BlockQuote", "ExpandableBlockQuote"):
            have_quote = False
            out.append(text[i])
            can_start_quote = True
            u16 += 1
            skip = False
        if not skip:
            ents.append([kind, top[2], u16 - top[2], arg])
        stack.pop()
        i += 1
    if have_quote:
        kind = "BlockQuote"
        if stack[-1][0] == "Spoiler" and stack[-1][3] == n - 2:
            stack.pop()
            kind = "ExpandableBlockQuote"
        if stack[-1][0] == "BlockQuote":
            top = stack.pop()
            if u16 != top[2]:
                ents.append([kind, top[2], u16 - top[2], ""])
    if stack:
        raise EntityParseError(f"Can't find end of {stack[-1][0]} entity at byte offset "
                               f"{_bo(text, stack[-1][3])}")
    return "".join(out), ents


_REMOVED = frozenset("\r\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u0333\u033f\u030a")
_EMPTY_SPACES = frozenset("\u1680\u180e\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                          "\u2009\u200a\u202e\u202f\u205f\u2800\u3000\ufffc")
_EMPTY_CHARS = frozenset(" \n\u200b\u200c\u200d\u200e\u200f\u202e\ufeff\u00a0")


def _is_empty_text(text: str) -> bool:
    """tdlib's is_empty_string: nothing but spaces, newlines and invisible characters."""
    spaced = "".join(" " if ch in _EMPTY_SPACES or 0xE0000 <= ord(ch) <= 0xE007F else ch
                     for ch in text)
    return all(ch in _EMPTY_CHARS or _is_space(ch) for ch in spaced)


def _fix_formatted_text(text: str, ents: list[_Ent]) -> tuple[str, list[_Ent]]:
    """tdlib's fix_formatted_text for a bot's message: control characters become spaces, `\\r`
    and a few invisible characters are removed, empty entities dropped, trailing spaces and
    newlines trimmed, and leading ones up to the first entity. Returns ("", []) for an empty
    text."""
    kept: list[str] = []
    new_at: list[int] = [0]  # new utf-16 position at each old utf-16 position
    pos = 0
    for ch in text:
        width = _w(ch)
        if ch in _REMOVED:
            new_at.extend([pos] * width)
            continue
        if ord(ch) <= 32 and ch != "\n":
            ch = " "
        kept.append(ch)
        for _ in range(width):
            pos += 1
            new_at.append(pos)
    ents = [[k, new_at[o], new_at[o + length] - new_at[o], a] for k, o, length, a in ents]
    ents = [e for e in ents if e[2] > 0]
    plain = "".join(kept)
    stripped = plain.rstrip(" \n")
    if not stripped:
        return "", []
    end = utf16_len(stripped)
    ents = [[k, o, min(length, end - o), a] for k, o, length, a in ents if o < end]
    first = min((o for _, o, _, _ in ents), default=end)
    lead = 0
    while lead < first and stripped[lead] in (" ", "\n"):
        lead += 1
    plain = stripped[lead:]
    ents = [[k, o - lead, length, a] for k, o, length, a in ents]
    if _is_empty_text(plain):
        return "", []
    ents.sort(key=lambda e: (e[1], -e[2]))
    return plain, ents


def parse_text(text: str, parse_mode: str | None = None, *,
               strict_html: bool = False) -> tuple[str, list[dict]]:
    """The text a user sees and its entities (Bot API MessageEntity dicts), for `text` sent
    with `parse_mode` ("HTML", "Markdown", "MarkdownV2", case-insensitive, or None/"" for
    plain text). Raises EntityParseError where Telegram answers "can't parse entities", and
    ValueError for an unknown parse mode. The result is "" for a text Telegram deems empty."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        plain, ents = _parse_html(text, strict_html)
    elif mode == "markdown":
        plain, ents = _parse_markdown(text)
    elif mode == "markdownv2":
        plain, ents = _parse_markdown_v2(text)
    elif mode == "":
        plain, ents = text, []
    else:
        raise ValueError(f"unsupported parse_mode {parse_mode!r}")
    plain, ents = _fix_formatted_text(plain, ents)
    return plain, [_api_entity(e) for e in ents]


def html_text_length(text: str) -> int:
    """The length Telegram counts for `text` sent with parse_mode HTML: tags removed, HTML
    entities decoded, text cleaned and trimmed as Telegram does, in UTF-16 code units. Raises
    EntityParseError for HTML Telegram rejects (bare `&` and `>` are accepted, as Telegram
    accepts them; the double's strict check is separate)."""
    return utf16_len(parse_text(text, "HTML")[0])


def bot_command_entities(text: str) -> list[dict]:
    """The bot_command entities Telegram finds in a user's text (tdlib's match_bot_commands):
    `/name` (1-64 of [A-Za-z0-9_]) with an optional `@botname` (3-32), not glued to a word,
    `/`, `<` or `>` on either side."""
    found = []
    n = len(text)
    i = 0
    while (i := text.find("/", i)) >= 0:
        if i > 0 and (_is_word(text[i - 1]) or text[i - 1] in "/<>"):
            i += 1
            continue
        start = i
        i += 1
        name_begin = i
        while i < n and _ascii_word(text[i]):
            i += 1
        if not 1 <= i - name_begin <= 64:
            continue
        if i < n and text[i] == "@":
            i += 1
            mention_begin = i
            while i < n and _ascii_word(text[i]):
                i += 1
            if not 3 <= i - mention_begin <= 32:
                continue
        if i < n and (_is_word(text[i]) or text[i] in "/<>"):
            continue
        found.append({"offset": utf16_len(text[:start]), "length": utf16_len(text[start:i]),
                      "type": "bot_command"})
    return found


# ---------------------------------------------------------------------------------------------
# Images


def image_info(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of PNG, JPEG, GIF or WebP bytes, else None (what Telegram
    answers IMAGE_PROCESS_FAILED for)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", width, height
    if data[:3] == b"\xff\xd8\xff":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", width, height
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return ("webp", 1 + int.from_bytes(data[24:27], "little"),
                    1 + int.from_bytes(data[27:30], "little"))
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            return ("webp", int.from_bytes(data[26:28], "little") & 0x3FFF,
                    int.from_bytes(data[28:30], "little") & 0x3FFF)
        if chunk == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class _Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class _Chat:
    id: int
    user: dict
    info: dict
    chat_instance: str
    started: bool = True
    blocked: bool = False
    deleted: bool = False
    next_message_id: int = 1
    messages: dict[int, dict] = field(default_factory=dict)


@dataclass
class _Failure:
    method: str | None  # lower-case Bot API method name, None: any
    error_code: int
    retry_after: int | None
    description: str | None
    remaining: int | None  # None: until clear_failures


class _Reply(Exception):
    """A complete answer, raised from deep inside request handling. `status` None: hang up."""

    def __init__(self, status: int | None, body: dict | bytes = b"",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _api_error(code: int, description: str, parameters: dict | None = None) -> _Reply:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    headers = {}
    if parameters:
        body["parameters"] = parameters
        if parameters.get("retry_after"):
            headers["Retry-After"] = str(parameters["retry_after"])
    return _Reply(code, body, headers)


class _Described:
    """A successful result whose envelope also carries a description (deleteWebhook)."""

    def __init__(self, result: Any, description: str) -> None:
        self.result, self.description = result, description


def _text(value: Any) -> str | None:
    """A parameter as the string Telegram sees (JSON bodies may carry numbers and booleans)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return (_text(value) or "").strip().lower() in ("true", "1")


def _integer(value: Any) -> int | None:
    """An integer parameter, None when absent or not an integer."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip()
    return int(text) if re.fullmatch(r"[+-]?\d{1,19}", text) else None


def _json_param(value: Any) -> Any:
    """A JSON-serialized parameter (a string in query strings and forms, or already a value in
    a JSON body). Raises ValueError for invalid JSON."""
    return json.loads(value) if isinstance(value, str) else value


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


def _header_params(value: str) -> dict[str, str]:
    params = {}
    for m in re.finditer(r';\s*([\w*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', value):
        raw = m[2].strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m[1].lower()] = raw
    return params


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, _Upload]]:
    boundary = _header_params(content_type).get("boundary")
    if not boundary:
        raise _api_error(400, "Bad Request: can't parse multipart/form-data: no boundary")
    fields: dict[str, str] = {}
    files: dict[str, _Upload] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        if part.endswith(b"\r\n"):
            part = part[:-2]
        head, _, content = part.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if name is None:
            continue
        if "filename" in disposition or "filename*" in disposition:
            files[name] = _Upload(disposition.get("filename") or disposition.get("filename*"),
                                  headers.get("content-type"), content)
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files


# ---------------------------------------------------------------------------------------------
# HTTP plumbing


# ---------------------------------------------------------------------------------------------
# The double


class TelegramDouble:
    """The Bot API of one bot (`token`, `@bot_username`) on 127.0.0.1, with private chats of
    the users the test adds.

    Attributes a test may change: `strict_html` (reject a bare `&` or `>` in HTML, default
    True), `callback_query_timeout` (seconds after which a callback query can no longer be
    answered, default None: never)."""

    def __init__(self, token: str, bot_username: str = "dataport_test_bot") -> None:
        self.token = token
        self.bot_username = bot_username
        self.strict_html = True
        self.callback_query_timeout: float | None = None
        prefix = token.split(":", 1)[0]
        bot_id = int(prefix) if prefix.isdigit() and int(prefix) > 0 else 6_000_000_001
        self.bot_user: dict[str, Any] = {
            "id": bot_id, "is_bot": True, "first_name": "Dataport Test", "username": bot_username,
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False, "can_connect_to_business": False,
            "has_main_web_app": False}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._http = DoubleServer(self._handle, "telegram-double", server_version="nginx/1.18.0")
        self._stopped = False
        self.base_url = self._http.base_url
        self._log: list[dict] = []
        self._failures: list[_Failure] = []
        self._down = False
        self._delay = 0.0
        self._chats: dict[int, _Chat] = {}
        # User ids above 2**32, as real ones are: a 32-bit column or integer type breaks.
        self._user_ids = itertools.count(7_000_000_001, 7919)
        self._group_ids = itertools.count(4_100_000_003, 101)
        self._update_ids = itertools.count(800_000_001)
        self._callback_ids = itertools.count(4_382_000_000_000_000_001, 17)
        self._file_ids = itertools.count(1)
        self._updates: list[dict] = []  # every update ever made
        self._queue: list[dict] = []  # not yet confirmed
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._webhook_url = ""
        self._callbacks: dict[str, dict] = {}
        self._answers: list[dict] = []
        self._sent: list[dict] = []
        self._files: dict[str, dict] = {}
        self._commands: dict[tuple[str, str], list[dict]] = {}
        self._methods: dict[str, Callable[[dict, dict[str, _Upload]], Any]] = {
            "getme": self._get_me, "sendmessage": self._send_message,
            "sendphoto": self._send_photo, "answercallbackquery": self._answer_callback_query,
            "editmessagetext": self._edit_message_text, "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info, "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> TelegramDouble:
        """Serve requests on `base_url` from a daemon thread."""
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving: pending long polls hang up, the listening socket closes."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._http.stop()

    def __enter__(self) -> TelegramDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def method_url(self, method: str) -> str:
        """`{base_url}/bot{token}/{method}`."""
        return f"{self.base_url}/bot{self.token}/{method}"

    # -- users and chats ---------------------------------------------------------------------

    def add_user(self, first_name: str, username: str | None = None, *,
                 last_name: str | None = None, language_code: str = "en",
                 started: bool = True) -> dict:
        """A new user and their private chat with the bot (chat id = user id). With
        `started=False` the user has never opened the bot: sending to them answers 403 "bot
        can't initiate conversation with a user" until they send something."""
        with self._lock:
            user_id = next(self._user_ids)
            user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
            info: dict[str, Any] = {"id": user_id, "first_name": first_name}
            if last_name is not None:
                user["last_name"] = info["last_name"] = last_name
            if username is not None:
                user["username"] = info["username"] = username
            user["language_code"] = language_code
            info["type"] = "private"
            self._chats[user_id] = _Chat(user_id, user, info, str(-(user_id * 7 + 1_234_567)),
                                         started=started)
            return copy.deepcopy(user)

    def add_group(self, title: str) -> dict:
        """A group chat (negative id) with the bot in it; users write there with
        `group_sends`. Returns the chat as updates show it."""
        with self._lock:
            group_id = -next(self._group_ids)
            info = {"id": group_id, "title": title, "type": "group",
                    "all_members_are_administrators": True}
            self._chats[group_id] = _Chat(group_id, {}, info, str(group_id * 3 - 11))
            return dict(info)

    def group_sends(self, group_id: int, user: dict, text: str) -> dict:
        """`user` writes `text` in the group `group_id`; returns the `message` update."""
        with self._cond:
            chat = self._chat(group_id)
            message: dict[str, Any] = {"message_id": self._next_message_id(chat),
                                       "from": copy.deepcopy(self._chat(user["id"]).user),
                                       "chat": dict(chat.info), "date": int(time.time()),
                                       "text": text}
            entities = bot_command_entities(text)
            if entities:
                message["entities"] = entities
            chat.messages[message["message_id"]] = message
            return self._push_update("message", message)

    def block(self, chat_id: int) -> None:
        """The user blocks the bot: sends to the chat answer 403 "Forbidden: bot was blocked by
        the user" until `unblock` (or the user writes to the bot again)."""
        with self._lock:
            self._chat(chat_id).blocked = True

    def unblock(self, chat_id: int) -> None:
        """The user unblocks the bot."""
        with self._lock:
            self._chat(chat_id).blocked = False

    def delete_chat(self, chat_id: int) -> None:
        """The chat disappears (e.g. a deleted account): sends answer 400 "Bad Request: chat not
        found", and the user can no longer act."""
        with self._lock:
            self._chat(chat_id).deleted = True

    def message(self, chat_id: int, message_id: int) -> dict:
        """The current state of a message in a chat (after edits), the user's or the bot's."""
        with self._lock:
            return copy.deepcopy(self._chat(chat_id).messages[message_id])

    # -- acting as a user --------------------------------------------------------------------

    def user_sends(self, user: dict | int, text: str) -> dict:
        """The user writes `text` to the bot; returns the `message` update (bot commands such as
        `/start` or `/status@bot` carry bot_command entities). Writing to the bot also undoes a
        `block`, as Telegram's "Restart" button does."""
        with self._cond:
            chat = self._acting_chat(user)
            chat.blocked = False
            chat.started = True
            message: dict[str, Any] = {"message_id": self._next_message_id(chat),
                                       "from": copy.deepcopy(chat.user),
                                       "chat": dict(chat.info), "date": int(time.time()),
                                       "text": text}
            entities = bot_command_entities(text)
            if entities:
                message["entities"] = entities
            chat.messages[message["message_id"]] = message
            return self._push_update("message", message)

    def user_presses(self, user: dict | int, message_id: int, data: str) -> str:
        """The user presses the inline button with callback data `data` under the bot's message
        `message_id` in their chat; returns the callback query id. Raises ValueError when that
        message is not the bot's or has no such button (now, after edits)."""
        with self._cond:
            chat = self._acting_chat(user)
            msg = chat.messages.get(message_id)
            if msg is None or not msg["from"].get("is_bot"):
                raise ValueError(f"no message {message_id} from the bot in chat {chat.id}")
            rows = (msg.get("reply_markup") or {}).get("inline_keyboard") or []
            datas = [b.get("callback_data") for row in rows for b in row]
            if data not in datas:
                raise ValueError(f"message {message_id} in chat {chat.id} has no button with "
                                 f"callback_data {data!r}; it has {datas!r}")
            query_id = str(next(self._callback_ids))
            self._callbacks[query_id] = {"id": query_id, "chat_id": chat.id,
                                         "message_id": message_id, "data": data,
                                         "time": time.monotonic(), "answered": False}
            self._push_update("callback_query", {
                "id": query_id, "from": copy.deepcopy(chat.user), "message": copy.deepcopy(msg),
                "chat_instance": chat.chat_instance, "data": data})
            return query_id

    def set_webhook(self, url: str) -> None:
        """Pretend a webhook is set (a leftover of another deployment): getUpdates answers 409
        until the bot calls deleteWebhook."""
        with self._lock:
            self._webhook_url = url

    # -- inspection --------------------------------------------------------------------------

    def sent(self, chat_id: int | None = None) -> list[dict]:
        """What the bot sent (sendMessage, sendPhoto) or edited (editMessageText), oldest first,
        optionally to one chat. Each record: method, chat_id, message_id, time, text (raw, as
        sent; None for a photo), caption (raw; None unless a photo), parse_mode, plain (the text
        or caption as the user sees it), entities, reply_markup, link_preview_options,
        disable_web_page_preview, photo (uploaded bytes or None), photo_content_type,
        photo_filename, photo_ref (URL or file_id when not uploaded), params (all parameters)."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._sent
                    if chat_id is None or r["chat_id"] == chat_id]

    def wait_for_sent(self, predicate: Callable[[dict], bool] | None = None,
                      timeout: float = 5.0) -> dict:
        """The first record of `sent()` that satisfies `predicate` (any, when None), waiting up
        to `timeout` seconds for it. Raises TimeoutError listing what was sent."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self._sent:
                    snapshot = copy.deepcopy(record)
                    if predicate is None or predicate(snapshot):
                        return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [(r["method"], r["chat_id"], r["plain"]) for r in self._sent]
                    raise TimeoutError(f"nothing matching was sent within {timeout}s; sent: "
                                       f"{summary!r}")
                self._cond.wait(remaining)

    @property
    def answered_callbacks(self) -> list[dict]:
        """The bot's answers to callback queries: callback_query_id, chat_id, message_id, data,
        text, show_alert, url, cache_time, time."""
        with self._lock:
            return copy.deepcopy(self._answers)

    def wait_for_answer(self, callback_query_id: str, timeout: float = 5.0) -> dict:
        """The answer to callback query `callback_query_id`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for answer in self._answers:
                    if answer["callback_query_id"] == callback_query_id:
                        return copy.deepcopy(answer)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"callback query {callback_query_id} was not answered "
                                       f"within {timeout}s")
                self._cond.wait(remaining)

    @property
    def updates(self) -> list[dict]:
        """Every update made so far, confirmed or not, oldest first."""
        with self._lock:
            return copy.deepcopy(self._updates)

    @property
    def pending_updates(self) -> list[dict]:
        """The updates getUpdates would still return (not yet confirmed by an offset)."""
        with self._lock:
            return copy.deepcopy(self._queue)

    @property
    def webhook_url(self) -> str:
        """The webhook URL ("" when none: deleteWebhook clears it)."""
        with self._lock:
            return self._webhook_url

    def my_commands(self, scope: dict | None = None, language_code: str = "") -> list[dict] | None:
        """The commands last set with setMyCommands for `scope` (default: {"type": "default"})
        and `language_code`, or None when never set."""
        key = (json.dumps(scope or {"type": "default"}, sort_keys=True), language_code)
        with self._lock:
            found = self._commands.get(key)
            return copy.deepcopy(found) if found is not None else None

    @property
    def requests_log(self) -> list[dict]:
        """Every request: time, http_method, method (as in the URL), token_ok, params (files as
        {filename, content_type, size}; None when the request was refused before parsing),
        status (None while a long poll waits, or when the double hung up)."""
        with self._lock:
            return copy.deepcopy(self._log)

    def count(self, method: str) -> int:
        """How many requests called `method` (case-insensitive), whatever their outcome."""
        with self._lock:
            return sum(1 for e in self._log if (e["method"] or "").lower() == method.lower())

    def clear_log(self) -> None:
        """Empty `requests_log`."""
        with self._lock:
            self._log.clear()

    # -- failure injection -------------------------------------------------------------------

    def fail_next(self, n: int = 1, method: str | None = None, error_code: int = 429,
                  retry_after: int | None = None, description: str | None = None) -> None:
        """The next `n` calls of `method` (any method, getUpdates included, when None) fail
        with `error_code`. A 429 carries `parameters.retry_after` (and a Retry-After header) of
        `retry_after` seconds, default 1, as Telegram's do; 502 and 504 answer the HTML page of
        Telegram's nginx front; other codes a JSON error with `description` (default: the
        status text, "Too Many Requests: retry after N" for 429)."""
        with self._lock:
            self._failures.append(_Failure(method.lower() if method else None, error_code,
                                           retry_after, description, n))

    def fail_always(self, method: str | None, error_code: int = 500,
                    description: str | None = None) -> None:
        """Every call of `method` (any, when None) fails as in `fail_next` until
        `clear_failures`."""
        with self._lock:
            self._failures.append(_Failure(method.lower() if method else None, error_code,
                                           None, description, None))

    def clear_failures(self) -> None:
        """Forget all injected failures."""
        with self._lock:
            self._failures.clear()

    def down(self) -> None:
        """Telegram is unreachable behind its front: every request, waiting long polls included,
        gets 502 Bad Gateway with nginx's HTML page until `up`."""
        with self._cond:
            self._down = True
            self._cond.notify_all()

    def up(self) -> None:
        """Serve normally again."""
        with self._lock:
            self._down = False

    def delay(self, seconds: float) -> None:
        """Wait `seconds` before answering each request (0: no delay)."""
        with self._lock:
            self._delay = seconds

    # -- HTTP --------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, http_method: str) -> None:
        if self._stopped:  # a client's pooled connection outlived `stop`: hang up
            req.close_connection = True
            return
        try:
            body = _read_body(req)
        except (ValueError, OSError):
            req.close_connection = True
            return
        parts = urlsplit(req.path)
        entry: dict[str, Any] = {"time": time.time(), "http_method": http_method, "method": None,
                                 "token_ok": False, "params": None, "status": None}
        path = parts.path
        token = method = None
        if path.startswith("/bot") and "/" in path[4:]:
            token, _, method = path[4:].partition("/")
            token, method = unquote(token), unquote(method)
            if method.startswith("test/"):
                method = method[5:]
            entry["method"] = method
            entry["token_ok"] = hmac.compare_digest(token.encode(), self.token.encode())
        with self._lock:
            self._log.append(entry)
            delay = self._delay
        if delay:
            time.sleep(delay)
        try:
            status, payload, headers = self._respond(token, method, parts.query, req, body, entry)
        except _Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        with self._lock:
            entry["status"] = status
        if status is None:
            req.close_connection = True
            return
        write_response(req, status, payload, headers, bytes_type="text/html")

    def _respond(self, token: str | None, method: str | None, query: str,
                 req: BaseHTTPRequestHandler, body: bytes,
                 entry: dict) -> tuple[int | None, dict | bytes, dict[str, str]]:
        with self._lock:
            if self._down:
                return 502, _BAD_GATEWAY_HTML, {}
        if token is None:
            raise _api_error(404, "Not Found")
        if not entry["token_ok"]:
            if (token.startswith("0") or len(token) > 80 or ":" not in token
                    or not re.fullmatch(r"\d{1,16}", token.split(":", 1)[0])):
                raise _api_error(401, "Unauthorized: invalid token specified")
            raise _api_error(401, "Unauthorized")
        name = (method or "").lower()
        handler = self._methods.get(name)
        if handler is None and name != "getupdates":
            raise _api_error(404, "Not Found")
        params, files = self._parse_params(query, req.headers.get("Content-Type") or "", body)
        summary = {k: _text(v) for k, v in params.items()}
        summary.update({k: {"filename": f.filename, "content_type": f.content_type,
                            "size": len(f.data)} for k, f in files.items()})
        with self._lock:
            entry["params"] = summary
            self._inject_failure(name)
        if name == "getupdates":
            result = self._get_updates(params)
        else:
            with self._cond:
                result = handler(params, files)
                self._cond.notify_all()
        envelope: dict[str, Any] = {"ok": True}
        if isinstance(result, _Described):
            envelope["result"], envelope["description"] = result.result, result.description
        else:
            envelope["result"] = result
        return 200, envelope, {}

    @staticmethod
    def _parse_params(query: str, content_type: str,
                      body: bytes) -> tuple[dict[str, Any], dict[str, _Upload]]:
        params: dict[str, Any] = {k: v[-1] for k, v in
                                  parse_qs(query, keep_blank_values=True).items()}
        files: dict[str, _Upload] = {}
        mime = content_type.split(";")[0].strip().lower()
        if not body:
            return params, files
        if mime == "application/json":
            try:
                obj = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise _api_error(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(obj, dict):
                raise _api_error(400, "Bad Request: can't parse JSON object")
            params.update(obj)
        elif mime == "multipart/form-data":
            fields, files = _parse_multipart(body, content_type)
            params.update(fields)
        elif mime in ("application/x-www-form-urlencoded", ""):
            text = body.decode("utf-8", "replace")
            params.update({k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()})
        return params, files

    def _inject_failure(self, name: str) -> None:
        for failure in self._failures:
            if failure.remaining == 0 or failure.method not in (None, name):
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
            code = failure.error_code
            if code == 502 and failure.description is None:
                raise _Reply(502, _BAD_GATEWAY_HTML)
            if code == 504 and failure.description is None:
                raise _Reply(504, _GATEWAY_TIMEOUT_HTML)
            if code == 429:
                retry_after = failure.retry_after if failure.retry_after is not None else 1
                raise _api_error(429, failure.description
                                 or f"Too Many Requests: retry after {retry_after}",
                                 {"retry_after": retry_after})
            raise _api_error(code, failure.description or _DESCRIPTIONS.get(code, f"Error {code}"))

    # -- chats, updates, messages ------------------------------------------------------------

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            raise KeyError(f"no chat {chat_id}; add_user first")
        return chat

    def _acting_chat(self, user: dict | int) -> _Chat:
        chat = self._chat(user["id"] if isinstance(user, dict) else user)
        if chat.deleted:
            raise ValueError(f"chat {chat.id} was deleted")
        return chat

    @staticmethod
    def _next_message_id(chat: _Chat) -> int:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def _push_update(self, kind: str, payload: dict) -> dict:
        update = {"update_id": next(self._update_ids), kind: payload}
        self._updates.append(update)
        allowed = self._allowed_updates
        if allowed and kind not in allowed or not allowed and kind in UPDATE_TYPES_DEFAULT_OFF:
            return copy.deepcopy(update)  # dropped, as Telegram drops unwanted updates
        self._queue.append(update)
        self._cond.notify_all()
        return copy.deepcopy(update)

    def _target_chat(self, params: dict) -> _Chat:
        raw = params.get("chat_id")
        if raw is None or _text(raw) == "":
            raise _api_error(400, "Bad Request: chat_id is empty")
        chat_id = _integer(raw)
        chat = self._chats.get(chat_id) if chat_id is not None else None
        if chat is None or chat.deleted:
            raise _api_error(400, "Bad Request: chat not found")
        return chat

    @staticmethod
    def _check_can_write(chat: _Chat) -> None:
        if chat.blocked:
            raise _api_error(403, "Forbidden: bot was blocked by the user")
        if not chat.started:
            raise _api_error(403, "Forbidden: bot can't initiate conversation with a user")

    def _formatted(self, raw: str, params: dict) -> tuple[str, list[dict], str | None]:
        """(plain text, entities, parse_mode) of a text or caption parameter."""
        parse_mode = _text(params.get("parse_mode")) or None
        try:
            plain, entities = parse_text(raw, parse_mode, strict_html=self.strict_html)
        except EntityParseError as e:
            raise _api_error(400, f"Bad Request: can't parse entities: {e}") from None
        except ValueError:
            raise _api_error(400, "Bad Request: unsupported parse_mode") from None
        if parse_mode is None and params.get("entities") not in (None, ""):
            try:
                given = _json_param(params.get("entities"))
            except ValueError:
                raise _api_error(400, "Bad Request: can't parse entities JSON object") from None
            entities = given if isinstance(given, list) else []
        return plain, entities, parse_mode

    @staticmethod
    def _reply_markup(params: dict) -> dict | None:
        raw = params.get("reply_markup")
        if raw is None or raw == "":
            return None
        try:
            markup = _json_param(raw)
        except ValueError:
            markup = None
        if not isinstance(markup, dict):
            raise _api_error(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            if any(k in markup for k in ("keyboard", "remove_keyboard", "force_reply")):
                return markup
            raise _api_error(400, "Bad Request: can't parse reply keyboard markup JSON object")
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _api_error(400, 'Bad Request: field "inline_keyboard" of the '
                                  "InlineKeyboardMarkup must be an Array of Arrays")
        actions = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                   "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
                   "copy_text", "callback_game", "pay")
        for row in rows:
            for button in row:
                if not isinstance(button, dict):
                    raise _api_error(400, "Bad Request: can't parse inline keyboard button: "
                                          "InlineKeyboardButton must be an Object")
                if not isinstance(button.get("text"), str):
                    raise _api_error(400, "Bad Request: can't parse inline keyboard button: "
                                          'Field "text" must be of type String')
                if not any(k in button for k in actions):
                    raise _api_error(400, "Bad Request: can't parse inline keyboard button: "
                                          "Text buttons are unallowed in the inline keyboard")
                if not button["text"].strip():
                    raise _api_error(400, "Bad Request: BUTTON_TEXT_INVALID")
                if "callback_data" in button:
                    data = button["callback_data"]
                    size = len(data.encode()) if isinstance(data, str) else 0
                    if not 1 <= size <= CALLBACK_DATA_LIMIT:
                        raise _api_error(400, "Bad Request: BUTTON_DATA_INVALID")
                if "url" in button and (not isinstance(button["url"], str)
                                        or _checked_link(button["url"]) is None):
                    raise _api_error(400, "Bad Request: BUTTON_URL_INVALID")
        return markup

    def _bot_message(self, chat: _Chat, content: dict) -> dict:
        message = {"message_id": self._next_message_id(chat), "from": {
            k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")},
            "chat": dict(chat.info), "date": int(time.time()),
            **{k: v for k, v in content.items() if v not in (None, [], "")}}
        chat.messages[message["message_id"]] = message
        return message

    def _record(self, method: str, chat: _Chat, message: dict, params: dict, **fields: Any) -> None:
        record: dict[str, Any] = {
            "method": method, "chat_id": chat.id, "message_id": message["message_id"],
            "time": time.time(), "text": None, "caption": None, "parse_mode": None, "plain": "",
            "entities": [], "reply_markup": None, "link_preview_options": None,
            "disable_web_page_preview": None, "photo": None, "photo_content_type": None,
            "photo_filename": None, "photo_ref": None,
            "params": {k: _text(v) for k, v in params.items()}}
        record.update(fields)
        self._sent.append(copy.deepcopy(record))
        self._cond.notify_all()

    # -- methods -----------------------------------------------------------------------------

    def _get_me(self, params: dict, files: dict) -> dict:
        return dict(self.bot_user)

    def _get_updates(self, params: dict) -> list[dict]:
        offset = _integer(params.get("offset")) or 0
        limit = min(max(_integer(params.get("limit")) or 100, 1), 100)
        timeout = min(max(_integer(params.get("timeout")) or 0, 0), 50)
        deadline = time.monotonic() + timeout
        with self._cond:
            allowed = params.get("allowed_updates")
            if allowed not in (None, ""):
                try:
                    kinds = _json_param(allowed)
                except ValueError:
                    kinds = None
                if isinstance(kinds, list):
                    self._allowed_updates = [str(k) for k in kinds]
            if self._webhook_url:
                raise _api_error(409, _CONFLICT_WEBHOOK)
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # an older waiting poll ends with 409
            if offset > 0:
                self._queue = [u for u in self._queue if u["update_id"] >= offset]
            elif offset < 0:
                self._queue = self._queue[offset:]
            while True:
                if self._stopped:
                    raise _Reply(None)
                if self._down:
                    raise _Reply(502, _BAD_GATEWAY_HTML)
                if generation != self._poll_generation:
                    raise _api_error(409, _CONFLICT_POLL)
                batch = [u for u in self._queue if offset <= 0 or u["update_id"] >= offset]
                if batch:
                    return copy.deepcopy(batch[:limit])
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def _send_message(self, params: dict, files: dict) -> dict:
        chat = self._target_chat(params)
        raw = _text(params.get("text"))
        if not raw:
            raise _api_error(400, "Bad Request: message text is empty")
        plain, entities, parse_mode = self._formatted(raw, params)
        if not plain:
            raise _api_error(400, "Bad Request: message text is empty")
        markup = self._reply_markup(params)
        try:
            preview = (None if params.get("link_preview_options") in (None, "")
                       else _json_param(params["link_preview_options"]))
        except ValueError:
            raise _api_error(400, "Bad Request: can't parse link preview options JSON "
                                  "object") from None
        no_preview = (_flag(params["disable_web_page_preview"])
                      if "disable_web_page_preview" in params else None)
        if utf16_len(plain) > TEXT_LIMIT:
            raise _api_error(400, "Bad Request: message is too long")
        self._check_can_write(chat)
        inline = markup if markup and "inline_keyboard" in markup else None
        message = self._bot_message(chat, {"text": plain, "entities": entities,
                                           "reply_markup": inline})
        self._record("sendMessage", chat, message, params, text=raw, parse_mode=parse_mode,
                     plain=plain, entities=entities, reply_markup=markup,
                     link_preview_options=preview, disable_web_page_preview=no_preview)
        return copy.deepcopy(message)

    def _send_photo(self, params: dict, files: dict[str, _Upload]) -> dict:
        chat = self._target_chat(params)
        raw_caption = _text(params.get("caption")) or ""
        plain, entities, parse_mode = self._formatted(raw_caption, params)
        markup = self._reply_markup(params)
        upload = files.get("photo")
        ref = None if upload is not None else (_text(params.get("photo")) or "")
        stored = None
        if upload is None:
            if not ref:
                raise _api_error(400, "Bad Request: there is no photo in the request")
            if ref.startswith("attach://"):
                upload = files.get(ref[9:])
                if upload is None:
                    raise _api_error(400, "Bad Request: wrong file identifier/HTTP URL specified")
            elif ref in self._files:
                stored = self._files[ref]
            elif not re.match(r"https?://\S+$", ref):
                raise _api_error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        width = height = 320  # a photo given by URL: the double does not fetch it
        if upload is not None:
            if not upload.data:
                raise _api_error(400, "Bad Request: file must be non-empty")
            if len(upload.data) > PHOTO_SIZE_LIMIT:
                raise _api_error(400, "Bad Request: file is too big")
            info = image_info(upload.data)
            if info is None or not info[1] or not info[2]:
                raise _api_error(400, "Bad Request: IMAGE_PROCESS_FAILED")
            _, width, height = info
            if width + height > 10000 or max(width, height) > 20 * min(width, height):
                raise _api_error(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        elif stored is not None:
            width, height = stored["width"], stored["height"]
        if utf16_len(plain) > CAPTION_LIMIT:
            raise _api_error(400, "Bad Request: message caption is too long")
        self._check_can_write(chat)
        data = upload.data if upload is not None else (stored["data"] if stored else None)
        content_type = (upload.content_type if upload is not None
                        else stored["content_type"] if stored else None)
        sizes = self._photo_sizes(width, height, len(data) if data is not None else 0,
                                  data, content_type)
        inline = markup if markup and "inline_keyboard" in markup else None
        message = self._bot_message(chat, {"photo": sizes, "caption": plain,
                                           "caption_entities": entities, "reply_markup": inline})
        self._record("sendPhoto", chat, message, params, caption=raw_caption,
                     parse_mode=parse_mode, plain=plain, entities=entities, reply_markup=markup,
                     photo=data, photo_content_type=content_type,
                     photo_filename=upload.filename if upload is not None else None,
                     photo_ref=ref or None)
        return copy.deepcopy(message)

    def _photo_sizes(self, width: int, height: int, size: int, data: bytes | None,
                     content_type: str | None) -> list[dict]:
        serial = next(self._file_ids)
        sizes = []
        for suffix, side in (("s", 90), ("x", 1280)):
            scale = min(1.0, side / max(width, height))
            file_id = "AgACAgIAAxkBAAI" + base64.urlsafe_b64encode(
                f"dataport-double-{serial}-{suffix}".encode()).decode().rstrip("=")
            sizes.append({"file_id": file_id, "file_unique_id": f"AQAD{serial}{suffix}",
                          "file_size": max(1, size // 20) if suffix == "s" else size,
                          "width": max(1, round(width * scale)),
                          "height": max(1, round(height * scale))})
            self._files[file_id] = {"data": data, "content_type": content_type,
                                    "width": width, "height": height}
        return sizes

    def _answer_callback_query(self, params: dict, files: dict) -> bool:
        query_id = _text(params.get("callback_query_id")) or ""
        query = self._callbacks.get(query_id)
        expired = (query is not None and self.callback_query_timeout is not None
                   and time.monotonic() - query["time"] > self.callback_query_timeout)
        if query is None or query["answered"] or expired:
            raise _api_error(400, _QUERY_INVALID)
        text = _text(params.get("text")) or ""
        if utf16_len(text) > CALLBACK_ANSWER_LIMIT:
            raise _api_error(400, "Bad Request: MESSAGE_TOO_LONG")
        query["answered"] = True
        self._answers.append({
            "callback_query_id": query_id, "chat_id": query["chat_id"],
            "message_id": query["message_id"], "data": query["data"], "text": text or None,
            "show_alert": _flag(params.get("show_alert")), "url": _text(params.get("url")),
            "cache_time": _integer(params.get("cache_time")) or 0, "time": time.time()})
        return True

    def _edit_message_text(self, params: dict, files: dict) -> dict:
        if params.get("inline_message_id") not in (None, ""):
            raise _api_error(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self._target_chat(params)
        message_id = _integer(params.get("message_id"))
        if message_id is None:
            raise _api_error(400, "Bad Request: message identifier is not specified")
        raw = _text(params.get("text"))
        if not raw:
            raise _api_error(400, "Bad Request: message text is empty")
        plain, entities, parse_mode = self._formatted(raw, params)
        if not plain:
            raise _api_error(400, "Bad Request: message text is empty")
        markup = self._reply_markup(params)
        if utf16_len(plain) > TEXT_LIMIT:
            raise _api_error(400, "Bad Request: message is too long")
        self._check_can_write(chat)
        message = chat.messages.get(message_id)
        if message is None:
            raise _api_error(400, "Bad Request: message to edit not found")
        if not message["from"].get("is_bot"):
            raise _api_error(400, "Bad Request: message can't be edited")
        if "text" not in message:
            raise _api_error(400, "Bad Request: there is no text in the message to edit")
        inline = markup if markup and "inline_keyboard" in markup else None
        if (message["text"], message.get("entities", []), message.get("reply_markup")) == \
                (plain, entities, inline):
            raise _api_error(400, _NOT_MODIFIED)
        message["text"] = plain
        # Telegram drops an inline keyboard the edit does not repeat.
        for key, value in (("entities", entities), ("reply_markup", inline)):
            if value:
                message[key] = value
            else:
                message.pop(key, None)
        message["edit_date"] = int(time.time())
        self._record("editMessageText", chat, message, params, text=raw, parse_mode=parse_mode,
                     plain=plain, entities=entities, reply_markup=markup)
        return copy.deepcopy(message)

    def _delete_webhook(self, params: dict, files: dict) -> _Described:
        if _flag(params.get("drop_pending_updates")):
            self._queue.clear()
        had = bool(self._webhook_url)
        self._webhook_url = ""
        return _Described(True, "Webhook was deleted" if had else "Webhook is already deleted")

    def _get_webhook_info(self, params: dict, files: dict) -> dict:
        return {"url": self._webhook_url, "has_custom_certificate": False,
                "pending_update_count": len(self._queue)}

    def _scope_key(self, params: dict) -> tuple[str, str]:
        try:
            scope = _json_param(params.get("scope")) or {"type": "default"}
        except ValueError:
            raise _api_error(400, "Bad Request: can't parse BotCommandScope JSON object") from None
        language = _text(params.get("language_code")) or ""
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise _api_error(400, "Bad Request: Invalid language code specified")
        return json.dumps(scope, sort_keys=True), language

    def _set_my_commands(self, params: dict, files: dict) -> bool:
        if params.get("commands") is None:
            raise _api_error(400, 'Bad Request: parameter "commands" is required')
        try:
            commands = _json_param(params.get("commands"))
        except ValueError:
            commands = None
        if not isinstance(commands, list):
            raise _api_error(400, "Bad Request: can't parse commands JSON object")
        cleaned = []
        for command in commands:
            if not isinstance(command, dict):
                raise _api_error(400, "Bad Request: Command must be non-empty")
            name = (_text(command.get("command")) or "").strip().removeprefix("/")
            description = (_text(command.get("description")) or "").strip()
            if not name:
                raise _api_error(400, "Bad Request: Command must be non-empty")
            if len(name) > 32:
                raise _api_error(400, "Bad Request: Command length must not exceed 32")
            if not description:
                raise _api_error(400, "Bad Request: Command description must be non-empty")
            if len(description) > 256:
                raise _api_error(400, "Bad Request: Command description length must not exceed "
                                      "256")
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise _api_error(400, "Bad Request: BOT_COMMAND_INVALID")
            cleaned.append({"command": name, "description": description})
        if len(cleaned) > 100:
            raise _api_error(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        self._commands[self._scope_key(params)] = cleaned
        return True

    def _get_my_commands(self, params: dict, files: dict) -> list[dict]:
        return copy.deepcopy(self._commands.get(self._scope_key(params), []))
