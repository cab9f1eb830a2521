"""One session of the client's connection on one node, per transport.

A session raises :class:`TransportDown`, :class:`NodeDown` (or
:class:`NodeUnavailable`, :class:`Unauthorized`) when it cannot be
established, and returns a :class:`Drop` when an established one ends. The
connection loop (``_mux``) cancels it when the subscriptions change in a
way it cannot follow.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ._binary import decode_delivery, envelope_data
from ._cursor import Cursor, answer_start, combine, overlap
from ._errors import (
    FATAL_CODES,
    KICKED,
    Drop,
    NodeDown,
    NodeUnavailable,
    TransportDown,
    error_body,
    is_connect_error,
    loads,
)
from ._types import HeraldAPIError, SubscriptionError, TransportName
from ._ws import close_code, open_ws

if TYPE_CHECKING:
    from ._mux import Mux
    from ._subscription import Subscription

log = logging.getLogger("herald_client")


class Session:
    """What the connection loop needs of every session."""

    transport: TransportName

    def __init__(self, mux: Mux, url: str) -> None:
        self.mux = mux
        self.url = url
        self.task: asyncio.Task[Drop] | None = None
        self.restart_reason: str | None = None

    async def run(self) -> Drop:
        raise NotImplementedError

    async def open_patterns(self) -> tuple[bool, list[str]] | None:
        """Whether every subscription is new, and the patterns a stream
        (SSE, long-poll) carries; `None` when none is left. New live
        subscriptions among resuming ones get their start first (a
        probe); when all are new, the stream's opening cursor is it."""
        mux = self.mux
        fresh = all(not s.position.started for s in mux.subs)
        if not fresh:
            await mux.probe(self.url)
        patterns = mux.stream_patterns()
        if not patterns:
            return None
        return fresh, patterns

    def added(self, sub: Subscription[Any]) -> None:
        """A subscription was added while this session runs. SSE and
        long-poll carry a fixed set of patterns: they start again."""
        self.restart("a subscription was added")

    def removed(self, sub: Subscription[Any]) -> None:
        """A subscription was closed while this session runs: the last one
        closes the connection."""
        if not self.mux.subs:
            self.restart("no subscription left")
        elif not any(s.pattern == sub.pattern for s in self.mux.subs):
            self.restart("a pattern is no longer used")

    def restart(self, reason: str) -> None:
        """Ends the session; the loop opens a new one at once."""
        if self.restart_reason is None and self.task is not None:
            self.restart_reason = reason
            self.task.cancel()

    def upgrade_deadline(self) -> float | None:
        """When to try a better transport again, if one is configured."""
        client = self.mux.client
        if client.transports.index(self.transport) == 0:
            return None
        return asyncio.get_running_loop().time() + client.upgrade_interval

    def establish(self) -> None:
        for sub in list(self.mux.subs):
            sub.established(self.url, self.transport)

    async def message(self, env: Any) -> None:
        topic, seq, ts = str(env["topic"]), int(env["seq"]), int(env["ts"])
        data = envelope_data(env)
        for sub in list(self.mux.subs):
            await sub.message(topic, seq, ts, data)

    async def gap(self, raw: Any) -> None:
        topic, frm, to = str(raw["topic"]), int(raw["from"]), int(raw["to"])
        for sub in list(self.mux.subs):
            await sub.gap(topic, frm, to)

    def raise_floors(self, cursor: str) -> None:
        floor = Cursor.decode(cursor).floor
        for sub in list(self.mux.subs):
            if sub.live:
                sub.raise_floor(floor)


@dataclass(slots=True)
class _Pattern:
    """A pattern subscribed on the WebSocket."""

    op_id: str | None
    """The id of its ``subscribe`` while the reply is awaited."""
    sent_at: float
    fresh: bool
    """Subscribed without a cursor: the reply is a live start."""
    waiting: list[Subscription[Any]] = field(default_factory=list)


