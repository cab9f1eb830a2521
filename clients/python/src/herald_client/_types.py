"""Public value types and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

TransportName = Literal["ws", "sse", "poll"]
"""A streaming transport: WebSocket, Server-Sent Events or long-poll."""

ALL_TRANSPORTS: tuple[TransportName, ...] = ("ws", "sse", "poll")


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message: the Herald envelope."""

    topic: str
    """The concrete topic it was published to."""
    seq: int
    """Its position in the topic (1, 2, 3, ...)."""
    ts: int
    """Publish time set by the broker, milliseconds since the Unix epoch."""
    data: Any
    """The payload: any JSON value, or ``bytes`` for a binary message."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages ``from_seq..=to_seq`` of ``topic`` were removed by retention
    before this subscription could receive them."""

    topic: str
    from_seq: int
    to_seq: int


class PublishResult(NamedTuple):
    """What a publish was acknowledged with."""

    topic: str
    seq: int


EventKind = Literal["connect", "disconnect", "reconnecting", "kicked", "unsubscribed"]


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A connection state change of one channel (a subscription or the
    publisher), passed to the ``on_connect`` / ``on_disconnect`` /
    ``on_reconnecting`` / ``on_kicked`` / ``on_unsubscribed`` callbacks.

    ``kicked``: the node disconnected the client on purpose (admin API); the
    channel is not reconnected. ``unsubscribed``: the node ended that
    subscription (admin API); it is not subscribed again."""

    kind: EventKind
    channel: str
    """The subscription's pattern, or ``"publish"`` for the publisher."""
    url: str | None
    """The node (``connect``/``disconnect``: the one left or joined;
    ``reconnecting``: the one tried next)."""
    transport: TransportName | None
    """The transport connected or lost (``None`` for ``reconnecting``)."""
    attempt: int = 0
    """``reconnecting``: how many attempts failed in a row so far."""
    delay: float | None = None
    """``reconnecting``: seconds until the next attempt."""
    reason: str | None = None
    """``disconnect``/``reconnecting``: why (close code, error)."""


@dataclass(slots=True)
class SubscriptionStats:
    """Counters kept by a subscription (useful for tests and monitoring)."""

    connects: int = 0
    """Sessions established (the first connect included)."""
    duplicates_dropped: int = 0
    """Messages the server sent again and the client dropped (seq already seen)."""
    skipped: int = 0
    """Times a message arrived more than one seq above the last one seen on
    its topic without a gap event in between. Expected in namespaces whose
    slow-consumer policy is ``conflate`` (only the latest value matters);
    anywhere else it would be a broker defect."""
    gaps: int = 0
    """Gap events received (messages lost to retention)."""
    transports: list[tuple[str, TransportName]] = field(default_factory=list)
    """Every (url, transport) a session was established on, in order."""


class HeraldError(Exception):
    """Base class of every error this package raises."""


class HeraldAPIError(HeraldError):
    """The broker refused a request (a 4xx answer or an ``error`` frame)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.message = message
        self.status = status


class PublishTimeout(HeraldError):
    """A publish could not be acknowledged within ``publish_timeout`` (every
    node unreachable or unavailable). Retrying it with the same idempotency
    key is safe."""


class SubscriptionError(HeraldError):
    """The subscription was refused for good (invalid pattern, bad cursor,
    forbidden); it has ended."""


class UndecodableError(SubscriptionError):
    """The server sent JSON this client cannot decode (nested deeper than the
    interpreter's recursion limit allows, or not JSON). Raised by the
    subscription's iterator, which then ends (the message is never skipped,
    and the client does not reconnect in a loop over it), and by ``history``.
    The broker accepts at most 100 levels of nesting, far below that limit."""


class Kicked(SubscriptionError):
    """The node disconnected this client on purpose (admin API: WebSocket
    close 4004, the SSE ``kicked`` event, long-poll 410). Raised by the
    iterators of the subscriptions it carried, and by publishes that were in
    flight on it. The client does not reconnect by itself: subscribe (or
    publish) again to decide otherwise; ``sub.cursor`` still resumes
    exactly."""


class Unsubscribed(SubscriptionError):
    """The node ended this subscription on its own (admin API
    ``unsubscribe``). Raised by its iterator; it is not subscribed again."""


class ClientClosed(HeraldError):
    """The client was closed."""
