"""Large Flight results: the server streams them in bounded memory (also to a slow client) and
splits batches so no gRPC message exceeds `--flight-max-message-bytes` (default 4 MiB)."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import flight_proto as fp
from e2e_util import FlightSession, adbc_connect, proc_status_kib

LINEITEM_ROWS = 600572
# ~3M rows, ~0.6 GB of Arrow data. generate_series is the (collected) left side of the cross
# join, so the plan itself streams lineitem.
BIG = "select l.*, g.value from generate_series(1, 5) g cross join lineitem l"
# ~1.1 kB per row: 8192-row batches of ~9 MB, more than the 4 MiB message limit.
WIDE = "select l_orderkey, repeat(l_comment, 40) as big from lineitem"
MIB = 1024 * 1024


class RssSampler:
    """Samples a process's VmRSS (KiB) every few milliseconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.peak = proc_status_kib(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_status_kib(self.pid, "VmRSS"))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def test_large_result_streams_in_bounded_memory(start_server):
    srv = start_server(["--query-timeout", "600s"])
    pid = srv.proc.pid
    conn = adbc_connect(srv.flight)
    try:
        # warm up the same plan (allocator arenas, metadata caches, thread pools)
        with conn.cursor() as cur:
            cur.execute(BIG + " limit 100000")
            assert cur.fetch_arrow_table().num_rows == 100000
        time.sleep(0.5)
        baseline = proc_status_kib(pid, "VmRSS")

        rows = total_bytes = batches = 0
        with RssSampler(pid) as sampler, conn.cursor() as cur:
            cur.execute(BIG)
            reader = cur.fetch_record_batch()
            first = reader.read_next_batch()
            rows, total_bytes, batches = first.num_rows, first.nbytes, 1
            # a slow client: a server that buffers instead of waiting would balloon now
            time.sleep(3)
            slow_client_peak = sampler.peak
            for batch in reader:
                rows += batch.num_rows
                total_bytes += batch.nbytes
                batches += 1
        hwm = proc_status_kib(pid, "VmHWM")
    finally:
        conn.close()

    assert rows == 5 * LINEITEM_ROWS
    total_kib = total_bytes // 1024
    growth = max(sampler.peak, hwm) - baseline
    report = (f"result {total_kib / 1024:.0f} MiB in {batches} batches; server RSS baseline "
              f"{baseline / 1024:.0f} MiB, sampled peak {sampler.peak / 1024:.0f} MiB (after a 3s "
              f"client pause: {slow_client_peak / 1024:.0f} MiB), VmHWM {hwm / 1024:.0f} MiB")
    assert total_kib > 300 * 1024, report  # the test needs a result much larger than the margin
    assert growth < total_kib / 3, f"server memory grew {growth / 1024:.0f} MiB: {report}"
    assert slow_client_peak - baseline < total_kib / 3, report
    srv.assert_flight_alive()


def _read_all_limited(location: str, limit: int, sql: str, **client_kw) -> tuple[int, int, int]:
    """Reads `sql` with a pyarrow client that refuses gRPC messages over `limit` bytes;
    returns (rows, batches, largest batch nbytes)."""
    opts = [("grpc.max_receive_message_length", limit)]
    with FlightSession(location, generic_options=opts, **client_kw) as s:
        info = s.info(fp.command_statement_query(sql))
        rows = batches = largest = 0
        for ep in info.endpoints:
            reader = s.client.do_get(ep.ticket, s.options)
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                if chunk.data is None:
                    continue
                rows += chunk.data.num_rows
                batches += 1
                largest = max(largest, chunk.data.nbytes)
    return rows, batches, largest


def test_default_message_limit_is_4mib(server):
    """With the default limit every message fits a client that accepts at most 4 MiB, although
    DataFusion produces ~9 MB batches for this query."""
    try:
        rows, batches, largest = _read_all_limited(server.flight, 4 * MIB, WIDE)
    except flight.FlightError as e:
        pytest.fail(f"a message exceeded 4 MiB: {e}", pytrace=False)
    except pa.ArrowInvalid as e:
        pytest.fail(f"a message exceeded 4 MiB: {e}", pytrace=False)
    assert rows == LINEITEM_ROWS
    assert largest <= 4 * MIB
    assert batches > 600572 * 1000 // (4 * MIB), f"only {batches} batches"


def test_configured_message_limit(start_server):
    limit = MIB
    srv = start_server(["--flight-max-message-bytes", str(limit)])
    try:
        rows, batches, largest = _read_all_limited(srv.flight, limit, WIDE)
    except (flight.FlightError, pa.ArrowInvalid) as e:
        pytest.fail(f"a message exceeded {limit} bytes: {e}", pytrace=False)
    assert rows == LINEITEM_ROWS
    assert largest <= limit

    # ADBC with the same receive limit
    conn = adbc_connect(srv.flight, **{"adbc.flight.sql.client_option.with_max_msg_size": limit})
    try:
        with conn.cursor() as cur:
            cur.execute(WIDE)
            n = sum(b.num_rows for b in cur.fetch_record_batch())
        assert n == LINEITEM_ROWS
    finally:
        conn.close()
    srv.assert_flight_alive()
