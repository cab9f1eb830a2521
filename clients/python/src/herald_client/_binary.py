"""Binary payloads: the WebSocket publish frame (kind 0x01) this client
sends, the delivery frame (kind 0x02) it receives, and the base64 form of a
binary message in JSON envelopes (``"encoding":"base64"``).

All integers are big-endian (protocol-spec, binary WebSocket frames v1.1).
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from ._types import UndecodableError

PUBLISH_KIND = 0x01
DELIVERY_KIND = 0x02

Binary = bytes | bytearray | memoryview
"""What ``publish`` sends as raw bytes rather than JSON."""


def is_binary(data: Any) -> bool:
    return isinstance(data, (bytes, bytearray, memoryview))


def _short(name: str, value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"{name} is longer than 255 bytes")
    return bytes([len(raw)]) + raw


def encode_publish(
    topic: str,
    payload: bytes,
    *,
    op_id: str | None = None,
    idempotency_key: str | None = None,
    traceparent: str | None = None,
) -> bytes:
    """A binary publish frame (kind 0x01)."""
    raw_topic = topic.encode()
    if not 1 <= len(raw_topic) <= 0xFFFF:
        raise ValueError("bad topic length")
    flags = 0
    fields = b""
    for bit, name, value in (
        (1, "id", op_id),
        (2, "idempotency key", idempotency_key),
        (4, "traceparent", traceparent),
    ):
        if value is not None:
            flags |= bit
            fields += _short(name, value)
    return struct.pack(">BBH", PUBLISH_KIND, flags, len(raw_topic)) + raw_topic + fields + payload


def decode_delivery(frame: bytes) -> dict[str, Any]:
    """A binary delivery frame (kind 0x02) as an envelope dict with ``data``
    the raw bytes (and ``traceparent`` when present). Anything else raises
    :class:`UndecodableError`."""
    if len(frame) < 20:
        raise UndecodableError(f"binary frame of {len(frame)} bytes, shorter than the header")
    kind, flags, seq, ts, topic_len = struct.unpack_from(">BBQQH", frame)
    if kind != DELIVERY_KIND:
        raise UndecodableError(f"binary frame of kind {kind:#04x}")
    if flags & ~1:
        raise UndecodableError(f"binary frame with reserved flag bits {flags:#04x}")
    at = 20 + topic_len
    if len(frame) < at:
        raise UndecodableError("binary frame: the topic runs past the frame")
    try:
        topic = frame[20:at].decode()
    except UnicodeDecodeError:
        raise UndecodableError("binary frame: the topic is not UTF-8") from None
    env: dict[str, Any] = {"type": "message", "topic": topic, "seq": seq, "ts": ts}
    if flags & 1:
        if len(frame) < at + 1 or len(frame) < at + 1 + frame[at]:
            raise UndecodableError("binary frame: the traceparent runs past the frame")
        n = frame[at]
        env["traceparent"] = frame[at + 1 : at + 1 + n].decode("ascii", "replace")
        at += 1 + n
    env["data"] = bytes(frame[at:])
    return env


def envelope_data(env: Any) -> Any:
    """The payload of a JSON envelope: ``bytes`` for a binary message
    (``"encoding":"base64"``), the JSON value otherwise."""
    encoding = env.get("encoding")
    data = env.get("data")
    if encoding is None:
        return data
    if encoding != "base64" or not isinstance(data, str):
        raise UndecodableError(f"message with unknown encoding {encoding!r}")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UndecodableError(f"invalid base64 payload: {exc}") from None
