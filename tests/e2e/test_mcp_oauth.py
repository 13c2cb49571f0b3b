"""The OAuth 2.1 authorization server that MCP clients sign in through, with plain requests:
the discovery documents (RFC 9728, RFC 8414), dynamic client registration (RFC 7591: https or
loopback redirect URIs only, limited per address), the authorization request (an unknown client
or redirect URI gets a page and never a redirect; other errors go back to the client; without a
session the browser goes to sign in and comes back; the consent page with the session's CSRF
token; Allow gives a code, Deny `access_denied`), the token exchange with PKCE (a wrong
verifier, another redirect URI or client refused; a code used twice refused, and the token of
its first use revoked), the token being an assistant's (403 everywhere but /mcp, Flight SQL
included) and its revocation (RFC 7009).

One server for the module, on an empty data dir."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import urllib.parse

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from e2e_util import FlightSession, Server, flight_status, run_async

PASSWORD = "Oauth-Pass1"
USER = "oa_ana"
CALLBACK = "http://127.0.0.1:45999/callback"
ASSISTANT_ONLY = "an assistant's token works only at /mcp"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("data-oauth"), [], tmp_path_factory.mktemp("log-oauth"))
    try:
        s.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        s.cli("user", "add", USER, "--groups", "dataread", "--password-stdin",
              input=PASSWORD + "\n")
        yield s
    finally:
        s.stop()


def pkce() -> tuple[str, str]:
    """A verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def browser(srv, user: str = USER) -> requests.Session:
    """A signed-in browser (the session API's cookies, with the CSRF cookie)."""
    s = requests.Session()
    r = s.post(srv.url("/api/v1/auth/session"), json={"username": user, "password": PASSWORD},
               timeout=60)
    assert r.status_code == 200, r.text
    return s


def register(srv, name: str = "Test Assistant", uris=(CALLBACK,)) -> dict:
    r = requests.post(srv.url("/oauth/register"), timeout=30,
                      json={"client_name": name, "redirect_uris": list(uris)})
    assert r.status_code == 201, r.text
    return r.json()


def authorize_params(client: dict, challenge: str, **extra) -> dict:
    params = {"response_type": "code", "client_id": client["client_id"],
              "redirect_uri": client["redirect_uris"][0], "code_challenge": challenge,
              "code_challenge_method": "S256", "state": "st-" + secrets.token_hex(4),
              "scope": "mcp"}
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def query_of(location: str) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def hidden_fields(page: str) -> dict:
    return {m.group(1): html.unescape(m.group(2))
            for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)}


def approve(srv, b: requests.Session, params: dict, decision: str = "allow") -> requests.Response:
    """Open the consent page and answer it (the page's own form, with its CSRF token)."""
    page = b.get(srv.url("/oauth/authorize"), params=params, allow_redirects=False, timeout=30)
    assert page.status_code == 200, page.text[:500]
    form = hidden_fields(page.text)
    assert form["csrf"] == b.cookies["dataport_csrf"]
    form["decision"] = decision
    return b.post(srv.url("/oauth/authorize"), data=form, allow_redirects=False, timeout=30)


def code_for(srv, client: dict, b: requests.Session | None = None) -> tuple[str, str, dict]:
    """A fresh code of `client` approved by USER: (code, verifier, the request's params)."""
    verifier, challenge = pkce()
    params = authorize_params(client, challenge, resource=srv.url("/mcp"))
    r = approve(srv, b or browser(srv), params)
    assert r.status_code in (302, 303), r.text[:500]
    back = query_of(r.headers["Location"])
    assert r.headers["Location"].startswith(CALLBACK + "?")
    assert back["state"] == params["state"] and back["iss"] == srv.http
    return back["code"], verifier, params


def exchange(srv, client: dict, code: str, verifier: str, **override) -> requests.Response:
    form = {"grant_type": "authorization_code", "code": code, "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0], "code_verifier": verifier,
            "resource": srv.url("/mcp")}
    form.update(override)
    return requests.post(srv.url("/oauth/token"), timeout=30,
                         data={k: v for k, v in form.items() if v is not None})


