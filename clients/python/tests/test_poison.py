"""Deeply nested payloads (issue 21, D2).

Whatever the broker accepts — nesting up to its hard maximum of 100 levels —
arrives intact on every transport and in history. A message the client cannot
decode (here: nested past Python's recursion limit, served by a fake node)
ends the subscription with ``UndecodableError`` on every transport: it is
neither skipped nor reconnected over in a loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HeraldNode
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from herald_client import HeraldAPIError, HeraldClient, TransportName, UndecodableError

HARD_MAX = 100
TRANSPORTS: list[TransportName] = ["ws", "sse", "poll"]


def nested(depth: int) -> Any:
    value: Any = "core"
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def deep_node(workdir: Path) -> Iterator[HeraldNode]:
    n = HeraldNode(workdir, config=f"[limits]\nmax_json_depth = {HARD_MAX}\n").start()
    yield n
    n.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_deepest_accepted_message_arrives(
    deep_node: HeraldNode, ns: str, transport: TransportName
) -> None:
    topic = f"{ns}.deep"
    async with HeraldClient([deep_node.url], transports=(transport,)) as client:
        await client.publish(topic, nested(HARD_MAX))
        with pytest.raises(HeraldAPIError) as refused:
            await client.publish(topic, nested(HARD_MAX + 1))
        assert refused.value.code == "bad_request"
        sub = await client.subscribe(topic, since=0)
        assert sub.transport == transport
        message = await asyncio.wait_for(anext(aiter(sub)), 20)
        assert (message.topic, message.seq) == (topic, 1)
        assert message.data == nested(HARD_MAX)
        history = await client.history(topic)
        assert [m.data for m in history.messages] == [nested(HARD_MAX)]
        await sub.close()


class FakeNode:
    """Answers every transport with one message nested `depth` levels deep,
    and counts the requests it gets."""

    def __init__(self, depth: int) -> None:
        self.envelope = '{"topic":"p.x","seq":1,"ts":1,"data":%s1%s}' % ("[" * depth, "]" * depth)
        self.requests = 0
        self.port = 0

    async def _ws(self, ws: ServerConnection) -> None:
        op = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "subscribed", "id": op["id"], "topic": op["topic"], "cursor": "1~0"}))
        await ws.send('{"type":"message",' + self.envelope[1:])
        await ws.wait_closed()

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests += 1
        if request.path.startswith("/v1/ws"):
            return None
        if request.path.startswith("/v1/sse"):
            kind, body = "text/event-stream", f"id: 1~0\n\nid: 1~0~p.x~1\nevent: message\ndata: {self.envelope}\n\n"
        else:
            kind, body = "application/json", '{"messages":[%s],"cursor":"1~0~p.x~1"}' % self.envelope
        data = body.encode()
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(data)))])
        return Response(200, "OK", headers, data)

    async def __aenter__(self) -> FakeNode:
        self._server = await serve(self._ws, "127.0.0.1", 0, process_request=self._http)
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def fake() -> AsyncIterator[FakeNode]:
    # Far past CPython's recursion limit (1000).
    async with FakeNode(5000) as node:
        yield node


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_undecodable_message_ends_the_subscription(fake: FakeNode, transport: TransportName) -> None:
    async with HeraldClient([f"http://127.0.0.1:{fake.port}"], transports=(transport,), reconnect_delay=0.01) as client:
        # Long-poll meets the message in its first answer, before the
        # subscription is established: then `subscribe` itself raises.
        with pytest.raises(UndecodableError):
            sub = await client.subscribe("p.x", since=0)
            await asyncio.wait_for(anext(aiter(sub)), 10)
        # Ended, not retrying: no further request reaches the node.
        seen = fake.requests
        await asyncio.sleep(0.3)
        assert fake.requests == seen <= 2


async def test_history_refuses_an_undecodable_page(fake: FakeNode) -> None:
    async with HeraldClient([f"http://127.0.0.1:{fake.port}"]) as client:
        with pytest.raises(UndecodableError):
            await client.history("p.x")