class WsSession(Session):
    """One WebSocket for every subscription: a ``subscribe`` per pattern."""

    transport: TransportName = "ws"

    def __init__(self, mux: Mux, url: str) -> None:
        super().__init__(mux, url)
        self.ws: ClientConnection | None = None
        self.patterns: dict[str, _Pattern] = {}
        self.ops: dict[str, str] = {}
        self.next_op = 0
        self.lock = asyncio.Lock()
        self.stalled: str | None = None
        self.syncing: set[asyncio.Task[None]] = set()

    def added(self, sub: Subscription[Any]) -> None:
        # A subscription with its own position overlapping a pattern this
        # connection delivers: the node would not replay those topics for it.
        if sub.position.started and any(overlap(p, sub.pattern) for p in self.patterns):
            self.restart("resubscribing from a cursor")
        else:
            self.schedule_sync()

    def removed(self, sub: Subscription[Any]) -> None:
        if not self.mux.subs:
            self.restart("no subscription left")
        else:
            self.schedule_sync()

    def schedule_sync(self) -> None:
        task = asyncio.get_running_loop().create_task(self.sync())
        self.syncing.add(task)
        task.add_done_callback(self.syncing.discard)

    async def run(self) -> Drop:
        client = self.mux.client
        ws = await open_ws(
            self.url,
            await client._headers(),
            open_timeout=client.connect_timeout,
            ping_interval=client.ping_interval,
            ping_timeout=client.ping_interval,
        )
        self.ws = ws
        established = False
        try:
            await self.sync()
            watchdog = asyncio.get_running_loop().create_task(self.watch())
            try:
                async with asyncio.timeout_at(self.upgrade_deadline()):
                    while True:
                        raw = await ws.recv()
                        # A binary frame is a delivery of a binary message.
                        frame = decode_delivery(raw) if isinstance(raw, bytes) else loads(raw, "ws frame")
                        outcome = await self.frame(frame)
                        established = established or any(s.live for s in self.mux.subs)
                        if isinstance(outcome, Drop):
                            return outcome
            except TimeoutError:
                return Drop("now", "upgrading to a better transport")
            finally:
                watchdog.cancel()
                for task in list(self.syncing):
                    task.cancel()
        except ConnectionClosed as exc:
            code, why = close_code(exc)
            if not established:
                if code in (1001, 1012):
                    raise NodeUnavailable(f"ws: closed {code} ({why})") from exc
                raise TransportDown(self.stalled or f"ws: closed {code} before subscribing") from exc
            return ws_drop(code, why)
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

    async def sync(self) -> None:
        """Brings the connection's patterns in line with the subscriptions:
        subscribes what is new (resuming subscriptions with their combined
        cursor), starts new subscriptions to patterns already live here
        where the others stand, unsubscribes patterns nobody uses."""
        async with self.lock:
            ws = self.ws
            if ws is None:
                return
            loop = asyncio.get_running_loop()
            subs = [s for s in self.mux.subs if not s.finished]
            ops: list[dict[str, Any]] = []
            for pattern in self.mux.patterns():
                state = self.patterns.get(pattern)
                new = [
                    s
                    for s in subs
                    if s.pattern == pattern and not s.live and (state is None or s not in state.waiting)
                ]
                if not new:
                    continue
                if state is not None and state.op_id is not None:
                    state.waiting.extend(new)
                elif state is not None:
                    for sub in new:
                        if not await self.start_like_peer(sub):
                            self.restart("no subscription to start from")
                            return
                        sub.established(self.url, "ws")
                else:
                    started = any(s.position.started for s in new)
                    self.next_op += 1
                    op_id = f"s{self.next_op}"
                    op: dict[str, Any] = {"op": "subscribe", "id": op_id, "topic": pattern}
                    if started:
                        op["cursor"] = combine([s.position for s in subs], pattern)
                    self.patterns[pattern] = _Pattern(op_id, loop.time(), not started, new)
                    self.ops[op_id] = pattern
                    ops.append(op)
            for pattern in [p for p in self.patterns if not any(s.pattern == p for s in subs)]:
                del self.patterns[pattern]
                self.next_op += 1
                ops.append({"op": "unsubscribe", "id": f"u{self.next_op}", "topic": pattern})
            try:
                for op in ops:
                    await ws.send(json.dumps(op))
            except ConnectionClosed:
                return  # the reader sees why

    async def start_like_peer(self, sub: Subscription[Any]) -> bool:
        """Starts a live subscription where another one to the same pattern
        on this connection stands (a second `subscribe` would be a no-op)."""
        for peer in self.mux.subs:
            if peer is not sub and peer.live and peer.pattern == sub.pattern:
                await sub.start(peer.position.full_cursor(), keep_zero=True)
                return True
        return False

    async def frame(self, frame: Any) -> Drop | None:
        kind = frame.get("type")
        if kind == "message":
            await self.message(frame)
        elif kind == "gap":
            await self.gap(frame)
        elif kind == "pong":
            floor = frame.get("floor")
            if isinstance(floor, int) and not isinstance(floor, bool) and floor > 0:
                for sub in list(self.mux.subs):
                    if sub.live:
                        sub.raise_floor(floor)
        elif kind in ("subscribed", "error") and str(frame.get("id")) in self.ops:
            return await self.reply(frame)
        elif kind == "unsubscribed" and "id" not in frame:
            # Not asked for: the admin API ended it on the node.
            pattern = str(frame["topic"])
            self.patterns.pop(pattern, None)
            self.mux.server_unsubscribed(pattern, self.url, self.transport)
        elif kind == "error":
            log.warning("server error frame %s", frame)
        return None

    async def reply(self, frame: Any) -> Drop | None:
        pattern = self.ops.pop(str(frame.get("id")))
        state = self.patterns.get(pattern)
        if state is None:
            return None  # unsubscribed meanwhile
        state.op_id = None
        waiting, state.waiting = state.waiting, []
        if frame.get("type") == "error":
            del self.patterns[pattern]
            code, message = str(frame.get("code")), str(frame.get("message"))
            if code in FATAL_CODES:
                self.mux.fail_pattern(pattern, SubscriptionError(str(HeraldAPIError(code, message))))
                return None
            # `unavailable`: the node lost its cluster since the connection
            # opened (any other code: the same advice).
            reason = f"ws: subscribe {pattern!r} refused: {code}: {message}"
            if any(s.live for s in self.mux.subs):
                return Drop("next", reason, retry_after=1.0)
            raise NodeUnavailable(reason)
        start = frame.get("cursor")
        # Resumed ones first: a new one joining them starts where they stand.
        for sub in sorted(waiting, key=lambda s: not s.position.started):
            if sub.finished:
                continue
            if not sub.position.started:
                if state.fresh and isinstance(start, str):
                    await sub.start(start, keep_zero=False)
                elif not await self.start_like_peer(sub):
                    # A node that sends no starting cursor cannot resume
                    # this subscription without loss over WebSocket.
                    raise TransportDown("ws: server does not resume subscriptions from a cursor")
            sub.established(self.url, "ws")
        return None

    async def watch(self) -> None:
        """Asks for the connection's floor now and then (every message with
        a smaller ``ts`` was sent before the ``pong``, so cursors can forget
        topics whose last message is older), and gives up on a node that
        does not answer a ``subscribe``."""
        client = self.mux.client
        ws = self.ws
        assert ws is not None
        tick = max(0.05, min(client.ping_interval, client.connect_timeout) / 2)
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        try:
            while True:
                await asyncio.sleep(tick)
                now = loop.time()
                if any(p.op_id and now - p.sent_at > client.connect_timeout for p in self.patterns.values()):
                    self.stalled = "ws: no reply to subscribe"
                    await ws.close(1000, "no reply to subscribe")
                    return
                if now - last_ping >= client.ping_interval:
                    last_ping = now
                    await ws.send('{"op":"ping","id":"floor"}')
        except Exception:  # the connection is gone; the reader sees why
            return