def assert_oauth_error(r: requests.Response, error: str, status: int = 400) -> dict:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    body = r.json()
    assert body["error"] == error and body["error_description"], body
    assert r.headers["Cache-Control"] == "no-store"
    return body


def owner_tokens(srv) -> list[dict]:
    token = srv.login(USER, PASSWORD)
    r = requests.get(srv.url("/api/v1/auth/tokens"), timeout=30,
                     headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def query_status(srv, token: str) -> requests.Response:
    return requests.post(srv.url("/api/v1/query"), json={"sql": "select 1 as one"}, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})


def test_the_discovery_documents_name_mcp_and_this_server(srv):
    for path in ("/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-protected-resource/mcp"):
        r = requests.get(srv.url(path), timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.json() == {"resource": srv.http + "/mcp", "authorization_servers": [srv.http],
                            "bearer_methods_supported": ["header"], "scopes_supported": ["mcp"],
                            "resource_name": "Dataport"}
    meta = requests.get(srv.url("/.well-known/oauth-authorization-server"), timeout=30).json()
    assert meta["issuer"] == srv.http
    for key, path in (("authorization_endpoint", "/oauth/authorize"),
                      ("token_endpoint", "/oauth/token"),
                      ("registration_endpoint", "/oauth/register"),
                      ("revocation_endpoint", "/oauth/revoke")):
        assert meta[key] == srv.http + path, meta
    assert meta["response_types_supported"] == ["code"]
    assert meta["grant_types_supported"] == ["authorization_code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint_auth_methods_supported"] == ["none"]
    assert meta["scopes_supported"] == ["mcp"]
    # A client in a browser may ask first.
    r = requests.options(srv.url("/oauth/token"), timeout=30,
                         headers={"Origin": "https://inspector.example",
                                  "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]


def test_registration_takes_https_loopback_and_app_scheme_redirects_only(srv):
    r = requests.post(srv.url("/oauth/register"), timeout=30, json={
        "client_name": "Claude Code", "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code", "refresh_token"], "logo_uri": "https://x/l.png",
        "redirect_uris": ["http://localhost:33418/callback", "https://claude.ai/api/mcp/auth_callback"]})
    assert r.status_code == 201, r.text
    client = r.json()
    assert client["client_id"].startswith("dpc_") and client["client_id_issued_at"] > 0
    assert client["client_name"] == "Claude Code"
    assert client["redirect_uris"] == ["http://localhost:33418/callback",
                                       "https://claude.ai/api/mcp/auth_callback"]
    # What the server offers replaces what it does not: a public client, codes only.
    assert client["token_endpoint_auth_method"] == "none"
    assert client["grant_types"] == ["authorization_code"]
    assert client["response_types"] == ["code"]
    assert "client_secret" not in client
    # Nameless: it gets a stand-in name.
    anon = requests.post(srv.url("/oauth/register"), timeout=30,
                         json={"redirect_uris": ["http://127.0.0.1:1234/cb"]})
    assert anon.status_code == 201 and anon.json()["client_name"], anon.text
    # A desktop app's own scheme: reverse-domain, or a known MCP client's (Cursor).
    for uri in ("cursor://anysphere.cursor-mcp/oauth/callback", "com.example.assistant:/cb"):
        r = requests.post(srv.url("/oauth/register"), timeout=30,
                          json={"client_name": "app", "redirect_uris": [uri]})
        assert r.status_code == 201, r.text

    for uris in (["http://example.com/callback"], ["https://example.com/cb#frag"],
                 ["http://10.1.2.3/cb"], ["myapp://callback"], ["javascript:alert(1)"],
                 ["/relative"], [], [f"https://a.example/{n}" for n in range(6)]):
        r = requests.post(srv.url("/oauth/register"), timeout=30,
                          json={"client_name": "bad", "redirect_uris": uris})
        assert_oauth_error(r, "invalid_redirect_uri")
    r = requests.post(srv.url("/oauth/register"), timeout=30,
                      json={"client_name": "x" * 101, "redirect_uris": [CALLBACK]})
    assert_oauth_error(r, "invalid_client_metadata")
    r = requests.post(srv.url("/oauth/register"), data="not json", timeout=30,
                      headers={"Content-Type": "application/json"})
    assert_oauth_error(r, "invalid_client_metadata")


def test_an_unknown_client_or_redirect_gets_a_page_not_a_redirect(srv):
    client = register(srv)
    _, challenge = pkce()
    b = browser(srv)
    for params in (authorize_params({"client_id": "dpc_nope", "redirect_uris": [CALLBACK]}, challenge),
                   authorize_params(client, challenge, redirect_uri="https://evil.example/cb"),
                   authorize_params(client, challenge, redirect_uri=CALLBACK.replace("callback", "other")),
                   authorize_params(client, challenge, client_id=None)):
        for who in (b, requests):
            r = who.get(srv.url("/oauth/authorize"), params=params, allow_redirects=False,
                        timeout=30)
            assert r.status_code == 400 and "Location" not in r.headers, (params, r.status_code)
            assert "cannot be connected" in r.text and "evil.example" not in r.text


def test_other_authorization_errors_go_back_to_the_client(srv):
    client = register(srv)
    _, challenge = pkce()
    for extra, error in (({"code_challenge": None}, "invalid_request"),
                         ({"code_challenge_method": "plain"}, "invalid_request"),
                         ({"code_challenge_method": None}, "invalid_request"),
                         ({"code_challenge": "short"}, "invalid_request"),
                         ({"response_type": "token"}, "unsupported_response_type"),
                         ({"resource": "https://elsewhere.example/mcp"}, "invalid_target")):
        params = authorize_params(client, challenge, **extra)
        r = requests.get(srv.url("/oauth/authorize"), params=params, allow_redirects=False,
                         timeout=30)
        assert r.status_code == 302, (extra, r.status_code, r.text[:300])
        assert r.headers["Location"].startswith(CALLBACK + "?")
        back = query_of(r.headers["Location"])
        assert back["error"] == error and back["state"] == params["state"], (extra, back)
        assert back["iss"] == srv.http


def test_without_a_session_the_browser_signs_in_and_comes_back(srv):
    client = register(srv)
    _, challenge = pkce()
    params = authorize_params(client, challenge, resource=srv.url("/mcp"))
    r = requests.get(srv.url("/oauth/authorize"), params=params, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text[:300]
    location = r.headers["Location"]
    assert location.startswith("/login?next=")
    back = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["next"][0]
    assert back.startswith("/oauth/authorize?")
    assert query_of(back) == params
    # The login page's form carries it on, and signing in there leads back to the consent.
    s = requests.Session()
    r = s.post(srv.url("/login"), data={"login": USER, "password": PASSWORD, "next": back},
               allow_redirects=False, timeout=60)
    assert r.status_code == 303 and r.headers["Location"] == back, r.text[:300]
    page = s.get(srv.url(back), allow_redirects=False, timeout=30)
    assert page.status_code == 200 and "Connect Test Assistant?" in page.text


def test_consent_allow_code_and_pkce_exchange(srv):
    client = register(srv, name="Claude <b>Test</b>")
    verifier, challenge = pkce()
    params = authorize_params(client, challenge, resource=srv.url("/mcp"))
    b = browser(srv)
    page = b.get(srv.url("/oauth/authorize"), params=params, allow_redirects=False, timeout=30)
    assert page.status_code == 200
    text = page.text
    assert USER in text and "Claude <b>Test</b>?" in html.unescape(text), text
    assert "<b>Test</b>" not in text
    assert "127.0.0.1" in text
    assert "query the tables you can read, as you, through MCP" in text
    assert "cannot change anything or manage your account" in text
    assert "30 days" in text
    # The form may send the browser on to the client's redirect URI, and only there.
    policy = page.headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:45999;" in policy, policy
    assert page.headers["X-Frame-Options"] == "DENY"

    # Without the session's CSRF token, nothing is approved.
    form = hidden_fields(text)
    form["decision"] = "allow"
    forged = dict(form, csrf="forged")
    r = b.post(srv.url("/oauth/authorize"), data=forged, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "Location" not in r.headers
    r = b.post(srv.url("/oauth/authorize"), data=form, allow_redirects=False, timeout=30,
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "Location" not in r.headers

    r = b.post(srv.url("/oauth/authorize"), data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text[:300]
    back = query_of(r.headers["Location"])
    assert set(back) == {"code", "state", "iss"} and back["state"] == params["state"]
    code = back["code"]

    # Refused without consuming the code: another verifier, redirect URI, client or resource.
    body = assert_oauth_error(exchange(srv, client, code, pkce()[0]), "invalid_grant")
    assert "code_verifier" in body["error_description"]
    assert_oauth_error(exchange(srv, client, code, verifier, redirect_uri=CALLBACK + "x"),
                       "invalid_grant")
    other = register(srv, name="Other")
    assert_oauth_error(exchange(srv, other, code, verifier), "invalid_grant")
    assert_oauth_error(exchange(srv, client, code, verifier, resource="https://x.example/mcp"),
                       "invalid_target")

    r = exchange(srv, client, code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    answer = r.json()
    assert answer["token_type"] == "Bearer" and answer["scope"] == "mcp"
    assert 30 * 86_400 - 60 <= answer["expires_in"] <= 30 * 86_400
    token = answer["access_token"]
    assert token.startswith("dpk_")

    # An assistant's token of USER: listed with its scope and the client's name.
    listed = [t for t in owner_tokens(srv) if t["label"] == "Claude <b>Test</b> (OAuth)"]
    assert len(listed) == 1 and listed[0]["scope"] == "assistant", listed
    assert token.split("_")[1] == listed[0]["id"]
    # It works nowhere but /mcp.
    r = query_status(srv, token)
    assert r.status_code == 403 and ASSISTANT_ONLY in r.json()["error"]["message"], r.text
    for path in ("/api/v1/catalog", "/api/v1/auth/me", "/api/v1/auth/tokens", "/?format=json",
                 "/assistants?format=json"):
        r = requests.get(srv.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
    with FlightSession(srv.flight, user=None) as s:
        opts = s.call_options([(b"authorization", f"Bearer {token}".encode())])
        with pytest.raises((flight.FlightError, pa.ArrowException)) as e:
            s.sql("select 1 as one", opts)
        assert flight_status(e.value) == "PERMISSION_DENIED", e.value

    # The same code again: refused, and the token of its first use is revoked.
    assert_oauth_error(exchange(srv, client, code, verifier), "invalid_grant")
    assert query_status(srv, token).status_code == 401
    assert not [t for t in owner_tokens(srv) if t["id"] == listed[0]["id"]]


def test_deny_sends_access_denied(srv):
    client = register(srv)
    _, challenge = pkce()
    params = authorize_params(client, challenge)
    r = approve(srv, browser(srv), params, decision="deny")
    assert r.status_code == 303
    back = query_of(r.headers["Location"])
    assert back["error"] == "access_denied" and back["state"] == params["state"]
    assert "code" not in back


def test_a_loopback_client_may_come_back_on_another_port(srv):
    client = register(srv, uris=("http://127.0.0.1:40000/cb",))
    verifier, challenge = pkce()
    params = authorize_params(client, challenge, redirect_uri="http://127.0.0.1:41234/cb")
    r = approve(srv, browser(srv), params)
    assert r.headers["Location"].startswith("http://127.0.0.1:41234/cb?code=")
    code = query_of(r.headers["Location"])["code"]
    # The token request repeats the redirect URI of the authorization request.
    assert_oauth_error(exchange(srv, client, code, verifier), "invalid_grant")
    r = exchange(srv, client, code, verifier, redirect_uri="http://127.0.0.1:41234/cb")
    assert r.status_code == 200, r.text


def test_token_requests_are_checked(srv):
    client = register(srv)
    code, verifier, _ = code_for(srv, client)
    assert_oauth_error(exchange(srv, client, code, verifier, grant_type="refresh_token"),
                       "unsupported_grant_type")
    assert_oauth_error(exchange(srv, client, code, verifier, grant_type=None), "invalid_request")
    assert_oauth_error(exchange(srv, client, code, None), "invalid_request")
    assert_oauth_error(exchange(srv, client, None, verifier), "invalid_request")
    assert_oauth_error(exchange(srv, {"client_id": "dpc_nope", "redirect_uris": [CALLBACK]},
                                code, verifier), "invalid_client")
    assert_oauth_error(exchange(srv, client, "not-a-code", verifier), "invalid_grant")
    r = requests.post(srv.url("/oauth/token"), timeout=30, json={
        "grant_type": "authorization_code", "code": code, "client_id": client["client_id"],
        "code_verifier": verifier})
    assert_oauth_error(r, "invalid_request")
    # None of that used the code up.
    assert exchange(srv, client, code, verifier).status_code == 200


def test_revocation(srv):
    client = register(srv)
    code, verifier, _ = code_for(srv, client)
    token = exchange(srv, client, code, verifier).json()["access_token"]
    assert query_status(srv, token).status_code == 403
    r = requests.post(srv.url("/oauth/revoke"), data={"token": token}, timeout=30)
    assert r.status_code == 200, r.text
    assert query_status(srv, token).status_code == 401
    # Unknown tokens, and tokens that are no assistant's: 200, and nothing happens.
    for other in (token, "dpk_nothing_here", "garbage"):
        assert requests.post(srv.url("/oauth/revoke"), data={"token": other},
                             timeout=30).status_code == 200
    full = srv.session.post(srv.url("/api/v1/auth/tokens"), json={"label": "kept"}, timeout=30)
    assert full.status_code == 201, full.text
    full_token = full.json()["token"]
    assert requests.post(srv.url("/oauth/revoke"), data={"token": full_token},
                         timeout=30).status_code == 200
    assert query_status(srv, full_token).status_code == 200
    assert_oauth_error(requests.post(srv.url("/oauth/revoke"), data={}, timeout=30),
                       "invalid_request")


def test_the_mcp_sdk_signs_in_through_oauth_and_queries(srv):
    """The official SDK's OAuth client against `/mcp`: the 401 names the metadata, the client
    registers, the user approves in the browser (here: requests with the portal session), and
    the assistant token it gets works at /mcp — and only there."""
    import httpx2
    from mcp.client import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    class Memory:
        def __init__(self):
            self.tokens = None
            self.client = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, info):
            self.client = info

    signed_in = browser(srv)
    redirected: dict = {}

    async def redirect_handler(url: str) -> None:
        # The user's browser opens the consent page and allows.
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        r = approve(srv, signed_in, params)
        assert r.status_code in (302, 303), r.text[:300]
        redirected.update(query_of(r.headers["Location"]))

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirected["code"], state=redirected.get("state"),
                                       iss=redirected.get("iss"))

    storage = Memory()
    auth = OAuthClientProvider(
        server_url=srv.url("/mcp"),
        client_metadata=OAuthClientMetadata(client_name="SDK Assistant", redirect_uris=[CALLBACK],
                                            grant_types=["authorization_code"],
                                            response_types=["code"], scope="mcp"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)

    async def go():
        async with httpx2.AsyncClient(auth=auth, timeout=60) as http:
            async with Client(streamable_http_client(srv.url("/mcp"), http_client=http)) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                assert "run_query" in tools
                r = await client.call_tool("run_query", {"sql": "SELECT 6 * 7 AS answer"})
                assert not r.is_error and r.structured_content["rows"] == [[42]]

    run_async(go())
    token = storage.tokens.access_token
    assert query_status(srv, token).status_code == 403
    mine = [t for t in owner_tokens(srv) if t["label"] == "SDK Assistant (OAuth)"]
    assert len(mine) == 1 and mine[0]["scope"] == "assistant"
