"""The README's quick start, run as written, so the README cannot drift from the product.

A new user clones the repository, runs `cargo run --release -- serve --demo` in its folder and,
in a second terminal in the same folder, the README's commands one block after another. This
test does the same in a fresh folder with nothing in it but the binary where the first command
leaves it (`target/release/dataport`, here the binary this test run built) and a fresh HOME:
the default relative data dir (`./dataport-data`), the default ports (8080, 50051), every `sh`
block of the README before its "Data directory" section executed by bash (the `dataport login`
prompt answered on a terminal, as a person would), the outputs the README shows compared with
the real ones, and the Python snippet run with the test venv's Python.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from e2e_util import BIN, REPO, wait_for

README = REPO / "README.md"
HTTP = "127.0.0.1:8080"
FLIGHT = "127.0.0.1:50051"
# The README shows a command's output as the comment lines right after it that hold JSON
# ("# [{…}]", "# {…}"); "…" stands for any text, and a remark after three spaces
# ("   (analyst may not read it)") is not output. Other comments are remarks.
MARKER = "@@dataport-readme-command@@"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks a new user runs: the quick start (everything before
    the "Data directory" section) and the "HTTP API" section's examples."""
    text = README.read_text()
    quick = text.split("\n## Data directory", 1)[0]
    http = text.split("\n## HTTP API", 1)[1].split("\n## ", 1)[0]
    return [(m.group(1), m.group(2)) for part in (quick, http) for m in
            re.finditer(r"^```(\w*)\n(.*?)^```", part, flags=re.M | re.S)]


def commands(block: str) -> list[tuple[str, list[str]]]:
    """The block's commands (continuation lines joined) with the output lines shown after each."""
    out: list[tuple[str, list[str]]] = []
    pending = ""
    for line in block.splitlines():
        if pending:
            pending += "\n" + line
        elif line.startswith("# "):
            if out and line[2:3] in ("[", "{"):
                out[-1][1].append(line[2:])
            continue
        elif not line.strip():
            continue
        else:
            pending = line
        if not pending.endswith("\\"):
            out.append((pending, []))
            pending = ""
    return out


def matches(shown: str, actual: str) -> bool:
    shown = re.split(r"\s{3,}\(", shown, maxsplit=1)[0].strip()
    pattern = ".*".join(re.escape(part) for part in shown.split("…"))
    return re.fullmatch(pattern, actual.strip(), flags=re.S) is not None


def port_free(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


class Shell:
    """Runs a README block with bash in the user's folder on a terminal; answers password
    prompts; returns each command's output."""

    def __init__(self, folder: Path, env: dict, passwords: dict[str, str]):
        self.folder, self.env, self.passwords = folder, env, passwords

    def run(self, block: str, timeout: float = 300) -> list[tuple[str, list[str], str]]:
        cmds = commands(block)
        script = "set -e\n" + "".join(f"echo {MARKER}{i}\n{cmd}\n" for i, (cmd, _) in enumerate(cmds))
        pid, fd = pty.fork()
        if pid == 0:  # the child: bash on the terminal
            os.chdir(self.folder)
            os.execve("/bin/bash", ["bash", "-c", script], self.env)
        output = b""
        answered = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            prompts = re.findall(rb"Password for (\w+) at \S+: ", output)
            for user in prompts[answered:]:
                os.write(fd, (self.passwords[user.decode()] + "\n").encode())
                answered += 1
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the README block did not finish in {timeout} s:\n{block}\n{output.decode(errors='replace')}")
        _, status = os.waitpid(pid, 0)
        text = output.decode(errors="replace").replace("\r\n", "\n")
        assert os.waitstatus_to_exitcode(status) == 0, f"README block failed:\n{block}\n---\n{text}"
        parts = text.split(MARKER)[1:]
        results = []
        for i, (cmd, shown) in enumerate(cmds):
            part = parts[i] if i < len(parts) else ""
            results.append((cmd, shown, part.split("\n", 1)[1] if "\n" in part else ""))
        return results


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """The clone's folder as the README's commands see it: the first command's binary, nothing else."""
    folder = tmp_path_factory.mktemp("quickstart")
    release = folder / "target" / "release"
    release.mkdir(parents=True)
    (release / "dataport").symlink_to(BIN.resolve())
    return folder


@pytest.fixture(scope="module")
def quickstart(user_folder, tmp_path_factory):
    for addr in (HTTP, FLIGHT):
        if not port_free(addr):
            pytest.fail(f"{addr} is in use; the README's quick start needs its default ports free")
    blocks = readme_blocks()
    first = blocks[0][1].splitlines()
    assert first[0].split("#")[0].strip() == "cargo run --release -- serve --demo", first
    home = tmp_path_factory.mktemp("home")
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
    env.update(HOME=str(home), PATH=f"{venv_bin}:{os.environ.get('PATH', '')}", TERM="dumb")
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w")
    # `cargo run --release -- serve --demo` runs this binary with these arguments (see
    # test_cargo_run_runs_the_server for which binary cargo picks).
    proc = subprocess.Popen([str(user_folder / "target" / "release" / "dataport"), "serve", "--demo"],
                            cwd=user_folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: requests.get(f"http://{HTTP}/health", timeout=5).status_code == 200
                 if not port_free(HTTP) else False, 180, what="the quick-start server to answer")
        yield user_folder, env, Path(log.name), blocks
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_cargo_run_runs_the_server():
    """`cargo run` from the clone's folder needs no `--bin`: the workspace's default member is the
    server, and it has one binary."""
    meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                                     cwd=REPO, capture_output=True, text=True, check=True).stdout)
    default = [p for p in meta["packages"] if p["id"] in meta["workspace_default_members"]]
    assert [p["name"] for p in default] == ["dataport"], [p["name"] for p in default]
    bins = [t["name"] for t in default[0]["targets"] if "bin" in t["kind"]]
    assert bins == ["dataport"], bins


