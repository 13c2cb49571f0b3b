"""The sign-in pages in a real browser (headless Chromium through Playwright): the login form
filled by its labels and by the keyboard alone, a wrong password, signing out, a phone's
width, the dark colour scheme, and signing in through an OpenID Connect provider's page.
Every page is checked with axe-core (no serious or critical accessibility violations) and
saved as a screenshot (target/e2e-artifacts/screenshots, or $DATAPORT_ARTIFACTS)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from browser_util import check_accessibility, screenshot
from e2e_util import ADMIN_PASSWORD, ADMIN_USER, Server
from oidc_util import SECRET_ENV, OidcProvider, account, client, write_dataport_config

SECRET = "oidc-client-s3cret"


def start_module_server(tmp_path_factory, name: str, args=(), env: dict | None = None) -> Server:
    # The login pages need no data: an empty data dir starts in well under a second.
    srv = Server(tmp_path_factory.mktemp(f"data-{name}"), list(args),
                 tmp_path_factory.mktemp(f"log-{name}"), env=env)
    try:
        return srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module's password tests; each test has its own browser context."""
    server = start_module_server(tmp_path_factory, "password")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def op():
    with OidcProvider(clients=[], accounts=[account("u-ann", "ann@example.com", name="Ann Lee",
                                                    hd="example.com")]) as provider:
        yield provider


@pytest.fixture(scope="module")
def oidc_srv(tmp_path_factory, op):
    """A server whose login page offers the test provider (as in test_oidc.py)."""
    config = tmp_path_factory.mktemp("config") / "dataport.yaml"
    write_dataport_config(config, op.issuer)
    server = start_module_server(tmp_path_factory, "oidc", ["--config", str(config)],
                                 env={SECRET_ENV: SECRET})
    op.set_clients([client("dataport", SECRET, [server.url("/auth/oidc/test/callback")])])
    yield server
    server.stop()


def session_cookie(page: Page) -> str | None:
    return next((c["value"] for c in page.context.cookies() if c["name"] == "dataport_session"),
                None)


def expect_heading(page: Page, text: str) -> None:
    """The page's h1 says `text`; if not, the failure tells what the page says instead."""
    heading = page.get_by_role("heading", level=1)
    try:
        expect(heading).to_have_text(text)
    except AssertionError:
        problem = page.get_by_role("alert")
        if problem.count() == 0:
            raise
        raise AssertionError(f"expected the page {text!r}, but {page.url} is "
                             f"{heading.first.inner_text()!r} saying "
                             f"{problem.first.inner_text()!r}") from None


