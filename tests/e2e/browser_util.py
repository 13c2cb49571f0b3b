"""Real-browser tests: one headless Chromium driven by Playwright (sync API), screenshots, and
accessibility checks with axe-core.

The browser is Debian's `chromium` (/usr/bin/chromium, or $DATAPORT_CHROMIUM); Playwright's own
browser downloads are never used. axe-core comes from npm, pinned in tests/browser/package.json
(`npm ci` there on first use, like tests/oidc).

    pw, browser = launch()                       # once per session (the `browser` fixture)
    context = new_context(browser, srv.http)     # per test (the `new_page` fixture)
    page = context.new_page()
    page.goto("/login")                          # relative to the server
    screenshot(page, "login")                    # target/e2e-artifacts/screenshots/<test>-login.png
    check_accessibility(page, "the login page")  # AssertionError on serious/critical violations
    close(pw, browser)

Every context bypasses the pages' Content-Security-Policy (`bypass_csp=True`): the server's
pages allow no script, and axe-core is injected as a script tag.

Note: from its start until `close`, Playwright's sync API keeps its asyncio event loop marked
as running in the main thread (between calls too). Code that calls `asyncio.run()` in the main
thread fails meanwhile; loops in threads of their own (aiosmtpd's Controller) are unaffected.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("DATAPORT_CHROMIUM", "/usr/bin/chromium"))
# Headless on a machine without internet: no sandbox (root), no GPU, and none of Chromium's
# own background traffic (which would otherwise flood the log with refused connections).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Playwright's default is 30 s per action; a page of this server answers in milliseconds.
ACTION_TIMEOUT_MS = 15_000

BROWSER_DIR = REPO / "tests" / "browser"
AXE_JS = BROWSER_DIR / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")


# ------------------------------------------------------------------------------------------
# Browser and pages
# ------------------------------------------------------------------------------------------


def sign_in(page: Page, base_url: str, path: str, user: str, password: str) -> None:
    """Open `path` (a page that needs a session), sign in on the login page it sends the
    browser to, and wait to be back on `path`."""
    page.goto(path)
    page.get_by_label("Email or username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base_url + path)



def launch() -> tuple[Playwright, Browser]:
    """Start Playwright and one headless Chromium. RuntimeError (with what to do) when the
    browser is missing or does not start."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        raise RuntimeError(
            f"Chromium not found at {CHROMIUM}: the browser tests need Debian's chromium "
            "(apt-get install chromium; .ci/run installs it), or set DATAPORT_CHROMIUM")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
    except Exception as e:
        pw.stop()
        raise RuntimeError(f"Chromium at {CHROMIUM} did not start: {e}") from e
    return pw, browser


def close(pw: Playwright, browser: Browser) -> None:
    try:
        browser.close()
    finally:
        pw.stop()


def new_context(browser: Browser, base_url: str, *, phone: bool = False,
                **options) -> BrowserContext:
    """A fresh browser context (own cookies and storage): 1280x900, or with `phone=True` a
    390x844 touch phone; `page.goto("/path")` is relative to `base_url`. `options` go to
    `Browser.new_context` (e.g. `color_scheme="dark"`, `locale=...`)."""
    settings: dict = {"base_url": base_url, "bypass_csp": True, "locale": "en-US",
                      "viewport": dict(DESKTOP)}
    if phone:
        settings.update(viewport=dict(PHONE), screen=dict(PHONE), device_scale_factor=3,
                        is_mobile=True, has_touch=True)
    settings.update(options)
    context = browser.new_context(**settings)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    return context


# ------------------------------------------------------------------------------------------
# Screenshots
# ------------------------------------------------------------------------------------------


def artifacts_dir() -> Path:
    """$DATAPORT_ARTIFACTS, else <repo>/target/e2e-artifacts."""
    env = os.environ.get("DATAPORT_ARTIFACTS")
    return Path(env) if env else REPO / "target" / "e2e-artifacts"


def screenshots_dir() -> Path:
    path = artifacts_dir() / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_test_name() -> str:
    """The running test's name (with its parameters), from pytest's PYTEST_CURRENT_TEST."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return current.rsplit(" ", 1)[0].split("::")[-1] or "no-test"


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "page"


def remove_screenshots(test_name: str) -> None:
    """Delete a test's screenshots (of an earlier run)."""
    for path in screenshots_dir().glob(f"{_file_part(test_name)}-*.png"):
        path.unlink(missing_ok=True)


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG `<test name>-<name>.png` in the screenshots folder; returns its path."""
    path = screenshots_dir() / f"{_file_part(current_test_name())}-{_file_part(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# ------------------------------------------------------------------------------------------
# Accessibility (axe-core)
# ------------------------------------------------------------------------------------------


def ensure_axe() -> Path:
    """The path of axe.min.js; `npm ci` in tests/browser first when it is missing."""
    if AXE_JS.is_file():
        return AXE_JS
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: needed once to install tests/browser/node_modules")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(BROWSER_DIR)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0 or not AXE_JS.is_file():
        raise RuntimeError(f"npm ci in {BROWSER_DIR} failed ({done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}")
    return AXE_JS


_AXE_RUN = """async () => {
  const results = await axe.run(document, {resultTypes: ['violations']});
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target, html: n.html, summary: n.failureSummary})),
  }));
}"""


def axe_violations(page: Page) -> list[dict]:
    """axe-core's violations on the page as it is now: [{"id", "impact", "help", "helpUrl",
    "nodes": [{"target", "html", "summary"}]}]."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(path=str(ensure_axe()))
    return page.evaluate(_AXE_RUN)


def _selector(target) -> str:
    # a node inside an iframe or a shadow root has a list of selectors, outermost first
    parts = target if isinstance(target, list) else [target]
    return " >> ".join(" >> ".join(p) if isinstance(p, list) else str(p) for p in parts)


def describe_violations(violations: list[dict], max_targets: int = 3) -> str:
    lines = []
    for v in violations:
        targets = [_selector(n["target"]) for n in v["nodes"]]
        more = f" (+{len(targets) - max_targets} more)" if len(targets) > max_targets else ""
        lines.append(f"- {v['id']} [{v['impact']}] {v['help']}: "
                     f"{', '.join(targets[:max_targets])}{more}")
        if v["nodes"] and v["nodes"][0].get("summary"):
            summary = " ".join(v["nodes"][0]["summary"].split())
            lines.append(f"    {summary[:300]}")
        lines.append(f"    {v['helpUrl']}")
    return "\n".join(lines)


def check_accessibility(page: Page, context_name: str,
                        impacts: tuple[str, ...] = FAILING_IMPACTS) -> list[dict]:
    """Run axe-core on the page; AssertionError listing every violation whose impact is in
    `impacts` (serious or critical). Returns all violations (the minor and moderate ones
    too), which are printed so that pytest shows them with a failure."""
    violations = axe_violations(page)
    failing = [v for v in violations if v["impact"] in impacts]
    others = [v for v in violations if v["impact"] not in impacts]
    if others:
        print(f"axe on {context_name} ({page.url}), not failing:\n{describe_violations(others)}")
    if failing:
        raise AssertionError(
            f"accessibility violations on {context_name} ({page.url}):\n"
            f"{describe_violations(failing)}")
    return violations
