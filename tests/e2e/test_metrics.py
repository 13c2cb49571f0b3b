"""Business metrics: definitions in YAML beside data_description.md, listed and run over
`GET /api/v1/metrics[/{name}]` as the caller's own query (grants, row filters, audit), shown in
the catalog, on the tables they use and on their own page; a bad definition is reported with its
file, line and reason while the rest load. In Chromium: the metric page, its chart, its form and
its download."""

from __future__ import annotations

import csv
import io
import math

import pytest
import requests

from browser_util import check_accessibility, screenshot, sign_in
from e2e_util import ADMIN_PASSWORD, ADMIN_USER

PASSWORD = "Metric-Pass1"
DEMO_METRICS = {"revenue", "orders_placed", "average_order_value", "late_shipments",
                "active_customers"}


@pytest.fixture(scope="module")
def srv(server):
    """The shared demo server with analysts: one in no group, one in a group that reads
    urgent orders only, without o_custkey."""
    for name, groups in (("metric_nobody", []), ("metric_urgent", ["--groups", "urgent_orders"])):
        server.cli("user", "add", name, *groups, "--password-stdin", input=PASSWORD + "\n",
                   check=False)
    r = requests.put(server.url("/api/v1/admin/grants"), timeout=60,
                     headers={"Authorization": f"Bearer {server.admin_token}"},
                     json={"group": "urgent_orders", "target": "tpch.orders",
                           "row_filter": "o_orderpriority = '1-URGENT'",
                           "hidden_columns": ["o_custkey"]})
    assert r.status_code == 200, r.text
    yield server
    requests.delete(server.url("/api/v1/admin/grants"), timeout=60,
                    headers={"Authorization": f"Bearer {server.admin_token}"},
                    params={"group": "urgent_orders", "target": "tpch.orders"})


def as_user(srv, user: str) -> requests.Session:
    return srv.session_as(user, PASSWORD)


