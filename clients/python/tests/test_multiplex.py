"""Issue 23: every subscription of a client shares one connection — one
WebSocket, one SSE stream or one long-poll session in the node's
``/metrics`` — each keeps its own position, and a node restart (SIGKILL,
same port and data dir) resumes all of them with no gap and no duplicate:
five overlapping subscriptions with different starts, publishes before,
during and after the restart."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from conftest import HeraldNode
from helpers import Collector, metric, publish_plan

from herald_client import HeraldClient, TransportName
from herald_client._cursor import matches

# (pattern under the test's namespace, since)
SUBSCRIPTIONS: list[tuple[str, int | None]] = [
    (">", None),
    ("a.*", None),
    ("a.x", 0),  # the only one that replays what came before
    ("b.x", None),
    ("*.y", None),
]
TOPICS = ["a.x", "a.y", "b.x", "b.y", "c.y"]
SAMPLE = {
    "ws": 'herald_connections{transport="ws"}',
    "sse": 'herald_connections{transport="sse"}',
    # Zero-timeout polls (starts of new subscriptions) open no session.
    "poll": "herald_poll_sessions",
}


async def wait_metric(url: str, sample: str, value: float) -> None:
    """Streams a client replaced are counted until the node writes to them
    (protocol-spec §16.1): wait for the publishes to show them gone."""
    deadline = asyncio.get_running_loop().time() + 20
    while (now := await metric(url, sample)) != value:
        assert asyncio.get_running_loop().time() < deadline, f"{sample} = {now}, expected {value}"
        await asyncio.sleep(0.05)


def rounds(ns: str, n: int, tag: str) -> list[tuple[str, Any]]:
    return [(f"{ns}.{t}", {"tag": tag, "r": r}) for r in range(n) for t in TOPICS]


def check(pattern: str, got: list[Any], published: list[tuple[str, int, Any]]) -> None:
    """Exactly the matching publishes, in seq order per topic, once."""
    want: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for topic, seq, data in published:
        if matches(pattern, topic):
            want[topic].append((seq, data))
    have: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for m in got:
        have[m.topic].append((m.seq, m.data))
    for seqs in want.values():
        seqs.sort(key=lambda s: s[0])
        assert [s for s, _ in seqs] == list(range(seqs[0][0], seqs[0][0] + len(seqs)))
    assert dict(have) == dict(want), pattern


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
async def test_five_subscriptions_share_one_connection_and_resume_after_kill9(
    node: HeraldNode, ns: str, transport: TransportName
) -> None:
    # REST publishes (no WebSocket of the publisher in the count).
    async with HeraldClient(
        [node.url], transports=("poll",), publish_timeout=60.0,
        reconnect_delay=0.05, reconnect_delay_max=0.5,
    ) as pub:
        history = [(f"{ns}.a.x", {"tag": "history", "i": i}) for i in range(3)]
        acks = await publish_plan(pub, history, pause=0)
        published_before = [(t, s, d) for (t, s), (_, d) in zip(acks, history)]
        async with HeraldClient(
            [node.url], transports=(transport,), poll_timeout=2.0,
            # Away a moment after the kill, so that messages pile up.
            reconnect_delay=0.3, reconnect_delay_max=0.6,
        ) as client:
            collectors = [
                (f"{ns}.{p}", Collector(await client.subscribe(f"{ns}.{p}", since=since)))
                for p, since in SUBSCRIPTIONS
            ]
            live: list[tuple[str, int, Any]] = []

            async def publish(plan: list[tuple[str, Any]]) -> None:
                acks = await publish_plan(pub, plan, pause=0)
                live.extend((t, s, d) for (t, s), (_, d) in zip(acks, plan))

            def expected(pattern: str) -> list[tuple[str, int, Any]]:
                return published_before + live if pattern == f"{ns}.a.x" else live

            async def all_arrived() -> None:
                for pattern, c in collectors:
                    await c.wait_for(sum(1 for t, _, _ in expected(pattern) if matches(pattern, t)))

            await publish(rounds(ns, 4, "before"))
            await all_arrived()
            await wait_metric(node.url, SAMPLE[transport], 1.0)
            connects = [c.sub.stats.connects for _, c in collectors]

            port = node.port
            node.kill()
            # Published while the node is down: the publisher retries until
            # it is back (same idempotency key).
            during = asyncio.create_task(publish(rounds(ns, 2, "during")))
            await asyncio.sleep(0.3)
            node.start(port=port)
            await asyncio.wait_for(during, 60)
            await publish(rounds(ns, 4, "after"))
            await all_arrived()
            await asyncio.sleep(0.3)
            await wait_metric(node.url, SAMPLE[transport], 1.0)
            for (pattern, c), before in zip(collectors, connects):
                check(pattern, c.messages, expected(pattern))
                stats = c.sub.stats
                # One reconnection carried all of them.
                assert stats.connects == before + 1, (pattern, stats)
                assert stats.transports[-1] == (node.url, transport)
                assert stats.skipped == 0, (pattern, stats)
            for _, c in collectors:
                await c.stop()


async def test_closing_subscriptions_keeps_the_connection_for_the_others(node: HeraldNode, ns: str) -> None:
    async with HeraldClient([node.url]) as client, HeraldClient([node.url], transports=("poll",)) as pub:
        a = await client.subscribe(f"{ns}.a")
        b = Collector(await client.subscribe(f"{ns}.b"))
        ws = 'herald_connections{transport="ws"}'
        assert await metric(node.url, ws) == 1.0
        assert await metric(node.url, "herald_subscriptions") == 2.0
        await a.close()
        await wait_metric(node.url, "herald_subscriptions", 1.0)
        await pub.publish(f"{ns}.b", 1)
        await b.wait_for(1)
        assert await metric(node.url, ws) == 1.0
        await b.stop()
        await b.sub.close()
        await wait_metric(node.url, ws, 0.0)  # the last one closes it
        c = Collector(await client.subscribe(f"{ns}.c"))  # and the next opens it again
        await pub.publish(f"{ns}.c", 2)
        await c.wait_for(1)
        assert await metric(node.url, ws) == 1.0
        await c.stop()
