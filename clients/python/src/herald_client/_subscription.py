"""A subscription: one pattern, its own resume position, a bounded buffer.

Every subscription of a client is carried by the client's one connection
(see ``_mux``), which feeds each subscription what is new for it. The
iterator reads the buffer; what it consumed is the subscription's cursor.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._cursor import Position
from ._types import (
    ConnectionEvent,
    Gap,
    Message,
    SubscriptionError,
    SubscriptionStats,
    TransportName,
)

if TYPE_CHECKING:
    from ._client import HeraldClient

log = logging.getLogger("herald_client")

T = TypeVar("T")

GapCallback = Callable[[Gap], Any]


@dataclass(slots=True)
class _Item:
    """A buffered delivery, or (``payload`` ``None``) a bare position update.

    ``start``: where a live subscription starts (a server cursor and
    whether its ``~0`` entries count); ``floor``: a delivery floor reached
    once this item is consumed.
    """

    payload: Message | Gap | None
    start: tuple[str, bool] | None = None
    floor: int | None = None


class Subscription(Generic[T]):
    """An async iterator of the messages matching ``pattern``.

    Created by :meth:`HeraldClient.subscribe`; the client's connection takes
    it up at once. ``await sub`` (or ``await sub.ready()``) waits until it is
    established, so messages published afterwards are sure to be delivered.
    ``async with`` closes it at the end of the block; closing the client
    closes it too.
    """

    def __init__(
        self,
        client: HeraldClient,
        pattern: str,
        since: int | str | None,
        *,
        on_gap: GapCallback | None,
        yield_gaps: bool,
        queue_size: int,
    ) -> None:
        self.pattern = pattern
        self.stats = SubscriptionStats()
        self._client = client
        self._received = Position(pattern)
        if isinstance(since, bool):
            raise TypeError("since must be an int, a cursor string or None")
        if isinstance(since, int):
            if since < 0:
                raise ValueError("since must be >= 0")
            self._received.start_since(since)
        elif isinstance(since, str):
            self._received.start_cursor(since)
        elif since is not None:
            raise TypeError("since must be an int, a cursor string or None")
        self._consumed = self._received.copy()
        self._on_gap = on_gap
        self._yield_gaps = yield_gaps
        self._max = max(1, queue_size)
        self._buf: deque[_Item] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._ready = False
        self._settled = asyncio.Event()  # set once ready, or finished
        self._finished = False
        self._error: BaseException | None = None
        self._url: str | None = None
        self._transport: TransportName | None = None
        self.live = False
        """Established on the client's current connection."""

    # -- public ------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """The node the subscription is connected to now (``None`` while reconnecting)."""
        return self._url

    @property
    def transport(self) -> TransportName | None:
        """The transport in use now (``None`` while reconnecting)."""
        return self._transport

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def cursor(self) -> str | None:
        """Where the messages consumed so far end: pass it as ``since=`` to a
        later :meth:`HeraldClient.subscribe` (any node, any process) to
        continue after them. ``None`` before anything is known."""
        return self._consumed.cursor()

    async def ready(self, timeout: float | None = None) -> None:
        """Waits until the subscription is established (raises its error if
        it failed for good first)."""
        async with asyncio.timeout(timeout):
            await self._settled.wait()
        if not self._ready:
            if self._error is not None:
                raise self._error
            raise SubscriptionError("subscription closed before it was ready")

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._await_ready().__await__()

    async def _await_ready(self) -> Subscription[T]:
        await self.ready()
        return self

    async def close(self) -> None:
        """Stops the subscription; iteration ends (buffered items are dropped)."""
        self._buf.clear()
        self._finish(None)
        self._client._forget(self)

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._buf:
                item = self._buf.popleft()
                self._not_full.set()
                payload = item.payload
                if item.start is not None:
                    self._consumed.start_from(item.start[0], keep_zero=item.start[1])
                if isinstance(payload, Message):
                    self._consumed.record_message(payload.topic, payload.seq, payload.ts)
                elif isinstance(payload, Gap):
                    self._consumed.record_gap(payload.topic, payload.to_seq)
                if item.floor is not None:
                    self._consumed.raise_floor(item.floor)
                if payload is None:
                    continue
                if isinstance(payload, Gap) and not self._yield_gaps:
                    self._client._report_gap(payload, self._on_gap)
                    continue
                return payload  # type: ignore[return-value]
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._not_empty.clear()
            await self._not_empty.wait()

    # -- fed by the connection ------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._url = None
        self._transport = None
        self.live = False
        self._not_empty.set()
        self._not_full.set()
        self._settled.set()

    def fail(self, error: BaseException) -> None:
        """Ends the subscription with ``error`` (raised by the iterator, or
        by ``ready`` if it was not established yet)."""
        log.error("%s: %s", self.pattern, error)
        self._finish(error)
        self._client._forget(self)

    async def _push(self, item: _Item) -> None:
        while len(self._buf) >= self._max and not self._finished:
            self._not_full.clear()
            await self._not_full.wait()
        if self._finished:
            return
        self._buf.append(item)
        self._not_empty.set()

    async def start(self, cursor: str, *, keep_zero: bool) -> None:
        """Starts a live subscription where the server says."""
        self._received.start_from(cursor, keep_zero=keep_zero)
        await self._push(_Item(None, start=(cursor, keep_zero)))

    def established(self, url: str, transport: TransportName) -> None:
        """It is live on the connection to ``url``."""
        if self.live or self._finished:
            return
        self.live = True
        self._url = url
        self._transport = transport
        self.stats.connects += 1
        self.stats.transports.append((url, transport))
        self._ready = True
        self._settled.set()
        self._client._emit(ConnectionEvent("connect", self.pattern, url, transport))

    def lost(self, reason: str) -> None:
        """The connection carrying it ended."""
        if not self.live:
            return
        url, transport = self._url, self._transport
        self.live = False
        self._url = None
        self._transport = None
        self._client._emit(ConnectionEvent("disconnect", self.pattern, url, transport, reason=reason))

    async def message(self, topic: str, seq: int, ts: int, data: Any) -> None:
        """A message the connection delivered: passed on if it is new here."""
        if self._finished or not self._received.started:
            return
        verdict = self._received.accept(topic, seq, ts)
        if verdict == "dup":
            self.stats.duplicates_dropped += 1
            log.debug("%s: dropped duplicate %s#%d", self.pattern, topic, seq)
            return
        if verdict in ("before", "unmatched"):
            return
        if verdict == "jump":
            self.stats.skipped += 1
            log.info("%s: %s#%d came without the seqs before it (conflated?)", self.pattern, topic, seq)
        await self._push(_Item(Message(topic, seq, ts, data)))

    async def gap(self, topic: str, from_seq: int, to_seq: int) -> None:
        """Messages lost to retention: passed on for the part not seen."""
        if self._finished or not self._received.started:
            return
        part = self._received.accept_gap(topic, from_seq, to_seq)
        if part is None:
            return
        self.stats.gaps += 1
        await self._push(_Item(Gap(topic, part[0], part[1])))

    def raise_floor(self, floor: int) -> None:
        """A delivery floor of the connection. Never waits: it rides on the
        last buffered item (reached once that one is consumed)."""
        if self._finished or not self._received.started:
            return
        self._received.raise_floor(floor)
        if not self._buf:
            self._consumed.raise_floor(floor)
        else:
            last = self._buf[-1]
            last.floor = floor if last.floor is None else max(last.floor, floor)

    @property
    def position(self) -> Position:
        """What has been handed to the buffer: where to resume from."""
        return self._received
