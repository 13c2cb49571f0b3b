"""A tiny protobuf encoder/decoder for the Flight SQL messages the end-to-end tests send by hand.

Only what the tests need: varints, length-delimited fields (strings, bytes, messages, packed
repeated varints) and the `google.protobuf.Any` wrapper. Field numbers follow `FlightSql.proto`
and `Flight.proto` from the Apache Arrow repository (format/), checked against the prost
structs generated from them in the `arrow-flight` crate (`#[prost(..., tag = "N")]`).

Encoding follows proto3: scalar fields at their default value (0, "", b"", false) are not
written, `optional` fields are written whenever they are set (even to ""), repeated scalars are
packed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

SQL_TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."

# wire types
VARINT, I64, LEN, I32 = 0, 1, 2, 5


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers as 64-bit two's complement (proto int32/int64)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def key(field_no: int, wire_type: int) -> bytes:
    return varint((field_no << 3) | wire_type)


def f_varint(field_no: int, value: int | bool | None, *, always: bool = False) -> bytes:
    if value is None or (not always and not value):
        return b""
    return key(field_no, VARINT) + varint(int(value))


def f_bytes(field_no: int, value: bytes | None, *, always: bool = False) -> bytes:
    if value is None or (not always and not value):
        return b""
    return key(field_no, LEN) + varint(len(value)) + bytes(value)


def f_string(field_no: int, value: str | None, *, always: bool = False) -> bytes:
    return f_bytes(field_no, None if value is None else value.encode("utf-8"), always=always)


def f_opt_string(field_no: int, value: str | None) -> bytes:
    """A proto3 `optional string`: written whenever set, even when empty."""
    return f_string(field_no, value, always=True)


def f_message(field_no: int, encoded: bytes | None) -> bytes:
    """An embedded message (written even when empty, as set sub-messages are)."""
    return b"" if encoded is None else f_bytes(field_no, encoded, always=True)


def f_packed(field_no: int, values: list[int]) -> bytes:
    if not values:
        return b""
    return f_bytes(field_no, b"".join(varint(v) for v in values), always=True)


def decode(buf: bytes) -> dict[int, list]:
    """Decodes one message into {field number: [raw values]}: ints for varint/fixed fields,
    bytes for length-delimited ones (interpret them with the helpers below)."""
    fields: dict[int, list] = {}
    pos = 0
    buf = bytes(buf)
    while pos < len(buf):
        k, pos = read_varint(buf, pos)
        field_no, wt = k >> 3, k & 7
        if field_no == 0:
            raise ValueError("field number 0")
        if wt == VARINT:
            v, pos = read_varint(buf, pos)
        elif wt == LEN:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated length-delimited field")
            v, pos = buf[pos:pos + n], pos + n
        elif wt == I64:
            v, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == I32:
            v, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        fields.setdefault(field_no, []).append(v)
    if pos != len(buf):
        raise ValueError("trailing bytes")
    return fields


def first(fields: dict[int, list], field_no: int, default=None):
    """The last value of a singular field (protobuf: last one wins)."""
    vals = fields.get(field_no)
    return vals[-1] if vals else default


def get_str(fields: dict, field_no: int, default: str | None = None) -> str | None:
    v = first(fields, field_no)
    return default if v is None else bytes(v).decode("utf-8")


def get_int(fields: dict, field_no: int, default: int = 0) -> int:
    return first(fields, field_no, default)


def signed64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    if v >= 1 << 63:
        v -= 1 << 64
    return v


def unpack_varints(fields: dict, field_no: int) -> list[int]:
    """A repeated varint field, packed or not."""
    out = []
    for v in fields.get(field_no, []):
        if isinstance(v, int):
            out.append(v)
        else:
            pos = 0
            while pos < len(v):
                x, pos = read_varint(v, pos)
                out.append(x)
    return out


# --------------------------------------------------------------------------------------------
# google.protobuf.Any
# --------------------------------------------------------------------------------------------


def any_pack(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any {string type_url = 1; bytes value = 2;}"""
    return f_string(1, type_url) + f_bytes(2, value)


