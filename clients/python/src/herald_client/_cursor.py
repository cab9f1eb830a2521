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
from typing import Any

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


def matches(pattern: str, topic: str) -> bool:
    """Whether the concrete ``topic`` matches ``pattern`` (NATS semantics)."""
    p, t = pattern.split("."), topic.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(t) > i
        if i >= len(t) or (tok != "*" and tok != t[i]):
            return False
    return len(p) == len(t)


def overlap(a: str, b: str) -> bool:
    """Whether some topic matches both patterns."""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        if i >= len(x) or i >= len(y):
            return False
        if x[i] == ">" or y[i] == ">":
            return True
        if x[i] != "*" and y[i] != "*" and x[i] != y[i]:
            return False
    return True


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

    # -- sharing a connection ----------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the start is known (a live subscription is not started
        until the server confirmed it)."""
        return self.floor is not None or bool(self.seen)

    def start_from(self, text: str, *, keep_zero: bool) -> None:
        """Starts a live subscription from a server cursor (its start: a
        WebSocket ``subscribed`` reply, an SSE opening block, a poll
        answer), taking the positions of the topics the pattern matches.
        A wildcard skips ``~0`` entries of a ``subscribed`` reply (topics
        it is about to replay) unless ``keep_zero``: SSE and poll cursors
        have no such placeholders, and a topic the client moved back to 0
        itself is to be delivered from its first message."""
        cursor = Cursor.decode(text)
        self.floor = cursor.floor
        self.floor_is_delivery = False
        self.seen = {
            t: _Pos(seq, None)
            for t, seq in cursor.positions.items()
            if matches(self.pattern, t) and (self.concrete or keep_zero or seq > 0)
        }

    def raise_floor(self, floor: int) -> None:
        """A delivery floor of the connection: every message matching this
        subscription with a smaller ``ts`` was delivered."""
        if self.floor is not None and floor > self.floor:
            self.floor = floor
            self.floor_is_delivery = True
        elif self.floor is not None and floor == self.floor:
            self.floor_is_delivery = True

    def accept(self, topic: str, seq: int, ts: int) -> str:
        """Whether a message delivered on the connection is new here:
        ``"new"``, ``"jump"`` (new, seqs skipped without a gap event),
        ``"dup"`` (already received), ``"before"`` (a topic not received
        yet, older than the floor: it precedes this subscription) or
        ``"unmatched"``. Records what it accepts."""
        if not matches(self.pattern, topic):
            return "unmatched"
        pos = self.seen.get(topic)
        if pos is not None:
            if seq <= pos.seq:
                return "dup"
            jumped = seq > pos.seq + 1
            self.seen[topic] = _Pos(seq, ts)
            return "jump" if jumped else "new"
        if self.floor is not None and ts < self.floor:
            return "before"
        self.seen[topic] = _Pos(seq, ts)
        return "new"

    def accept_gap(self, topic: str, from_seq: int, to_seq: int) -> tuple[int, int] | None:
        """The part of a gap not already covered, recorded; ``None`` when
        there is none. A gap of a topic this subscription has not received
        is not its own: the server resumes such topics from the floor
        without gap reports, so it concerns another subscription of the
        connection that listed the topic."""
        pos = self.seen.get(topic)
        if pos is None or to_seq <= pos.seq:
            return None
        frm = max(from_seq, pos.seq + 1)
        self.seen[topic] = _Pos(to_seq, pos.ts)
        return frm, to_seq

    def _prunable(self, topic: str, floor: int) -> bool:
        """Whether the server may resume ``topic`` from ``floor`` for this
        subscription: it has every message of it older than that floor, and
        its last one is older."""
        pos = self.seen[topic]
        return (
            self.floor_is_delivery
            and self.floor is not None
            and self.floor >= floor
            and pos.ts is not None
            and pos.ts < floor
            and not (self.concrete and topic == self.pattern)
        )

    # -- resuming ----------------------------------------------------------

    def full_cursor(self) -> str:
        """Floor and every topic seen, unpruned (to start another
        subscription exactly here)."""
        return Cursor(self.floor or 0, {t: p.seq for t, p in self.seen.items()}).encode()

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


def combine(positions: list[Position], group: str | None = None) -> str:
    """One cursor from which every given (started) subscription can resume
    over one connection: for the subscriptions to one pattern (``group``,
    on a WebSocket, where each pattern has its own ``subscribe``) or all of
    them (``None``: one SSE stream or poll loop for every pattern).

    * The floor is the lowest floor of all of them (a concrete subscription
      that tracks its topic needs none), whatever the group: a topic no
      cursor lists is replayed from the earliest start among the patterns
      subscribed when it first shows up, so all patterns share one floor.
    * A topic (matching ``group``) is listed at the lowest seq any of them
      has, or at ``0`` (all retained messages) when one of them matches it
      without having received it: that one needs it from its floor, which no
      seq expresses. It is left out when every one that has it also has
      everything of it older than the floor (what the server then resumes
      it from): that keeps cursors short.

    The connection may then carry more than a subscription needs; each
    one's :meth:`Position.accept` drops it, so nothing is lost or repeated.
    """
    started = [p for p in positions if p.started]
    needy = [p.floor or 0 for p in started if not (p.concrete and p.pattern in p.seen)]
    floor = min(needy) if needy else min((p.floor or 0 for p in started), default=0)
    lowest: dict[str, int] = {}
    for p in started:
        for topic, pos in p.seen.items():
            if group is None or matches(group, topic):
                lowest[topic] = min(pos.seq, lowest.get(topic, pos.seq))
    listed: dict[str, int] = {}
    for topic, seq in lowest.items():
        concerned = [p for p in started if matches(p.pattern, topic)]
        trackers = [p for p in concerned if topic in p.seen]
        if all(p._prunable(topic, floor) for p in trackers):
            continue
        listed[topic] = seq if len(trackers) == len(concerned) else 0
    return Cursor(floor, listed).encode()


def answer_start(body: Any) -> str:
    """The cursor of a poll answer with every topic it brought a message or
    gap of moved back to just before it: the start of subscriptions that
    are to receive those."""
    cursor = Cursor.decode(str(body["cursor"]))
    positions = dict(cursor.positions)
    firsts = [(str(m["topic"]), int(m["seq"])) for m in body.get("messages") or []]
    firsts += [(str(g["topic"]), int(g["from"])) for g in body.get("gaps") or []]
    for topic, seq in sorted(firsts, key=lambda f: -f[1]):
        positions[topic] = seq - 1
    return Cursor(cursor.floor, positions).encode()
