"""The server is SIGKILLed mid-stream and restarted on the same port and data
dir: every subscription (wildcard and concrete) resumes with the exact
sequence, on each transport, and no publish is stored twice."""

from __future__ import annotations

import asyncio

import pytest
from conftest import HeraldNode
from helpers import Collector, assert_exact, expected_by_topic, publish_plan

from herald_client import ConnectionEvent, HeraldClient, TransportName

FAST = dict(reconnect_delay=0.05, reconnect_delay_max=0.5, connect_timeout=2.0)


@pytest.mark.parametrize(
    "transports", [("ws", "sse", "poll"), ("sse",), ("poll",)], ids=lambda t: "+".join(t)
)
async def test_kill9_and_restart_mid_stream(
    node: HeraldNode, ns: str, transports: tuple[TransportName, ...]
) -> None:
    events: list[ConnectionEvent] = []
    record = events.append
    async with HeraldClient(
        [node.url], transports=transports, on_connect=record, on_disconnect=record,
        on_reconnecting=record, **FAST,  # type: ignore[arg-type]
    ) as sub_client, HeraldClient([node.url], **FAST) as pub:  # type: ignore[arg-type]
        wild = Collector(await sub_client.subscribe(f"{ns}.*"))
        conc = Collector(await sub_client.subscribe(f"{ns}.a"))
        # Topic c first appears around the outage: the resumed wildcard must
        # pick it up from the start without being told about it.
        plan = [
            (f"{ns}.c" if i >= 28 and i % 4 == 0 else f"{ns}.a" if i % 3 else f"{ns}.b", {"i": i})
            for i in range(90)
        ]
        expected = expected_by_topic(plan)

        publishing = asyncio.create_task(publish_plan(pub, plan, pause=0.01))
        await wild.wait_for(25)
        assert not publishing.done()
        port = node.port
        node.kill()  # mid-stream: publishes in flight, deliveries in flight
        await asyncio.sleep(0.4)
        node.start(port=port)
        assert node.port == port

        acks = await asyncio.wait_for(publishing, 60)
        await wild.wait_for(len(plan))
        await conc.wait_for(len(expected[f"{ns}.a"]))
        await wild.settle(0.5)

        assert_exact(wild.messages, expected)
        assert_exact(conc.messages, {f"{ns}.a": expected[f"{ns}.a"]})
        # Every publish was stored exactly once despite the retries.
        assert sorted(acks) == sorted(
            (t, s) for t, data in expected.items() for s in range(1, len(data) + 1)
        )
        for topic, data in expected.items():
            history = await pub.history(topic, limit=1000)
            assert [m.data for m in history.messages] == data
        for c in (wild, conc):
            stats = c.sub.stats
            assert stats.connects >= 2, stats
            assert stats.duplicates_dropped == 0, f"server re-sent messages: {stats}"
            assert stats.skipped == 0, f"server skipped messages: {stats}"
            assert all(t == transports[0] for _, t in stats.transports), stats
        kinds = [e.kind for e in events if e.channel == f"{ns}.*"]
        assert kinds[0] == "connect" and "disconnect" in kinds and "reconnecting" in kinds
        assert kinds[-1] == "connect"
        await wild.stop()
        await conc.stop()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_slow_consumer_is_dropped_and_resumes(workdir, ns: str, transport: TransportName) -> None:  # type: ignore[no-untyped-def]
    """A consumer slower than the broker's outgoing queue (64 KiB here) gets
    disconnected as a slow consumer (WebSocket 4001, SSE `: slow consumer`)
    and resumes from the log with the exact sequence."""
    node = HeraldNode(
        workdir, config="[limits]\nqueue_bytes = 65536\nslow_consumer = \"disconnect\"\n"
    ).start()
    try:
        reasons: list[str] = []
        async with HeraldClient(
            [node.url], transports=(transport,),
            on_disconnect=lambda e: reasons.append(e.reason or ""),
        ) as client, HeraldClient([node.url]) as pub:
            sub = await client.subscribe(f"{ns}.*", queue_size=1)
            pad = "x" * 16_000
            plan = [(f"{ns}.t{i % 3}", {"i": i, "pad": pad}) for i in range(600)]
            for start in range(0, len(plan), 100):  # concurrent publishes, in chunks
                await asyncio.gather(*(pub.publish(t, d) for t, d in plan[start : start + 100]))
            last: dict[str, int] = {}
            for k in range(len(plan)):
                m = await asyncio.wait_for(sub.__anext__(), 30)
                if k < 40:
                    await asyncio.sleep(0.05)
                assert m.seq == last.get(m.topic, 0) + 1, (m.topic, m.seq, last)
                last[m.topic] = m.seq
            assert last == {f"{ns}.t0": 200, f"{ns}.t1": 200, f"{ns}.t2": 200}
            assert any("slow consumer" in r for r in reasons), reasons
            assert sub.stats.duplicates_dropped == 0 and sub.stats.skipped == 0, sub.stats
    finally:
        node.stop()