def test_the_api_lists_the_metrics_and_runs_them(srv):
    listed = srv.get("/api/v1/metrics").json()
    by_name = {m["name"]: m for m in listed["metrics"]}
    assert DEMO_METRICS <= set(by_name)
    assert listed["problems"] == [], "an administrator sees the definitions left out: none"
    revenue = by_name["revenue"]
    assert revenue["table"] == "lineitem" and revenue["schema"] == "tpch"
    assert revenue["owner"] == "finance@example.com" and revenue["grain"] == "month"
    assert revenue["file"] == "docs/metrics.yml" and revenue["line"] == 3
    assert revenue["dimensions"] == ["l_shipmode", "l_returnflag", "l_linestatus"]

    # The total is what the same SQL says.
    total = srv.get("/api/v1/metrics/revenue", params={"grain": "total"}).json()
    expected = srv.query_json(
        "select sum(l_extendedprice * (1 - l_discount)) as v from tpch.lineitem")[0]["v"]
    assert len(total) == 1 and math.isclose(float(total[0]["revenue"]), float(expected))

    # By month (its grain): periods are first days, ordered, and add up to the total.
    monthly = srv.get("/api/v1/metrics/revenue").json()
    periods = [r["period"] for r in monthly]
    assert periods == sorted(periods) and all(p.endswith("-01") for p in periods)
    assert math.isclose(sum(float(r["revenue"]) for r in monthly), float(expected), rel_tol=1e-9)

    # A year, by ship mode, as CSV.
    r = srv.get("/api/v1/metrics/revenue", params={"grain": "year", "dimensions": "l_shipmode",
                                                    "from": "1995-01-01", "to": "1995-12-31",
                                                    "format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["period"] for row in rows} == {"1995-01-01"}
    modes = srv.query_json(
        "select l_shipmode, sum(l_extendedprice * (1 - l_discount)) as v from tpch.lineitem "
        "where l_shipdate between date '1995-01-01' and date '1995-12-31' group by 1")
    assert {row["l_shipmode"]: float(row["revenue"]) for row in rows} == pytest.approx(
        {m["l_shipmode"]: float(m["v"]) for m in modes})

    # The filter of a metric holds.
    late = srv.get("/api/v1/metrics/late_shipments", params={"grain": "total"}).json()[0]
    assert late["late_shipments"] == srv.query_json(
        "select count(*) as n from tpch.lineitem where l_receiptdate > l_commitdate")[0]["n"]

    # What a request cannot ask is refused with what it can.
    bad = srv.get("/api/v1/metrics/revenue", params={"dimensions": "l_comment"})
    assert bad.status_code == 400 and "l_shipmode, l_returnflag, l_linestatus" in bad.text
    bad = srv.get("/api/v1/metrics/revenue", params={"grain": "fortnight"})
    assert bad.status_code == 400 and "grain must be" in bad.text
    bad = srv.get("/api/v1/metrics/revenue", params={"from": "1996-01-01", "to": "1995-01-01"})
    assert bad.status_code == 400 and "empty" in bad.text
    bad = srv.get("/api/v1/metrics/revenue", params={"from": "last week"})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
    assert srv.get("/api/v1/metrics/no_such_metric").status_code == 404


def test_a_metric_runs_as_the_callers_query_under_their_grants(srv):
    nobody = as_user(srv, "metric_nobody")
    listed = nobody.get(srv.url("/api/v1/metrics"), timeout=60).json()
    assert listed == {"metrics": []}, "no tables, no metrics, and no problems shown"
    hidden = nobody.get(srv.url("/api/v1/metrics/revenue"), timeout=60)
    unknown = nobody.get(srv.url("/api/v1/metrics/no_such_metric"), timeout=60)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"]["message"] == unknown.json()["error"]["message"].replace(
        "no_such_metric", "revenue"), "a metric on a table the caller can't read is unknown"

    urgent = as_user(srv, "metric_urgent")
    names = {m["name"] for m in urgent.get(srv.url("/api/v1/metrics"), timeout=60).json()["metrics"]}
    # orders only, and not the metric that reads the hidden o_custkey
    assert names == {"orders_placed", "average_order_value"}
    counted = urgent.get(srv.url("/api/v1/metrics/orders_placed"), timeout=60,
                         params={"grain": "total", "dimensions": "o_orderpriority"}).json()
    expected = srv.query_json(
        "select count(*) as n from tpch.orders where o_orderpriority = '1-URGENT'")[0]["n"]
    assert counted == [{"o_orderpriority": "1-URGENT", "orders_placed": expected}]
    assert urgent.get(srv.url("/api/v1/metrics/active_customers"), timeout=60).status_code == 404

    # Audited as the caller's query, like any other.
    audit = srv.get("/api/v1/admin/audit", params={"user": "metric_urgent", "limit": 20}).json()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    assert any('AS "orders_placed"' in e["sql"] and e["outcome"] == "ok" for e in entries), entries


BROKEN = """\
metrics:
  - name: shipped_quantity
    description: Units shipped
    owner: logistics@example.com
    table: tpch.lineitem
    expression: sum(l_quantity)
    time_column: l_shipdate
    grain: week

  - name: wrong_column
    description: Sums a column lineitem does not have
    owner: logistics@example.com
    table: tpch.lineitem
    expression: sum(l_weight)

  - name: hostile
    description: "<script>alert('metric')</script> units"
    owner: logistics@example.com
    table: tpch.lineitem
    expression: count(*)
    dimensions: [l_shipmode]
    grain: month
"""


def test_a_bad_definition_is_reported_with_file_line_and_reason(start_server, data_copy):
    (data_copy / "docs" / "metrics").mkdir()
    (data_copy / "docs" / "metrics" / "logistics.yml").write_text(BROKEN)
    srv = start_server(data_dir=data_copy, demo=False)
    listed = srv.get("/api/v1/metrics").json()
    names = {m["name"] for m in listed["metrics"]}
    assert DEMO_METRICS | {"shipped_quantity"} <= names
    assert "wrong_column" not in names and "hostile" not in names
    problems = {p["metric"]: p for p in listed["problems"]}
    assert problems["wrong_column"]["file"] == "docs/metrics/logistics.yml"
    assert problems["wrong_column"]["line"] == 10
    assert "l_weight" in problems["wrong_column"]["reason"]
    assert problems["hostile"]["line"] == 16
    assert "time_column" in problems["hostile"]["reason"]
    health = srv.get("/health").json()
    assert health["status"] == "degraded"
    assert any(e.get("source") == "metrics" and "logistics.yml line 10" in e.get("message", "")
               for e in health["errors"]), health["errors"]
    weekly = srv.get("/api/v1/metrics/shipped_quantity").json()
    assert weekly and all(r["period"] for r in weekly)

    # Fixed on disk: served after the next refresh, no restart.
    (data_copy / "docs" / "metrics" / "logistics.yml").write_text(
        BROKEN.replace("sum(l_weight)", "sum(l_quantity * 0.5)").replace("    grain: month\n",
                                                                     "    time_column: l_shipdate\n    grain: month\n"))
    assert srv.post("/api/v1/catalog/refresh").status_code == 200
    listed = srv.get("/api/v1/metrics").json()
    assert listed["problems"] == [] and {"wrong_column", "hostile"} <= {m["name"] for m in listed["metrics"]}
    # A description holding markup is text on every page.
    admin = requests.Session()
    r = admin.post(srv.url("/api/v1/auth/session"), timeout=60,
                   json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    for path in ("/metrics/hostile", "/catalog?q=units", "/catalog/tpch/lineitem"):
        html = admin.get(srv.url(path), timeout=120)
        assert html.status_code == 200, path
        assert "<script>alert" not in html.text and "&#60;script&#62;alert" in html.text, path


def test_metric_pages_in_a_browser(srv, new_page):
    page = new_page(srv)
    sign_in(page, srv.http, "/catalog?q=revenue", ADMIN_USER, ADMIN_PASSWORD)
    page.get_by_role("link", name="revenue", exact=True).click()
    page.wait_for_url(srv.url("/metrics/revenue"))
    assert page.locator(".series svg rect").count() > 12, "a bar per month"
    screenshot(page, "metric")
    check_accessibility(page, "a metric page")

    page.get_by_label("Period", exact=True).select_option("year")
    page.get_by_label("l_shipmode").check()
    page.get_by_label("From", exact=True).fill("1995-01-01")
    page.get_by_label("To", exact=True).fill("1996-12-31")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/metrics/revenue?*grain=year*")
    rows = page.locator("table.result tbody tr")
    assert rows.count() == 14, "two years by seven ship modes"
    assert page.locator(".series svg").count() == 0, "no single series to chart"
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    text = open(download.value.path()).read()
    assert text.splitlines()[0] == "period,l_shipmode,revenue" and len(text.splitlines()) == 15
    check_accessibility(page, "a metric page with a result")

    page.goto("/catalog/tpch/orders")
    assert page.get_by_role("link", name="orders_placed").is_visible()
    page.get_by_role("link", name="orders_placed").click()
    page.wait_for_url(srv.url("/metrics/orders_placed"))
    assert page.get_by_role("heading", name="orders_placed", exact=True).is_visible()
