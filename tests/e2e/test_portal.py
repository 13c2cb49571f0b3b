"""The portal's home page: only for a signed-in viewer (a browser goes to sign in and comes
back), the tables the viewer may read and nothing else, my API tokens (created on the page and
shown once, then usable; revoked on the page), my sessions, how to connect with this server's
addresses; the same data as JSON; forms refused without the session's CSRF token; static files
named by their content and cached for a year. In Chromium: the page, its accessibility and its
phone width."""

from __future__ import annotations

import os
import re
import time

import pytest
import requests

from browser_util import check_accessibility, screenshot, sign_in
from playwright.sync_api import expect

from e2e_util import ADMIN_PASSWORD, ADMIN_USER, metric, wait_for

PASSWORD = "Portal-Pass1"


@pytest.fixture(scope="module")
def srv(server):
    """The shared demo server, with two analysts: one in dataread, one in no group."""
    for name, groups in (("portal_reader", ["--groups", "dataread"]), ("portal_nobody", [])):
        server.cli("user", "add", name, *groups, "--password-stdin", input=PASSWORD + "\n",
                   check=False)
    return server


def browser_session(srv, user: str, password: str = PASSWORD) -> requests.Session:
    s = requests.Session()
    r = s.post(srv.url("/api/v1/auth/session"), json={"username": user, "password": password},
               timeout=60)
    assert r.status_code == 200, r.text
    return s


def home_json(session: requests.Session, srv) -> dict:
    r = session.get(srv.url("/?format=json"), timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), r.text
    return r.json()


def readable(data: dict) -> set[str]:
    return {f"{t['schema']}.{t['name']}" for s in data["schemas"] for t in s["tables"]}


def test_the_home_page_needs_a_session_and_shows_only_what_the_viewer_may_read(srv):
    r = requests.get(srv.url("/"), allow_redirects=False, timeout=60)
    assert r.status_code == 303 and r.headers["Location"] == "/login?next=%2F"
    assert requests.get(srv.url("/?format=json"), timeout=60).status_code == 401

    reader = browser_session(srv, "portal_reader")
    data = home_json(reader, srv)
    catalog = srv.get("/api/v1/catalog")  # the admin's view
    api = requests.get(srv.url("/api/v1/catalog"), timeout=60,
                       headers={"Authorization": f"Bearer {srv.login('portal_reader', PASSWORD)}"})
    assert readable(data) == {f"{t['schema']}.{t['name']}" for s in api.json()["schemas"]
                              for t in s["tables"]}, "the page lists what the API lists"
    assert readable(data) and data["tables"] == len(readable(data))
    assert data["user"] == {"name": "portal_reader", "groups": ["dataread"],
                            "groups_text": "dataread", "admin": False}
    admin_sees = {f"{t['schema']}.{t['name']}" for s in catalog.json()["schemas"] for t in s["tables"]}
    assert readable(data) <= admin_sees

    nobody = home_json(browser_session(srv, "portal_nobody"), srv)
    assert nobody["tables"] == 0 and nobody["schemas"] == []
    page = browser_session(srv, "portal_nobody").get(srv.url("/"), timeout=60)
    assert "may read none" in page.text
    for name in readable(data):
        assert name not in page.text

    html = reader.get(srv.url("/"), timeout=60)
    assert html.status_code == 200 and "Welcome, portal_reader" in html.text
    policy = html.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert html.headers["X-Frame-Options"] == "DENY"
    # how to connect: this server's addresses
    assert data["connect"]["http"] == srv.http and data["connect"]["flight"] == srv.flight
    assert f'"{srv.flight}"' in html.text


