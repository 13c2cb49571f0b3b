#!/usr/bin/env python3
"""The transfer benchmark's reference: a pyarrow (Arrow C++) Flight server holding one Parquet
file in memory and serving it whole to any DoGet.

Usage: pyarrow_flight_server.py FILE.parquet   (prints the port on stdout, serves until killed)

Strings are cast from string_view to string and the table is combined into contiguous chunks
first: sliced view arrays would drag their whole shared data buffers into every IPC message.
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq


def plain(table: pa.Table) -> pa.Table:
    fields = []
    for f in table.schema:
        t = f.type
        if t == pa.string_view():
            t = pa.string()
        elif t == pa.binary_view():
            t = pa.binary()
        fields.append(pa.field(f.name, t, f.nullable))
    return table.cast(pa.schema(fields)).combine_chunks()


# Rows per message, as DataFusion's default batch size.
BATCH_ROWS = 8192


class Server(flight.FlightServerBase):
    def __init__(self, table: pa.Table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        batches = self.table.to_batches(max_chunksize=BATCH_ROWS)
        return flight.RecordBatchStream(pa.RecordBatchReader.from_batches(self.table.schema, batches))


def main() -> None:
    table = plain(pq.read_table(sys.argv[1]))
    server = Server(table)
    print(server.port, flush=True)
    server.serve()


if __name__ == "__main__":
    main()
