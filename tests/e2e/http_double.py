"""What every test double of a remote HTTP API shares: a threaded server on 127.0.0.1 that
hands each request to the double (`handle(request, method)`), its start and stop, and writing
one answer. The doubles (jira_double.py, telegram_double.py) keep only their API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Handle = Callable[[BaseHTTPRequestHandler, str], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    handle_request_of: Handle


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.handle_request_of(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.handle_request_of(self, "POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.server.handle_request_of(self, "PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.handle_request_of(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the doubles keep their own request logs."""


class DoubleServer:
    """A server on 127.0.0.1 (a free port) whose requests go to `handle`. `server_version` is
    the `Server` header (a front such as nginx, when the double imitates one)."""

    def __init__(self, handle: Handle, name: str, server_version: str | None = None) -> None:
        handler = _Handler
        if server_version is not None:
            handler = type("_FrontHandler", (_Handler,), {"server_version": server_version,
                                                          "sys_version": ""})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.handle_request_of = handle
        self._name = name
        self._thread: threading.Thread | None = None
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name=self._name)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


def write_response(req: BaseHTTPRequestHandler, status: int, body: dict | list | bytes,
                   headers: dict[str, str], *, bytes_type: str | None = None,
                   json_type: str = "application/json") -> None:
    """One answer: JSON for a dict or list (`json_type`), else the bytes as they are (with
    `bytes_type` unless a Content-Type is given). A client that hung up is let go."""
    if isinstance(body, bytes):
        data = body
        if bytes_type is not None:
            headers.setdefault("Content-Type", bytes_type)
    else:
        data = json.dumps(body, ensure_ascii=False).encode()
        headers.setdefault("Content-Type", json_type)
    try:
        req.send_response(status)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        req.close_connection = True