def test_tokens_are_created_once_used_and_revoked_on_the_page(srv):
    reader = browser_session(srv, "portal_reader")
    csrf = reader.cookies["dataport_csrf"]
    # no CSRF token, no token
    refused = reader.post(srv.url("/tokens"), data={"label": "x", "days": "5"}, timeout=60)
    assert refused.status_code == 403
    made = reader.post(srv.url("/tokens"), data={"csrf": csrf, "label": "laptop <b>", "days": "30"},
                       headers={"Origin": srv.http}, timeout=60)
    assert made.status_code == 201, made.text
    token = re.search(r'<code id="new-token">(dpk_[^<]+)</code>', made.text).group(1)
    # the name is text, escaped (askama writes &#60; for <)
    assert "laptop <b>" not in made.text and re.search(r"laptop &(lt|#60);b&(gt|#62);", made.text)
    # shown once: the next page load has no secret
    assert token not in reader.get(srv.url("/"), timeout=60).text
    me = requests.get(srv.url("/api/v1/auth/me"), headers={"Authorization": f"Bearer {token}"},
                      timeout=60)
    assert me.json()["user"] == "portal_reader"
    [line] = [t for t in home_json(reader, srv)["tokens"] if t["label"] == "laptop <b>"]
    assert 29 * 86400 < line["expires_at"] - line["created_at"] <= 30 * 86400
    # too long a lifetime is refused with the reason
    bad = reader.post(srv.url("/tokens"), data={"csrf": csrf, "label": "forever", "days": "9999"},
                      timeout=60)
    assert bad.status_code == 400 and "1 to 365 days" in bad.text
    # another user cannot revoke it; its owner can
    other = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    r = other.post(srv.url(f"/tokens/{line['id']}/revoke"),
                   data={"csrf": other.cookies["dataport_csrf"]}, timeout=60)
    assert r.status_code == 404
    r = reader.post(srv.url(f"/tokens/{line['id']}/revoke"), data={"csrf": csrf}, timeout=60)
    assert r.status_code == 200 and r.url == srv.url("/")
    assert requests.get(srv.url("/api/v1/auth/me"), headers={"Authorization": f"Bearer {token}"},
                        timeout=60).status_code == 401
    # the same through the API
    api = {"Authorization": f"Bearer {srv.login('portal_reader', PASSWORD)}"}
    created = requests.post(srv.url("/api/v1/auth/tokens"), json={"label": "script"}, headers=api,
                            timeout=60)
    assert created.status_code == 201 and created.json()["token"].startswith("dpk_")
    listed = requests.get(srv.url("/api/v1/auth/tokens"), headers=api, timeout=60).json()["tokens"]
    assert any(t["id"] == created.json()["id"] and "secret_hash" not in t for t in listed)
    assert requests.delete(srv.url(f"/api/v1/auth/tokens/{created.json()['id']}"), headers=api,
                           timeout=60).status_code == 204


def test_sessions_are_listed_and_ended_on_the_page(srv):
    first = browser_session(srv, "portal_reader")
    second = browser_session(srv, "portal_reader")
    sessions = home_json(second, srv)["sessions"]
    assert sum(s["current"] for s in sessions) == 1 and len(sessions) >= 2
    other = next(s for s in sessions if not s["current"]
                 and s["id"] in first.cookies["dataport_session"])
    r = second.post(srv.url(f"/sessions/{other['id']}/end"),
                    data={"csrf": second.cookies["dataport_csrf"]}, timeout=60)
    assert r.status_code == 200 and r.url == srv.url("/")
    assert first.get(srv.url("/?format=json"), timeout=60).status_code == 401


def test_static_files_are_named_by_their_content(srv):
    page = browser_session(srv, "portal_reader").get(srv.url("/"), timeout=60)
    css = re.search(r'href="(/static/portal\.[0-9a-f]{8}\.css)"', page.text).group(1)
    r = requests.get(srv.url(css), timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/css")
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert requests.get(srv.url("/static/portal.00000000.css"), timeout=60).status_code == 404


def test_the_home_page_in_a_browser(srv, new_page):
    page = new_page(srv)
    sign_in(page, srv.http, "/", "portal_reader", PASSWORD)
    assert page.get_by_role("heading", name="Welcome, portal_reader").is_visible()
    screenshot(page, "home")
    check_accessibility(page, "the home page")
    page.get_by_label("Name").fill("notebook")
    page.get_by_role("button", name="Create token").click()
    assert page.locator("#new-token").inner_text().startswith("dpk_")
    screenshot(page, "new-token")
    phone = new_page(srv, phone=True)
    sign_in(phone, srv.http, "/", "portal_reader", PASSWORD)
    screenshot(phone, "home-phone")
    check_accessibility(phone, "the home page at phone width")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))


def test_the_catalog_search_ranks_matches_and_shows_only_readable_tables(srv):
    reader = browser_session(srv, "portal_reader")
    found = reader.get(srv.url("/catalog?q=customer&format=json"), timeout=60).json()
    names = [f"{h['schema']}.{h['name']}" for h in found["hits"]]
    assert "tpch.customer" not in names, "a private table is not found by a dataread reader"
    assert names and all(h["score"] > 0 for h in found["hits"]), found
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    admin_found = admin.get(srv.url("/catalog?q=customer&format=json"), timeout=60).json()
    assert admin_found["hits"][0]["name"] == "customer", "the table named so comes first"
    # every word must match; column names count
    both = admin.get(srv.url("/catalog?q=orders+totalprice&format=json"), timeout=60).json()
    assert [h["name"] for h in both["hits"]] == ["orders"]
    assert "o_totalprice" in both["hits"][0]["columns"]
    everything = reader.get(srv.url("/catalog?format=json"), timeout=60).json()
    assert len(everything["hits"]) == everything["tables"] == home_json(reader, srv)["tables"]
    page = reader.get(srv.url("/catalog?q=customer"), timeout=60)
    assert page.status_code == 200 and 'href="/catalog/tpch/customer"' not in page.text


