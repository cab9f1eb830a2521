"""The binary wire format against hand-made byte vectors (no server): the
kind 0x01 publish frame, the kind 0x02 delivery frame, base64 envelopes."""

from __future__ import annotations

import pytest

from herald_client import UndecodableError
from herald_client._binary import decode_delivery, encode_publish, envelope_data


def test_publish_frame_header_fields_payload() -> None:
    assert encode_publish("a.b", b"\x00\xff\xc3\x28") == bytes(
        [0x01, 0x00, 0x00, 0x03, 0x61, 0x2E, 0x62, 0x00, 0xFF, 0xC3, 0x28]
    )
    assert encode_publish("t", b"", op_id="p1", idempotency_key="k", traceparent="tp") == bytes(
        [0x01, 0x07, 0x00, 0x01, 0x74, 0x02, 0x70, 0x31, 0x01, 0x6B, 0x02, 0x74, 0x70]
    )
    assert encode_publish("t", b"\x09", idempotency_key="kk") == bytes(
        [0x01, 0x02, 0x00, 0x01, 0x74, 0x02, 0x6B, 0x6B, 0x09]
    )
    with pytest.raises(ValueError):
        encode_publish("t", b"", op_id="x" * 256)


def test_delivery_frame() -> None:
    frame = bytes(
        [0x02, 0x00]
        + [0, 0, 0, 0, 0, 0, 0x01, 0x02]
        + [0, 0, 0x01, 0x9A, 0xD2, 0x3B, 0x1C, 0x7B]
        + [0x00, 0x03, 0x61, 0x2E, 0x62]
        + [0x00, 0xFF, 0xC3, 0x28]
    )
    env = decode_delivery(frame)
    assert env == {"type": "message", "topic": "a.b", "seq": 258, "ts": 0x019AD23B1C7B, "data": b"\x00\xff\xc3\x28"}
    traced = bytes([0x02, 0x01] + [0] * 7 + [1] + [0] * 7 + [2] + [0x00, 0x01, 0x74, 0x02, 0x74, 0x70])
    assert decode_delivery(traced) == {
        "type": "message", "topic": "t", "seq": 1, "ts": 2, "traceparent": "tp", "data": b""
    }
    for bad, why in [
        (frame[:19], "shorter"),
        (b"\x01" + frame[1:], "kind"),
        (b"\x02\x02" + frame[2:], "reserved"),
        (frame[:22], "runs past"),
        (frame[:18] + b"\x00\x02\xc3\x28", "not UTF-8"),
    ]:
        with pytest.raises(UndecodableError, match=why):
            decode_delivery(bad)


def test_base64_envelopes() -> None:
    assert envelope_data({"data": "AP/DKA==", "encoding": "base64"}) == b"\x00\xff\xc3\x28"
    assert envelope_data({"data": "", "encoding": "base64"}) == b""
    assert envelope_data({"data": "AP/DKA=="}) == "AP/DKA=="
    assert envelope_data({"data": {"x": 1}}) == {"x": 1}
    for bad in [{"data": "A", "encoding": "base64"}, {"data": "AA==", "encoding": "hex"}, {"data": 1, "encoding": "base64"}]:
        with pytest.raises(UndecodableError):
            envelope_data(bad)