def expect_login_form(page: Page) -> None:
    expect_heading(page, "Sign in to Dataport")
    expect(page.get_by_label("Email or username")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()


def expect_signed_in_as(page: Page, user: str) -> None:
    expect_heading(page, "Signed in")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("main p").first).to_contain_text(re.compile(rf"^You are {user} \(.+\)\.$"))
    expect(page.locator("main p b")).to_have_text(user)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_signing_in_and_out_with_the_login_form(srv, new_page):
    page = new_page(srv)
    page.goto("/login?next=/login")
    expect(page).to_have_title("Sign in · Dataport")
    expect_login_form(page)
    screenshot(page, "1-form")
    check_accessibility(page, "the login page")

    page.get_by_label("Email or username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect_signed_in_as(page, ADMIN_USER)
    assert session_cookie(page), page.context.cookies()
    screenshot(page, "2-signed-in")
    check_accessibility(page, "the signed-in page")

    page.get_by_role("button", name="Sign out").click()
    expect_login_form(page)
    expect(page).to_have_url(srv.url("/login"))
    assert not session_cookie(page), page.context.cookies()
    screenshot(page, "3-signed-out")
    # the session is over: the login page does not show it any more
    page.reload()
    expect_login_form(page)


def test_a_wrong_password_is_shown_on_the_page(srv, new_page):
    page = new_page(srv)
    page.goto("/login?next=/login")
    page.get_by_label("Email or username").fill(ADMIN_USER)
    page.get_by_label("Password").fill("Not-The-Passw0rd")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    expect_login_form(page)
    # the user name stays, the password does not
    expect(page.get_by_label("Email or username")).to_have_value(ADMIN_USER)
    expect(page.get_by_label("Password")).to_have_value("")
    assert not session_cookie(page)
    screenshot(page, "wrong-password")
    check_accessibility(page, "the login page with an error")


def test_the_login_form_works_with_the_keyboard_alone(srv, new_page):
    page = new_page(srv)
    page.goto("/login?next=/login")
    login = page.get_by_label("Email or username")
    expect(login).to_be_focused()   # autofocus
    page.keyboard.type(ADMIN_USER)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Tab")
    sign_in = page.get_by_role("button", name="Sign in")
    expect(sign_in).to_be_focused()
    # a keyboard user sees where the focus is
    outline = sign_in.evaluate("e => [getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineWidth]")
    assert outline[0] != "none" and outline[1] != "0px", outline
    screenshot(page, "focus-on-sign-in")
    page.keyboard.press("Enter")
    expect_signed_in_as(page, ADMIN_USER)

    # and out again: Tab to the button, Space
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign out")).to_be_focused()
    page.keyboard.press("Space")
    expect_login_form(page)
    assert not session_cookie(page)

    # Enter in the password field submits the form too (signed out, / is the portal's home)
    page.goto("/login?next=/login")
    page.get_by_label("Email or username").focus()
    page.keyboard.type(ADMIN_USER)
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    expect_signed_in_as(page, ADMIN_USER)


@pytest.mark.parametrize("which", ["password", "with-provider"])
def test_the_login_page_fits_a_phone(which, request, new_page):
    server = request.getfixturevalue("srv" if which == "password" else "oidc_srv")
    page = new_page(server, phone=True)
    page.goto("/login?next=/login")
    expect_login_form(page)
    assert page.evaluate("window.innerWidth") == 390

    def no_horizontal_scrolling(what: str) -> None:
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{what} scrolls sideways on a phone: {widths}"

    no_horizontal_scrolling("the login page")
    screenshot(page, "phone-login")
    page.get_by_label("Email or username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").tap()
    expect_signed_in_as(page, ADMIN_USER)
    no_horizontal_scrolling("the signed-in page")
    screenshot(page, "phone-signed-in")


def test_the_login_page_in_the_dark_colour_scheme(oidc_srv, new_page):
    page = new_page(oidc_srv, color_scheme="dark")
    page.goto("/login?next=/login&error=domain")
    expect(page.get_by_role("alert")).to_be_visible()
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    screenshot(page, "dark")
    check_accessibility(page, "the login page in the dark colour scheme")


def test_signing_in_through_the_identity_providers_page(oidc_srv, op, new_page):
    page = new_page(oidc_srv)
    page.goto("/login?next=/login")
    expect_login_form(page)
    expect(page.get_by_text("or with your password")).to_be_visible()
    screenshot(page, "1-login")
    check_accessibility(page, "the login page with a provider")

    page.get_by_role("link", name="Sign in with Test Identity").click()
    expect(page).to_have_url(re.compile("^" + re.escape(op.url("/interaction/"))))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to dataport")
    screenshot(page, "2-provider")
    form = page.locator("form#login")
    form.locator("input[name=login]").fill("ann@example.com")
    form.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(oidc_srv.url("/login"))
    expect_signed_in_as(page, "ann")
    assert session_cookie(page)
    screenshot(page, "3-signed-in")
    check_accessibility(page, "the signed-in page after OpenID Connect")


LOGO = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32" width="32" height="32">
<rect width="32" height="32" rx="6" fill="#0f766e"/><path d="M8 22 L16 8 L24 22 Z" fill="#fff"/>
<script>alert('from the logo')</script></svg>
"""


def test_the_sign_in_page_carries_the_instances_name_and_logo(tmp_path_factory, new_page):
    logo = tmp_path_factory.mktemp("brand") / "acme.svg"
    logo.write_text(LOGO)
    srv = start_module_server(tmp_path_factory, "brand",
                              ["--portal-name", "Acme Analytics", "--portal-logo", str(logo)])
    try:
        page = new_page(srv, bypass_csp=False)
        response = page.goto("/login")
        policy = response.headers["content-security-policy"]
        assert "style-src 'self'" in policy and "unsafe-inline" not in policy
        expect_heading(page, "Sign in to Acme Analytics")
        image = page.locator("main.shell img.logo")
        src = image.get_attribute("src")
        assert re.fullmatch(r"/static/logo\.[0-9a-f]{8}\.svg", src), src
        assert page.evaluate("document.querySelector('main.shell img.logo').naturalWidth") > 0
        # the portal's stylesheet, not inline styles
        assert page.evaluate("getComputedStyle(document.querySelector('main.shell')).maxWidth") != "none"
        served = page.request.get(srv.url(src))
        assert served.status == 200 and served.headers["content-type"] == "image/svg+xml"
        assert "sandbox" in served.headers["content-security-policy"]
        assert "immutable" in served.headers["cache-control"]
        screenshot(page, "login-brand")
        page.get_by_label("Email or username").fill(ADMIN_USER)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/")
        assert page.locator("header.top img.logo").get_attribute("src") == src
        assert page.title().endswith("· Acme Analytics")
    finally:
        srv.stop()

    # A logo that is not an image stops the server at start, naming the key.
    notes = logo.with_name("notes.txt")
    notes.write_text("not an image")
    bad = Server(tmp_path_factory.mktemp("data-badlogo"), ["--portal-logo", str(notes)],
                 tmp_path_factory.mktemp("log-badlogo"))
    with pytest.raises(RuntimeError):
        bad.start()
    bad.stop()
    said = bad.stderr_path.read_text()
    assert "portal.logo" in said and "notes.txt is not an SVG, PNG, JPEG or WebP image" in said, said