def test_a_table_page_shows_columns_profile_samples_and_only_readable_relations(srv):
    reader = browser_session(srv, "portal_reader")
    data = reader.get(srv.url("/catalog/tpch/orders?format=json"), timeout=120).json()
    assert data["table"]["name"] == "orders" and data["table"]["primary_key"] == ["o_orderkey"]
    columns = {c["name"]: c for c in data["columns"]}
    assert columns["o_orderkey"]["key"] and columns["o_totalprice"]["chart"]["bars"]
    assert data["sample_rows"] and len(data["sample_rows"][0]) == len(data["sample_columns"])
    related = {r["table"] for r in data["related"]}
    assert "tpch.customer" not in related, "a relation to an unreadable table is left out"
    assert "tpch.lineitem" in related
    html = reader.get(srv.url("/catalog/tpch/orders"), timeout=120)
    assert html.status_code == 200 and '<svg class="histogram"' in html.text and "<rect" in html.text
    assert srv.flight in html.text and "select * from tpch.orders limit 10" in html.text
    # a table the reader may not read looks exactly like one that does not exist
    hidden = reader.get(srv.url("/catalog/tpch/customer"), timeout=60)
    missing = reader.get(srv.url("/catalog/tpch/nope"), timeout=60)
    assert hidden.status_code == missing.status_code == 404
    assert "you may not read it" in hidden.text and hidden.text == missing.text
    assert reader.get(srv.url("/catalog/tpch/customer?format=json"), timeout=60).status_code == 404


def test_the_catalog_in_a_browser(srv, new_page):
    page = new_page(srv)
    sign_in(page, srv.http, "/catalog", "portal_reader", PASSWORD)
    page.get_by_label("Search tables and columns").fill("ship date")
    page.get_by_role("button", name="Search").click()
    screenshot(page, "search")
    check_accessibility(page, "the catalog search")
    page.get_by_role("link", name="tpch.lineitem").click()
    page.wait_for_url(srv.url("/catalog/tpch/lineitem"))
    assert page.locator("svg.histogram rect").count() > 10
    screenshot(page, "table")
    check_accessibility(page, "a table page")
    page.get_by_role("link", name="Activity").click()
    page.wait_for_url(srv.url("/activity"))
    screenshot(page, "activity")
    check_accessibility(page, "the activity page")


HOSTILE_TABLE = "<script>alert('table')</script> regions"
HOSTILE_COLUMN = '"><img src=x onerror=alert(1)> the name'


def test_descriptions_holding_markup_are_shown_as_text(start_server, data_copy, new_page):
    doc = data_copy / "docs" / "data_description.md"
    text = doc.read_text()
    text = text.replace(
        '"The five world regions (Africa, America, Asia, Europe, Middle East) that group the nations."',
        '"' + HOSTILE_TABLE.replace('"', '\\"') + '"')
    text = text.replace('r_name: "Region name, e.g. EUROPE"',
                        'r_name: "' + HOSTILE_COLUMN.replace('"', '\\"') + '"')
    doc.write_text(text)
    srv = start_server(data_dir=data_copy, demo=False)
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    for path in ("/", "/catalog?q=regions", "/catalog/tpch/region"):
        html = admin.get(srv.url(path), timeout=120).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    data = admin.get(srv.url("/catalog/tpch/region?format=json"), timeout=120).json()
    assert data["table"]["description"] == HOSTILE_TABLE, "the JSON keeps the text as it is"

    page = new_page(srv)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, srv.http, "/catalog/tpch/region", ADMIN_USER, ADMIN_PASSWORD)
    assert page.get_by_text(HOSTILE_TABLE).is_visible()
    assert page.get_by_text(HOSTILE_COLUMN).is_visible()
    assert page.locator("img").count() == 0 and dialogs == []
    screenshot(page, "hostile-descriptions")


def run_sql(session: requests.Session, srv, sql: str, page: int = 0, **kw) -> requests.Response:
    return session.post(srv.url("/sql"), data={"csrf": session.cookies["dataport_csrf"], "sql": sql,
                                               "page": str(page)}, timeout=120, **kw)


