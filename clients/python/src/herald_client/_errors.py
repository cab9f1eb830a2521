"""Internal control-flow signals shared by the subscription and publisher loops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ._types import HeraldAPIError, SubscriptionError, UndecodableError


class NodeDown(Exception):
    """This node cannot serve now (refused, 5xx, shutting down): try the next URL."""


class NodeUnavailable(NodeDown):
    """The node answered that it cannot serve subscriptions now (HTTP 503
    ``unavailable`` with ``Retry-After``, the SSE ``unavailable`` event, an
    ``unavailable`` error frame): it is not connected to its cluster or not
    caught up yet, or it is draining. Not an error: try the next URL, and
    this one again after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header (Herald sends ``1``), capped."""
    try:
        return min(60.0, max(0.0, float(int(value or ""))))
    except ValueError:
        return default


class Unauthorized(NodeDown):
    """401: credentials missing, invalid or expired. Retried when the token
    comes from a provider (it may be fresh next time), fatal otherwise."""


class TransportDown(Exception):
    """This transport does not work against this node (blocked by a proxy,
    missing route, handshake refused): try the next transport."""


DropKind = Literal["now", "retry", "next", "kicked"]

KICKED = 4004
"""WebSocket close code of a client the admin API disconnected: do not
reconnect on your own (protocol-spec §6.7)."""


@dataclass(frozen=True, slots=True)
class Drop:
    """An established session ended.

    ``now``: reconnect at once to the same node (slow consumer, upgrade,
    subscriptions changed);
    ``retry``: reconnect to the same node after a short delay;
    ``next``: the node is going away or cannot serve now: move to the next
    URL, and come back to this one no sooner than ``retry_after`` seconds;
    ``kicked``: the node disconnected the client on purpose (admin API): end
    every subscription, reconnect nowhere.
    """

    kind: DropKind
    reason: str
    retry_after: float = 0.0


def loads(text: str | bytes, what: str) -> Any:
    """``json.loads`` for what the server delivers. A text it cannot decode,
    including nesting past the recursion limit (``RecursionError``), raises
    :class:`UndecodableError`: retrying would only meet it again."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UndecodableError(f"{what}: cannot decode: {exc!r}"[:300]) from None


def error_body(text: str) -> tuple[str, str] | None:
    """``(code, message)`` of a Herald JSON error body, or ``None``."""
    try:
        body = json.loads(text)
        err = body["error"]
        return str(err["code"]), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return None


FATAL_CODES = frozenset({"bad_request", "invalid_topic", "forbidden", "unauthorized", "payload_too_large"})


def classify_stream_refusal(
    status: int, text: str, transport: str, retry_after_header: str | None = None
) -> Exception:
    """What a non-200 answer to an SSE or long-poll request means."""
    if status == 401:
        return Unauthorized(f"{transport}: HTTP 401")
    if status in (503, 429):
        err = error_body(text)
        why = f"{err[0]}: {err[1]}" if err else text[:200]
        return NodeUnavailable(f"{transport}: HTTP {status} {why}", retry_after(retry_after_header))
    if status >= 500:
        return NodeDown(f"{transport}: HTTP {status}")
    err = error_body(text)
    if err is not None and err[0] in FATAL_CODES:
        return SubscriptionError(str(HeraldAPIError(err[0], err[1], status)))
    # 404/405 or a body that is not Herald's: a proxy or a server without
    # this transport.
    return TransportDown(f"{transport}: HTTP {status}")


def is_connect_error(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
