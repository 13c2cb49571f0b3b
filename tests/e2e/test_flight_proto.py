"""Unit tests of flight_proto.py (no server): the encoder and decoder agree with each other and
with pyarrow's own protobuf (de)serialisers for the core Flight messages."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import flight_proto as fp


@pytest.mark.parametrize("n,encoded", [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"),
                                       (300, b"\xac\x02"), (2**63 - 1, b"\xff" * 8 + b"\x7f"),
                                       (-1, b"\xff" * 9 + b"\x01")])
def test_varint(n, encoded):
    assert fp.varint(n) == encoded
    v, pos = fp.read_varint(encoded, 0)
    assert pos == len(encoded)
    assert (fp.signed64(v) if n < 0 else v) == n


def test_decode_rejects_garbage():
    for bad in (b"\x0a\x05ab", b"\x80", b"\x00", b"\x0f"):
        with pytest.raises(ValueError):
            fp.decode(bad)


def test_any_round_trip():
    packed = fp.any_pack("type.googleapis.com/x.Y", b"\x01\x02")
    assert fp.any_unpack(packed) == ("type.googleapis.com/x.Y", b"\x01\x02")
    assert fp.sql_unpack(fp.sql_any("CommandGetCatalogs", b""), "CommandGetCatalogs") == {}
    with pytest.raises(ValueError):
        fp.sql_unpack(fp.sql_any("CommandGetCatalogs", b""), "CommandGetTables")


def test_descriptor_matches_pyarrow():
    cmd = fp.command_statement_query("select 1")
    ours = fp.Descriptor(fp.DescriptorType.CMD, cmd).encode()
    theirs = flight.FlightDescriptor.for_command(cmd)
    assert ours == theirs.serialize()
    assert flight.FlightDescriptor.deserialize(ours) == theirs
    assert fp.Descriptor.parse(theirs.serialize()) == fp.Descriptor(fp.DescriptorType.CMD, cmd)
    path = flight.FlightDescriptor.for_path("a", "b")
    assert fp.Descriptor.parse(path.serialize()) == fp.Descriptor(fp.DescriptorType.PATH, b"", ["a", "b"])


def test_ticket_and_action_match_pyarrow():
    assert flight.Ticket(b"abc").serialize() == fp.f_bytes(1, b"abc")
    f = fp.decode(flight.Action("CancelFlightInfo", b"\x01\x02").serialize())
    assert fp.get_str(f, 1) == "CancelFlightInfo" and fp.first(f, 2) == b"\x01\x02"
    f = fp.decode(flight.BasicAuth("u", "p").serialize())
    assert (fp.get_str(f, 2), fp.get_str(f, 3)) == ("u", "p")


def test_flight_info_round_trip_with_pyarrow():
    schema = pa.schema([("a", pa.int64()), ("b", pa.utf8())])
    descriptor = flight.FlightDescriptor.for_command(fp.command_get_catalogs())
    endpoints = [flight.FlightEndpoint(b"t1", ["grpc://h:1"]), flight.FlightEndpoint(b"t2", [])]
    info = flight.FlightInfo(schema, descriptor, endpoints, 42, -1)

    parsed = fp.Info.parse(info.serialize())
    assert pa.ipc.read_schema(pa.py_buffer(parsed.schema)) == schema
    assert parsed.descriptor == fp.Descriptor(fp.DescriptorType.CMD, fp.command_get_catalogs())
    assert [(e.ticket, e.locations) for e in parsed.endpoints] == [(b"t1", ["grpc://h:1"]), (b"t2", [])]
    assert (parsed.total_records, parsed.total_bytes) == (42, -1)

    # and back: pyarrow reads what we encode
    parsed.total_records = 7
    parsed.endpoints.append(fp.Endpoint(b"t3", ["grpc://other:2"]))
    again = flight.FlightInfo.deserialize(parsed.encode())
    assert again.total_records == 7 and again.total_bytes == -1
    assert [e.ticket.ticket for e in again.endpoints] == [b"t1", b"t2", b"t3"]
    assert again.schema == schema
    assert again.descriptor == descriptor


def test_cancel_messages():
    info = flight.FlightInfo(pa.schema([]), flight.FlightDescriptor.for_command(b"x"),
                             [flight.FlightEndpoint(b"t", [])], -1, -1)
    raw = info.serialize()
    req = fp.decode(fp.cancel_flight_info_request(raw))
    assert fp.first(req, 1) == raw
    assert flight.FlightInfo.deserialize(fp.first(req, 1)).endpoints[0].ticket.ticket == b"t"
    legacy = fp.sql_unpack(fp.action_cancel_query_request(raw), "ActionCancelQueryRequest")
    assert fp.first(legacy, 1) == raw
    assert fp.parse_cancel_flight_info_result(fp.f_varint(1, 1)) == fp.CancelResult.CANCELLED
    assert fp.parse_cancel_flight_info_result(b"") == fp.CancelResult.UNSPECIFIED
    assert fp.parse_cancel_query_result(
        fp.sql_any("ActionCancelQueryResult", fp.f_varint(1, 3))) == fp.CancelResult.NOT_CANCELLABLE


def test_commands_encode_their_fields():
    f = fp.sql_unpack(fp.command_get_tables("c", "s%", "t_", ["TABLE", "VIEW"], True), "CommandGetTables")
    assert (fp.get_str(f, 1), fp.get_str(f, 2), fp.get_str(f, 3)) == ("c", "s%", "t_")
    assert [bytes(v).decode() for v in f[4]] == ["TABLE", "VIEW"] and fp.get_int(f, 5) == 1
    # optional strings are written when set, even empty; unset ones are absent
    f = fp.sql_unpack(fp.command_get_db_schemas(catalog=""), "CommandGetDbSchemas")
    assert fp.get_str(f, 1) == "" and 2 not in f
    f = fp.sql_unpack(fp.command_get_sql_info([0, 1, 504, 10_000]), "CommandGetSqlInfo")
    assert fp.unpack_varints(f, 1) == [0, 1, 504, 10_000]
    f = fp.sql_unpack(fp.command_get_xdbc_type_info(-5), "CommandGetXdbcTypeInfo")
    assert fp.signed64(fp.get_int(f, 1)) == -5
    f = fp.sql_unpack(fp.command_get_cross_reference("p", "f", "c1", "s1", "c2", "s2"),
                      "CommandGetCrossReference")
    assert [fp.get_str(f, i) for i in range(1, 7)] == ["c1", "s1", "p", "c2", "s2", "f"]
    f = fp.sql_unpack(fp.command_get_primary_keys("t", "c", "s"), "CommandGetPrimaryKeys")
    assert [fp.get_str(f, i) for i in (1, 2, 3)] == ["c", "s", "t"]
    f = fp.sql_unpack(fp.command_statement_query("select 1"), "CommandStatementQuery")
    assert fp.get_str(f, 1) == "select 1" and 2 not in f
    res = fp.sql_any("ActionCreatePreparedStatementResult",
                     fp.f_bytes(1, b"h") + fp.f_bytes(2, b"ds") + fp.f_bytes(3, b"ps"))
    assert fp.parse_create_prepared_statement_result(res) == fp.PreparedStatementResult(b"h", b"ds", b"ps")
