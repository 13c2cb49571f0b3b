"""`dataport config` and the configuration layers, through the real binary: every key's
effective value with its source (default, file, env, flag), secrets masked, and an unknown
key refused by `config` and by `serve` alike, with the key meant."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from e2e_util import BIN

SIGNING_KEY = "k3y-" + "0123456789abcdef" * 3


def dataport(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
    return subprocess.run([str(BIN), *args], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_config_shows_each_value_and_where_it_came_from(tmp_path):
    (tmp_path / "dataport.yaml").write_text(
        "server:\n  http_addr: 127.0.0.1:9000\n  shutdown_grace: 5s\n"
        "auth:\n  signing_key: ${THE_KEY}\n"
        "engine:\n  query_timeout: 10s\n  datafusion:\n    datafusion.execution.batch_size: 4096\n"
    )
    env = {"THE_KEY": SIGNING_KEY, "DATAPORT_QUERY_TIMEOUT": "20s",
           "DATAPORT_HTTP_ADDR": "127.0.0.1:7000", "DATAPORT_ADMIN_PASSWORD": "Env-Password1"}
    p = dataport(tmp_path, "config", "--config", "dataport.yaml", "--http-addr", "127.0.0.1:0",
                 "--json", env=env)
    assert p.returncode == 0, p.stderr
    rows = {r["key"]: (r["value"], r["source"]) for r in json.loads(p.stdout)}
    assert rows["server.http_addr"] == ("127.0.0.1:0", "flag --http-addr")
    assert rows["engine.query_timeout"] == ("20s", "env DATAPORT_QUERY_TIMEOUT")
    assert rows["server.shutdown_grace"] == ("5s", "file")
    assert rows["auth.token_ttl"] == ("30d", "default")
    assert rows["catalog.data_dir"] == (str(tmp_path / "dataport-data"), "default")
    assert rows["engine.spill_dir"] == (str(tmp_path / "dataport-data" / "spill"), "default")
    assert rows["engine.datafusion"] == ("datafusion.execution.batch_size=4096", "file")
    assert rows["auth.signing_key"][1] == "file"
    assert rows["auth.admin_password"][1] == "env DATAPORT_ADMIN_PASSWORD"
    # secrets never printed, in either form
    for form in ("--json", None):
        args = ["config", "--config", "dataport.yaml"] + ([form] if form else [])
        out = dataport(tmp_path, *args, env=env)
        assert out.returncode == 0, out.stderr
        assert SIGNING_KEY not in out.stdout and "Env-Password1" not in out.stdout
    table = dataport(tmp_path, "config", "--config", "dataport.yaml", env=env).stdout
    line = next(l for l in table.splitlines() if l.startswith("engine.query_timeout "))
    assert line.split() == ["engine.query_timeout", "20s", "env", "DATAPORT_QUERY_TIMEOUT"]


def test_an_unknown_key_stops_config_and_serve_with_the_key_meant(tmp_path):
    (tmp_path / "dataport.yaml").write_text("server:\n  htp_addr: 127.0.0.1:9000\n")
    for args in (["config"], ["serve", "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"]):
        p = dataport(tmp_path, *args, "--config", "dataport.yaml")
        assert p.returncode != 0, p.stdout
        assert "unknown key server.htp_addr; did you mean server.http_addr?" in p.stderr, p.stderr
    assert not (tmp_path / "dataport-data").exists(), "a refused start left a data dir behind"


def test_a_mistyped_environment_variable_is_warned_of(tmp_path):
    p = dataport(tmp_path, "config", env={"DATAPORT_QUERY_TIMOUT": "5s"})
    assert p.returncode == 0, p.stderr
    assert ("DATAPORT_QUERY_TIMOUT is not a setting; did you mean DATAPORT_QUERY_TIMEOUT?"
            in p.stdout), p.stdout


def test_every_flag_of_serve_is_a_declared_key(tmp_path):
    reference = dataport(tmp_path, "config", "--reference").stdout
    help_text = dataport(tmp_path, "serve", "--help").stdout
    flags = {w.strip(",") for w in help_text.split() if w.startswith("--")}
    declared = {w.strip("`") for w in reference.split() if w.startswith("`--")}
    assert declared, reference
    assert declared <= flags, declared - flags
    assert flags - declared <= {"--config", "--demo", "--demo-scale", "--help"}, flags - declared
