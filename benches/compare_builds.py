"""Compare builds of the server: the 22 TPC-H queries over Flight SQL (ADBC) against two or more
`dataport` binaries serving the same data, the binaries taking turns per query and run, so a
machine that drifts affects them alike. Used to choose the release profile (README, "Building").

Usage (with the pinned venv of tests/venv.sh):
    python benches/compare_builds.py --data DIR [--runs 3] NAME=BINARY NAME=BINARY ...

DIR is a data dir with the TPC-H tables in schema `tpch` (`dataport serve --demo --demo-scale 1
--data-dir DIR` makes one). Each server holds `tpch.*` in memory, as benches/bench.py does.
Prints per query the median seconds of each build and their ratio to the first, then the sums.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_util import main_query  # noqa: E402

QUERIES = ROOT / "benches" / "tpch" / "queries"
PASSWORD = "Compare-Builds-1"


def start(binary: Path, data: Path, log: Path) -> tuple[subprocess.Popen, str]:
    addresses = data / "run" / "addresses.json"
    addresses.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPORT_")}
    env["DATAPORT_ADMIN_PASSWORD"] = PASSWORD
    proc = subprocess.Popen(
        [str(binary), "serve", "--data-dir", str(data), "--http-addr", "127.0.0.1:0",
         "--flight-addr", "127.0.0.1:0", "--memory-tables", "tpch.*", "--refresh-interval", "0s"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            flight = json.loads(addresses.read_text())["flight"]
            return proc, flight
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{binary} did not start; see {log}")


def timed(conn, sql: str) -> float:
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
        cur.fetch_arrow_table()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("builds", nargs="+", help="NAME=BINARY")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    queries = sorted(QUERIES.glob("q*.sql"), key=lambda p: int(p.stem[1:]))
    times: dict[str, dict[str, list[float]]] = {n: {q.stem: [] for q in queries} for n, _ in builds}
    with tempfile.TemporaryDirectory() as tmp:
        # Every build has its own data dir (state, pins), over the same Parquet files.
        servers = {}
        conns = {}
        try:
            for name, binary in builds:
                data = Path(tmp) / name
                data.mkdir()
                (data / "parquet").symlink_to(args.data.resolve() / "parquet")
                if (args.data / "docs").exists():
                    (data / "docs").symlink_to(args.data.resolve() / "docs")
                proc, flight = start(Path(binary), data, Path(tmp) / f"{name}.log")
                servers[name] = proc
                conns[name] = flightsql.connect(
                    f"grpc://{flight}", autocommit=True,
                    db_kwargs={"username": "admin", "password": PASSWORD})
            time.sleep(5)  # the in-memory copies load after start
            for q in queries:
                sql = main_query(q.read_text())
                for name, _ in builds:  # warm-up
                    timed(conns[name], sql)
                for _ in range(args.runs):
                    for name, _ in builds:
                        times[name][q.stem].append(timed(conns[name], sql))
        finally:
            for c in conns.values():
                c.close()
            for p in servers.values():
                p.terminate()
                p.wait(timeout=60)
    first = builds[0][0]
    names = [n for n, _ in builds]
    print("| query | " + " | ".join(names) + " | " + " | ".join(f"{n}/{first}" for n in names[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    sums = {n: 0.0 for n in names}
    for q in queries:
        med = {n: statistics.median(times[n][q.stem]) for n in names}
        for n in names:
            sums[n] += med[n]
        print(f"| {q.stem} | " + " | ".join(f"{med[n]:.3f}" for n in names) + " | "
              + " | ".join(f"{med[n] / med[first]:.2f}×" for n in names[1:]) + " |")
    print("| **sum** | " + " | ".join(f"**{sums[n]:.3f}**" for n in names) + " | "
          + " | ".join(f"**{sums[n] / sums[first]:.2f}×**" for n in names[1:]) + " |")


if __name__ == "__main__":
    main()
