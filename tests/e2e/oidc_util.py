"""A real OpenID Connect provider for the end-to-end tests, and a browserless sign-in through it.

`OidcProvider` runs tests/oidc/provider.mjs (the npm package oidc-provider, pinned in
tests/oidc/package.json) on a loopback port; `sign_in` drives the authorization code flow
from a relying party's start URL to its callback with `requests`, the way a browser would.

    with OidcProvider(clients=[client("dataport", "s3cret", [redirect_uri])],
                      accounts=[account("u1", "ann@example.com", hd="example.com")]) as op:
        ... start the relying party with op.issuer ...
        op.tamper("audience")              # the next ID token gets aud "someone-else"
        r = sign_in(requests.Session(), rp + "/auth/oidc/test/start", "ann@example.com")
        r.hops                             # [(status, url, location), ...]

The provider's test controls (see tests/oidc/provider.mjs): `tamper`, `rotate`,
`set_clients`, `state`.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

REPO = Path(__file__).resolve().parents[2]
OIDC_DIR = REPO / "tests" / "oidc"
PROVIDER_JS = OIDC_DIR / "provider.mjs"
READY_TIMEOUT = 30.0

TAMPER_MODES = ("none", "audience", "expired", "signature", "unverified", "nonce", "issuer",
                "claims")


SECRET_ENV = "TEST_OIDC_SECRET"


def write_dataport_config(path: Path, issuer: str) -> Path:
    """A Dataport config at `path` whose login page offers this provider as `test` ("Test
    Identity", client `dataport`, its secret in $TEST_OIDC_SECRET) to example.com."""
    path.write_text(
        "auth:\n"
        "  allowed_domains: [example.com]\n"
        "  providers:\n"
        "    - name: test\n"
        "      label: Test Identity\n"
        f"      issuer: {issuer}\n"
        "      client_id: dataport\n"
        f"      client_secret_env: {SECRET_ENV}\n"
    )
    return path


def client(client_id: str, client_secret: str, redirect_uris: list[str]) -> dict:
    """A confidential client (client_secret_basic, code flow, PKCE S256)."""
    return {"client_id": client_id, "client_secret": client_secret,
            "redirect_uris": list(redirect_uris)}


def account(sub: str, email: str, *, email_verified: bool = True, name: str | None = None,
            picture: str | None = None, hd: str | None = None, **claims) -> dict:
    """An account; `hd` goes into every ID token of the account, `email`/`email_verified`
    with scope email, `name`/`picture` with scope profile."""
    acc = {"sub": sub, "email": email, "email_verified": email_verified,
           "name": name if name is not None else email.split("@")[0]}
    if picture is not None:
        acc["picture"] = picture
    if hd is not None:
        acc["hd"] = hd
    acc.update(claims)
    return acc


def ensure_node_modules() -> None:
    """`npm ci` in tests/oidc when its node_modules is missing (a fresh clone)."""
    if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: needed once to install tests/oidc/node_modules")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(OIDC_DIR)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm ci in {OIDC_DIR} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")


