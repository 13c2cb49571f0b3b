"""Accounts with emails: invitations (command line and admin API), sign-in by email on every
surface, disabling and enabling, group changes, deletion (never the last active administrator)
and the record of every change. Each test runs its own server on a copy of the demo data."""

from __future__ import annotations

import json

import pyarrow.flight as flight
import pytest
import requests

from e2e_util import ADMIN_PASSWORD, ADMIN_USER, FlightSession

PASSWORD = "Invited-Pass1"
ORG = {"DATAPORT_ALLOWED_DOMAINS": "example.com", "DATAPORT_DEFAULT_GROUPS": "dataread"}


@pytest.fixture
def srv(start_server, data_copy):
    return start_server(data_dir=data_copy, demo=False, env=ORG)


def admin_api(srv, method: str, path: str, **kw) -> requests.Response:
    return srv.session.request(method, srv.url(path), timeout=60, **kw)


def login(srv, user: str, password: str) -> requests.Response:
    return requests.post(srv.url("/api/v1/auth/login"),
                         json={"username": user, "password": password}, timeout=60)


def query_as(srv, token: str) -> requests.Response:
    return requests.post(srv.url("/api/v1/query"), json={"sql": "select count(*) as n from tpch.nation"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_an_invitation_by_email_signs_in_by_email_everywhere(srv):
    r = admin_api(srv, "POST", "/api/v1/admin/users",
                  json={"email": "Ann.Lee@Example.com", "name": "Ann Lee"})
    assert r.status_code == 201, r.text
    ann = r.json()["user"]
    assert (ann["name"], ann["email"], ann["state"], ann["groups"]) == \
        ("ann.lee", "ann.lee@example.com", "invited", ["dataread"])
    assert ann["display_name"] == "Ann Lee" and "password_hash" not in ann
    outside = srv.cli("user", "invite", "bob@partner.io", "--groups", "data-private").stdout
    assert "as bob_partner_io" in outside, outside
    users = {u["name"]: u for u in json.loads(srv.cli("user", "list", "--json").stdout)}
    assert users["bob_partner_io"]["groups"] == ["data-private"]
    assert users["bob_partner_io"]["state"] == "invited"
    # the same email again, in any case, is refused
    r = admin_api(srv, "POST", "/api/v1/admin/users", json={"email": "ANN.LEE@example.com"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_exists", r.text
    r = admin_api(srv, "POST", "/api/v1/admin/users", json={"email": "not-an-email"})
    assert r.status_code == 400, r.text

    # invited: no password yet, so no sign-in
    assert login(srv, "ann.lee@example.com", PASSWORD).status_code == 401
    srv.cli("user", "passwd", "ann.lee@example.com", "--password-stdin", input=PASSWORD + "\n")
    assert users_of(srv)["ann.lee"]["state"] == "active"
    for name in ("ann.lee", "ann.lee@example.com", "ANN.LEE@EXAMPLE.COM"):
        r = login(srv, name, PASSWORD)
        assert r.status_code == 200, (name, r.text)
        assert query_as(srv, r.json()["token"]).json() == [{"n": 25}]
    with FlightSession(srv.flight, "Ann.Lee@example.com", PASSWORD) as s:
        assert s.sql("select count(*) as n from tpch.nation").to_pylist() == [{"n": 25}]


def users_of(srv) -> dict[str, dict]:
    return {u["name"]: u for u in admin_api(srv, "GET", "/api/v1/admin/users").json()["users"]}


def test_a_disabled_account_is_refused_on_every_surface_until_enabled(srv):
    srv.cli("user", "invite", "cy@example.com")
    srv.cli("user", "passwd", "cy", "--password-stdin", input=PASSWORD + "\n")
    token = login(srv, "cy", PASSWORD).json()["token"]
    api_token = srv.cli("token", "create", "cy@example.com").stdout.strip().splitlines()[-1]
    assert query_as(srv, token).status_code == 200
    cy = users_of(srv)["cy"]

    r = admin_api(srv, "PATCH", f"/api/v1/admin/users/{cy['id']}", json={"state": "disabled"})
    assert r.status_code == 200 and r.json()["user"]["state"] == "disabled", r.text
    assert query_as(srv, token).status_code == 401
    assert query_as(srv, api_token).status_code == 401
    r = login(srv, "cy@example.com", PASSWORD)
    assert r.status_code == 403 and "disabled" in r.json()["error"]["message"], r.text
    assert login(srv, "cy", "Wrong-Pass99").status_code == 401
    with pytest.raises(flight.FlightError):
        FlightSession(srv.flight, "cy", PASSWORD)

    srv.cli("user", "enable", "cy@example.com")
    assert query_as(srv, api_token).status_code == 200
    assert login(srv, "cy", PASSWORD).status_code == 200


def test_groups_deletion_and_the_last_active_administrator(srv):
    admin_id = users_of(srv)[ADMIN_USER]["id"]
    # the only active administrator can be neither disabled, demoted nor deleted
    for method, body in (("PATCH", {"state": "disabled"}), ("PATCH", {"groups": ["dataread"]}),
                         ("DELETE", None)):
        r = admin_api(srv, method, f"/api/v1/admin/users/{admin_id}", json=body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", (method, body, r.text)
    assert srv.cli("user", "disable", ADMIN_USER, check=False).returncode != 0

    r = admin_api(srv, "POST", "/api/v1/admin/users",
                  json={"email": "ops@example.com", "groups": ["data-ops"]})
    ops = r.json()["user"]
    # an invited administrator is not an active one yet
    assert admin_api(srv, "DELETE", f"/api/v1/admin/users/{admin_id}").status_code == 409
    srv.cli("user", "passwd", "ops", "--password-stdin", input=PASSWORD + "\n")
    ops_session = srv.session_as("ops@example.com", PASSWORD)

    r = admin_api(srv, "PATCH", f"/api/v1/admin/users/{ops['id']}", json={"groups": ["data-ops", "dataread"]})
    assert r.json()["user"]["groups"] == ["data-ops", "dataread"], r.text
    assert admin_api(srv, "GET", f"/api/v1/admin/users/{ops['id']}").json()["user"]["groups"] == \
        ["data-ops", "dataread"]
    r = ops_session.delete(srv.url(f"/api/v1/admin/users/{admin_id}"), timeout=60)
    assert r.status_code == 204, r.text
    assert ADMIN_USER not in {u["name"] for u in
                             ops_session.get(srv.url("/api/v1/admin/users"), timeout=60).json()["users"]}
    assert login(srv, ADMIN_USER, ADMIN_PASSWORD).status_code == 401
    assert admin_api(srv, "GET", f"/api/v1/admin/users/{admin_id}").status_code == 401
    r = ops_session.get(srv.url(f"/api/v1/admin/users/{admin_id}"), timeout=60)
    assert r.status_code == 404, r.text

    # every change is recorded, with who made it and through which request
    r = ops_session.get(srv.url("/api/v1/admin/changes"), params={"limit": 20}, timeout=60)
    changes = r.json()["changes"]
    actions = [(c["actor"], c["action"], c["account"]) for c in changes]
    assert actions[0] == ("ops", "delete", ADMIN_USER), actions
    assert (ADMIN_USER, "groups", "ops") in actions and (ADMIN_USER, "invite", "ops") in actions, actions
    assert any(a[0].split(":")[0] == "cli" and a[1] == "password" for a in actions), actions
    assert ("dataport", "create", ADMIN_USER) in actions, actions
    # changes through the API carry their request id and the administrator's account id
    through_api = [c for c in changes if c["actor_id"] is not None]
    assert len(through_api) == 3 and all(c["request_id"] for c in through_api), changes
    cli_record = srv.cli("user", "changes", "ops").stdout
    assert "invite" in cli_record and "groups" in cli_record, cli_record


def test_account_administration_is_for_administrators(srv):
    srv.cli("user", "invite", "dee@example.com")
    srv.cli("user", "passwd", "dee", "--password-stdin", input=PASSWORD + "\n")
    dee = srv.session_as("dee", PASSWORD)
    for method, path, body in (("GET", "/api/v1/admin/users", None),
                               ("POST", "/api/v1/admin/users", {"email": "x@example.com"}),
                               ("PATCH", "/api/v1/admin/users/1", {"state": "disabled"}),
                               ("DELETE", "/api/v1/admin/users/1", None),
                               ("GET", "/api/v1/admin/changes", None)):
        r = dee.request(method, srv.url(path), json=body, timeout=60)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert requests.get(srv.url("/api/v1/admin/users"), timeout=60).status_code == 401