def test_the_server_starts_on_the_relative_default_data_dir(quickstart):
    folder, _, log, _ = quickstart
    data = folder / "dataport-data"
    text = log.read_text()
    assert f"data_dir={data}" in text, text[-3000:]
    assert "catalog problem" not in text, text[-3000:]
    health = requests.get(f"http://{HTTP}/health", timeout=30).json()
    assert health["status"] == "ok" and health["tables"] == 8 and health["errors"] == [], health
    for user in ("admin", "analyst", "insider"):
        assert (data / "auth" / f"{user}-password").exists()


def test_every_readme_shell_block_runs_as_written(quickstart):
    """The blocks after the first run in one terminal session, in the README's order (so the
    HTTP API examples use the token of the login above them)."""
    folder, env, _, blocks = quickstart
    data = folder / "dataport-data"
    passwords = {u: (data / "auth" / f"{u}-password").read_text().strip()
                 for u in ("admin", "analyst", "insider")}
    shell_blocks = [code for lang, code in blocks[1:] if lang == "sh"]
    assert len(shell_blocks) >= 5, "the README lost shell blocks of its quick start"
    ran, checked = [], 0
    for cmd, shown, actual in Shell(folder, env, passwords).run("\n".join(shell_blocks)):
        ran.append(cmd)
        for line in shown:
            assert matches(line, actual), f"README shows\n  {line}\nafter\n  {cmd}\nbut it printed\n  {actual}"
            checked += 1
    assert checked >= 2, "the README's shown outputs were not found"
    # What the README's commands promise to leave behind.
    assert (folder / "profiles.json").exists(), ran
    assert (folder / "lineitem.parquet").stat().st_size > 1_000_000, ran
    pulled = Path(env["HOME"]) / "dataport"
    assert (pulled / "analytics.duckdb").exists() and (pulled / "views.sql").exists()
    out = subprocess.run(["duckdb", str(pulled / "analytics.duckdb"), "-csv", "-c",
                          "select count(*) as orders from orders"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["orders", "150000"], out


def test_the_readme_python_snippet_runs_as_written(quickstart):
    folder, env, _, blocks = quickstart
    python = [code for lang, code in blocks if lang == "python"]
    assert len(python) == 1
    p = subprocess.run([sys.executable, "-c", python[0]], cwd=folder, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for nation in ("ARGENTINA", "BRAZIL", "CANADA", "PERU", "UNITED STATES"):
        assert nation in p.stdout, p.stdout
