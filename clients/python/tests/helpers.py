"""Shared test helpers: collecting from subscriptions, exact-sequence checks,
and a small HTTP proxy that can block routes (to force transport fallback)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from herald_client import Gap, HeraldClient, Message, Subscription


class Collector:
    """Drains a subscription in the background into ``items``."""

    def __init__(self, sub: Subscription[Any]) -> None:
        self.sub = sub
        self.items: list[Message | Gap] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.sub:
            self.items.append(item)
            self._changed.set()

    @property
    def messages(self) -> list[Message]:
        return [m for m in self.items if isinstance(m, Message)]

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Message]:
        async def loop() -> None:
            while len(self.messages) < count:
                if self.task.done():
                    self.task.result()
                    raise AssertionError("subscription ended")
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"got {len(self.messages)} of {count} messages in {timeout}s on "
                f"{self.sub.pattern} (transport {self.sub.transport}, stats {self.sub.stats}): "
                f"{summary(self.messages)}"
            ) from None
        return self.messages

    async def settle(self, seconds: float = 0.5) -> None:
        """Gives late (duplicate or unexpected) deliveries time to show up."""
        await asyncio.sleep(seconds)

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


def summary(messages: Sequence[Message]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        by_topic[m.topic].append(m.seq)
    return dict(by_topic)


def assert_exact(messages: Sequence[Message], expected: dict[str, list[Any]]) -> None:
    """Every topic's messages are seq 1..N in order with exactly the expected
    data, and nothing else arrived."""
    got: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        got[m.topic].append(m)
    assert set(got) == set(expected), f"topics {sorted(got)} != {sorted(expected)}"
    for topic, data in expected.items():
        seqs = [m.seq for m in got[topic]]
        assert seqs == list(range(1, len(data) + 1)), f"{topic}: seqs {seqs}"
        assert [m.data for m in got[topic]] == data, f"{topic}: data {[m.data for m in got[topic]]}"


async def publish_plan(
    client: HeraldClient,
    plan: Sequence[tuple[str, Any]],
    *,
    pause: float = 0.01,
    before: Callable[[int], Awaitable[None]] | None = None,
) -> list[tuple[str, int]]:
    """Publishes the plan in order (each publish retried by the client until
    acknowledged) and returns the acks."""
    acks = []
    for i, (topic, data) in enumerate(plan):
        if before is not None:
            await before(i)
        acks.append(tuple(await client.publish(topic, data)))
        if pause:
            await asyncio.sleep(pause)
    return acks  # type: ignore[return-value]


def expected_by_topic(plan: Sequence[tuple[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for topic, data in plan:
        out[topic].append(data)
    return dict(out)


class BlockingProxy:
    """A reverse proxy in front of one node that refuses the request paths in
    ``blocked`` with a plain 403 (as a corporate proxy or WAF would), and can
    cut every open connection. Non-upgrade requests are forced to
    ``Connection: close`` so each connection carries one request and every
    request is checked."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blocked: set[str] = set()
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> BlockingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut_all()
        if self._server is not None:
            self._server.close()

    def cut_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, rest = head.partition(b"\r\n")
            target = request_line.split(b" ")[1].decode()
            path = target.split("?", 1)[0]
            if any(path.startswith(p) for p in self.blocked):
                self.refused.append(path)
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 7\r\nConnection: close\r\n\r\nblocked"
                )
                await writer.drain()
                return
            lines = rest.split(b"\r\n")
            upgrade = any(line.lower().startswith(b"upgrade:") for line in lines)
            if not upgrade:
                lines = [ln for ln in lines if not ln.lower().startswith(b"connection:")]
                lines.insert(0, b"Connection: close")
            head = request_line + b"\r\n" + b"\r\n".join(lines)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            up_writer.write(head)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while chunk := await src.read(65536):
                        dst.write(chunk)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


UNAVAILABLE = (
    b'{"error":{"code":"unavailable","message":"node not ready (not connected to NATS); '
    b'retry, on another node if possible"}}'
)


class Gate:
    """A gate in front of one node that can answer instead of it the way a
    Herald node that cannot serve answers (not caught up with its cluster,
    draining): ``"http503"`` — 503 ``unavailable`` with ``Retry-After: 1``
    to everything; ``"sse_event"`` — ``/v1/sse`` gets a 200 event stream
    with ``retry: 1000`` and one ``unavailable`` event; ``"ws_error_frame"``
    — ``/v1/ws`` upgrades, and every ``subscribe`` op gets an
    ``unavailable`` error frame (other requests: 503); ``"http408"`` — 408
    with no body, what a node paused past its request timeout answers once
    it resumes. ``refuse`` cuts the
    connections it was forwarding; ``refused`` lists ``(time, path)`` of
    every refused request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode: str | None = None
        self.refused: list[tuple[float, str]] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._fake: Any = None
        self._fake_port = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Gate:
        from websockets.asyncio.server import serve

        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._fake = await serve(self._refuse_ops, "127.0.0.1", 0)
        self._fake_port = next(iter(self._fake.sockets)).getsockname()[1]
        return self

    async def close(self) -> None:
        self._cut()
        if self._server is not None:
            self._server.close()
        if self._fake is not None:
            self._fake.close()

    def refuse(self, mode: str) -> None:
        self.mode = mode
        self._cut()

    def forward(self) -> None:
        self.mode = None

    def _cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    @staticmethod
    async def _refuse_ops(ws: Any) -> None:
        import json

        async for text in ws:
            op = json.loads(text)
            if op.get("op") == "subscribe":
                await ws.send(json.dumps({
                    "type": "error", "id": op.get("id"), "code": "unavailable",
                    "message": "node not ready (not connected to NATS); retry, on another node if possible",
                }))
            elif op.get("op") == "ping":
                await ws.send(json.dumps({"type": "pong", "id": op.get("id"), "floor": 0, "client_id": "gate"}))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode().split("?", 1)[0]
            mode = self.mode
            port = self.upstream_port
            if mode is not None:
                self.refused.append((asyncio.get_running_loop().time(), path))
                if mode == "http408":
                    writer.write(
                        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    return
                if mode == "ws_error_frame" and path.startswith("/v1/ws"):
                    port = self._fake_port
                elif mode == "sse_event" and path.startswith("/v1/sse"):
                    body = b"retry: 1000\n\nevent: unavailable\ndata: " + UNAVAILABLE + b"\n\n"
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nRetry-After: 1\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
                    return
                else:
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                        % (len(UNAVAILABLE), UNAVAILABLE)
                    )
                    await writer.drain()
                    return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            self._writers.add(up_writer)
            up_writer.write(head)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while chunk := await src.read(65536):
                        dst.write(chunk)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


async def metric(url: str, sample: str) -> float:
    """One sample of a node's ``/metrics``, e.g. ``herald_connections{transport="ws"}``."""
    import httpx

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {sample} in /metrics")
