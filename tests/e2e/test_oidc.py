"""OpenID Connect sign-in against a real provider (the npm package oidc-provider, started on
loopback by tests/oidc/provider.mjs), driven the way a browser goes: the login page's button,
the provider's sign-in form, the callback, the session cookie. An organisation email's first
sign-in creates its account; an invited outside email becomes active; a disallowed domain, a
cancelled sign-in, a replayed state, and ID tokens with a wrong audience, an expired time, a
bad signature or an unverified email are refused, logged with the failed check and audited.
`dataport login` on a laptop signs in through the same browser session."""

from __future__ import annotations

import html
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from e2e_util import BIN, FlightSession, wait_for
from oidc_util import SECRET_ENV, OidcProvider, account, client, write_dataport_config, sign_in

SECRET = "oidc-client-s3cret"
ACCOUNTS = [
    account("u-ann", "ann@example.com", name="Ann Lee", picture="https://pics.example.com/ann.png",
            hd="example.com"),
    account("u-bob", "bob@partner.io", name="Bob Partner"),
    account("u-eve", "eve@evil.com", name="Eve"),
]


@pytest.fixture(scope="module")
def op():
    with OidcProvider(clients=[], accounts=ACCOUNTS) as provider:
        yield provider


@pytest.fixture
def srv(start_server, data_copy, tmp_path, op):
    config = tmp_path / "dataport.yaml"
    write_dataport_config(config, op.issuer)
    server = start_server(["--config", str(config)], data_dir=data_copy, demo=False,
                          env={SECRET_ENV: SECRET})
    op.set_clients([client("dataport", SECRET, [server.url("/auth/oidc/test/callback")])])
    return server


def start_url(srv, next_path: str = "/api/v1/auth/me") -> str:
    return srv.url(f"/auth/oidc/test/start?next={next_path}")


def landed_on_login(r: requests.Response) -> dict[str, list[str]]:
    """The login page's query where a refused sign-in ended."""
    url = urlsplit(r.url)
    assert url.path == "/login" and r.status_code == 200, (r.url, getattr(r, "hops", None))
    return parse_qs(url.query)


def no_session(browser: requests.Session) -> bool:
    return "dataport_session" not in {c.name for c in browser.cookies}


