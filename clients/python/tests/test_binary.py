"""Binary payloads against real nodes: random bytes (0x00, 0xff, invalid
UTF-8, empty, up to 60 KB) published as ``bytes``/``bytearray``/
``memoryview`` come back byte for byte as ``bytes``, over every transport
(WebSocket: kind 0x01/0x02 frames; SSE and long-poll: REST octet-stream and
base64 envelopes), in history, and across a 2-node cluster."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HeraldNode, NatsServer
from helpers import Collector, assert_exact

from herald_client import HeraldClient, TransportName


def payloads() -> list[Any]:
    fixed: list[Any] = [b"", b"\x00", b"\xff", b"\xc3\x28", bytearray(b"\x00\xff\x00\xfe\x80\x7f")]
    fixed.append(memoryview(b'{"looks":"like json"}'))
    return fixed + [os.urandom(n) for n in (1, 2, 3, 17, 255, 256, 1000, 4096, 60_000)]


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
async def test_binary_round_trip(node: HeraldNode, ns: str, transport: TransportName) -> None:
    async with HeraldClient([node.url], transports=(transport,)) as client:
        sub = await client.subscribe(f"{ns}.>")
        assert sub.transport == transport
        got = Collector(sub)
        sent = payloads()
        sent.insert(4, {"json": True})  # a JSON message among them stays JSON
        for i, data in enumerate(sent):
            assert await client.publish(f"{ns}.raw", data) == (f"{ns}.raw", i + 1)
        await got.wait_for(len(sent))
        await got.settle(0.3)
        expected = [bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in sent]
        assert_exact(got.messages, {f"{ns}.raw": expected})
        assert all(type(m.data) is bytes for m in got.messages if m.seq != 5)
        history = await client.history(f"{ns}.raw", limit=1000)
        assert [m.data for m in history.messages] == expected
        await got.stop()


@pytest.fixture
def two_nodes(workdir: Path) -> Iterator[list[HeraldNode]]:
    nats = NatsServer(workdir)
    nodes = [HeraldNode(workdir, f"n{i}", nats=nats.url) for i in (1, 2)]
    try:
        for n in nodes:
            n.start()
        asyncio.run(_ready(nodes))
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        nats.stop()


async def _ready(nodes: list[HeraldNode]) -> None:
    await asyncio.gather(*(n.wait_ready() for n in nodes))


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
async def test_binary_across_a_cluster(two_nodes: list[HeraldNode], ns: str, transport: TransportName) -> None:
    n1, n2 = two_nodes
    async with HeraldClient([n2.url], transports=(transport,)) as reader, HeraldClient(
        [n1.url], transports=("ws",) if transport == "ws" else ("sse",)
    ) as writer:
        sub = await reader.subscribe(f"{ns}.*")
        assert sub.url == n2.url
        got = Collector(sub)
        sent = payloads()
        for data in sent:
            await writer.publish(f"{ns}.x", data)
        await got.wait_for(len(sent))
        await got.settle(0.3)
        assert_exact(got.messages, {f"{ns}.x": [bytes(d) for d in sent]})
        await got.stop()
