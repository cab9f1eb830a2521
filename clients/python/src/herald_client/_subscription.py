"""A subscription: one pattern, its own connection, its own resume position.

Each subscription runs one background task that keeps a session open on some
node with some transport and feeds a bounded buffer the iterator reads from.
When the session ends it reconnects (backoff with jitter, rotating through the
URLs, falling back WebSocket → SSE → long-poll) and resumes from the position
the client recorded, so the iterator sees every message once, in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
from websockets.exceptions import ConnectionClosed

from ._cursor import Position
from ._errors import (
    Drop,
    NodeDown,
    TransportDown,
    Unauthorized,
    classify_stream_refusal,
    is_connect_error,
    loads,
)
from ._types import (
    ConnectionEvent,
    Gap,
    HeraldAPIError,
    Message,
    SubscriptionError,
    SubscriptionStats,
    TransportName,
)
from ._ws import close_code, open_ws

if TYPE_CHECKING:
    from ._client import HeraldClient

log = logging.getLogger("herald_client")

T = TypeVar("T")

GapCallback = Callable[[Gap], Any]

# A session that lasted this long (seconds) resets the reconnect backoff.
STABLE_SESSION = 5.0


@dataclass(slots=True)
class _Item:
    """A buffered delivery. ``payload`` is ``None`` for a bare position
    update; ``cursor`` is a server cursor valid once this item is consumed."""

    payload: Message | Gap | None
    cursor: str | None = None
    delivery_floor: bool = True


class Subscription(Generic[T]):
    """An async iterator of the messages matching ``pattern``.

    Created by :meth:`HeraldClient.subscribe`; it starts connecting at once.
    ``await sub`` (or ``await sub.ready()``) waits until the first session is
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
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"herald-subscription {pattern}"
        )

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
        """Waits until the first session is established (raises the
        subscription's error if it failed for good first)."""
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
        if not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
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
                if isinstance(payload, Message):
                    self._consumed.record_message(payload.topic, payload.seq, payload.ts)
                elif isinstance(payload, Gap):
                    self._consumed.record_gap(payload.topic, payload.to_seq)
                if item.cursor is not None:
                    self._consumed.adopt(item.cursor, delivery_floor=item.delivery_floor)
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

    # -- buffer --------------------------------------------------------------

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._transport = None
        self._not_empty.set()
        self._not_full.set()
        self._settled.set()

    async def _push(self, item: _Item) -> None:
        if item.payload is None and not self._buf and item.cursor is not None:
            # A bare position update with nothing unconsumed before it.
            self._consumed.adopt(item.cursor, delivery_floor=item.delivery_floor)
            return
        while len(self._buf) >= self._max and not self._finished:
            self._not_full.clear()
            await self._not_full.wait()
        if self._finished:
            raise asyncio.CancelledError()
        self._buf.append(item)
        self._not_empty.set()

    async def _deliver_message(self, env: Any, cursor: str | None = None) -> None:
        topic, seq, ts = str(env["topic"]), int(env["seq"]), int(env["ts"])
        pos = self._received
        if not pos.is_new(topic, seq):
            self.stats.duplicates_dropped += 1
            log.warning("%s: dropped duplicate %s#%d", self.pattern, topic, seq)
            if cursor is not None:
                await self._apply_cursor(cursor, delivery_floor=True)
            return
        last = pos.last_seq(topic)
        if last is not None and seq > last + 1:
            self.stats.skipped += 1
            log.info(
                "%s: %s#%d..%d skipped without a gap event (conflated?)",
                self.pattern,
                topic,
                last + 1,
                seq - 1,
            )
        await self._push(_Item(Message(topic, seq, ts, env.get("data")), cursor))
        pos.record_message(topic, seq, ts)
        if cursor is not None:
            pos.adopt(cursor, delivery_floor=True)

    async def _deliver_gap(self, raw: Any, cursor: str | None = None) -> None:
        topic, frm, to = str(raw["topic"]), int(raw["from"]), int(raw["to"])
        pos = self._received
        last = pos.last_seq(topic)
        if last is not None and to <= last:
            if cursor is not None:
                await self._apply_cursor(cursor, delivery_floor=True)
            return
        if last is not None:
            frm = max(frm, last + 1)
        self.stats.gaps += 1
        await self._push(_Item(Gap(topic, frm, to), cursor))
        pos.record_gap(topic, to)
        if cursor is not None:
            pos.adopt(cursor, delivery_floor=True)

    async def _apply_cursor(self, cursor: str, *, delivery_floor: bool) -> None:
        await self._push(_Item(None, cursor, delivery_floor))
        self._received.adopt(cursor, delivery_floor=delivery_floor)

    # -- connection loop ------------------------------------------------------

    def _established(self, url: str, transport: TransportName) -> None:
        self._url = url
        self._transport = transport
        self.stats.connects += 1
        self.stats.transports.append((url, transport))
        self._ready = True
        self._settled.set()
        self._client._emit(ConnectionEvent("connect", self.pattern, url, transport))

    def _lost(self, drop: Drop) -> None:
        url, transport = self._url, self._transport
        self._url = None
        self._transport = None
        self._client._emit(
            ConnectionEvent("disconnect", self.pattern, url, transport, reason=drop.reason)
        )

    def _upgrade_deadline(self, transport: TransportName) -> float | None:
        """When to try a better transport again, if one is configured."""
        order = self._client.transports
        if order.index(transport) == 0:
            return None
        return asyncio.get_running_loop().time() + self._client.upgrade_interval

    async def _run(self) -> None:
        client = self._client
        urls = client.urls
        url_i = 0
        failures = 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                url = urls[url_i % len(urls)]
                drop: Drop | None = None
                reason = "no transport worked"
                for transport in client._transport_order(url):
                    try:
                        started = loop.time()
                        drop = await self._session(transport, url)
                        break
                    except TransportDown as exc:
                        reason = str(exc)
                        log.info("%s: %s unavailable at %s: %s", self.pattern, transport, url, exc)
                        client._mark_blocked(url, transport)
                    except Unauthorized as exc:
                        if not client._refreshable_token:
                            raise SubscriptionError(f"unauthorized: {exc}") from exc
                        reason = str(exc)
                        break
                    except NodeDown as exc:
                        reason = str(exc)
                        log.info("%s: %s unavailable: %s", self.pattern, url, exc)
                        break
                if drop is None:
                    failures += 1
                    url_i += 1
                else:
                    self._lost(drop)
                    reason = drop.reason
                    # A session that did not last keeps the backoff growing,
                    # so a node that accepts and drops at once is not hammered.
                    stable = loop.time() - started >= STABLE_SESSION
                    if drop.kind == "now":
                        failures = 0 if stable else failures
                    elif drop.kind == "next":
                        failures = 0 if stable else failures + 1
                        url_i += 1
                    else:
                        failures = 1 if stable else failures + 1
                delay = client.backoff.delay(failures)
                client._emit(
                    ConnectionEvent(
                        "reconnecting",
                        self.pattern,
                        urls[url_i % len(urls)],
                        None,
                        attempt=failures,
                        delay=delay,
                        reason=reason,
                    )
                )
                if delay > 0:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._finish(None)
            raise
        except SubscriptionError as exc:
            log.error("%s: %s", self.pattern, exc)
            self._finish(exc)
        except Exception as exc:  # a bug: surface it to the iterator
            log.exception("%s: subscription failed", self.pattern)
            self._finish(exc)

    async def _session(self, transport: TransportName, url: str) -> Drop:
        if transport == "ws":
            return await self._ws_session(url)
        if transport == "sse":
            return await self._sse_session(url)
        return await self._poll_session(url)

    # -- WebSocket -------------------------------------------------------------

    async def _ws_session(self, url: str) -> Drop:
        client = self._client
        ws = await open_ws(
            url,
            await client._headers(),
            open_timeout=client.connect_timeout,
            ping_interval=client.ping_interval,
            ping_timeout=client.ping_interval,
        )
        established = False
        try:
            op: dict[str, Any] = {"op": "subscribe", "id": "sub", "topic": self.pattern}
            cursor = self._received.cursor()
            if cursor is not None:
                op["cursor"] = cursor
            await ws.send(json.dumps(op))
            try:
                async with asyncio.timeout(client.connect_timeout):
                    while True:
                        reply = loads(await ws.recv(), "ws frame")
                        if isinstance(reply, dict) and reply.get("id") == "sub":
                            break
            except TimeoutError as exc:
                raise TransportDown("ws: no reply to subscribe") from exc
            if reply.get("type") == "error":
                err_code, message = str(reply.get("code")), str(reply.get("message"))
                if err_code == "unavailable":
                    raise NodeDown(f"ws: {message}")
                raise SubscriptionError(str(HeraldAPIError(err_code, message)))
            if reply.get("type") != "subscribed":
                raise TransportDown(f"ws: unexpected reply {reply!r}")
            start = reply.get("cursor")
            if not isinstance(start, str):
                # A server that ignores `cursor` cannot resume this
                # subscription without loss over WebSocket.
                raise TransportDown("ws: server does not resume subscriptions from a cursor")
            await self._apply_cursor(start, delivery_floor=False)
            established = True
            self._established(url, "ws")
            deadline = self._upgrade_deadline("ws")
            pinger = asyncio.get_running_loop().create_task(self._ws_pinger(ws))
            try:
                async with asyncio.timeout_at(deadline):
                    while True:
                        frame = loads(await ws.recv(), "ws frame")
                        kind = frame.get("type")
                        if kind == "message":
                            await self._deliver_message(frame)
                        elif kind == "gap":
                            await self._deliver_gap(frame)
                        elif kind == "pong":
                            floor = frame.get("floor")
                            if isinstance(floor, int) and not isinstance(floor, bool):
                                await self._raise_floor(floor)
                        elif kind == "error":
                            log.warning("%s: server error frame %s", self.pattern, frame)
            except TimeoutError:
                return Drop("now", "upgrading to a better transport")
            finally:
                pinger.cancel()
        except ConnectionClosed as exc:
            code, why = close_code(exc)
            if not established:
                raise TransportDown(f"ws: closed {code} before subscribing") from exc
            return self._ws_drop(code, why)
        except (ValueError, KeyError, TypeError) as exc:
            if not established:
                raise TransportDown(f"ws: bad frame: {exc}") from exc
            return Drop("retry", f"ws: bad frame from server: {exc}")
        finally:
            try:
                async with asyncio.timeout(1.0):
                    await ws.close()
            except BaseException:  # noqa: BLE001 - best effort, also on cancellation
                ws.transport.abort()

    async def _ws_pinger(self, ws: Any) -> None:
        """Asks for the connection's floor now and then: every message with a
        smaller ``ts`` has been sent before the ``pong``, so the cursor can
        forget topics whose last message is older (servers that answer
        without ``floor`` are fine too)."""
        try:
            while True:
                await asyncio.sleep(self._client.ping_interval)
                await ws.send('{"op":"ping","id":"floor"}')
        except Exception:  # the connection is gone; the reader sees why
            return

    async def _raise_floor(self, floor: int) -> None:
        current = self._received.floor
        if current is not None and floor > current:
            await self._apply_cursor(f"1~{floor}", delivery_floor=True)

    @staticmethod
    def _ws_drop(code: int, why: str) -> Drop:
        reason = f"ws closed {code}" + (f" ({why})" if why else "")
        if code in (1001, 1012):
            return Drop("next", reason)
        if code in (4001, 4003):  # slow consumer; token expired (a provider gives a fresh one)
            return Drop("now", reason)
        return Drop("retry", reason)

    # -- SSE -------------------------------------------------------------------

    async def _sse_session(self, url: str) -> Drop:
        client = self._client
        params: list[tuple[str, str | int | float | bool | None]] = [("topic", self.pattern)]
        cursor = self._received.cursor()
        if cursor is not None:
            params.append(("cursor", cursor))
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **(await client._headers())}
        timeout = httpx.Timeout(
            client.connect_timeout, read=client.sse_idle_timeout, connect=client.connect_timeout
        )
        established = False
        slow = False
        try:
            async with client._http.stream(
                "GET", f"{url}/v1/sse", params=params, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    raise classify_stream_refusal(resp.status_code, text, "sse")
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    raise TransportDown("sse: not an event stream")
                deadline: float | None = None
                block_id: str | None = None
                event: str | None = None
                data: list[str] = []
                try:
                    async with asyncio.timeout(None) as tm:
                        async for line in resp.aiter_lines():
                            if line:
                                if line.startswith(":"):
                                    if "slow consumer" in line:
                                        slow = True
                                    continue
                                name, _, value = line.partition(":")
                                if value.startswith(" "):
                                    value = value[1:]
                                if name == "id":
                                    block_id = value
                                elif name == "event":
                                    event = value
                                elif name == "data":
                                    data.append(value)
                                continue
                            # blank line: end of a block
                            if data:
                                body = loads("\n".join(data), f"sse {event or 'message'} event")
                                if event in (None, "message"):
                                    await self._deliver_message(body, block_id)
                                elif event == "gap":
                                    await self._deliver_gap(body, block_id)
                                elif block_id is not None:
                                    await self._apply_cursor(block_id, delivery_floor=True)
                            elif block_id is not None:
                                await self._apply_cursor(block_id, delivery_floor=True)
                            if not established and block_id is not None:
                                established = True
                                self._established(url, "sse")
                                deadline = self._upgrade_deadline("sse")
                                tm.reschedule(deadline)
                            block_id, event, data = None, None, []
                except TimeoutError:
                    return Drop("now", "upgrading to a better transport")
        except httpx.TransportError as exc:
            if not established:
                if is_connect_error(exc):
                    raise NodeDown(f"sse: {exc!r}") from exc
                raise TransportDown(f"sse: {exc!r}") from exc
            return Drop("retry", f"sse: {exc!r}")
        except (ValueError, KeyError, TypeError) as exc:
            if not established:
                raise TransportDown(f"sse: bad event: {exc}") from exc
            return Drop("retry", f"sse: bad event from server: {exc}")
        if not established:
            raise TransportDown("sse: stream ended before it opened")
        if slow:
            return Drop("now", "sse: slow consumer")
        return Drop("retry", "sse: stream ended")

    # -- long-poll --------------------------------------------------------------

    async def _poll_session(self, url: str) -> Drop:
        client = self._client
        established = False
        deadline: float | None = None
        # Sent back so the node keeps one presence entry for this loop
        # rather than one per request.
        client_id: str | None = None
        loop = asyncio.get_running_loop()
        while True:
            wait = 0.0
            if established:
                wait = client.poll_timeout
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return Drop("now", "upgrading to a better transport")
                    wait = min(wait, remaining)
            params: list[tuple[str, str | int | float | bool | None]] = [("topic", self.pattern)]
            cursor = self._received.cursor()
            if cursor is not None:
                params.append(("cursor", cursor))
            params.append(("timeout_ms", str(int(wait * 1000))))
            if client_id is not None:
                params.append(("client_id", client_id))
            timeout = httpx.Timeout(
                client.connect_timeout, read=wait + client.connect_timeout + 5.0
            )
            try:
                resp = await client._http.get(
                    f"{url}/v1/poll", params=params, headers=await client._headers(), timeout=timeout
                )
            except httpx.TransportError as exc:
                if not established:
                    if is_connect_error(exc):
                        raise NodeDown(f"poll: {exc!r}") from exc
                    raise TransportDown(f"poll: {exc!r}") from exc
                return Drop("retry", f"poll: {exc!r}")
            if resp.status_code != 200:
                refusal = classify_stream_refusal(resp.status_code, resp.text, "poll")
                if established and isinstance(refusal, (NodeDown, TransportDown)):
                    return Drop("next", str(refusal))
                raise refusal
            try:
                body = loads(resp.content, "poll answer")
                messages = body["messages"]
                gaps = body.get("gaps") or []
                next_cursor = str(body["cursor"])
                if isinstance(body.get("client_id"), str):
                    client_id = body["client_id"]
            except (ValueError, KeyError, TypeError) as exc:
                if not established:
                    raise TransportDown(f"poll: bad answer: {exc}") from exc
                return Drop("retry", f"poll: bad answer from server: {exc}")
            for kind, item in _merge_poll(messages, gaps):
                if kind == "gap":
                    await self._deliver_gap(item)
                else:
                    await self._deliver_message(item)
            await self._apply_cursor(next_cursor, delivery_floor=True)
            if not established:
                established = True
                self._established(url, "poll")
                deadline = self._upgrade_deadline("poll")


def _merge_poll(messages: list[Any], gaps: list[Any]) -> list[tuple[str, Any]]:
    """Puts each gap right before the first message of its topic after it."""
    pending = sorted(gaps, key=lambda g: (str(g["topic"]), int(g["from"])))
    out: list[tuple[str, Any]] = []
    for m in messages:
        keep = []
        for g in pending:
            if g["topic"] == m["topic"] and int(g["to"]) < int(m["seq"]):
                out.append(("gap", g))
            else:
                keep.append(g)
        pending = keep
        out.append(("message", m))
    out.extend(("gap", g) for g in pending)
    return out