def test_the_sql_page_runs_queries_under_the_viewers_grants_with_paging_and_history(srv):
    reader = browser_session(srv, "portal_reader")
    assert "Your recent queries" in reader.get(srv.url("/sql"), timeout=60).text
    sql = "select o_orderkey from tpch.orders order by o_orderkey"
    first = reader.post(srv.url("/sql?format=json"),
                        data={"csrf": reader.cookies["dataport_csrf"], "sql": sql, "page": "0"},
                        timeout=120).json()["result"]
    assert first["columns"] == ["o_orderkey"] and len(first["rows"]) == 100 and first["more"]
    second = reader.post(srv.url("/sql?format=json"),
                         data={"csrf": reader.cookies["dataport_csrf"], "sql": sql, "page": "1"},
                         timeout=120).json()["result"]
    assert second["first_row"] == 101
    expected = [r["o_orderkey"] for r in srv.query_json(sql + " limit 200")]
    assert [int(r[0]) for r in first["rows"] + second["rows"]] == expected
    # the viewer's grants, the read-only policy, the CSRF token
    hidden = run_sql(reader, srv, "select count(*) from tpch.customer")
    assert hidden.status_code == 404 and "not found" in hidden.text
    ddl = run_sql(reader, srv, "drop table tpch.orders")
    assert ddl.status_code in (400, 403) and "problem" in ddl.text
    forged = reader.post(srv.url("/sql"), data={"csrf": "nope", "sql": "select 1"}, timeout=60)
    assert forged.status_code == 403
    # escaped values, and the query in the history (from the audit log)
    html = run_sql(reader, srv, "select '<b>bold</b>' as markup").text
    assert "<b>bold</b>" not in html and "markup" in html
    history = wait_for(lambda: [h for h in reader.get(srv.url("/sql?format=json"), timeout=60)
                                .json()["history"] if "<b>bold</b>" in h["sql"]],
                       timeout=15, what="the query in the history")
    assert history[0]["outcome"] == "ok" and history[0]["rows"] == 1
    # other users' queries are not in my history
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    admin_history = admin.get(srv.url("/sql?format=json"), timeout=60).json()["history"]
    assert all("<b>bold</b>" not in h["sql"] for h in admin_history)


def test_a_result_downloads_as_csv_parquet_and_arrow(srv):
    import io

    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq
    reader = browser_session(srv, "portal_reader")
    sql = "select r_regionkey, r_name from tpch.region order by 1"
    got = {}
    for fmt in ("csv", "parquet", "arrow"):
        r = reader.post(srv.url("/sql/download"),
                        data={"csrf": reader.cookies["dataport_csrf"], "sql": sql, "format": fmt},
                        timeout=60)
        assert r.status_code == 200, r.text
        assert "attachment" in r.headers["Content-Disposition"]
        got[fmt] = r.content
    assert got["csv"].decode().splitlines()[:2] == ["r_regionkey,r_name", "0,AFRICA"]
    assert pq.read_table(io.BytesIO(got["parquet"])).num_rows == 5
    assert ipc.open_stream(io.BytesIO(got["arrow"])).read_all().column("r_name")[4].as_py() == "MIDDLE EAST"
    refused = reader.post(srv.url("/sql/download"),
                          data={"csrf": "x", "sql": sql, "format": "csv"}, timeout=60)
    assert refused.status_code == 403


def test_the_sql_page_in_a_browser(srv, new_page):
    page = new_page(srv)
    sign_in(page, srv.http, "/sql", "portal_reader", PASSWORD)
    page.get_by_label("Query").fill("select n_name, n_regionkey from tpch.nation order by 1")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("table.result tbody tr")).to_have_count(25)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename == "result.csv"
    screenshot(page, "sql")
    check_accessibility(page, "the SQL page")


# A nested-loop join of lineitem with itself: minutes of work, until it is cancelled.
EXPENSIVE = ("select count(*) from tpch.lineitem a, tpch.lineitem b "
             "where a.l_comment || b.l_comment = 'dataport'")


def running_queries(srv) -> float:
    return metric(srv.metrics(), "dataport_queries_running") or 0


def test_a_running_query_is_cancelled_from_the_sql_page(srv, new_page):
    page = new_page(srv)
    sign_in(page, srv.http, "/sql", "portal_reader", PASSWORD)
    assert not page.get_by_role("button", name="Cancel").is_visible(), "only while a query runs"
    page.get_by_label("Query").fill(EXPENSIVE)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("status")).to_have_text("Running…")
    wait_for(lambda: running_queries(srv) >= 1, 30, what="the query to start running")
    screenshot(page, "sql-running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("alert")).to_have_text("The query was cancelled.", timeout=30_000)
    expect(page.get_by_label("Query")).to_have_value(EXPENSIVE)
    wait_for(lambda: running_queries(srv) == 0, 30, what="the cancelled query to stop")
    audit = srv.get("/api/v1/admin/audit", params={"user": "portal_reader", "limit": 20}).json()
    assert any(e["sql"] == EXPENSIVE and e["outcome"] == "cancelled" for e in audit["entries"])
    # The page answers again at once; a query id that is not running (or not mine) is refused.
    page.get_by_label("Query").fill("select 1 as one")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("table.result tbody tr")).to_have_count(1)
    other = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    r = other.post(srv.url("/sql/cancel"), timeout=60,
                   data={"csrf": other.cookies["dataport_csrf"], "query_id": "0" * 32})
    assert r.status_code == 404
    r = other.post(srv.url("/sql/cancel"), timeout=60, data={"query_id": "0" * 32})
    assert r.status_code == 403, "no CSRF token, no cancel"


def admin_form(session: requests.Session, srv, path: str, **fields) -> requests.Response:
    return session.post(srv.url(path), data={"csrf": session.cookies["dataport_csrf"], **fields},
                        timeout=60)