def any_unpack(buf: bytes) -> tuple[str, bytes]:
    fields = decode(buf)
    return get_str(fields, 1, ""), bytes(first(fields, 2, b""))


def sql_any(message_name: str, body: bytes) -> bytes:
    """A Flight SQL message wrapped in Any, as every Flight SQL command and action body is."""
    return any_pack(SQL_TYPE_PREFIX + message_name, body)


def sql_unpack(buf: bytes, message_name: str) -> dict[int, list]:
    """Unwraps an Any that must hold `arrow.flight.protocol.sql.<message_name>`."""
    type_url, value = any_unpack(buf)
    expected = SQL_TYPE_PREFIX + message_name
    if type_url != expected:
        raise ValueError(f"expected Any of {expected!r}, got {type_url!r}")
    return decode(value)


# --------------------------------------------------------------------------------------------
# Flight SQL commands (each returns the Any-wrapped bytes for FlightDescriptor.for_command)
# --------------------------------------------------------------------------------------------


def command_statement_query(query: str, transaction_id: bytes | None = None) -> bytes:
    # CommandStatementQuery { string query = 1; optional bytes transaction_id = 2; }
    return sql_any("CommandStatementQuery",
                   f_string(1, query) + f_bytes(2, transaction_id, always=transaction_id is not None))


def command_get_catalogs() -> bytes:
    return sql_any("CommandGetCatalogs", b"")


def command_get_db_schemas(catalog: str | None = None, db_schema_filter_pattern: str | None = None) -> bytes:
    # CommandGetDbSchemas { optional string catalog = 1; optional string db_schema_filter_pattern = 2; }
    return sql_any("CommandGetDbSchemas", f_opt_string(1, catalog) + f_opt_string(2, db_schema_filter_pattern))


def command_get_tables(catalog: str | None = None, db_schema_filter_pattern: str | None = None,
                       table_name_filter_pattern: str | None = None, table_types: list[str] = (),
                       include_schema: bool = False) -> bytes:
    # CommandGetTables { optional string catalog = 1; optional string db_schema_filter_pattern = 2;
    #   optional string table_name_filter_pattern = 3; repeated string table_types = 4;
    #   bool include_schema = 5; }
    body = (f_opt_string(1, catalog) + f_opt_string(2, db_schema_filter_pattern)
            + f_opt_string(3, table_name_filter_pattern)
            + b"".join(f_string(4, t, always=True) for t in table_types)
            + f_varint(5, include_schema))
    return sql_any("CommandGetTables", body)


def command_get_table_types() -> bytes:
    return sql_any("CommandGetTableTypes", b"")


def command_get_sql_info(info: list[int] = ()) -> bytes:
    # CommandGetSqlInfo { repeated uint32 info = 1; }  (packed)
    return sql_any("CommandGetSqlInfo", f_packed(1, list(info)))


def command_get_xdbc_type_info(data_type: int | None = None) -> bytes:
    # CommandGetXdbcTypeInfo { optional int32 data_type = 1; }
    return sql_any("CommandGetXdbcTypeInfo",
                   b"" if data_type is None else key(1, VARINT) + varint(data_type))


def _table_ref(name: str, catalog: str | None, db_schema: str | None, table: str) -> bytes:
    # { optional string catalog = 1; optional string db_schema = 2; string table = 3; }
    return sql_any(name, f_opt_string(1, catalog) + f_opt_string(2, db_schema) + f_string(3, table))


def command_get_primary_keys(table: str, catalog: str | None = None, db_schema: str | None = None) -> bytes:
    return _table_ref("CommandGetPrimaryKeys", catalog, db_schema, table)


def command_get_imported_keys(table: str, catalog: str | None = None, db_schema: str | None = None) -> bytes:
    return _table_ref("CommandGetImportedKeys", catalog, db_schema, table)