def test_the_login_page_offers_the_provider_and_the_password_form(srv):
    # the portal's home sends a browser without a session to sign in, and back
    home = requests.get(srv.url("/"), allow_redirects=False, timeout=30)
    assert home.status_code == 303 and home.headers["Location"] == "/login?next=%2F"
    r = requests.get(srv.url("/login?next=/catalog"), timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert 'href="/auth/oidc/test/start?next=%2Fcatalog">Sign in with Test Identity</a>' in r.text
    assert 'name="password"' in r.text and 'action="/login"' in r.text
    # an unknown provider
    r = requests.get(srv.url("/auth/oidc/nope/start"), timeout=30)
    assert landed_on_login(r) == {"next": ["/"], "error": ["unknown"]}
    assert "There is no such sign-in provider." in r.text


def test_the_first_sign_in_of_an_organisation_email_creates_its_account(srv, op):
    browser = requests.Session()
    r = sign_in(browser, start_url(srv), "ann@example.com")
    assert r.status_code == 200, (r.text, r.hops)
    assert r.url == srv.url("/api/v1/auth/me")
    assert r.json() == {"user": "ann", "groups": ["dataread"], "admin": False}
    # the authorization request: code flow, PKCE S256, state and nonce, our redirect URI
    authorize = parse_qs(urlsplit(r.hops[0][2]).query)
    assert r.hops[0][2].startswith(op.issuer)
    assert authorize["response_type"] == ["code"] and authorize["code_challenge_method"] == ["S256"]
    assert len(authorize["state"][0]) >= 32 and authorize["nonce"][0] and authorize["code_challenge"][0]
    assert authorize["redirect_uri"] == [srv.url("/auth/oidc/test/callback")]
    assert set(authorize["scope"][0].split()) == {"openid", "email", "profile"}
    assert r.callback_url and "code=" in r.callback_url
    # the sign-in is over: its browser binding is gone, a session is there
    assert "dataport_oidc" not in {c.name for c in browser.cookies}
    assert not no_session(browser)

    users = {u["name"]: u for u in srv.get("/api/v1/admin/users").json()["users"]}
    ann = users["ann"]
    assert (ann["email"], ann["display_name"], ann["state"], ann["picture_url"]) == \
        ("ann@example.com", "Ann Lee", "active", "https://pics.example.com/ann.png")
    changes = srv.get("/api/v1/admin/changes").json()["changes"]
    assert any(c["actor"] == "oidc:test" and c["action"] == "create" and c["account"] == "ann"
               for c in changes), changes
    # the session works for data, with the CSRF token for a query
    csrf = browser.cookies["dataport_csrf"]
    q = browser.post(srv.url("/api/v1/query"), json={"sql": "select count(*) as n from tpch.region"},
                     headers={"X-CSRF-Token": csrf}, timeout=60)
    assert q.status_code == 200 and q.json() == [{"n": 5}], q.text

    # signing in again: the same account, a new session id
    old = browser.cookies["dataport_session"]
    again = sign_in(browser, start_url(srv), "ann@example.com")
    assert again.json()["user"] == "ann" and browser.cookies["dataport_session"] != old
    assert len([u for u in srv.get("/api/v1/admin/users").json()["users"]
                if u["email"] == "ann@example.com"]) == 1
    assert "signed in (OpenID Connect)" in srv.stderr_tail(200)


def test_an_invited_outside_email_signs_in_and_an_uninvited_one_is_refused(srv):
    r = srv.post("/api/v1/admin/users", json={"email": "bob@partner.io", "groups": ["dataread"]})
    assert r.status_code in (200, 201), r.text
    bob = sign_in(requests.Session(), start_url(srv), "bob@partner.io")
    assert bob.json()["user"] == "bob_partner_io", (bob.text, bob.hops)
    users = {u["name"]: u for u in srv.get("/api/v1/admin/users").json()["users"]}
    assert users["bob_partner_io"]["state"] == "active"

    browser = requests.Session()
    eve = sign_in(browser, start_url(srv), "eve@evil.com")
    assert landed_on_login(eve) == {"next": ["/api/v1/auth/me"], "error": ["domain"]}
    assert "This account may not sign in here." in html.unescape(eve.text)
    assert no_session(browser)
    assert "eve_evil_com" not in {u["name"] for u in srv.get("/api/v1/admin/users").json()["users"]}
    log = srv.stderr_tail(200)
    assert "OpenID Connect sign-in refused" in log and "eve@evil.com has no account here" in log
    entries = wait_for(
        lambda: [e for e in srv.get("/api/v1/admin/audit?user=eve@evil.com").json()["entries"]
                 if e["surface"] == "oidc"],
        timeout=15, what="the refusal in the audit log")
    assert entries[0]["outcome"] == "unauthenticated" and "refused" in entries[0]["error"]


@pytest.mark.parametrize("mode,code,check", [
    ("audience", "token", "is for another client (audience)"),
    ("expired", "token", "the ID token has expired"),
    ("signature", "token", "signature does not verify"),
    ("unverified", "unverified", "has not verified the email address"),
])
def test_a_bad_id_token_is_refused_with_the_failed_check_logged(srv, op, mode, code, check):
    op.tamper(mode)
    browser = requests.Session()
    r = sign_in(browser, start_url(srv), "ann@example.com")
    assert landed_on_login(r)["error"] == [code], r.hops
    assert no_session(browser)
    log = srv.stderr_tail(100)
    assert check in log, log
    # never the token in the log
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", log)
    # the provider itself is fine: the next sign-in works
    assert sign_in(requests.Session(), start_url(srv), "ann@example.com").json()["user"] == "ann"


def test_a_replayed_or_foreign_state_and_a_cancelled_sign_in_are_refused(srv):
    browser = requests.Session()
    first = sign_in(browser, start_url(srv), "ann@example.com")
    assert first.json()["user"] == "ann"
    state = parse_qs(urlsplit(first.callback_url).query)["state"][0]

    # the same answer again, even from the browser that started it
    replay = requests.Session()
    replay.cookies.set("dataport_oidc", state)
    r = replay.get(first.callback_url, timeout=30)
    assert landed_on_login(r)["error"] == ["expired"]
    assert no_session(replay)
    assert "used before (a replay)" in srv.stderr_tail(50)

    # an answer that this browser did not start (login CSRF): no dataport_oidc cookie
    other = requests.Session()
    started = other.get(start_url(srv), allow_redirects=False, timeout=30)
    authorize = parse_qs(urlsplit(started.headers["Location"]).query)
    stranger = requests.Session()
    r = stranger.get(srv.url(f"/auth/oidc/test/callback?code=x&state={authorize['state'][0]}"),
                     timeout=30)
    assert urlsplit(r.url).path == "/login" and "error=expired" in r.url
    assert "not the one this browser started" in srv.stderr_tail(50)

    # cancelled at the provider
    browser = requests.Session()
    r = sign_in(browser, start_url(srv), "ann@example.com", abort=True)
    assert landed_on_login(r)["error"] == ["denied"]
    assert "cancelled or refused" in html.unescape(r.text)
    assert no_session(browser)


def test_a_disabled_account_cannot_sign_in_through_the_provider(srv):
    assert sign_in(requests.Session(), start_url(srv), "ann@example.com").json()["user"] == "ann"
    ann = next(u for u in srv.get("/api/v1/admin/users").json()["users"] if u["name"] == "ann")
    r = srv.session.patch(srv.url(f"/api/v1/admin/users/{ann['id']}"), json={"state": "disabled"},
                          timeout=30)
    assert r.status_code == 200, r.text
    browser = requests.Session()
    r = sign_in(browser, start_url(srv), "ann@example.com")
    assert landed_on_login(r)["error"] == ["disabled"]
    assert no_session(browser)


def test_dataport_login_signs_in_through_the_browser(srv, tmp_path):
    browser = requests.Session()
    assert sign_in(browser, start_url(srv), "ann@example.com").json()["user"] == "ann"
    home = tmp_path / "laptop"
    exe = BIN.parent / "dataport-client"
    proc = subprocess.Popen([str(exe), "login", "--server", srv.http, "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"DATAPORT_HOME": str(home), "PATH": "/usr/bin:/bin"})
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"(http://\S+/auth/cli\?\S+)", line)
            url = m.group(1) if m else None
        assert url, "dataport login printed no address"

        # a browser without a session is sent to sign in first, and back here afterwards
        r = requests.get(url, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=%2Fauth%2Fcli")

        page = browser.get(url, timeout=30)
        assert page.status_code == 200 and "act as <b>ann</b>" in page.text, page.text
        assert "form-action 'self' http://127.0.0.1:*" in page.headers["Content-Security-Policy"]
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
        # without the session's CSRF token: refused, the command line keeps waiting
        forged = browser.post(srv.url("/auth/cli"), data={**fields, "csrf": "x", "decision": "allow"},
                              allow_redirects=False, timeout=30)
        assert forged.status_code == 400 and proc.poll() is None
        approved = browser.post(srv.url("/auth/cli"), data={**fields, "decision": "allow"},
                                headers={"Origin": srv.http}, allow_redirects=False, timeout=30)
        assert approved.status_code == 303, approved.text
        loopback = approved.headers["Location"]
        assert loopback.startswith("http://127.0.0.1:") and "/callback?code=" in loopback
        done = browser.get(loopback, timeout=30)
        assert done.status_code == 200 and "Signed in as ann" in done.text
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "logged in to" in out and "as ann" in out
    creds = (home / "credentials.json").read_text()
    token = re.search(r'"token":\s*"([^"]+)"', creds).group(1)
    me = requests.get(srv.url("/api/v1/auth/me"), headers={"Authorization": f"Bearer {token}"},
                      timeout=30)
    assert me.json()["user"] == "ann"
    # the same identity on the other surfaces: Flight SQL with the token, analyst sync
    with FlightSession(srv.flight, user=None) as flight_session:
        flight_session.header = (b"authorization", f"Bearer {token}".encode())
        flight_session.options = flight_session.call_options()
        assert flight_session.sql("select count(*) as n from tpch.region").to_pylist() == [{"n": 5}]
    pulled = subprocess.run([str(exe), "pull", "--dir", str(tmp_path / "pulled"), "--no-duckdb",
                             "--json"], capture_output=True, text=True, timeout=120,
                            env={"DATAPORT_HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert pulled.returncode == 0, pulled.stderr
    assert list((tmp_path / "pulled").rglob("region*")), pulled.stdout
    # the code worked once
    code = parse_qs(urlsplit(loopback).query)["code"][0]
    again = requests.post(srv.url("/api/v1/auth/cli/token"),
                          json={"code": code, "verifier": "A" * 43}, timeout=30)
    assert again.status_code == 400 and "run dataport login again" in again.text


def test_a_sign_in_page_never_sends_the_browser_to_another_site(srv):
    browser = requests.Session()
    r = sign_in(browser, start_url(srv, "https://evil.example/"), "ann@example.com")
    assert urlsplit(r.url).netloc == urlsplit(srv.http).netloc, r.hops
    assert r.url == srv.url("/") and "Welcome, ann" in r.text   # `next` fell back to /
    r = browser.post(srv.url("/login"), data={"login": "x", "password": "y", "next": "//evil.example"},
                     headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