def test_administrators_pages_are_refused_to_others_and_the_refusal_audited(srv):
    reader = browser_session(srv, "portal_reader")
    for path in ("/admin", "/admin/accounts", "/admin/audit", "/admin/grants", "/admin/jobs",
                 "/admin/health", "/admin/sources", "/admin/jobs/refresh:catalog"):
        r = reader.get(srv.url(path), timeout=60)
        assert r.status_code == 403 and "for administrators" in r.text, path
        assert reader.get(srv.url(path + "?format=json"), timeout=60).status_code == 403
    r = admin_form(reader, srv, "/admin/accounts/invite", email="x@example.com")
    assert r.status_code == 403
    # Refused without reading the form: the server closes the connection, and says so.
    assert r.headers.get("Connection") == "close", r.headers
    assert 'href="/admin"' not in reader.get(srv.url("/"), timeout=60).text, "no Admin link"
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    audit = wait_for(lambda: [e for e in admin.get(
        srv.url("/admin/audit?format=json&user=portal_reader&outcome=refused"), timeout=60
    ).json()["entries"] if e["surface"] == "portal"], timeout=15, what="the refusals in the audit log")
    assert any("administrators" in e["error"] for e in audit)
    assert all(e["user"] == "portal_reader" and e["outcome"] == "refused" for e in audit)


def test_an_administrator_manages_accounts_on_the_page(srv):
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    page = admin.get(srv.url("/admin/accounts"), timeout=60)
    assert page.status_code == 200 and "portal_reader" in page.text
    r = admin_form(admin, srv, "/admin/accounts/invite", email="Dee@Example.com", name="Dee",
                   groups="dataread, data-private")
    assert r.status_code == 201 and "Invited dee@example.com" in r.text, r.text
    accounts = {a["name"]: a for a in admin.get(srv.url("/admin/accounts?format=json"),
                                                  timeout=60).json()["accounts"]}
    dee = next(a for a in accounts.values() if a["email"] == "dee@example.com")
    assert dee["state_text"] == "invited" and dee["groups"] == ["data-private", "dataread"]
    # groups, disable (ends sessions and tokens), enable
    r = admin_form(admin, srv, f"/admin/accounts/{dee['id']}", action="groups", groups="dataread")
    assert r.status_code == 200 and "is now in: dataread" in r.text
    nobody = next(a for a in accounts.values() if a["name"] == "portal_nobody")
    victim = browser_session(srv, "portal_nobody")
    assert victim.get(srv.url("/?format=json"), timeout=60).status_code == 200
    r = admin_form(admin, srv, f"/admin/accounts/{nobody['id']}", action="disable")
    assert r.status_code == 200 and "portal_nobody is now disabled" in r.text
    assert victim.get(srv.url("/?format=json"), timeout=60).status_code == 401
    r = admin_form(admin, srv, f"/admin/accounts/{nobody['id']}", action="enable")
    assert "portal_nobody is now enabled" in r.text
    # the last administrator is kept
    me = next(a for a in accounts.values() if a["me"])
    r = admin_form(admin, srv, f"/admin/accounts/{me['id']}", action="groups", groups="dataread")
    assert r.status_code == 409 and "data-ops" in r.text
    # without the CSRF token nothing happens
    r = admin.post(srv.url(f"/admin/accounts/{dee['id']}"), data={"action": "delete"}, timeout=60)
    assert r.status_code == 403
    r = admin_form(admin, srv, f"/admin/accounts/{dee['id']}", action="delete")
    assert r.status_code == 200 and "was deleted" in r.text
    changes = admin.get(srv.url("/admin/accounts?format=json"), timeout=60).json()["changes"]
    assert {c["action"] for c in changes} >= {"invite", "groups", "disable", "enable", "delete"}
    # (the demo server is shared: other tests' changes are in the list too)
    dees = [c for c in changes if c["account"] == "dee_example_com"]
    assert {c["action"] for c in dees} == {"invite", "groups", "delete"}
    assert all(c["actor"] == ADMIN_USER for c in dees)


