"""Corporate memory in the portal, in headless Chromium (Playwright): the memory page (stats,
search, the category filter, votes that make an item one of your rules and are taken back),
an item's page with its sources, an item the screen held (a password: its author's alone and
not publishable; an email: published by its author), administrators pinning and retiring
items, the notes editor with its status and stored transcripts. Every page gets the axe-core
check; screenshots of the memory page, an item's page and the moderation list are the pictures
of docs/portal.md.

One server for the module, on an empty data dir (no demo data is needed): two analysts write
their notes through `PUT /api/corporate-memory/notes`, and the administrator runs the
collector (`memory:collect`) once."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest
import requests
from playwright.sync_api import Page, expect

from browser_util import check_accessibility, screenshot, sign_in
from e2e_util import Server, wait_for

PASSWORD = "Memory-Pass1"
ANA, BOB, BOSS = "ana_mem", "bob_mem", "boss_mem"
SHARED = ("- The fiscal year starts on 1 April: Q1 is April to June, and reports name the "
          "quarter by the year it ends in.\n")
ANA_NOTES = f"""\
# Orders

- `orders.status` 7 means refunded: exclude refunds from revenue.
- Use `revenue_net`, not `revenue` — the latter includes tax.
  It changed in the spring.

## Slow queries

Filter `lineitem` by `l_shipdate` first; the table is partitioned by month.

## Calendar

{SHARED}
## Warehouse

- The nightly load reads postgres://etl:Sup3rSecret42@db.internal/x into staging.
- Markup in notes stays text: <b>not bold</b> and <script>alert(1)</script>
"""
BOB_NOTES = f"""\
# Customers

- Churned customers: no order in 90 days counts as churned, monthly.
- Ask bob.smith@example.org before changing the churn definition.

## Dashboards

- The weekly revenue dashboard refreshes on Monday mornings.

## Calendar

