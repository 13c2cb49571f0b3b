"""Browser sessions through a real HTTP client: the cookies a sign-in sets, CSRF protection of
cookie-authenticated changes (token and Origin), listing and ending my sessions, a new session
id at every sign-in, and an administrator disabling an account ending its sessions for good.
Bearer-token calls are unchanged."""

from __future__ import annotations

import time

import pytest
import requests

from e2e_util import ADMIN_PASSWORD, ADMIN_USER

PASSWORD = "Session-Pass1"
QUERY = {"sql": "select count(*) as n from tpch.region"}


@pytest.fixture
def srv(start_server, data_copy):
    return start_server(data_dir=data_copy, demo=False)


def sign_in(srv, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD,
            browser: requests.Session | None = None) -> tuple[requests.Session, requests.Response]:
    browser = browser or requests.Session()
    r = browser.post(srv.url("/api/v1/auth/session"), json={"username": user, "password": password},
                     timeout=60)
    return browser, r


def set_cookies(r: requests.Response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in r.raw.headers.getlist("Set-Cookie")}


def test_a_sign_in_sets_a_protected_session_cookie_and_a_csrf_token(srv):
    browser, r = sign_in(srv)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == ADMIN_USER and body["admin"] is True and body["csrf_token"]
    cookies = set_cookies(r)
    session, csrf = cookies["dataport_session"], cookies["dataport_csrf"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="):
        assert attribute in session, session
    assert "Domain=" not in session and "Secure" not in session, session   # host-only; plain HTTP
    assert "HttpOnly" not in csrf and body["csrf_token"] in csrf, csrf

    # reads need only the cookie
    me = browser.get(srv.url("/api/v1/auth/me"), timeout=60)
    assert me.json()["user"] == ADMIN_USER, me.text
    # a change needs the CSRF token too, from this server's origin
    assert browser.post(srv.url("/api/v1/query"), json=QUERY, timeout=60).status_code == 403
    wrong = browser.post(srv.url("/api/v1/query"), json=QUERY, timeout=60,
                         headers={"X-CSRF-Token": "0" * 32})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "permission_denied"
    headers = {"X-CSRF-Token": body["csrf_token"]}
    ok = browser.post(srv.url("/api/v1/query"), json=QUERY, headers=headers, timeout=60)
    assert ok.status_code == 200 and ok.json() == [{"n": 5}], ok.text
    foreign = browser.post(srv.url("/api/v1/query"), json=QUERY, timeout=60,
                           headers={**headers, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.text, foreign.text
    own = browser.post(srv.url("/api/v1/query"), json=QUERY, timeout=60,
                       headers={**headers, "Origin": srv.http})
    assert own.status_code == 200, own.text
    # bearer tokens are as before: no CSRF token needed
    bearer = requests.post(srv.url("/api/v1/query"), json=QUERY, timeout=60,
                           headers={"Authorization": f"Bearer {srv.admin_token}"})
    assert bearer.status_code == 200
    # no signing in from another site's page
    r = requests.post(srv.url("/api/v1/auth/session"), timeout=60,
                      json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                      headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "dataport_session" not in set_cookies(r), r.text
    # wrong passwords get no session
    _, bad = sign_in(srv, password="Wrong-Pass99")
    assert bad.status_code == 401 and "dataport_session" not in set_cookies(bad)


def test_behind_https_the_cookies_are_secure(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False,
                       env={"DATAPORT_PUBLIC_URL": "https://data.example.com"})
    _, r = sign_in(srv)
    for name, cookie in set_cookies(r).items():
        assert "Secure" in cookie, (name, cookie)


def test_my_sessions_can_be_listed_and_ended_and_a_sign_in_rotates_the_id(srv):
    laptop, first = sign_in(srv)
    phone, _ = sign_in(srv)
    csrf = laptop.cookies["dataport_csrf"]
    listed = laptop.get(srv.url("/api/v1/auth/sessions"), timeout=60).json()["sessions"]
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1, listed
    assert all("secret_hash" not in s and "csrf_hash" not in s for s in listed), listed
    other = next(s for s in listed if not s["current"])
    r = laptop.delete(srv.url(f"/api/v1/auth/sessions/{other['id']}"), timeout=60,
                      headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204, r.text
    assert phone.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 401

    # signing in again from the same browser ends the session it had
    before = laptop.cookies["dataport_session"]
    _, again = sign_in(srv, browser=laptop)
    assert again.status_code == 200 and laptop.cookies["dataport_session"] != before
    stale = requests.get(srv.url("/api/v1/auth/me"), cookies={"dataport_session": before}, timeout=60)
    assert stale.status_code == 401
    # signing out ends it and clears the cookies
    r = laptop.delete(srv.url("/api/v1/auth/session"), timeout=60,
                      headers={"X-CSRF-Token": laptop.cookies["dataport_csrf"]})
    assert r.status_code == 204 and "Max-Age=0" in set_cookies(r)["dataport_session"]
    assert laptop.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 401


def test_disabling_an_account_ends_its_sessions_for_good(srv):
    srv.cli("user", "add", "eve", "--groups", "dataread", "--password-stdin", input=PASSWORD + "\n")
    browser, r = sign_in(srv, "eve", PASSWORD)
    assert r.status_code == 200
    srv.cli("user", "disable", "eve")
    assert browser.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 401
    srv.cli("user", "enable", "eve")
    assert browser.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 401
    # a password change ends the sessions opened before it
    browser, _ = sign_in(srv, "eve", PASSWORD)
    assert browser.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 200
    time.sleep(1.1)
    srv.cli("user", "passwd", "eve", "--password-stdin", input="Changed-Pass1\n")
    assert browser.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 401
