"""Cursors and the per-subscription resume position.

A cursor is ``1~<floor>~<topic>~<seq>~<topic>~<seq>...`` (protocol-spec §9):
``<topic>~<seq>`` says every message of ``topic`` up to ``seq`` was received;
``<floor>`` (ms since the epoch) covers topics the cursor does not list: the
server resumes them from their first message with ``ts >= floor``.

The client keeps its own position per subscription (:class:`Position`) and
builds cursors from it, so a subscription can move between transports and
nodes: WebSocket ``subscribe`` with ``cursor``, SSE ``?cursor=`` and long-poll
``?cursor=`` all take the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CURSOR_LEN = 16 * 1024
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def split_pattern(pattern: str) -> list[str]:
    """Validates a subscription pattern (NATS semantics) and returns its tokens."""
    if not isinstance(pattern, str) or not pattern or len(pattern.encode()) > 255:
        raise ValueError(f"invalid pattern {pattern!r}")
    tokens = pattern.split(".")
    if len(tokens) > 16:
        raise ValueError(f"invalid pattern {pattern!r}: more than 16 tokens")
    for i, tok in enumerate(tokens):
        if tok == "*":
            continue
        if tok == ">":
            if i != len(tokens) - 1:
                raise ValueError(f"invalid pattern {pattern!r}: '>' must be last")
            continue
        if not _TOKEN.match(tok):
            raise ValueError(f"invalid pattern {pattern!r}: bad token {tok!r}")
    return tokens


def is_concrete(pattern: str) -> bool:
    """Whether ``pattern`` names one topic (no ``*`` or ``>`` token)."""
    return all(t not in ("*", ">") for t in split_pattern(pattern))


def validate_topic(topic: str) -> None:
    """Raises ``ValueError`` unless ``topic`` is a concrete topic name."""
    if not is_concrete(topic):
        raise ValueError(f"invalid topic {topic!r}: wildcards are for subscriptions only")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor."""

    floor: int
    positions: dict[str, int]

    @staticmethod
    def decode(text: str) -> Cursor:
        if len(text) > MAX_CURSOR_LEN:
            raise ValueError("cursor is longer than 16 KiB")
        parts = text.split("~")
        if parts[0] != "1" or len(parts) < 2 or len(parts) % 2 != 0:
            raise ValueError(f"malformed cursor {text!r}")
        floor = _u64(parts[1], text)
        positions: dict[str, int] = {}
        for i in range(2, len(parts), 2):
            topic = parts[i]
            validate_topic(topic)
            if topic in positions:
                raise ValueError(f"malformed cursor {text!r}: topic listed twice")
            positions[topic] = _u64(parts[i + 1], text)
        return Cursor(floor, positions)

    def encode(self) -> str:
        out = [f"1~{self.floor}"]
        for topic in sorted(self.positions, key=lambda t: t.encode()):
            out.append(f"{topic}~{self.positions[topic]}")
        return "~".join(out)


def _u64(part: str, text: str) -> int:
    if not part or len(part) > 20 or not part.isdigit() or not part.isascii():
        raise ValueError(f"malformed cursor {text!r}")
    value = int(part)
    if value >= 2**64:
        raise ValueError(f"malformed cursor {text!r}")
    return value


@dataclass(slots=True)
class _Pos:
    seq: int
    ts: int | None  # ts of the last message received; None when unknown


class Position:
    """Where one subscription is: a floor plus the last seq seen per topic.

    * ``floor`` comes from the server: the ``subscribed`` reply of a
      WebSocket subscribe (the subscription's start; it stays put), or the
      cursor of an SSE event / long-poll answer (a delivery floor that moves
      forward).
    * ``seen`` is recorded by the client for every message and gap it
      accepts; it never moves backwards, and anything at or below it is a
      duplicate.

    :meth:`cursor` lists every topic seen, except — when the floor is a
    delivery floor — topics whose last message is older than the floor
    (the server would resume them from ``ts >= floor`` anyway, exactly as its
    own cursors do). The concrete topic of a concrete subscription is always
    listed: the server starts an unlisted concrete topic live.
    """

    __slots__ = ("pattern", "concrete", "floor", "floor_is_delivery", "seen")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.concrete = is_concrete(pattern)
        self.floor: int | None = None
        self.floor_is_delivery = False
        self.seen: dict[str, _Pos] = {}

    def copy(self) -> Position:
        other = Position(self.pattern)
        other.floor = self.floor
        other.floor_is_delivery = self.floor_is_delivery
        other.seen = {t: _Pos(p.seq, p.ts) for t, p in self.seen.items()}
        return other

    # -- starting points -------------------------------------------------

    def start_since(self, since: int) -> None:
        """Start after ``since`` (concrete), or everything retained (``0``, any pattern)."""
        if self.concrete:
            self.seen[self.pattern] = _Pos(since, None)
        elif since == 0:
            self.floor = 0
            self.floor_is_delivery = True
        else:
            raise ValueError(
                "since=N needs a concrete topic; use since=0 (everything retained) "
                "or a cursor string to resume a pattern"
            )

    def start_cursor(self, text: str) -> None:
        cursor = Cursor.decode(text)
        self.floor = cursor.floor
        self.floor_is_delivery = True
        for topic, seq in cursor.positions.items():
            self.seen[topic] = _Pos(seq, None)

    # -- what the server says -------------------------------------------

    def adopt(self, text: str, *, delivery_floor: bool) -> None:
        """Takes the floor of a server cursor (and, for a concrete
        subscription, the topic's position if the client has none yet)."""
        cursor = Cursor.decode(text)
        if delivery_floor:
            if self.floor is None or cursor.floor >= self.floor:
                self.floor = cursor.floor
                self.floor_is_delivery = True
        else:
            if cursor.floor != self.floor:
                self.floor_is_delivery = False
            self.floor = cursor.floor
        if self.concrete and self.pattern not in self.seen:
            seq = cursor.positions.get(self.pattern)
            if seq is not None:
                self.seen[self.pattern] = _Pos(seq, None)

    # -- what arrives ----------------------------------------------------

    def last_seq(self, topic: str) -> int | None:
        pos = self.seen.get(topic)
        return None if pos is None else pos.seq

    def is_new(self, topic: str, seq: int) -> bool:
        pos = self.seen.get(topic)
        return pos is None or seq > pos.seq

    def record_message(self, topic: str, seq: int, ts: int) -> None:
        self.seen[topic] = _Pos(seq, ts)

    def record_gap(self, topic: str, to_seq: int) -> None:
        pos = self.seen.get(topic)
        self.seen[topic] = _Pos(to_seq, pos.ts if pos else None)

    def set_floor(self, floor: int, delivery: bool) -> None:
        self.floor = floor
        self.floor_is_delivery = delivery

    # -- resuming ----------------------------------------------------------

    def cursor(self) -> str | None:
        """The cursor to resume from, or ``None`` to start live."""
        if self.floor is None and not self.seen:
            return None
        floor = self.floor if self.floor is not None else 0
        listed: dict[str, int] = {}
        for topic, pos in self.seen.items():
            prunable = (
                self.floor_is_delivery
                and pos.ts is not None
                and pos.ts < floor
                and not (self.concrete and topic == self.pattern)
            )
            if not prunable:
                listed[topic] = pos.seq
        return Cursor(floor, listed).encode()
