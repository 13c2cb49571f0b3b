"""Runs the Python snippets of docs/adbc.md against the demo server, in page order and in one
namespace (later snippets use the `conn` of the first), with the server's address and the
bootstrap admin's credentials swapped in. TLS snippets run in test_flight_tls.py."""

from __future__ import annotations

import importlib.util

import pytest

from e2e_util import ADMIN_PASSWORD, DOCS, adapt_snippet, doc_snippets

PAGE = "adbc.md"
TLS_SNIPPETS = {"adbc-tls", "pyarrow-tls"}
NEEDS = {"adbc-pandas": "pandas", "adbc-polars": "polars"}


def test_every_python_block_is_a_snippet():
    text = (DOCS / PAGE).read_text()
    assert text.count("```python") == len(doc_snippets(PAGE)), \
        "a ```python block in docs/adbc.md has no <!-- snippet: NAME --> line, so no test runs it"


@pytest.fixture(scope="module")
def namespace(server):
    ns: dict = {}
    yield ns
    conn = ns.get("conn")
    if conn is not None:
        conn.close()


@pytest.mark.parametrize("name", [n for n in doc_snippets(PAGE) if n not in TLS_SNIPPETS])
def test_doc_snippet(server, namespace, monkeypatch, capsys, name):
    module = NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    if name != "adbc-connect" and "conn" not in namespace:
        pytest.skip("adbc-connect failed")
    monkeypatch.setenv("DATAPORT_PASSWORD", ADMIN_PASSWORD)
    if name == "adbc-token":
        created = server.cli("token", "create", "admin", "--label", "docs-snippet")
        monkeypatch.setenv("DATAPORT_TOKEN", created.stdout.strip().splitlines()[-1])
    code = adapt_snippet(doc_snippets(PAGE)[name], server.flight)
    exec(compile(code, f"docs/{PAGE}:{name}", "exec"), namespace)
    out = capsys.readouterr().out
    if name == "adbc-connect":
        assert "[('ARGENTINA',), ('BRAZIL',), ('CANADA',), ('PERU',), ('UNITED STATES',)]" in out, out
    if name == "adbc-token":
        assert out.strip() == "(5,)", out
    if name == "adbc-arrow":
        assert "o_orderdate: date32[day]" in out and "o_totalprice: decimal128(15, 2)" in out, out
    if name == "adbc-stream":
        assert out.strip() == "600572", out
    if name == "adbc-metadata":
        assert "['TABLE']" in out and "tpch [" in out, out
    if name == "adbc-errors":
        assert out.startswith("NOT_FOUND ") and "(NotFound;" in out, out