def command_get_exported_keys(table: str, catalog: str | None = None, db_schema: str | None = None) -> bytes:
    return _table_ref("CommandGetExportedKeys", catalog, db_schema, table)


def command_get_cross_reference(pk_table: str, fk_table: str, pk_catalog: str | None = None,
                                pk_db_schema: str | None = None, fk_catalog: str | None = None,
                                fk_db_schema: str | None = None) -> bytes:
    # CommandGetCrossReference { optional string pk_catalog = 1; optional string pk_db_schema = 2;
    #   string pk_table = 3; optional string fk_catalog = 4; optional string fk_db_schema = 5;
    #   string fk_table = 6; }
    body = (f_opt_string(1, pk_catalog) + f_opt_string(2, pk_db_schema) + f_string(3, pk_table)
            + f_opt_string(4, fk_catalog) + f_opt_string(5, fk_db_schema) + f_string(6, fk_table))
    return sql_any("CommandGetCrossReference", body)


def command_prepared_statement_query(handle: bytes) -> bytes:
    # CommandPreparedStatementQuery { bytes prepared_statement_handle = 1; }
    return sql_any("CommandPreparedStatementQuery", f_bytes(1, handle, always=True))


def command_statement_update(query: str) -> bytes:
    # CommandStatementUpdate { string query = 1; optional bytes transaction_id = 2; }
    return sql_any("CommandStatementUpdate", f_string(1, query))


# --------------------------------------------------------------------------------------------
# Flight SQL actions
# --------------------------------------------------------------------------------------------


def action_create_prepared_statement_request(query: str) -> bytes:
    # ActionCreatePreparedStatementRequest { string query = 1; optional bytes transaction_id = 2; }
    return sql_any("ActionCreatePreparedStatementRequest", f_string(1, query))


@dataclass
class PreparedStatementResult:
    handle: bytes
    dataset_schema: bytes
    parameter_schema: bytes


def parse_create_prepared_statement_result(buf: bytes) -> PreparedStatementResult:
    # ActionCreatePreparedStatementResult { bytes prepared_statement_handle = 1;
    #   bytes dataset_schema = 2; bytes parameter_schema = 3; }  (wrapped in Any)
    f = sql_unpack(buf, "ActionCreatePreparedStatementResult")
    return PreparedStatementResult(bytes(first(f, 1, b"")), bytes(first(f, 2, b"")),
                                   bytes(first(f, 3, b"")))


def action_close_prepared_statement_request(handle: bytes) -> bytes:
    # ActionClosePreparedStatementRequest { bytes prepared_statement_handle = 1; }
    return sql_any("ActionClosePreparedStatementRequest", f_bytes(1, handle, always=True))


def parse_do_put_prepared_statement_result(buf: bytes) -> bytes | None:
    """DoPutPreparedStatementResult { optional bytes prepared_statement_handle = 1; }, sent
    as PutResult.app_metadata directly (not in an Any, like DoPutUpdateResult; this is what the
    Go, Java and Rust clients decode): the handle to use from now on, or None to keep the old one."""
    if not buf:
        return None
    f = decode(buf)
    v = first(f, 1)
    return None if v is None else bytes(v)


def action_cancel_query_request(flight_info: bytes) -> bytes:
    # ActionCancelQueryRequest { bytes info = 1; }  (info = serialized FlightInfo), in Any
    return sql_any("ActionCancelQueryRequest", f_bytes(1, flight_info, always=True))


class CancelResult(enum.IntEnum):
    """ActionCancelQueryResult.CancelResult (Flight SQL) and CancelStatus (Flight): same values."""
    UNSPECIFIED = 0
    CANCELLED = 1
    CANCELLING = 2
    NOT_CANCELLABLE = 3


