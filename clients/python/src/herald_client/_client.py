"""The client object: configuration, callbacks, subscriptions and publishes."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple, overload
from urllib.parse import quote

import httpx

from ._backoff import Backoff, normalize_url
from ._binary import envelope_data
from ._cursor import split_pattern, validate_topic
from ._errors import error_body, loads
from ._mux import Mux
from ._publisher import Publisher
from ._subscription import GapCallback, Subscription
from ._types import (
    ALL_TRANSPORTS,
    ClientClosed,
    ConnectionEvent,
    EventKind,
    Gap,
    HeraldAPIError,
    HeraldError,
    Message,
    PublishResult,
    TransportName,
)
from ._ws import USER_AGENT

log = logging.getLogger("herald_client")

EventCallback = Callable[[ConnectionEvent], Any]
TokenProvider = Callable[[], "str | None | Awaitable[str | None]"]


class History(NamedTuple):
    """A page of a topic's history."""

    messages: list[Message]
    first_seq: int
    last_seq: int


class HeraldClient:
    """A Herald client. Use it as an async context manager::

        async with HeraldClient(["http://127.0.0.1:8080"]) as client:
            sub = await client.subscribe("orders.*")
            await client.publish("orders.eu", {"id": 1})
            async for msg in sub:
                print(msg.topic, msg.seq, msg.data)

    ``token``: a JWT (or API key) sent as ``Authorization: Bearer`` on every
    request and WebSocket upgrade, or a function (plain or async) returning
    the current one, called for every new connection: with a function,
    expired tokens (401, WebSocket close 4003) are simply replaced on the
    next attempt.

    ``urls``: one or more nodes of the same cluster (``http://host:port``);
    the connection starts on the first and moves to the next when a node
    fails or cannot serve yet (``unavailable``: not caught up with its
    cluster, draining), asking such a node again after its ``Retry-After``.

    Every subscription of the client shares one connection (one WebSocket,
    or one SSE stream / long-poll loop for every pattern), and each resumes
    from its own position after a reconnect.

    ``transports``: the transports allowed, best first. The connection uses
    the first that works at a node and falls back to the next when one is
    refused (a proxy that blocks WebSocket, a missing route); while on a
    fallback it retries the better ones every ``upgrade_interval`` seconds.
    Publishes use WebSocket ``publish`` ops when ``"ws"`` is allowed and works,
    REST otherwise.

    Callbacks (plain functions or coroutine functions) receive a
    :class:`ConnectionEvent`: ``on_connect`` when a subscription's (or the
    publisher's) session is established, ``on_disconnect`` when it is lost,
    ``on_reconnecting`` before each wait for the next attempt. ``on_gap``
    receives a :class:`Gap` when a subscription learns that messages were
    removed by retention before it could get them (unless that subscription
    has its own ``on_gap`` or ``yield_gaps=True``). ``on_kicked`` when the
    node disconnected the client on purpose (admin API): its subscriptions
    end with :class:`Kicked` and are not reconnected. ``on_unsubscribed``
    when the node ended one subscription (admin API): it ends with
    :class:`Unsubscribed`, the others go on.
    """

    def __init__(
        self,
        urls: Sequence[str] | str = ("http://127.0.0.1:8080",),
        token: str | TokenProvider | None = None,
        transports: Sequence[TransportName] = ALL_TRANSPORTS,
        *,
        on_connect: EventCallback | None = None,
        on_disconnect: EventCallback | None = None,
        on_reconnecting: EventCallback | None = None,
        on_gap: GapCallback | None = None,
        on_kicked: EventCallback | None = None,
        on_unsubscribed: EventCallback | None = None,
        reconnect_delay: float = 0.25,
        reconnect_delay_max: float = 8.0,
        jitter: float = 0.5,
        connect_timeout: float = 5.0,
        publish_timeout: float = 30.0,
        ack_timeout: float = 10.0,
        poll_timeout: float = 25.0,
        sse_idle_timeout: float = 45.0,
        ping_interval: float = 15.0,
        upgrade_interval: float = 30.0,
        queue_size: int = 1024,
    ) -> None:
        if isinstance(urls, str):
            urls = [urls]
        self.urls: list[str] = [normalize_url(u) for u in urls]
        if not self.urls:
            raise ValueError("give at least one URL")
        chosen: list[TransportName] = []
        for t in transports:
            if t not in ALL_TRANSPORTS:
                raise ValueError(f"unknown transport {t!r}; use 'ws', 'sse' or 'poll'")
            if t not in chosen:
                chosen.append(t)
        if not chosen:
            raise ValueError("allow at least one transport")
        self.transports: tuple[TransportName, ...] = tuple(chosen)
        self.token = token
        self.backoff = Backoff(reconnect_delay, reconnect_delay_max, jitter)
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.ack_timeout = ack_timeout
        self.poll_timeout = poll_timeout
        self.sse_idle_timeout = sse_idle_timeout
        self.ping_interval = ping_interval
        self.upgrade_interval = upgrade_interval
        self.queue_size = queue_size
        self._callbacks: dict[str, list[Callable[[Any], Any]]] = {
            "connect": [],
            "disconnect": [],
            "reconnecting": [],
            "gap": [],
            "kicked": [],
            "unsubscribed": [],
        }
        for name, cb in (
            ("connect", on_connect),
            ("disconnect", on_disconnect),
            ("reconnecting", on_reconnecting),
            ("gap", on_gap),
            ("kicked", on_kicked),
            ("unsubscribed", on_unsubscribed),
        ):
            if cb is not None:
                self._callbacks[name].append(cb)
        self._blocked: dict[tuple[str, str], float] = {}
        self._subscriptions: set[Subscription[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._http_client: httpx.AsyncClient | None = None
        self._publisher: Publisher | None = None
        self._mux: Mux | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> HeraldClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes every subscription, the publisher and the HTTP pool."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(sub.close() for sub in list(self._subscriptions)))
        if self._mux is not None:
            await self._mux.aclose()
        if self._publisher is not None:
            await self._publisher.aclose()
        if self._http_client is not None:
            await self._http_client.aclose()
        for task in list(self._background):
            task.cancel()

    close = aclose

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._http_client is None:
            self._http_client = httpx.AsyncClient(
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
        return self._http_client

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed")

    # -- events --------------------------------------------------------------------

    def on(self, event: EventKind | Literal["gap"], callback: Callable[[Any], Any]) -> None:
        """Adds a callback for ``connect``, ``disconnect``, ``reconnecting``,
        ``kicked``, ``unsubscribed`` (each gets a :class:`ConnectionEvent`) or
        ``gap`` (gets a :class:`Gap`)."""
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r}")
        self._callbacks[event].append(callback)

    def _emit(self, event: ConnectionEvent) -> None:
        log.debug("%s", event)
        self._call(self._callbacks[event.kind], event)

    def _report_gap(self, gap: Gap, own: GapCallback | None) -> None:
        callbacks = [own] if own is not None else self._callbacks["gap"]
        if not callbacks:
            log.warning(
                "messages %s#%d..%d were lost to retention (no on_gap callback)",
                gap.topic,
                gap.from_seq,
                gap.to_seq,
            )
        self._call(callbacks, gap)

    def _call(self, callbacks: list[Callable[[Any], Any]], arg: Any) -> None:
        for cb in callbacks:
            try:
                result = cb(arg)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            except Exception:
                log.exception("callback %r failed", cb)

    # -- transport choice ----------------------------------------------------------

    def _transport_order(self, url: str) -> list[TransportName]:
        now = time.monotonic()
        usable = [t for t in self.transports if self._blocked.get((url, t), 0.0) <= now]
        return usable or list(self.transports)

    def _mark_blocked(self, url: str, transport: str) -> None:
        self._blocked[(url, transport)] = time.monotonic() + self.upgrade_interval

    def _is_blocked(self, url: str, transport: str) -> bool:
        return self._blocked.get((url, transport), 0.0) > time.monotonic()

    @property
    def _refreshable_token(self) -> bool:
        """Whether a 401 may go away by itself (a token provider is asked
        again on every connection)."""
        return callable(self.token)

    async def _headers(self) -> dict[str, str]:
        token: Any = self.token
        if callable(token):
            token = token()
            if inspect.isawaitable(token):
                token = await token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _forget(self, sub: Subscription[Any]) -> None:
        self._subscriptions.discard(sub)
        if self._mux is not None:
            self._mux.remove(sub)

    # -- API -------------------------------------------------------------------------

    @overload
    def subscribe(
        self,
        pattern: str,
        since: int | str | None = None,
        *,
        on_gap: GapCallback | None = None,
        yield_gaps: Literal[False] = False,
        queue_size: int | None = None,
    ) -> Subscription[Message]: ...

    @overload
    def subscribe(
        self,
        pattern: str,
        since: int | str | None = None,
        *,
        on_gap: GapCallback | None = None,
        yield_gaps: Literal[True],
        queue_size: int | None = None,
    ) -> Subscription[Message | Gap]: ...

    def subscribe(
        self,
        pattern: str,
        since: int | str | None = None,
        *,
        on_gap: GapCallback | None = None,
        yield_gaps: bool = False,
        queue_size: int | None = None,
    ) -> Subscription[Any]:
        """Subscribes to ``pattern`` (``*`` one token, ``>`` one or more at the end).

        ``since``: ``None`` starts live; an ``int`` N (concrete topics; ``0``
        for any pattern) starts after seq N, i.e. with the retained history;
        a cursor string (``sub.cursor`` of an earlier subscription) continues
        exactly where that one's consumer stopped.

        Gaps (messages lost to retention) go to ``on_gap`` (this
        subscription's, else the client's), or, with ``yield_gaps=True``, are
        yielded in order among the messages as :class:`Gap` items.

        The subscription holds at most ``queue_size`` undelivered items; a
        consumer slower than that stops reading its connection and the
        server disconnects it as a slow consumer, after which it resumes
        from the log, losing nothing.
        """
        self._check_open()
        split_pattern(pattern)
        sub: Subscription[Any] = Subscription(
            self,
            pattern,
            since,
            on_gap=on_gap,
            yield_gaps=yield_gaps,
            queue_size=queue_size or self.queue_size,
        )
        self._subscriptions.add(sub)
        if self._mux is None:
            self._mux = Mux(self)
        self._mux.add(sub)
        return sub

    async def publish(
        self, topic: str, data: Any, idempotency_key: str | None = None
    ) -> PublishResult:
        """Publishes ``data`` to ``topic`` and returns ``(topic, seq)`` once
        the broker acknowledged it (durably stored). ``data`` is any JSON
        value, or raw bytes (``bytes``, ``bytearray``, ``memoryview``), stored
        byte for byte and delivered as ``bytes``.

        Connection failures and ``unavailable`` answers are retried — on
        other nodes too — for up to ``publish_timeout`` seconds, always with
        the same idempotency key (``idempotency_key``, or a generated one), so
        a retry never stores the message twice. Refusals (invalid topic,
        payload too large, ...) raise :class:`HeraldAPIError` at once.
        """
        self._check_open()
        if self._publisher is None:
            self._publisher = Publisher(self)
        return await self._publisher.publish(topic, data, idempotency_key)

    async def history(self, topic: str, since: int = 0, limit: int = 100) -> History:
        """Retained messages of ``topic`` with seq > ``since`` (one page)."""
        self._check_open()
        validate_topic(topic)
        last_error: Exception | None = None
        for url in self.urls:
            try:
                resp = await self._http.get(
                    f"{url}/v1/topics/{quote(topic, safe='')}/messages",
                    params={"since": since, "limit": limit},
                    headers=await self._headers(),
                    timeout=httpx.Timeout(self.ack_timeout, connect=self.connect_timeout),
                )
            except httpx.TransportError as exc:
                last_error = exc
                continue
            if resp.status_code >= 500:
                last_error = HeraldAPIError("unavailable", resp.text[:200], resp.status_code)
                continue
            if resp.status_code != 200:
                err = error_body(resp.text) or (f"http_{resp.status_code}", resp.text[:200])
                raise HeraldAPIError(err[0], err[1], resp.status_code)
            body = loads(resp.content, "history page")
            return History(
                [Message(m["topic"], m["seq"], m["ts"], envelope_data(m)) for m in body["messages"]],
                int(body["first_seq"]),
                int(body["last_seq"]),
            )
        raise HeraldError(f"no node answered: {last_error!r}")
