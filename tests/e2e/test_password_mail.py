"""Passwords by email against a real SMTP server (aiosmtpd on loopback, STARTTLS with a private
CA and a login): an invitation mails a set-up link, the link's page sets the password once,
"forgot password" answers the same for every email and mails only real accounts, requests are
rate limited, and without an SMTP server the link goes to the server log."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

PASSWORD = "Mailed-Pass1"
RELAY_USER, RELAY_PASSWORD = "relay", "Relay-Secret1"
ORG = {"DATAPORT_ALLOWED_DOMAINS": "example.com", "DATAPORT_PASSWORD_EMAILS": "zoe@partner.io"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signs for 127.0.0.1: (ca, cert, key)."""
    d = tmp_path_factory.mktemp("smtp-tls")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "3", "-subj", "/CN=Test Mail CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "3", "-extfile", str(ext))
    return ca, cert, key


class Inbox:
    """An aiosmtpd handler that keeps every message and the logins it saw."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and \
                (auth_data.login.decode(), auth_data.password.decode()) == (RELAY_USER, RELAY_PASSWORD):
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def wait(self, count: int, timeout: float = 15) -> list[email.message.EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, f"{len(self.messages)} of {count} mails arrived"
        return self.messages


@pytest.fixture
def smtp(tls_files):
    ca, cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=inbox.authenticate,
                            auth_require_tls=True)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def srv(start_server, data_copy, smtp, tls_files):
    _, port = smtp
    ca, _, _ = tls_files
    env = {**ORG, "DATAPORT_MAIL_SMTP_HOST": "127.0.0.1", "DATAPORT_MAIL_SMTP_PORT": str(port),
           "DATAPORT_MAIL_SMTP_SECURITY": "starttls", "DATAPORT_MAIL_SMTP_CA_FILE": str(ca),
           "DATAPORT_MAIL_SMTP_USER": RELAY_USER, "DATAPORT_MAIL_SMTP_PASSWORD": RELAY_PASSWORD,
           "DATAPORT_MAIL_FROM": "Data Team <data@example.com>"}
    return start_server(data_dir=data_copy, demo=False, env=env)


def parts(message) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def link_in(message, srv) -> str:
    text, html = parts(message)
    links = re.findall(r"https?://\S+/auth/password\?token=[0-9a-f]+", text)
    assert len(links) == 1, text
    assert links[0].startswith(srv.http + "/auth/password?token="), (links, srv.http)
    assert links[0].replace("&", "&amp;") in html, html
    return links[0]


def set_password(link: str, password: str, confirm: str | None = None) -> requests.Response:
    page = requests.get(link, timeout=60)
    assert page.status_code == 200 and 'type="password"' in page.text, page.text[:500]
    assert page.headers["Cache-Control"] == "no-store"
    token = re.search(r'name="token" value="([0-9a-f]+)"', page.text).group(1)
    return requests.post(link.split("?")[0], data={"token": token, "password": password,
                                                   "confirm": password if confirm is None else confirm},
                         timeout=60)


def login(srv, user: str, password: str) -> requests.Response:
    return requests.post(srv.url("/api/v1/auth/login"),
                         json={"username": user, "password": password}, timeout=60)


def test_an_invitation_mails_a_link_that_sets_the_password_once(srv, smtp):
    inbox, _ = smtp
    r = srv.session.post(srv.url("/api/v1/admin/users"),
                         json={"email": "ann@example.com", "name": "Ann Lee"}, timeout=60)
    assert r.status_code == 201 and r.json()["mail"] == "sent", r.text
    [mail] = inbox.wait(1)
    assert mail["To"] == "ann@example.com" and "Data Team" in mail["From"], mail
    assert mail["Subject"] == "Your Dataport account: set your password"
    assert mail.get_content_type() == "multipart/alternative"
    text, _ = parts(mail)
    assert text.startswith("Hello Ann Lee,"), text
    assert inbox.logins == [RELAY_USER], "the SMTP login was not used"
    link = link_in(mail, srv)

    r = set_password(link, PASSWORD, confirm=PASSWORD + "x")
    assert r.status_code == 400 and "differ" in r.text
    r = set_password(link, "weak")
    assert r.status_code == 400 and "upper-case" in r.text, r.text
    r = set_password(link, PASSWORD)
    assert r.status_code == 200 and "Your password is set" in r.text and ">ann<" in r.text, r.text
    assert login(srv, "ann@example.com", PASSWORD).status_code == 200
    r = requests.post(link.split("?")[0], data={"token": link.split("=")[1], "password": "Other-Pass1",
                                                "confirm": "Other-Pass1"}, timeout=60)
    assert r.status_code == 400 and "does not work" in r.text, r.text
    assert login(srv, "ann", "Other-Pass1").status_code == 401


def test_forgot_password_answers_alike_and_mails_only_accounts(srv, smtp):
    inbox, _ = smtp
    srv.cli("user", "invite", "bo@example.com")          # an invitation mail
    inbox.wait(1)
    first = link_in(inbox.messages[0], srv)
    forgot = lambda who: requests.post(srv.url("/api/v1/auth/password/forgot"),  # noqa: E731
                                       json={"email": who}, timeout=60)
    known, unknown = forgot("BO@example.com"), forgot("nobody@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json(), (known.text, unknown.text)
    inbox.wait(2)
    time.sleep(1)
    assert len(inbox.messages) == 2, [m["To"] for m in inbox.messages]
    second = link_in(inbox.messages[1], srv)
    assert inbox.messages[1]["Subject"] == "Your Dataport account: set your password"  # still invited
    # the newer link works and ends the older one
    assert set_password(second, PASSWORD).status_code == 200
    r = set_password(first, "Other-Pass1")
    assert r.status_code == 400, r.text
    # now active: a reset mail, and the JSON form of the page
    forgot("bo@example.com")
    inbox.wait(3)
    assert inbox.messages[2]["Subject"] == "Reset your Dataport password"
    token = link_in(inbox.messages[2], srv).split("token=")[1]
    r = requests.post(srv.url("/api/v1/auth/password/reset"),
                      json={"token": token, "password": "Newer-Pass1"}, timeout=60)
    assert r.status_code == 200 and r.json() == {"user": "bo"}, r.text
    assert login(srv, "bo", "Newer-Pass1").status_code == 200
    assert login(srv, "bo", PASSWORD).status_code == 401
    # five requests a minute per account (and per address)
    answers = [forgot("bo@example.com").status_code for _ in range(6)]
    assert 429 in answers and answers[0] == 202, answers


def test_an_allowed_outside_email_registers_on_the_page_and_signs_in_with_the_form(srv, smtp):
    inbox, _ = smtp
    page = requests.get(srv.url("/auth/password"), timeout=60)
    assert page.status_code == 200 and 'name="email"' in page.text, page.text
    ask = lambda who: requests.post(srv.url("/auth/password"), data={"email": who},  # noqa: E731
                                    timeout=60)
    listed, unlisted = ask("Zoe@Partner.io"), ask("zed@partner.io")
    assert listed.status_code == unlisted.status_code == 200
    assert listed.text == unlisted.text and "Check your mail" in listed.text
    [mail] = inbox.wait(1)
    time.sleep(1)
    assert len(inbox.messages) == 1 and mail["To"] == "zoe@partner.io", [m["To"] for m in inbox.messages]
    assert mail["Subject"] == "Your Dataport account: set your password"
    users = {u["name"]: u for u in srv.get("/api/v1/admin/users").json()["users"]}
    assert users["zoe_partner_io"]["state"] == "invited" and "zed_partner_io" not in users
    assert set_password(link_in(mail, srv), PASSWORD).status_code == 200

    # the login page's form: a wrong password says so, the right one opens a session
    browser = requests.Session()
    bad = browser.post(srv.url("/login"), data={"login": "zoe@partner.io", "password": "Wrong-Pass1",
                                                "next": "/api/v1/auth/me"}, timeout=60)
    assert bad.status_code == 401 and "Wrong user name or password." in bad.text, bad.text
    assert 'value="zoe@partner.io"' in bad.text
    ok = browser.post(srv.url("/login"), data={"login": "zoe@partner.io", "password": PASSWORD,
                                               "next": "/api/v1/auth/me"},
                      headers={"Origin": srv.http}, timeout=60)
    assert ok.url == srv.url("/api/v1/auth/me") and ok.json()["user"] == "zoe_partner_io", ok.text
    # signed in, the login page says who, and signs out with its form
    me = browser.get(srv.url("/login"), timeout=60)
    assert "You are <b>zoe_partner_io</b>" in me.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', me.text).group(1)
    assert browser.post(srv.url("/logout"), data={"csrf": "wrong"}, timeout=60).status_code == 403
    out = browser.post(srv.url("/logout"), data={"csrf": csrf}, timeout=60)
    assert out.url == srv.url("/login") and 'name="password"' in out.text
    assert browser.get(srv.url("/api/v1/auth/me"), timeout=60).status_code == 401


def test_without_smtp_the_link_is_in_the_server_log(start_server, data_copy):
    srv = start_server(data_dir=data_copy, demo=False, env=ORG)
    out = srv.cli("user", "invite", "cy@example.com").stdout
    assert "no SMTP server is configured" in out, out
    printed = re.search(r"(http://\S+/auth/password\?token=[0-9a-f]+)", out).group(1)
    assert printed.startswith(srv.http), (printed, srv.http)
    r = requests.post(srv.url("/api/v1/auth/password/forgot"), json={"email": "cy@example.com"},
                      timeout=60)
    assert r.status_code == 202
    deadline = time.monotonic() + 10
    logged = []
    while not logged and time.monotonic() < deadline:
        logged = re.findall(r"(http://\S+/auth/password\?token=[0-9a-f]+)",
                            srv.stderr_path.read_text(errors="replace"))
        time.sleep(0.1)
    assert logged, srv.stderr_tail()
    assert "WARN" in srv.stderr_tail(200)
    assert set_password(logged[-1], PASSWORD).status_code == 200
    assert set_password(printed, "Other-Pass1").status_code == 400   # the newer link ended it
    assert login(srv, "cy@example.com", PASSWORD).status_code == 200


def test_an_unreachable_smtp_server_fails_the_mail_not_the_invitation(start_server, data_copy):
    env = {**ORG, "DATAPORT_MAIL_SMTP_HOST": "127.0.0.1", "DATAPORT_MAIL_SMTP_PORT": str(free_port()),
           "DATAPORT_MAIL_SMTP_SECURITY": "none"}
    srv = start_server(data_dir=data_copy, demo=False, env=env)
    r = srv.session.post(srv.url("/api/v1/admin/users"), json={"email": "dee@example.com"}, timeout=60)
    assert r.status_code == 201 and r.json()["mail"] == "failed", r.text
    assert "cannot send a password link" in srv.stderr_tail()
    r = srv.session.post(srv.url(f"/api/v1/admin/users/{r.json()['user']['id']}/link"), timeout=60)
    assert r.status_code == 200 and r.json()["mail"] == "failed", r.text