def parse_cancel_query_result(buf: bytes) -> CancelResult:
    # ActionCancelQueryResult { CancelResult result = 1; }  (wrapped in Any)
    f = sql_unpack(buf, "ActionCancelQueryResult")
    return CancelResult(get_int(f, 1, 0))


def cancel_flight_info_request(flight_info: bytes) -> bytes:
    # Flight.proto: CancelFlightInfoRequest { FlightInfo info = 1; }  (not wrapped in Any)
    return f_message(1, flight_info)


def parse_cancel_flight_info_result(buf: bytes) -> CancelResult:
    # Flight.proto: CancelFlightInfoResult { CancelStatus status = 1; }  (not wrapped in Any)
    return CancelResult(get_int(decode(buf), 1, 0))


# --------------------------------------------------------------------------------------------
# Core Flight messages (for building and inspecting FlightInfo / tickets independently of
# pyarrow's own (de)serialisers)
# --------------------------------------------------------------------------------------------


class DescriptorType(enum.IntEnum):
    UNKNOWN = 0
    PATH = 1
    CMD = 2


@dataclass
class Descriptor:
    # FlightDescriptor { DescriptorType type = 1; bytes cmd = 2; repeated string path = 3; }
    type: int = DescriptorType.UNKNOWN
    cmd: bytes = b""
    path: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return (f_varint(1, int(self.type)) + f_bytes(2, self.cmd)
                + b"".join(f_string(3, p, always=True) for p in self.path))

    @classmethod
    def parse(cls, buf: bytes) -> "Descriptor":
        f = decode(buf)
        return cls(get_int(f, 1), bytes(first(f, 2, b"")),
                   [bytes(p).decode() for p in f.get(3, [])])


@dataclass
class Endpoint:
    # FlightEndpoint { Ticket ticket = 1; repeated Location location = 2;
    #   google.protobuf.Timestamp expiration_time = 3; bytes app_metadata = 4; }
    # Ticket { bytes ticket = 1; }   Location { string uri = 1; }
    ticket: bytes = b""
    locations: list[str] = field(default_factory=list)
    app_metadata: bytes = b""

    def encode(self) -> bytes:
        return (f_message(1, f_bytes(1, self.ticket))
                + b"".join(f_message(2, f_string(1, u)) for u in self.locations)
                + f_bytes(4, self.app_metadata))

    @classmethod
    def parse(cls, buf: bytes) -> "Endpoint":
        f = decode(buf)
        t = first(f, 1)
        ticket = bytes(first(decode(t), 1, b"")) if t is not None else b""
        locs = [get_str(decode(loc), 1, "") for loc in f.get(2, [])]
        return cls(ticket, locs, bytes(first(f, 4, b"")))


@dataclass
class Info:
    # FlightInfo { bytes schema = 1; FlightDescriptor flight_descriptor = 2;
    #   repeated FlightEndpoint endpoint = 3; int64 total_records = 4; int64 total_bytes = 5;
    #   bool ordered = 6; bytes app_metadata = 7; }
    schema: bytes = b""
    descriptor: Descriptor | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    total_records: int = 0
    total_bytes: int = 0
    ordered: bool = False
    app_metadata: bytes = b""

    def encode(self) -> bytes:
        return (f_bytes(1, self.schema)
                + (f_message(2, self.descriptor.encode()) if self.descriptor else b"")
                + b"".join(f_message(3, e.encode()) for e in self.endpoints)
                + f_varint(4, self.total_records) + f_varint(5, self.total_bytes)
                + f_varint(6, self.ordered) + f_bytes(7, self.app_metadata))

    @classmethod
    def parse(cls, buf: bytes) -> "Info":
        f = decode(buf)
        d = first(f, 2)
        return cls(bytes(first(f, 1, b"")), Descriptor.parse(d) if d is not None else None,
                   [Endpoint.parse(e) for e in f.get(3, [])],
                   signed64(get_int(f, 4)), signed64(get_int(f, 5)), bool(get_int(f, 6)),
                   bytes(first(f, 7, b"")))