def test_the_admin_pages_in_a_browser(srv, new_page):
    page = new_page(srv)
    sign_in(page, srv.http, "/admin/accounts", ADMIN_USER, ADMIN_PASSWORD)
    screenshot(page, "accounts")
    check_accessibility(page, "the accounts page")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Outcome").select_option("ok")
    page.get_by_role("button", name="Filter").click()
    assert "outcome=ok" in page.url
    screenshot(page, "audit")
    check_accessibility(page, "the audit log page")
    page.get_by_role("link", name="Grants").click()
    page.get_by_label("Account", exact=True).select_option("analyst")
    page.get_by_label("Table", exact=True).select_option("tpch.region")
    page.get_by_role("button", name="Preview").click()
    assert page.get_by_role("heading", name="tpch.region as analyst sees it").is_visible()
    screenshot(page, "grants")
    check_accessibility(page, "the grants page")
    page.get_by_role("link", name="Jobs").click()
    screenshot(page, "jobs")
    check_accessibility(page, "the jobs page")
    page.get_by_role("button", name="Run now: refresh:catalog").click()
    expect(page.get_by_role("status")).to_contain_text("refresh:catalog started")
    page.get_by_role("link", name="refresh:catalog").click()
    expect(page.get_by_role("heading", name=re.compile(r"^(Last \d+ runs|The last run)$"))).to_be_visible()

    def logged() -> bool:
        page.reload()
        return page.get_by_role("heading", name="Log of the last run").count() == 1
    wait_for(logged, 30, what="the run's log on its page")
    screenshot(page, "job")
    check_accessibility(page, "a job's page")
    page.get_by_role("link", name="Sources").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sources")
    check_accessibility(page, "the sources page")
    page.get_by_role("link", name="Health").click()
    screenshot(page, "health")
    check_accessibility(page, "the health page")


def test_in_the_browser_an_admins_grant_shows_the_analyst_exactly_the_filtered_rows(srv, new_page):
    srv.cli("user", "add", "browser_analyst", "--password-stdin", input=PASSWORD + "\n",
            check=False)
    expected = sorted(r["n_name"] for r in srv.query_json(
        "select n_name from tpch.nation where n_regionkey = 1"))
    analyst = new_page(srv)
    sign_in(analyst, srv.http, "/", "browser_analyst", PASSWORD)
    expect(analyst.get_by_text("may read none")).to_be_visible()
    # A non-administrator is refused the admin pages, in words.
    for path in ("/admin/grants", "/admin/accounts", "/admin/sources"):
        response = analyst.goto(path)
        assert response.status == 403, path
        expect(analyst.get_by_role("heading", level=1)).to_have_text("Not allowed")
    assert analyst.get_by_role("link", name="Admin").count() == 0, "no Admin link either"
    screenshot(analyst, "refused")

    admin = new_page(srv)
    sign_in(admin, srv.http, "/admin/grants", ADMIN_USER, ADMIN_PASSWORD)
    try:
        admin.get_by_label("Group", exact=True).fill("america")
        admin.get_by_label("Table (or schema.*)").fill("tpch.nation")
        admin.get_by_label("Only rows where").fill("n_regionkey = 1")
        admin.get_by_label("Hidden columns").fill("n_comment")
        admin.get_by_role("button", name="Grant", exact=True).click()
        expect(admin.get_by_role("status")).to_contain_text("Granted tpch.nation to america")
        admin.goto("/admin/accounts")
        admin.get_by_label("Groups of browser_analyst").fill("america")
        admin.get_by_label("Groups of browser_analyst").press("Enter")
        expect(admin.get_by_role("status")).to_be_visible()

        # The analyst's next page load: the table, its filtered rows, not the hidden column.
        analyst.goto("/catalog/tpch/nation")
        expect(analyst.get_by_role("heading", level=1)).to_have_text("tpch.nation")
        assert analyst.get_by_text("n_comment").count() == 0
        analyst.goto("/sql")
        analyst.get_by_label("Query").fill("select n_name, n_regionkey from tpch.nation order by 1")
        analyst.get_by_role("button", name="Run").click()
        rows = analyst.locator("table.result tbody tr")
        expect(rows).to_have_count(len(expected))
        cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]
        assert [c[0] for c in cells] == expected and {c[1] for c in cells} == {"1"}
        screenshot(analyst, "analyst-filtered")
    finally:
        srv.session.delete(srv.url("/api/v1/admin/grants"), timeout=60,
                           params={"group": "america", "target": "tpch.nation"})
    analyst.goto("/catalog/tpch/nation")
    expect(analyst.get_by_role("heading", level=1)).to_have_text("Not found")


