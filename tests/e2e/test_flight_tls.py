"""Flight over TLS (`--flight-tls-cert` / `--flight-tls-key`) with a self-signed certificate for
127.0.0.1 and localhost: ADBC and pyarrow connect when they trust it, and fail when they don't
or when they speak plaintext."""

from __future__ import annotations

import subprocess

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions, dbapi

from e2e_util import (ADMIN_PASSWORD, FlightSession, Server, adapt_snippet, adbc_connect,
                      doc_snippets, flight_status)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate (and key) for 127.0.0.1 and localhost, made with openssl."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "3", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(start_server, tls_files):
    cert, key = tls_files
    srv = start_server(["--flight-tls-cert", str(cert), "--flight-tls-key", str(key)])
    assert srv.flight.startswith("grpc+tls://"), srv.flight
    return srv


def test_adbc_over_tls(tls_server, tls_files):
    cert, _ = tls_files
    conn = adbc_connect(tls_server.flight, **{DatabaseOptions.TLS_ROOT_CERTS.value: cert.read_text()})
    try:
        with conn.cursor() as cur:
            cur.execute("select n_name from nation where n_nationkey = $1", (7,))
            assert cur.fetchall() == [("GERMANY",)]
    finally:
        conn.close()


def test_pyarrow_over_tls(tls_server, tls_files):
    cert, _ = tls_files
    with FlightSession(tls_server.flight, tls_root_certs=cert.read_bytes()) as s:
        assert s.sql("select count(*) as n from region").to_pylist() == [{"n": 5}]
    # the certificate names localhost too
    port = tls_server.flight_hostport[1]
    with FlightSession(f"grpc+tls://localhost:{port}", tls_root_certs=cert.read_bytes()) as s:
        assert s.sql("select 1 as one").to_pylist() == [{"one": 1}]


def test_skip_verification(tls_server):
    with FlightSession(tls_server.flight, disable_server_verification=True) as s:
        assert s.sql("select 1 as one").to_pylist() == [{"one": 1}]
    conn = adbc_connect(tls_server.flight, **{DatabaseOptions.TLS_SKIP_VERIFY.value: "true"})
    try:
        with conn.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchall() == [(1,)]
    finally:
        conn.close()


def test_plaintext_client_fails(tls_server, tls_files):
    plain = "grpc://" + tls_server.addresses["flight"]
    with pytest.raises((flight.FlightError, pa.ArrowException)) as ei:
        FlightSession(plain, timeout=10)
    # how the failed handshake surfaces is up to the client's gRPC stack
    assert flight_status(ei.value) in ("UNAVAILABLE", "INTERNAL"), ei.value

    with pytest.raises(dbapi.Error) as ei:
        conn = adbc_connect(plain, **{DatabaseOptions.TIMEOUT_QUERY.value: 10})
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
        finally:
            conn.close()
    assert isinstance(ei.value, dbapi.OperationalError), ei.value
    # the server is fine afterwards
    cert, _ = tls_files
    tls_server.assert_flight_alive(tls_root_certs=cert.read_bytes())


def test_untrusted_certificate_fails(tls_server, tls_files):
    with pytest.raises((flight.FlightError, pa.ArrowException)) as ei:
        FlightSession(tls_server.flight, timeout=10)
    assert flight_status(ei.value) in ("UNAVAILABLE", "INTERNAL"), ei.value

    with pytest.raises(dbapi.Error):
        conn = adbc_connect(tls_server.flight)
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
        finally:
            conn.close()
    cert, _ = tls_files
    tls_server.assert_flight_alive(tls_root_certs=cert.read_bytes())


def test_http_unaffected_by_flight_tls(tls_server):
    tls_server.assert_alive()


def test_half_tls_configuration_is_refused(server, demo_dir, tls_files, tmp_path):
    """A key without a certificate (or the reverse, or a missing file) stops the start instead of
    serving plaintext."""
    cert, key = tls_files
    cases = [["--flight-tls-key", str(key)], ["--flight-tls-cert", str(cert)],
             ["--flight-tls-cert", str(tmp_path / "missing.pem"), "--flight-tls-key", str(key)]]
    for i, args in enumerate(cases):
        refused_start(demo_dir, args, tmp_path / f"log-{i}")


def refused_start(demo_dir, args, log_dir) -> str:
    """Start the demo server with `args`, expect it to exit during startup; its stderr."""
    srv = Server(demo_dir, ["--demo", *args], log_dir)
    try:
        with pytest.raises(RuntimeError, match="exited with code"):
            srv.start()
    finally:
        srv.stop()
    return srv.stderr_path.read_text(errors="replace")


def test_unusable_tls_files_are_refused_with_the_reason(demo_dir, tls_files, tmp_path):
    """Files that are not a PEM certificate and its key stop the start, and say which file is
    wrong and what it should hold."""
    cert, key = tls_files
    other = tmp_path / "other-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other)],
                   check=True, capture_output=True)
    cases = [
        # swapped: the certificate file holds no certificate
        (["--flight-tls-cert", str(key), "--flight-tls-key", str(cert)], str(key), "certificate"),
        # a key that does not belong to the certificate
        (["--flight-tls-cert", str(cert), "--flight-tls-key", str(other)], None,
         "flight_tls_key is the key of flight_tls_cert"),
    ]
    for i, (args, path, reason) in enumerate(cases):
        message = refused_start(demo_dir, args, tmp_path / f"log-{i}")
        assert reason in message, message
        if path:
            assert path in message, message


@pytest.mark.parametrize("name", ["adbc-tls", "pyarrow-tls"])
def test_doc_tls_snippets(tls_server, tls_files, monkeypatch, capsys, name):
    """The TLS snippets of docs/adbc.md, with this server (as localhost, which the certificate
    names) and its certificate as the CA file."""
    cert, _ = tls_files
    monkeypatch.setenv("DATAPORT_PASSWORD", ADMIN_PASSWORD)
    port = tls_server.flight_hostport[1]
    code = adapt_snippet(doc_snippets("adbc.md")[name], tls_server.flight,
                         tls_location=f"grpc+tls://localhost:{port}", ca_file=cert)
    ns: dict = {}
    exec(compile(code, f"docs/adbc.md:{name}", "exec"), ns)
    if name == "adbc-tls":
        assert capsys.readouterr().out.strip() == "(1,)"
    else:
        assert ns["header"][1].startswith(b"Bearer ")