def ws_drop(code: int, why: str) -> Drop:
    reason = f"ws closed {code}" + (f" ({why})" if why else "")
    if code == KICKED:
        return Drop("kicked", why or reason)
    if code in (1001, 1012):  # going away, draining: another node, this one later
        return Drop("next", reason, retry_after=1.0)
    if code in (4001, 4003):  # slow consumer; token expired (a provider gives a fresh one)
        return Drop("now", reason)
    return Drop("retry", reason)


class SseSession(Session):
    """One SSE stream carrying every pattern."""

    transport: TransportName = "sse"

    async def run(self) -> Drop:
        mux, client = self.mux, self.mux.client
        opened = await self.open_patterns()
        if opened is None:
            return Drop("now", "no subscription left")
        fresh, patterns = opened
        params: list[tuple[str, str | int | float | bool | None]] = [("topic", p) for p in patterns]
        if not fresh:
            params.append(("cursor", combine([s.position for s in mux.subs])))
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **(await client._headers())}
        timeout = httpx.Timeout(client.connect_timeout, read=client.sse_idle_timeout, connect=client.connect_timeout)
        established = False
        slow = False
        retry_ms: int | None = None
        try:
            async with client._http.stream(
                "GET", f"{self.url}/v1/sse", params=params, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    return await mux.refused(
                        self.url, resp.status_code, text, resp.headers.get("Retry-After"), "sse"
                    )
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    raise TransportDown("sse: not an event stream")
                block_id: str | None = None
                event: str | None = None
                data: list[str] = []
                try:
                    async with asyncio.timeout(None) as tm:
                        async for line in resp.aiter_lines():
                            if line:
                                if line.startswith(":"):
                                    slow = slow or "slow consumer" in line
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
                                elif name == "retry" and value.isdigit():
                                    retry_ms = int(value)
                                continue
                            # blank line: end of a block
                            if event == "kicked":
                                return Drop("kicked", kicked_reason("\n".join(data)))
                            if event == "unsubscribed" and data:
                                gone = loads("\n".join(data), "sse unsubscribed event")
                                mux.server_unsubscribed(str(gone["topic"]), self.url, self.transport)
                                block_id, event, data = None, None, []
                                continue
                            if event == "unavailable":
                                # The node cannot serve streams now; it says so
                                # in a 200 stream (EventSource retries those).
                                raise NodeUnavailable(
                                    f"sse: {' '.join(data) or 'unavailable'}",
                                    (retry_ms or 1000) / 1000,
                                )
                            if data:
                                body = loads("\n".join(data), f"sse {event or 'message'} event")
                                if event in (None, "message"):
                                    await self.message(body)
                                elif event == "gap":
                                    await self.gap(body)
                            if block_id is not None:
                                if not established:
                                    established = True
                                    if fresh:
                                        for sub in list(mux.subs):
                                            if not sub.position.started:
                                                await sub.start(block_id, keep_zero=True)
                                    self.establish()
                                    tm.reschedule(self.upgrade_deadline())
                                self.raise_floors(block_id)
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


class PollSession(Session):
    """One long-poll loop carrying every pattern."""

    transport: TransportName = "poll"

    async def run(self) -> Drop:
        mux, client = self.mux, self.mux.client
        opened = await self.open_patterns()
        if opened is None:
            return Drop("now", "no subscription left")
        fresh, patterns = opened
        cursor = None if fresh else combine([s.position for s in mux.subs])
        # Sent back so the node keeps one presence entry for the client
        # rather than one per request (or per change of its patterns).
        client_id = mux.poll_session[1] if mux.poll_session and mux.poll_session[0] == self.url else None
        established = False
        deadline: float | None = None
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
            params: list[tuple[str, str | int | float | bool | None]] = [("topic", p) for p in patterns]
            if cursor is not None:
                params.append(("cursor", cursor))
            params.append(("timeout_ms", str(int(wait * 1000))))
            if client_id is not None:
                params.append(("client_id", client_id))
            timeout = httpx.Timeout(client.connect_timeout, read=wait + client.connect_timeout + 5.0)
            try:
                resp = await client._http.get(
                    f"{self.url}/v1/poll", params=params, headers=await client._headers(), timeout=timeout
                )
            except httpx.TransportError as exc:
                if not established:
                    if is_connect_error(exc):
                        raise NodeDown(f"poll: {exc!r}") from exc
                    raise TransportDown(f"poll: {exc!r}") from exc
                return Drop("retry", f"poll: {exc!r}")
            if resp.status_code == 410:
                return Drop("kicked", kicked_reason(resp.text))
            if resp.status_code != 200:
                try:
                    return await mux.refused(
                        self.url, resp.status_code, resp.text, resp.headers.get("Retry-After"), "poll"
                    )
                except NodeUnavailable as exc:
                    if not established:
                        raise
                    return Drop("next", str(exc), retry_after=exc.retry_after)
                except (NodeDown, TransportDown) as exc:
                    if not established:
                        raise
                    return Drop("next", str(exc))
            try:
                body = loads(resp.content, "poll answer")
                messages = body["messages"]
                gaps = body.get("gaps") or []
                next_cursor = str(body["cursor"])
                if isinstance(body.get("client_id"), str):
                    client_id = body["client_id"]
                    mux.poll_session = (self.url, body["client_id"])
                start = answer_start(body) if fresh and not established else None
                ended = [str(p) for p in body.get("unsubscribed") or []]
            except (ValueError, KeyError, TypeError) as exc:
                if not established:
                    raise TransportDown(f"poll: bad answer: {exc}") from exc
                return Drop("retry", f"poll: bad answer from server: {exc}")
            if not established:
                established = True
                if start is not None:
                    for sub in list(mux.subs):
                        if not sub.position.started:
                            await sub.start(start, keep_zero=True)
                self.establish()
                deadline = self.upgrade_deadline()
            for pattern in ended:
                mux.server_unsubscribed(pattern, self.url, self.transport)
            for kind, item in merge_poll(messages, gaps):
                if kind == "gap":
                    await self.gap(item)
                else:
                    await self.message(item)
            cursor = next_cursor
            self.raise_floors(next_cursor)


def kicked_reason(body: str) -> str:
    """The message of a ``kicked`` error body (SSE event, long-poll 410)."""
    err = error_body(body)
    return err[1] if err else "disconnected by the server; do not reconnect automatically"


def merge_poll(messages: list[Any], gaps: list[Any]) -> list[tuple[str, Any]]:
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


SESSIONS: dict[TransportName, type[Session]] = {
    "ws": WsSession,
    "sse": SseSession,
    "poll": PollSession,
}