def test_a_grant_with_a_row_filter_shows_exactly_the_filtered_rows_on_the_next_page(srv):
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    analyst = browser_session(srv, "portal_nobody")
    assert home_json(analyst, srv)["tables"] == 0
    # a bad filter or an unknown column is refused with the reason, nothing is stored
    bad = admin_form(admin, srv, "/admin/grants", action="set", group="urgent", target="tpch.orders",
                     row_filter="no_such_column = 1")
    assert bad.status_code == 400 and "no_such_column" in bad.text
    bad = admin_form(admin, srv, "/admin/grants", action="set", group="urgent", target="tpch.*",
                     row_filter="o_orderkey < 10")
    assert bad.status_code == 400 and "need one table" in bad.text
    ok = admin_form(admin, srv, "/admin/grants", action="set", group="urgent", target="tpch.orders",
                    row_filter="o_orderpriority = '1-URGENT'", hidden_columns="o_comment, o_clerk")
    assert ok.status_code == 200 and "Granted tpch.orders to urgent" in ok.text, ok.text
    nobody = next(a for a in admin.get(srv.url("/admin/accounts?format=json"), timeout=60)
                  .json()["accounts"] if a["name"] == "portal_nobody")
    admin_form(admin, srv, f"/admin/accounts/{nobody['id']}", action="groups", groups="urgent")
    try:
        # the analyst's next page load: orders, its filtered rows, without the hidden columns
        home = home_json(analyst, srv)
        assert {f"{t['schema']}.{t['name']}" for s in home["schemas"] for t in s["tables"]} == {"tpch.orders"}
        expected = srv.query_json("select count(*) as n from tpch.orders where o_orderpriority = '1-URGENT'")[0]["n"]
        r = analyst.post(srv.url("/sql?format=json"), timeout=120,
                         data={"csrf": analyst.cookies["dataport_csrf"],
                               "sql": "select count(*) as n, count(distinct o_orderpriority) as p from tpch.orders"})
        assert r.json()["result"]["rows"] == [[str(expected), "1"]], r.text
        table = analyst.get(srv.url("/catalog/tpch/orders?format=json"), timeout=120).json()
        names = [c["name"] for c in table["columns"]]
        assert "o_comment" not in names and "o_clerk" not in names and "o_orderkey" in names
        assert table["profile_restricted"] is True
        assert all(row[names.index("o_orderpriority")] == "1-URGENT" for row in table["sample_rows"])
        page = analyst.get(srv.url("/catalog/tpch/orders"), timeout=120).text
        assert "o_comment" not in page and "o_clerk" not in page
        # the administrator's preview shows the same
        preview = admin.get(srv.url("/api/v1/admin/preview"), timeout=60,
                            params={"user": "portal_nobody", "table": "tpch.orders"}).json()
        assert preview["columns"] == names and preview["rows"]
        assert all(r[names.index("o_orderpriority")] == "1-URGENT" for r in preview["rows"])
        html = admin.get(srv.url("/admin/grants"), timeout=60,
                         params={"preview_user": "portal_nobody", "preview_table": "tpch.orders"})
        assert "tpch.orders as portal_nobody sees it" in html.text
        listed = admin.get(srv.url("/api/v1/admin/grants"), timeout=60).json()["grants"]
        assert any(g["group"] == "urgent" and g["hidden_columns"] == ["o_comment", "o_clerk"] for g in listed)
    finally:
        r = admin_form(admin, srv, "/admin/grants", action="revoke", group="urgent", target="tpch.orders")
        admin_form(admin, srv, f"/admin/accounts/{nobody['id']}", action="groups", groups="")
    assert r.status_code == 200 and "Revoked" in r.text
    assert home_json(analyst, srv)["tables"] == 0, "a revoked grant is gone at the next page load"
    assert analyst.get(srv.url("/admin/grants"), timeout=60).status_code == 403


def test_jobs_run_from_the_page_and_health_shows_the_machine(srv):
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    jobs = admin.get(srv.url("/admin/jobs?format=json"), timeout=60).json()["jobs"]
    assert jobs, "the demo server has catalog jobs"
    name = next((j["name"] for j in jobs if j["name"] == "refresh:catalog"), jobs[0]["name"])
    before = next(j for j in jobs if j["name"] == name)["runs"]
    r = admin_form(admin, srv, f"/admin/jobs/{name}/run")
    assert r.status_code == 202 and f"{name} started" in r.text, r.text
    # this run, not an earlier one started from another page
    run_id = int(re.search(rf"{re.escape(name)} started \(run (\d+)\)", r.text).group(1))
    history = wait_for(lambda: [h for h in admin.get(srv.url(f"/admin/jobs/{name}?format=json"),
                                                      timeout=60).json()["history"]
                                if h["id"] == run_id and h["outcome"] != "running"],
                       timeout=60, what="the manual run to finish")
    assert history[0]["outcome"] in ("ok", "partial"), history[0]
    after = next(j for j in admin.get(srv.url("/admin/jobs?format=json"), timeout=60).json()["jobs"]
                 if j["name"] == name)["runs"]
    assert after > before
    # The log of the last run: what the run logged, in the server log's words.
    page = admin.get(srv.url(f"/admin/jobs/{name}?format=json"), timeout=60).json()
    last = page["last_log"]
    assert last["run_id"] == history[0]["id"] or last["started_ms"] >= history[0]["started_ms"]
    lines = last["log"].splitlines()
    assert any("job started" in line and f"job={name}" in line for line in lines), lines
    assert any("job finished" in line for line in lines), lines
    assert srv.get(f"/api/v1/jobs/{name}").json()["last_log"]["log"].count("\n") >= 1
    html = admin.get(srv.url(f"/admin/jobs/{name}"), timeout=60).text
    assert "Log of the last run" in html and "job finished" in html
    assert admin.post(srv.url(f"/admin/jobs/{name}/run"), data={}, timeout=60).status_code in (400, 403)
    missing = admin_form(admin, srv, "/admin/jobs/no-such-job/run")
    assert missing.status_code == 404

    health = admin.get(srv.url("/admin/health?format=json"), timeout=60).json()
    assert health["health"]["status"] in ("ok", "degraded")
    assert health["host"]["disk"]["available"] > 0 and health["host"]["memory"]["total"] > 0
    assert len(health["host"]["load"]) == 3
    assert health["flight"] == srv.flight and health["http"] == srv.http
    assert {job for job, _ in health["jobs"]} == {j["name"] for j in jobs}
    page = admin.get(srv.url("/admin/health"), timeout=60)
    assert "Data dir disk" in page.text and "GiB" in page.text