class OidcProvider:
    """tests/oidc/provider.mjs as a context manager (or start()/stop()).

    `port=0` lets the provider pick a free port; `.issuer` is known once started. Clients
    can be replaced while it runs (`set_clients`), for a relying party whose port is known
    only once it listens."""

    def __init__(self, clients: list[dict] | None = None, accounts: list[dict] | None = None,
                 *, port: int = 0, issuer: str | None = None, id_token_alg: str = "RS256",
                 log_dir: Path | None = None):
        # exit_on_stdin_eof: the provider ends when this process does (or drops it unstopped).
        self.config = {"port": port, "clients": list(clients or []),
                       "accounts": list(accounts or []), "id_token_alg": id_token_alg,
                       "exit_on_stdin_eof": True}
        if issuer:
            self.config["issuer"] = issuer
        self._log_dir_arg = Path(log_dir) if log_dir else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.issuer: str | None = None

    # -- process ------------------------------------------------------------------------

    def start(self) -> "OidcProvider":
        ensure_node_modules()
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found: tests/oidc/provider.mjs needs Node.js 20+")
        if self._log_dir_arg is not None:
            self.dir = self._log_dir_arg
            self.dir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="oidc-provider-")
            self.dir = Path(self._tmp.name)
        cfg = self.dir / "cfg.json"
        cfg.write_text(json.dumps(self.config, indent=2))
        self._stdout_path = self.dir / "provider.stdout"
        self._stderr_path = self.dir / "provider.stderr"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen([node, str(PROVIDER_JS), str(cfg)], cwd=OIDC_DIR,
                                         stdin=subprocess.PIPE, stdout=out, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            # oidc-provider may print notices on stdout too: look for the line, not line 1,
            # and only among complete lines.
            text = self._stdout_path.read_text(errors="replace")
            for line in text[:text.rfind("\n") + 1].splitlines():
                if line.startswith("ready "):
                    self.issuer = line[len("ready "):].strip()
                    break
            if self.issuer:
                break
            if self.proc.poll() is not None:
                message = (f"oidc provider exited with code {self.proc.returncode} "
                           f"during startup:\n{self.output()}")
                self.stop()
                raise RuntimeError(message)
            if time.monotonic() > deadline:
                message = f"oidc provider not ready within {READY_TIMEOUT}s:\n{self.output()}"
                self.stop()
                raise RuntimeError(message)
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "OidcProvider":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self) -> str:
        """The provider's stdout and stderr so far (for failure messages)."""
        parts = []
        for label, path in (("stdout", getattr(self, "_stdout_path", None)),
                            ("stderr", getattr(self, "_stderr_path", None))):
            if path is not None and path.exists():
                parts.append(f"--- {label} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    # -- endpoints and test controls ------------------------------------------------------

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @property
    def discovery_url(self) -> str:
        return self.url("/.well-known/openid-configuration")

    def _control(self, what: str, body: dict) -> dict:
        r = requests.post(self.url(f"/__test/{what}"), json=body, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"POST /__test/{what} {body}: {r.status_code} {r.text}")
        return r.json()

    def tamper(self, mode: str, claims: dict | None = None) -> None:
        """Alter the NEXT ID token the token endpoint issues (then back to "none"):

        audience    aud becomes "someone-else"
        expired     iat an hour ago, exp 50 minutes ago
        signature   signed by a stranger's key under the real key's kid
        unverified  email_verified false
        nonce       nonce changed
        issuer      iss another issuer
        claims      the `claims` dict merged into the payload (a None value deletes a claim)
        none        cancel a pending tamper

        All but `signature` are re-signed with the provider's real key."""
        if mode not in TAMPER_MODES:
            raise ValueError(f"unknown tamper mode {mode!r}")
        body = {"mode": mode}
        if claims is not None:
            body["claims"] = claims
        self._control("tamper", body)

    def rotate(self, keep_old: bool = False, alg: str | None = None) -> dict:
        """A new signing key with a new kid (the old one is dropped from the JWKS unless
        keep_old); `alg` (RS256, PS256, ES256) switches the ID token algorithm too.
        Returns {"kid": new, "kids": [published]}."""
        body: dict = {"keep_old": keep_old}
        if alg is not None:
            body["alg"] = alg
        return self._control("rotate", body)

    def set_clients(self, clients: list[dict]) -> dict:
        """Replace the registered clients (sessions and grants survive)."""
        state = self._control("clients", {"clients": list(clients)})
        self.config["clients"] = list(clients)
        return state

    def state(self) -> dict:
        """{"kid", "alg", "kids", "tamper", "clients"}."""
        r = requests.get(self.url("/__test/state"), timeout=10)
        r.raise_for_status()
        return r.json()

    def jwks(self) -> dict:
        return requests.get(self.url("/jwks"), timeout=10).json()


# ------------------------------------------------------------------------------------------
# Sign-in
# ------------------------------------------------------------------------------------------

_FORM_RE = re.compile(r"<form\b[^>]*>", re.IGNORECASE)
_CALLBACK_RE = re.compile(r"/auth/oidc/[^/]+/callback$")
_ATTR_RE = re.compile(r'\b(id|action)\s*=\s*"([^"]*)"', re.IGNORECASE)


def interaction_forms(resp: requests.Response) -> dict[str, str]:
    """The provider's sign-in page forms as {"login": url, "abort": url}; {} if `resp` is not
    that page."""
    if "html" not in resp.headers.get("Content-Type", ""):
        return {}
    forms = {}
    for tag in _FORM_RE.findall(resp.text):
        attrs = {k.lower(): html.unescape(v) for k, v in _ATTR_RE.findall(tag)}
        if attrs.get("id") in ("login", "abort") and "/interaction/" in attrs.get("action", ""):
            forms[attrs["id"]] = urljoin(resp.url, attrs["action"])
    return forms if "login" in forms else {}


def sign_in(session: requests.Session, start_url: str, login: str, *, abort: bool = False,
            max_hops: int = 15, timeout: float = 30) -> requests.Response:
    """Sign in through the test provider as a browser would, without one.

    GETs `start_url` (the relying party's endpoint that answers a redirect to the provider's
    authorization endpoint) and follows every redirect by hand (`allow_redirects=False`,
    at most `max_hops` requests), keeping cookies in `session`. On the provider's sign-in
    page it POSTs `login=<login>` (an account's email or sub) to the page's login form, or,
    with `abort=True`, POSTs the abort form (the provider then redirects to the relying
    party's callback with `error=access_denied`). The sign-in form is submitted once: if the
    provider shows it again (an unknown login), that page is the result.

    Returns the first response that is not a redirect: usually the relying party's page
    after its callback, or its error page, or the provider's re-shown form or error page.
    The response gets two attributes:
      hops          every request made, in order, as (status, url, location) with `location`
                    absolute (None when the response was no redirect); the last hop is the
                    returned response
      callback_url  the first URL requested under /auth/oidc/.../callback (with its code,
                    state, iss or error query), or None

    Note that the provider remembers who signed in (cookie op_session) in `session`: a later
    sign_in with the same session may pass without any form. Use a fresh session for another
    account. Cookies do not tell ports apart, so the provider's and the relying party's
    cookies for 127.0.0.1 share one jar.
    """
    hops: list[tuple[int, str, str | None]] = []
    method, url, data = "GET", start_url, None
    submitted = False
    callback_url = None
    for _ in range(max_hops):
        if callback_url is None and _CALLBACK_RE.search(urlsplit(url).path):
            callback_url = url
        resp = session.request(method, url, data=data, allow_redirects=False, timeout=timeout)
        location = resp.headers.get("Location")
        if resp.status_code in (301, 302, 303, 307, 308) and location:
            location = urljoin(resp.url, location)
            hops.append((resp.status_code, resp.url, location))
            if resp.status_code in (307, 308):
                url = location  # method and body stay
            else:
                method, url, data = "GET", location, None
            continue
        hops.append((resp.status_code, resp.url, None))
        forms = interaction_forms(resp)
        if forms and not submitted:
            submitted = True
            if abort:
                method, url, data = "POST", forms["abort"], {}
            else:
                method, url, data = "POST", forms["login"], {"login": login}
            continue
        resp.hops = hops
        resp.callback_url = callback_url
        return resp
    raise RuntimeError(f"sign-in did not settle within {max_hops} requests:\n"
                       + "\n".join(f"  {s} {u} -> {loc}" for s, u, loc in hops))
