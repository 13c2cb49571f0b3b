"""The portal's Assistants page, in headless Chromium (Playwright): an assistant's token made on
the page, shown once with configurations for Claude Code, Cursor, VS Code, a local (stdio)
client and OAuth clients that carry this server's MCP URL and the token; the token refused
(403) by the API and the portal; tokens issued through OAuth listed beside it; revoking one on
the page. The consent page of the OAuth flow in the browser, allowed with its button. Also the
API's token scope and the page's JSON twin. The screenshots of the page and of the consent
page are docs/portal/assistants.png and docs/portal/assistants-consent.png.

One server for the module, on an empty data dir."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import secrets
import threading
import urllib.parse

import pytest
import requests
from playwright.sync_api import Page, expect

from browser_util import check_accessibility, screenshot, sign_in
from e2e_util import Server

PASSWORD = "Assist-Pass1"
USER = "as_ana"
OTHER = "as_bob"
ASSISTANT_ONLY = "an assistant's token works only at /mcp"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("data-assistants"), [],
               tmp_path_factory.mktemp("log-assistants"))
    try:
        s.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        for name in (USER, OTHER):
            s.cli("user", "add", name, "--groups", "dataread", "--password-stdin",
                  input=PASSWORD + "\n")
        yield s
    finally:
        s.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def my_tokens(srv, user: str = USER) -> list[dict]:
    r = requests.get(srv.url("/api/v1/auth/tokens"), timeout=30,
                     headers=bearer(srv.login(user, PASSWORD)))
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def query(srv, token: str) -> requests.Response:
    return requests.post(srv.url("/api/v1/query"), json={"sql": "select 1 as one"}, timeout=30,
                         headers=bearer(token))


def assistants_page(srv, new_page) -> Page:
    page = new_page(srv)
    sign_in(page, srv.http, "/assistants", USER, PASSWORD)
    return page


def create_on_page(page: Page, name: str, days: str = "30") -> str:
    page.get_by_label("Assistant name").fill(name)
    page.get_by_label("Days valid").fill(days)
    page.get_by_role("button", name="Create assistant token").click()
    token = page.locator("#new-token").inner_text()
    assert token.startswith("dpk_"), token
    return token


def config_text(page: Page, client_id: str) -> str:
    return page.locator(f"#config-{client_id} pre").inner_text()


def test_an_assistant_token_made_on_the_page_works_only_at_mcp(srv, new_page):
    page = assistants_page(srv, new_page)
    expect(page.get_by_role("link", name="Assistants")).to_have_attribute("aria-current", "page")
    mcp_url = srv.http + "/mcp"
    expect(page.locator("#mcp-url")).to_have_text(mcp_url)
    # Before a token is made, the configurations hold a placeholder.
    assert "YOUR_ASSISTANT_TOKEN" in config_text(page, "claude-code")

    token = create_on_page(page, "Claude on my laptop")
    expect(page.get_by_role("status")).to_contain_text("shown only this once")
    assert config_text(page, "claude-code") == (
        f'claude mcp add --transport http dataport {mcp_url} '
        f'--header "Authorization: Bearer {token}"')
    cursor = json.loads(config_text(page, "cursor"))
    assert cursor == {"mcpServers": {"dataport": {
        "url": mcp_url, "headers": {"Authorization": f"Bearer {token}"}}}}
    vscode = json.loads(config_text(page, "vscode"))
    assert vscode == {"servers": {"dataport": {
        "type": "http", "url": mcp_url, "headers": {"Authorization": f"Bearer {token}"}}}}
    stdio = json.loads(config_text(page, "stdio"))
    assert stdio == {"mcpServers": {"dataport": {"command": "dataport", "args": ["mcp"]}}}
    expect(page.locator("#config-stdio")).to_contain_text(f"dataport login --server {srv.http}")
    assert config_text(page, "oauth") == mcp_url
    expect(page.locator("#config-cursor")).to_contain_text("~/.cursor/mcp.json")
    expect(page.locator("#config-vscode")).to_contain_text(".vscode/mcp.json")
    expect(page.get_by_role("cell", name="Claude on my laptop", exact=True)).to_be_visible()
    check_accessibility(page, "the assistants page with a new token")

    listed = [t for t in my_tokens(srv) if t["label"] == "Claude on my laptop"]
    assert len(listed) == 1 and listed[0]["scope"] == "assistant", listed
    assert 29 * 86_400 < listed[0]["expires_at"] - listed[0]["created_at"] <= 30 * 86_400
    # Refused by the API and by the portal: it is good only at /mcp.
    r = query(srv, token)
    assert r.status_code == 403 and ASSISTANT_ONLY in r.json()["error"]["message"], r.text
    for path in ("/api/v1/catalog", "/api/v1/auth/tokens", "/", "/assistants", "/catalog",
                 "/api/v1/desktop/me"):
        r = requests.get(srv.url(path), headers={**bearer(token), "Accept": "application/json"},
                         timeout=30)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
    r = requests.post(srv.url("/api/v1/auth/tokens"), json={"label": "escalate"}, timeout=30,
                      headers=bearer(token))
    assert r.status_code == 403, r.text
    # Reloaded, the page no longer shows the secret.
    page.goto("/assistants")
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()


def test_revoking_on_the_page_ends_the_token(srv, new_page):
    page = assistants_page(srv, new_page)
    token = create_on_page(page, "To revoke")
    token_id = token.split("_")[1]
    assert any(t["id"] == token_id for t in my_tokens(srv))
    page.goto("/assistants")
    page.get_by_role("button", name="Revoke To revoke").click()
    page.wait_for_url(srv.url("/assistants"))
    expect(page.get_by_role("status")).to_contain_text("“To revoke” is revoked")
    expect(page.get_by_role("cell", name="To revoke", exact=True)).to_have_count(0)
    assert not any(t["id"] == token_id for t in my_tokens(srv))
    assert query(srv, token).status_code == 401
    # Someone else's id, or a token of the whole API, cannot be revoked here.
    full = requests.post(srv.url("/api/v1/auth/tokens"), json={"label": "laptop"}, timeout=30,
                         headers=bearer(srv.login(USER, PASSWORD)))
    assert full.status_code == 201, full.text
    b = requests.Session()
    b.post(srv.url("/api/v1/auth/session"), json={"username": USER, "password": PASSWORD},
           timeout=30)
    r = b.post(srv.url(f"/assistants/{full.json()['id']}/revoke"), timeout=30,
               data={"csrf": b.cookies["dataport_csrf"]}, allow_redirects=False)
    assert r.status_code == 404, r.text[:300]
    assert query(srv, full.json()["token"]).status_code == 200
    # A form without the session's CSRF token changes nothing.
    r = b.post(srv.url("/assistants"), data={"name": "forged", "csrf": "x"}, timeout=30,
               allow_redirects=False)
    assert r.status_code == 403
    assert not any(t["label"] == "forged" for t in my_tokens(srv))


def test_the_api_makes_assistant_tokens_and_lists_scopes(srv):
    session = bearer(srv.login(OTHER, PASSWORD))
    r = requests.post(srv.url("/api/v1/auth/tokens"), headers=session, timeout=30,
                      json={"label": "cursor", "expires_in_days": 7, "scope": "assistant"})
    assert r.status_code == 201, r.text
    assert r.json()["scope"] == "assistant"
    assert query(srv, r.json()["token"]).status_code == 403
    r = requests.post(srv.url("/api/v1/auth/tokens"), headers=session, timeout=30,
                      json={"label": "x", "scope": "admin"})
    assert r.status_code == 400 and "scope" in r.text, r.text
    r = requests.post(srv.url("/api/v1/auth/tokens"), headers=session, timeout=30,
                      json={"label": "plain"})
    assert r.status_code == 201 and r.json()["scope"] is None
    scopes = {t["label"]: t["scope"] for t in my_tokens(srv, OTHER)}
    assert scopes == {"cursor": "assistant", "plain": None}, scopes


def test_the_page_has_a_json_twin(srv):
    b = requests.Session()
    r = b.post(srv.url("/api/v1/auth/session"), json={"username": OTHER, "password": PASSWORD},
               timeout=30)
    assert r.status_code == 200
    r = b.get(srv.url("/assistants?format=json"), timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    data = r.json()
    assert data["mcp_url"] == srv.http + "/mcp" and data["server_url"] == srv.http
    assert [c["id"] for c in data["configs"]] == ["claude-code", "cursor", "vscode", "stdio",
                                                   "oauth"]
    assert all("dpk_" not in c["text"] for c in data["configs"])
    assert [t["label"] for t in data["tokens"]] == ["cursor"], data["tokens"]
    assert (data["default_days"], data["max_days"]) == (90, 365)
    # Without a session: to sign in, and back.
    r = requests.get(srv.url("/assistants"), allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"] == "/login?next=%2Fassistants"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Callback(http.server.BaseHTTPRequestHandler):
    """The client's end of the redirect: records what it was sent."""
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (the standard library's name)
        Callback.seen.append(self.path)
        body = b"connected"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def callback_url():
    """A loopback HTTP server standing for the MCP client's redirect URI."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/callback"
    httpd.shutdown()
    httpd.server_close()


def test_an_assistant_connected_through_oauth_in_the_browser(srv, new_page, callback_url):
    """The consent page, allowed in Chromium; the token it leads to is listed on the page."""
    r = requests.post(srv.url("/oauth/register"), timeout=30,
                      json={"client_name": "Claude Desktop", "redirect_uris": [callback_url]})
    assert r.status_code == 201, r.text
    client = r.json()
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client["client_id"],
              "redirect_uri": callback_url, "code_challenge": challenge,
              "code_challenge_method": "S256", "state": "xyz", "scope": "mcp",
              "resource": srv.http + "/mcp"}
    authorize = "/oauth/authorize?" + urllib.parse.urlencode(params)
    page = new_page(srv)
    sign_in(page, srv.http, authorize, USER, PASSWORD)
    expect(page.get_by_role("heading", name="Connect Claude Desktop?")).to_be_visible()
    expect(page.locator("main")).to_contain_text("cannot change anything or manage your account")
    check_accessibility(page, "the consent page")
    screenshot(page, "assistants-consent")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(re.compile("^" + re.escape(callback_url) + r"\?"))
    expect(page.locator("body")).to_have_text("connected")
    came = [p for p in Callback.seen if p.startswith("/callback?")]
    assert len(came) == 1, Callback.seen
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(came[0]).query))
    assert back["state"] == "xyz" and back["iss"] == srv.http
    r = requests.post(srv.url("/oauth/token"), timeout=30, data={
        "grant_type": "authorization_code", "code": back["code"], "client_id": client["client_id"],
        "redirect_uri": callback_url, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert query(srv, token).status_code == 403

    page.goto("/assistants")
    expect(page.get_by_role("cell", name="Claude Desktop (OAuth)", exact=True)).to_be_visible()


def test_the_page_for_the_docs(srv, new_page):
    """docs/portal/assistants.png comes from this screenshot (a token just made, with the
    configurations that carry it)."""
    page = assistants_page(srv, new_page)
    create_on_page(page, "Claude Code on my laptop", "90")
    expect(page.locator("#new-token")).to_be_visible()
    screenshot(page, "assistants")
    phone = new_page(srv, phone=True)
    sign_in(phone, srv.http, "/assistants", USER, PASSWORD)
    check_accessibility(phone, "the assistants page at phone width")