def test_the_sources_page_shows_each_source_and_its_tables(start_server, data_copy, tmp_path,
                                                           new_page):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "people.csv").write_text("id,name\n1,Ann\n2,Bo\n3,Cy\n")
    old = time.time() - 300  # settled: the connector leaves files still being written alone
    os.utime(drop / "people.csv", (old, old))
    config = tmp_path / "dataport.yaml"
    config.write_text(f"sources:\n  - name: drops\n    type: files\n    path: '{drop}'\n"
                      "    schema: uploads\n")
    srv = start_server(["--config", str(config)], data_dir=data_copy, demo=False)
    assert srv.post("/api/v1/jobs/sync:drops/run").status_code == 202
    wait_for(lambda: srv.get("/api/v1/jobs/sync:drops").json()["history"][0]["outcome"] != "running",
             timeout=120, what="the sync to finish")
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    data = admin.get(srv.url("/admin/sources?format=json"), timeout=60).json()
    [source] = data["sources"]
    assert (source["name"], source["kind"]) == ("drops", "files")
    assert ["path", str(drop)] in source["settings"] and ["schema", "uploads"] in source["settings"]
    assert [j["name"] for j in source["jobs"]] == ["sync:drops"] and source["failing"] == 0
    assert source["push"] is None
    [table] = source["tables"]
    assert (table["schema_name"], table["table_name"], table["rows"], table["outcome"]) == (
        "uploads", "people", 3, "ok")
    assert table["href"] == "/catalog/uploads/people" and data["unconfigured"] == []
    html = admin.get(srv.url("/admin/sources"), timeout=60).text
    assert "uploads.people" in html and "sync:drops" in html
    log = srv.get("/api/v1/jobs/sync:drops").json()["last_log"]["log"]
    assert "job finished" in log, log
    page = new_page(srv)
    sign_in(page, srv.http, "/admin/sources", ADMIN_USER, ADMIN_PASSWORD)
    expect(page.get_by_role("link", name="uploads.people")).to_be_visible()
    screenshot(page, "sources")
    check_accessibility(page, "the sources page with a source")


def test_the_activity_page_shows_only_what_the_viewer_may_see(srv):
    reader = browser_session(srv, "portal_reader")
    run_sql(reader, srv, "select count(*) from tpch.nation")
    data = wait_for(lambda: (lambda d: d if d["volume_total"] > 0 else None)(
        reader.get(srv.url("/activity?format=json"), timeout=60).json()), timeout=15,
        what="today's statements in the volume")
    assert len(data["volume"]) == 14 and data["volume"][-1]["statements"] > 0
    readable = readable_of(home_json(reader, srv))
    assert {c["table"] for c in data["changed"]} <= readable and data["changed"]
    assert all(a["table"] in readable for a in data["alerts"])
    assert all(s["table"] in readable for s in data["syncs"])
    assert all(r["summary"] == "" for r in data["runs"]), "job summaries are for administrators"
    admin = browser_session(srv, ADMIN_USER, ADMIN_PASSWORD)
    admin_runs = admin.get(srv.url("/activity?format=json"), timeout=60).json()["runs"]
    assert any(r["summary"] for r in admin_runs) or not admin_runs
    page = reader.get(srv.url("/activity"), timeout=60)
    assert page.status_code == 200 and '<svg class="volume"' in page.text
    assert "tpch.customer" not in page.text


def readable_of(home: dict) -> set[str]:
    return {f"{t['schema']}.{t['name']}" for s in home["schemas"] for t in s["tables"]}


def test_the_catalog_searches_as_you_type_under_the_pages_own_policy(srv, new_page):
    # bypass_csp=False: the page's Content-Security-Policy applies (no inline script or eval)
    page = new_page(srv, bypass_csp=False)
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in(page, srv.http, "/catalog", "portal_reader", PASSWORD)
    page.get_by_label("Search tables and columns").press_sequentially("suppl", delay=40)
    # no Search button pressed: the results follow the typing, and the address too
    page.wait_for_url(re.compile(r".*/catalog\?q=suppl$"))
    hits = page.locator("#hits ol.hits li")
    assert hits.first.inner_text().startswith("tpch.supplier")
    assert "match “suppl”" in page.locator("#hits h2").inner_text()
    assert refused == [], refused
    screenshot(page, "as-you-type")