{SHARED}"""

TITLES = {
    "refunds": "orders.status 7 means refunded",
    "revenue": "Use revenue_net, not revenue",
    "slow": "Slow queries",
    "markup": "Markup in notes stays text",
    "fiscal": "The fiscal year starts on 1 April",
    "churn": "Churned customers",
    "dashboard": "The weekly revenue dashboard refreshes on Monday mornings",
    "secret": "The nightly load reads postgres://etl:Sup3rSecret42@db.internal/x into staging",
    "email": "Ask bob.smith@example.org before changing the churn definition",
}


@dataclass
class Memory:
    srv: Server
    http: dict[str, requests.Session]

    def api(self, user: str, path: str, **params) -> dict:
        r = self.http[user].get(self.srv.url(path), params=params, timeout=30)
        assert r.status_code == 200, f"{path} as {user}: {r.status_code} {r.text[:300]}"
        return r.json()

    def items(self, user: str, **params) -> list[dict]:
        return self.api(user, "/api/corporate-memory/knowledge", per_page=100, **params)["items"]

    def item_id(self, key: str, user: str = BOSS) -> str:
        """The id of the published item titled TITLES[key]."""
        found = [i["id"] for i in self.items(user) if i["title"] == TITLES[key]]
        assert found, f"no published item {TITLES[key]!r}: {[i['title'] for i in self.items(user)]}"
        return found[0]

    def held_id(self, user: str, key: str) -> str:
        queue = self.api(user, "/api/corporate-memory/review")["items"]
        found = [r["item"]["id"] for r in queue if r["item"]["title"] == TITLES[key]]
        assert found, f"{TITLES[key]!r} not in {user}'s review queue: {queue}"
        return found[0]

    def page(self, new_page, user: str, path: str = "/memory") -> Page:
        page = new_page(self.srv)
        sign_in(page, self.srv.http, path, user, PASSWORD)
        return page


@pytest.fixture(scope="module")
def mem(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("data-memory"), [], tmp_path_factory.mktemp("log-memory"))
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        http = {}
        for name, groups in ((ANA, "dataread"), (BOB, "dataread"), (BOSS, "data-ops")):
            srv.cli("user", "add", name, "--groups", groups, "--password-stdin",
                    input=PASSWORD + "\n")
            http[name] = srv.session_as(name, PASSWORD)
        for name, notes in ((ANA, ANA_NOTES), (BOB, BOB_NOTES)):
            r = http[name].put(srv.url("/api/corporate-memory/notes"), json={"text": notes},
                               timeout=30)
            assert r.status_code == 200, r.text
        run = srv.run_job("memory:collect")
        assert run["outcome"] == "ok", run
        yield Memory(srv, http)
    finally:
        srv.stop()


def item_row(page: Page, item_id: str):
    return page.locator(f"li[id='{item_id}']")


def listed_titles(page: Page) -> list[str]:
    return page.locator("ol.knowledge h3 a").all_inner_texts()


def test_the_memory_page_lists_published_items_with_stats(mem, new_page):
    stats = mem.api(BOB, "/api/corporate-memory/stats")
    published = {i["title"] for i in mem.items(BOB)}
    assert {TITLES[k] for k in ("refunds", "revenue", "slow", "markup", "fiscal", "churn",
                                "dashboard")} <= published
    assert TITLES["secret"] not in published and TITLES["email"] not in published
    page = mem.page(new_page, BOB)
    assert page.get_by_role("heading", name="Corporate memory", exact=True).is_visible()
    expect(page.locator("#stat-items")).to_have_text(str(stats["knowledge_count"]))
    expect(page.locator("#stat-contributors")).to_have_text("2")
    assert page.locator("#stat-collected").inner_text() != "never"
    assert set(listed_titles(page)) == published
    # Bob's own held item (an address) is his to review; Ana's password is nowhere.
    expect(page.get_by_role("link", name="Your held items (1)")).to_be_visible()
    text = page.inner_text("main")
    assert "Sup3rSecret42" not in text and "nightly load" not in text
    # The fiscal year is in both analysts' notes: one item, two sources.
    fiscal = item_row(page, mem.item_id("fiscal"))
    assert f"from {ANA}, {BOB}" in fiscal.inner_text() or f"from {BOB}, {ANA}" in fiscal.inner_text()
    # Notes are text, never markup.
    markup = item_row(page, mem.item_id("markup"))
    assert "<b>not bold</b> and <script>alert(1)</script>" in markup.locator("p.content").inner_text()
    assert markup.locator("b, script").count() == 0
    # Line breaks of an item's content are kept.
    revenue = item_row(page, mem.item_id("revenue")).locator("p.content")
    assert revenue.inner_text() == ("Use `revenue_net`, not `revenue` — the latter includes tax.\n"
                                    "It changed in the spring.")
    check_accessibility(page, "the memory page")
    # The same page as JSON, for a token.
    r = requests.get(mem.srv.url("/memory?format=json"), timeout=30,
                     headers=mem.http[BOB].headers)
    assert r.status_code == 200 and r.json()["total"] == len(published)


def test_search_and_the_category_filter_narrow_the_list(mem, new_page):
    page = mem.page(new_page, BOB)
    page.get_by_label("Search").fill("refunded")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"search=refunded"))
    assert listed_titles(page) == [TITLES["refunds"]]
    expect(page.get_by_label("Sort by").locator("option:checked")).to_have_text("Best match")
    expect(page.get_by_role("heading", name="1 item matches “refunded”")).to_be_visible()
    page.get_by_label("Search").fill("")
    page.get_by_label("Category").select_option("performance")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"category=performance"))
    assert listed_titles(page) == [TITLES["slow"]]
    expect(page.get_by_label("Category")).to_have_value("performance")
    check_accessibility(page, "the memory page, filtered")
    # The item from both analysts' notes leads by contributors.
    page.goto("/memory")
    page.get_by_label("Sort by").select_option(label="Contributors")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"sort=contributors"))
    assert listed_titles(page)[0] == TITLES["fiscal"]
    # Nothing matches: the page says so and offers the whole list.
    page.goto("/memory?search=zzyzx-nothing")
    assert listed_titles(page) == []
    expect(page.get_by_role("link", name="show every item")).to_be_visible()
    # A category the form could not have sent is named, and all are shown.
    page.goto("/memory?category=gossip")
    expect(page.get_by_role("alert")).to_contain_text("gossip")
    assert len(listed_titles(page)) >= 7


def test_voting_up_makes_a_rule_and_clicking_again_takes_it_back(mem, new_page):
    item = mem.item_id("revenue")
    page = mem.page(new_page, BOB)
    row = item_row(page, item)
    score = int(row.locator(".score").inner_text().split()[0])
    rules = int(page.locator("#stat-rules").inner_text())
    up = row.get_by_role("button", name=f"Upvote “{TITLES['revenue']}”")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(row.locator(".badge.rule")).to_have_count(0)

    up.click()
    expect(page.locator("p.flash")).to_contain_text("You upvoted")
    row = item_row(page, item)
    expect(row.locator(".score")).to_have_text(f"{score + 1} points")
    expect(row.locator(".badge.rule")).to_have_text("rule")
    expect(row.get_by_role("button", name=f"Upvote “{TITLES['revenue']}”")).to_have_attribute(
        "aria-pressed", "true")
    expect(page.locator("#stat-rules")).to_have_text(str(rules + 1))
    screenshot(page, "upvoted")
    assert [v["vote"] for v in mem.api(BOB, "/api/corporate-memory/my-votes")["votes"]
            if v["item_id"] == item] == [1]
    # Shown once: the next page has no flash.
    page.reload()
    expect(page.locator("p.flash")).to_have_count(0)

    # Clicking the pressed button again takes the vote back.
    item_row(page, item).get_by_role("button", name=f"Upvote “{TITLES['revenue']}”").click()
    expect(page.locator("p.flash")).to_contain_text("took back your vote")
    row = item_row(page, item)
    expect(row.locator(".score")).to_have_text(f"{score} points")
    expect(row.locator(".badge.rule")).to_have_count(0)
    expect(page.locator("#stat-rules")).to_have_text(str(rules))

    # A downvote: the score drops and no rule; taken back the same way.
    down = row.get_by_role("button", name=f"Downvote “{TITLES['revenue']}”")
    down.click()
    row = item_row(page, item)
    expect(row.locator(".score")).to_have_text(f"{score - 1} points")
    expect(row.locator(".badge.rule")).to_have_count(0)
    row.get_by_role("button", name=f"Downvote “{TITLES['revenue']}”").click()
    expect(item_row(page, item).locator(".score")).to_have_text(f"{score} points")
    assert [v for v in mem.api(BOB, "/api/corporate-memory/my-votes")["votes"]
            if v["item_id"] == item and v["vote"] != 0] == []
    check_accessibility(page, "the memory page after voting")

    # The form is refused without the session's CSRF token, and nothing changes.
    browser = requests.Session()
    for cookie in page.context.cookies():
        browser.cookies.set(cookie["name"], cookie["value"])
    r = browser.post(mem.srv.url(f"/memory/items/{item}/vote"), data={"vote": "1"},
                     headers={"Origin": mem.srv.http}, allow_redirects=False, timeout=30)
    assert r.status_code == 403, r.status_code
    assert [i["your_vote"] for i in mem.items(BOB) if i["id"] == item] == [0]


def test_the_item_page_shows_the_item_its_sources_and_votes(mem, new_page):
    item = mem.item_id("fiscal")
    page = mem.page(new_page, BOB, f"/memory/items/{item}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(TITLES["fiscal"])
    sources = page.locator("section:has(#sources-h) tbody tr")
    expect(sources).to_have_count(2)
    assert sorted(r.split("\t")[0] for r in sources.all_inner_texts()) == [ANA, BOB]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", sources.first.inner_text())
    # No moderation for an analyst.
    expect(page.get_by_role("heading", name="Moderation")).to_have_count(0)
    page.get_by_role("button", name=f"Upvote “{TITLES['fiscal']}”").click()
    page.wait_for_url(mem.srv.url(f"/memory/items/{item}"))
    expect(page.locator("p.flash")).to_contain_text("You upvoted")
    expect(page.locator("h1 .badge.rule")).to_be_visible()
    expect(page.get_by_text(f"rules/{item}.md")).to_be_visible()
    check_accessibility(page, "an item's page")
    # An unknown item is the portal's not-found page.
    r = page.goto("/memory/items/km_000000000000")
    assert r is not None and r.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_a_held_item_with_a_password_is_its_authors_alone_and_cannot_be_published(mem, new_page):
    held = mem.held_id(ANA, "secret")
    # Nobody else sees it: not listed, not searchable, not by its address (the same 404 as an
    # unknown item), not even an administrator.
    for user in (BOB, BOSS):
        page = mem.page(new_page, user)
        assert TITLES["secret"] not in listed_titles(page)
        page.goto("/memory?search=postgres")
        assert listed_titles(page) == []
        r = page.goto(f"/memory/items/{held}")
        assert r is not None and r.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "Sup3rSecret42" not in page.content() and "nightly" not in page.content()
        r = mem.http[user].get(mem.srv.url(f"/memory/items/{held}?format=json"), timeout=30)
        assert r.status_code == 404
    # Its author finds it in the review queue, with the finding and no way to publish it.
    page = mem.page(new_page, ANA, "/memory/notes")
    review = page.locator(f"li[id='review-{held}']")
    expect(review).to_contain_text(TITLES["secret"])
    findings = [r.split("\t") for r in review.locator("table.findings tbody tr").all_inner_texts()]
    # In the title (line 1) and the content (line 2).
    assert ["password", "password in url", "1"] in findings, findings
    assert ["password", "password in url", "2"] in findings, findings
    expect(review.get_by_role("button")).to_have_count(0)
    expect(review).to_contain_text("It cannot be published")
    check_accessibility(page, "my notes with a held item")
    # Its page says the same, and a forged publish is refused.
    page.goto(f"/memory/items/{held}")
    expect(page.get_by_role("heading", name="Held for your review")).to_be_visible()
    expect(page.get_by_role("button", name="Publish anyway")).to_have_count(0)
    check_accessibility(page, "a held item's page")
    r = mem.http[ANA].post(mem.srv.url(f"/api/corporate-memory/items/{held}/review"),
                           json={"publish": True}, timeout=30)
    assert r.status_code == 403, r.text
    assert TITLES["secret"] not in {i["title"] for i in mem.items(BOB)}


def test_an_item_held_for_an_email_is_published_by_its_author(mem, new_page):
    held = mem.held_id(BOB, "email")
    ana = mem.page(new_page, ANA)
    assert TITLES["email"] not in listed_titles(ana)
    page = mem.page(new_page, BOB, "/memory/notes")
    review = page.locator(f"li[id='review-{held}']")
    expect(review.locator("table.findings")).to_contain_text("email")
    review.get_by_role("button", name=f"Publish anyway: “{TITLES['email']}”").click()
    page.wait_for_url(mem.srv.url("/memory/notes"))
    expect(page.locator("p.flash")).to_contain_text("You published")
    # Still in Bob's queue, to hold again if he changes his mind.
    review = page.locator(f"li[id='review-{held}']")
    expect(review.get_by_role("button", name=f"Hold again: “{TITLES['email']}”")).to_be_visible()
    check_accessibility(page, "my notes after publishing a held item")
    # The other analyst sees it now, on the list and by its address.
    ana.goto("/memory?search=definition")
    assert listed_titles(ana) == [TITLES["email"]]
    r = ana.goto(f"/memory/items/{held}")
    assert r is not None and r.status == 200
    # Held again: gone for Ana.
    review.get_by_role("button", name=f"Hold again: “{TITLES['email']}”").click()
    expect(page.locator("p.flash")).to_contain_text("held again")
    r = ana.goto(f"/memory/items/{held}")
    assert r is not None and r.status == 404


def test_an_administrator_pins_and_retires_items(mem, new_page):
    slow, dashboard = mem.item_id("slow"), mem.item_id("dashboard")
    # Analysts are refused the moderation page.
    refused = mem.page(new_page, ANA, "/admin/memory")
    expect(refused.get_by_role("heading", name="Not allowed")).to_be_visible()

    page = mem.page(new_page, BOSS, "/admin/memory")
    expect(page.get_by_role("heading", name="Corporate memory")).to_be_visible()
    check_accessibility(page, "the moderation list")
    page.get_by_role("button", name=f"Pin “{TITLES['slow']}”").click()
    expect(page.locator("p.flash")).to_contain_text("Pinned")
    expect(page.locator(f"tr[id='{slow}'] .badge.pinned")).to_be_visible()
    page.get_by_role("button", name=f"Retire “{TITLES['dashboard']}”").click()
    expect(page.locator("p.flash")).to_contain_text("Retired")
    expect(page.locator(f"tr[id='{dashboard}']")).to_have_count(0)
    page.get_by_label("State").select_option("retired")
    page.get_by_role("button", name="Show").click()
    expect(page.locator(f"tr[id='{dashboard}']")).to_be_visible()
    expect(page.get_by_role("button", name=f"Restore “{TITLES['dashboard']}”")).to_be_visible()

    # The analysts' list: the retired item is gone, the pinned one is everyone's rule.
    ana = mem.page(new_page, ANA)
    assert TITLES["dashboard"] not in listed_titles(ana)
    row = item_row(ana, slow)
    expect(row.locator(".badge.pinned")).to_be_visible()
    expect(row.locator(".badge.rule")).to_be_visible()
    r = ana.goto(f"/memory/items/{dashboard}")
    assert r is not None and r.status == 404, "a retired item is its authors' and admins'"
    bob = mem.page(new_page, BOB, f"/memory/items/{dashboard}")
    expect(bob.locator("h1 .badge.retired")).to_have_text("retired")

    # The item's page: moderation, an edit (refused when empty, kept as typed), the history.
    page.goto(f"/memory/items/{slow}")
    check_accessibility(page, "an item's page for an administrator")
    page.get_by_text("Edit the item").click()
    page.get_by_label("Tags").fill("lineitem, partitions")
    page.get_by_label("Title").fill("   ")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("title")
    expect(page.get_by_label("Tags")).to_have_value("lineitem, partitions")
    screenshot(page, "edit-refused")
    page.get_by_label("Title").fill("Slow queries on lineitem")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("p.flash")).to_contain_text("Saved your changes")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Slow queries on lineitem")
    history = page.locator("section:has(#history-h)")
    expect(history).to_contain_text("pin")
    expect(history).to_contain_text("changed title, tags")
    screenshot(page, "moderated")
    expect(page.locator("p.meta .tag")).to_have_text(["lineitem", "partitions"])


def test_the_notes_editor_saves_and_shows_the_collectors_status(mem, new_page, tmp_path):
    name = f"cyd_{uuid.uuid4().hex[:6]}"
    mem.srv.cli("user", "add", name, "--groups", "dataread", "--password-stdin",
                input=PASSWORD + "\n")
    page = mem.page(new_page, name, "/memory/notes")
    expect(page.locator("#notes-status")).to_contain_text("You have no notes yet")
    check_accessibility(page, "my notes, empty")
    notes = "# Joins\n\n- Always filter `orders` by `o_orderdate` before joining `lineitem`.\n"
    page.get_by_label("Your notes").fill(notes)
    page.get_by_role("button", name="Save notes").click()
    page.wait_for_url(mem.srv.url("/memory/notes"))
    expect(page.locator("p.flash")).to_contain_text("Your notes are saved")
    assert page.get_by_label("Your notes").input_value() == notes

    def collected():
        page.reload()
        return "Collected" in page.locator("#notes-status").inner_text()
    wait_for(collected, timeout=30, what="the saved notes to be collected")
    expect(page.locator("#notes-status")).to_contain_text("offline")
    assert mem.api(BOB, "/api/corporate-memory/stats")["contributors"] >= 3
    page.goto("/memory?search=o_orderdate")
    assert listed_titles(page) == ["Always filter orders by o_orderdate before joining lineitem"]

    # A transcript pushed from the laptop and stored by the session collector: listed, and its
    # link downloads it with the browser's session.
    token = mem.srv.login(name, PASSWORD)
    body = b'{"role": "user", "text": "how are refunds counted?"}\n'
    r = requests.post(mem.srv.url("/api/v1/sync/upload"), params={"kind": "transcript",
                      "name": "session-1.jsonl"}, data=body, timeout=30,
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 201), r.text
    mem.srv.run_job("memory:sessions")
    page.goto("/memory/notes")
    link = page.get_by_role("link", name="Download session-1.jsonl")
    expect(link).to_be_visible()
    download = page.request.get(link.get_attribute("href"))
    assert download.status == 200 and download.body() == body
    check_accessibility(page, "my notes with a transcript")


def test_the_pages_for_the_docs(mem, new_page):
    """docs/portal/memory.png, memory-item.png and memory-admin.png come from these
    screenshots."""
    for user, key in ((ANA, "refunds"), (BOB, "refunds"), (ANA, "fiscal"), (ANA, "churn")):
        r = mem.http[user].post(mem.srv.url("/api/corporate-memory/vote"),
                                json={"item_id": mem.item_id(key), "vote": 1}, timeout=30)
        assert r.status_code == 200, r.text
    page = mem.page(new_page, ANA)
    expect(page.locator(".badge.rule").first).to_be_visible()
    screenshot(page, "memory")
    page.goto(f"/memory/items/{mem.item_id('fiscal')}")
    screenshot(page, "memory-item")
    admin = mem.page(new_page, BOSS, "/admin/memory")
    screenshot(admin, "memory-admin")
    phone = new_page(mem.srv, phone=True)
    sign_in(phone, mem.srv.http, "/memory", ANA, PASSWORD)
    screenshot(phone, "memory-phone")
    check_accessibility(phone, "the memory page at phone width")


def test_pages_of_twenty_and_my_rules(mem, new_page):
    name = f"pat_{uuid.uuid4().hex[:6]}"
    mem.srv.cli("user", "add", name, "--groups", "dataread", "--password-stdin",
                input=PASSWORD + "\n")
    pat = mem.srv.session_as(name, PASSWORD)
    notes = "# Tips\n\n" + "".join(f"- Tip {n}: the {n}th tip about tables\n" for n in range(1, 26))
    r = pat.put(mem.srv.url("/api/corporate-memory/notes"), json={"text": notes}, timeout=30)
    assert r.status_code == 200, r.text
    # Saving collects the notes in the background.
    total = wait_for(lambda: (t := mem.api(BOB, "/api/corporate-memory/knowledge")["total"]) >= 30
                     and t, timeout=30, what="the tips to be collected")
    page = mem.page(new_page, BOB)
    expect(page.locator("ol.knowledge > li")).to_have_count(20)
    expect(page.get_by_role("heading", name=re.compile(f"{total} items · page 1 of 2"))).to_be_visible()
    expect(page.get_by_role("link", name="Previous page")).to_have_count(0)
    first = listed_titles(page)
    page.get_by_role("link", name="Next page").click()
    page.wait_for_url(re.compile(r"page=1"))
    expect(page.locator("ol.knowledge > li")).to_have_count(total - 20)
    assert not set(first) & set(listed_titles(page))
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    page.get_by_role("link", name="Previous page").click()
    page.wait_for_url(mem.srv.url("/memory"))
    assert listed_titles(page) == first
    # Past the last page: nothing, and a way back.
    page.goto("/memory?page=7")
    expect(page.get_by_role("link", name="Go back a page")).to_be_visible()
    # My rules: what I upvoted and what an administrator pinned.
    rules = {i["title"] for i in mem.items(ANA, my_rules="true")}
    assert rules
    ana = mem.page(new_page, ANA)
    ana.get_by_label("Only my rules").check()
    ana.get_by_role("button", name="Show").click()
    ana.wait_for_url(re.compile(r"my_rules=true"))
    assert set(listed_titles(ana)) == rules
    expect(ana.locator("#stat-rules")).to_have_text(str(len(rules)))
    expect(ana.get_by_label("Only my rules")).to_be_checked()
