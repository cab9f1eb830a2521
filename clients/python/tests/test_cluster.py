"""Cluster: a real nats-server and three herald nodes. The node a subscription
is on is SIGKILLed mid-stream; the subscription moves to another node and
the sequence stays exact (no gap, no duplicate)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import HeraldNode
from helpers import Collector, assert_exact, expected_by_topic, publish_plan

from herald_client import HeraldClient, TransportName


@pytest.mark.parametrize(
    "transports", [("ws", "sse", "poll"), ("sse",), ("poll",)], ids=lambda t: "+".join(t)
)
async def test_subscription_moves_to_another_node(
    cluster: list[HeraldNode], ns: str, transports: tuple[TransportName, ...]
) -> None:
    urls = [n.url for n in cluster]
    fast = dict(reconnect_delay=0.05, reconnect_delay_max=0.5, connect_timeout=2.0)
    async with HeraldClient(urls, transports=transports, **fast) as sub_client, HeraldClient(  # type: ignore[arg-type]
        list(reversed(urls)), publish_timeout=45.0, **fast  # type: ignore[arg-type]
    ) as pub:
        wild = Collector(await sub_client.subscribe(f"{ns}.*"))
        conc = Collector(await sub_client.subscribe(f"{ns}.a"))
        assert wild.sub.url == cluster[0].url
        victim = next(n for n in cluster if n.url == wild.sub.url)

        plan = [
            (f"{ns}.c" if i >= 24 and i % 5 == 0 else f"{ns}.a" if i % 2 else f"{ns}.b", i)
            for i in range(80)
        ]
        expected = expected_by_topic(plan)
        publishing = asyncio.create_task(publish_plan(pub, plan, pause=0.01))
        await wild.wait_for(20)
        assert not publishing.done()
        victim.kill()

        await asyncio.wait_for(publishing, 90)
        await wild.wait_for(len(plan), timeout=30)
        await conc.wait_for(len(expected[f"{ns}.a"]), timeout=30)
        await wild.settle(0.5)

        assert_exact(wild.messages, expected)
        assert_exact(conc.messages, {f"{ns}.a": expected[f"{ns}.a"]})
        for c in (wild, conc):
            stats = c.sub.stats
            assert c.sub.url is not None and c.sub.url != victim.url, stats
            assert stats.transports[0][0] == victim.url and len({u for u, _ in stats.transports}) >= 2
            assert stats.duplicates_dropped == 0, f"server re-sent messages: {stats}"
            assert stats.skipped == 0, f"server skipped messages: {stats}"
        # No publish was stored twice: every node that is left has the exact log.
        for n in cluster:
            if n is victim:
                continue
            async with HeraldClient([n.url]) as one:
                for topic, data in expected.items():
                    history = await one.history(topic, limit=1000)
                    assert [m.data for m in history.messages] == data, (n.name, topic)
        await wild.stop()
        await conc.stop()
