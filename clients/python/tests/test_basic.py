"""Subscribe, publish, receive against a real node, on every transport."""

from __future__ import annotations

import asyncio

import pytest
from conftest import HeraldNode
from helpers import Collector, assert_exact, expected_by_topic, publish_plan

from herald_client import Gap, HeraldAPIError, HeraldClient, Message, TransportName

TRANSPORTS: list[tuple[TransportName, ...]] = [("ws", "sse", "poll"), ("sse",), ("poll",)]


@pytest.mark.parametrize("transports", TRANSPORTS, ids=lambda t: "+".join(t))
async def test_subscribe_publish_receive(node: HeraldNode, ns: str, transports: tuple[TransportName, ...]) -> None:
    events = []
    async with HeraldClient([node.url], transports=transports, on_connect=events.append) as client:
        wild = await client.subscribe(f"{ns}.*")
        deep = await client.subscribe(f"{ns}.>")
        one = await client.subscribe(f"{ns}.a")
        assert wild.transport == transports[0]
        collectors = [Collector(s) for s in (wild, deep, one)]
        plan = [(f"{ns}.a", {"n": i}) for i in range(5)] + [(f"{ns}.b", i) for i in range(3)]
        plan += [(f"{ns}.b.c", "deep"), (f"{ns}.a", None), (f"{ns}.a", [1, "x", 2.5])]
        acks = await publish_plan(client, plan, pause=0)
        assert acks[0] == (f"{ns}.a", 1)
        assert acks[-1] == (f"{ns}.a", 7)
        expected = expected_by_topic(plan)
        await collectors[0].wait_for(10)
        await collectors[1].wait_for(11)
        await collectors[2].wait_for(7)
        await collectors[0].settle(0.3)
        assert_exact(collectors[0].messages, {k: v for k, v in expected.items() if k != f"{ns}.b.c"})
        assert_exact(collectors[1].messages, expected)
        assert_exact(collectors[2].messages, {f"{ns}.a": expected[f"{ns}.a"]})
        m = collectors[2].messages[0]
        assert isinstance(m, Message) and m.ts > 1_600_000_000_000
        for s in (wild, deep, one):
            assert s.stats.duplicates_dropped == 0 and s.stats.skipped == 0
        assert {e.channel for e in events if e.kind == "connect"} >= {f"{ns}.*", f"{ns}.>", f"{ns}.a"}
        for c in collectors:
            await c.stop()


async def test_since_replays_history_then_live(node: HeraldNode, ns: str) -> None:
    async with HeraldClient([node.url]) as client:
        for i in range(5):
            await client.publish(f"{ns}.x", i)
        history = await client.history(f"{ns}.x")
        assert [m.seq for m in history.messages] == [1, 2, 3, 4, 5]
        assert (history.first_seq, history.last_seq) == (1, 5)
        after2 = Collector(await client.subscribe(f"{ns}.x", since=2))
        everything = Collector(await client.subscribe(f"{ns}.>", since=0))
        await client.publish(f"{ns}.x", 5)
        await client.publish(f"{ns}.y", "y")
        assert [m.data for m in await after2.wait_for(4)] == [2, 3, 4, 5]
        msgs = await everything.wait_for(7)
        assert_exact(msgs, {f"{ns}.x": [0, 1, 2, 3, 4, 5], f"{ns}.y": ["y"]})
        await after2.stop()
        await everything.stop()


@pytest.mark.parametrize("transports", TRANSPORTS, ids=lambda t: "+".join(t))
async def test_cursor_continues_in_a_new_subscription(
    node: HeraldNode, ns: str, transports: tuple[TransportName, ...]
) -> None:
    async with HeraldClient([node.url], transports=transports) as client:
        sub = await client.subscribe(f"{ns}.*")
        for i in range(4):
            await client.publish(f"{ns}.a" if i % 2 else f"{ns}.b", i)
        got = [await asyncio.wait_for(sub.__anext__(), 10) for _ in range(3)]
        cursor = sub.cursor
        assert cursor is not None
        await sub.close()
        await client.publish(f"{ns}.a", 4)
        await client.publish(f"{ns}.c", 5)
        # Another client, on a fresh transport, continues after the third message.
        async with HeraldClient([node.url], transports=("poll", "sse", "ws")) as other:
            rest = Collector(await other.subscribe(f"{ns}.*", since=cursor))
            more = await rest.wait_for(3)
            await rest.settle(0.3)
            assert sorted((m.topic, m.seq) for m in got + rest.messages) == sorted(
                [(f"{ns}.a", 1), (f"{ns}.a", 2), (f"{ns}.a", 3), (f"{ns}.b", 1), (f"{ns}.b", 2), (f"{ns}.c", 1)]
            )
            assert len(more) == 3
            await rest.stop()


async def test_publish_is_idempotent_and_errors_are_raised(node: HeraldNode, ns: str) -> None:
    async with HeraldClient([node.url]) as client, HeraldClient([node.url], transports=("sse",)) as rest:
        first = await client.publish(f"{ns}.k", {"v": 1}, idempotency_key="order-1")
        again = await client.publish(f"{ns}.k", {"v": 2}, idempotency_key="order-1")
        via_rest = await rest.publish(f"{ns}.k", {"v": 3}, idempotency_key="order-1")
        assert first == again == via_rest == (f"{ns}.k", 1)
        assert (await client.history(f"{ns}.k")).last_seq == 1
        with pytest.raises(ValueError):
            await client.publish(f"{ns}.*", 1)
        with pytest.raises(ValueError):
            await client.publish(f"{ns}.k", float("nan"))
        with pytest.raises(HeraldAPIError) as err:
            await client.publish(f"{ns}.big", "x" * 70_000)
        assert err.value.code == "payload_too_large"
        with pytest.raises(HeraldAPIError) as err:
            await rest.publish(f"{ns}.big", "x" * 70_000)
        assert err.value.code == "payload_too_large" and err.value.status == 413


async def test_gaps_from_retention(workdir, ns: str) -> None:  # type: ignore[no-untyped-def]
    config = f'[log]\nretention_interval = "100ms"\n[namespaces.{ns}.retention]\nmax_messages = 5\n'
    node = HeraldNode(workdir, config=config).start()
    try:
        async with HeraldClient([node.url]) as client:
            for i in range(12):
                await client.publish(f"{ns}.g", i)
            # Retention may run between publishes and trim in steps; its
            # end state (the last 5 kept) is what the test needs.
            for _ in range(100):
                if (await client.history(f"{ns}.g")).first_seq == 8:
                    break
                await asyncio.sleep(0.1)
            first = (await client.history(f"{ns}.g")).first_seq
            assert first == 8
            for transports in (("ws",), ("sse",), ("poll",)):
                async with HeraldClient([node.url], transports=transports) as c:
                    seen: list[Gap] = []
                    sub = await c.subscribe(f"{ns}.g", since=2, yield_gaps=True)
                    items = [await asyncio.wait_for(sub.__anext__(), 10) for _ in range(6)]
                    assert items[0] == Gap(f"{ns}.g", 3, 7), transports
                    assert [m.seq for m in items[1:] if isinstance(m, Message)] == [8, 9, 10, 11, 12]
                    cb = await c.subscribe(f"{ns}.g", since=0, on_gap=seen.append)
                    msgs = [await asyncio.wait_for(cb.__anext__(), 10) for _ in range(5)]
                    assert [m.seq for m in msgs] == [8, 9, 10, 11, 12]
                    assert seen == [Gap(f"{ns}.g", 1, 7)]
    finally:
        node.stop()


async def test_websocket_cursor_stays_small_and_still_resumes(node: HeraldNode, ns: str) -> None:
    """The `pong` floor lets a long-lived WebSocket wildcard subscription
    forget topics whose last message is older (its cursor would otherwise
    list every topic ever received); resuming from the short cursor after a
    kill -9 is still exact."""
    fast = dict(reconnect_delay=0.05, reconnect_delay_max=0.5, connect_timeout=2.0)
    async with HeraldClient([node.url], transports=("ws",), ping_interval=0.2, **fast) as client, HeraldClient(  # type: ignore[arg-type]
        [node.url], **fast  # type: ignore[arg-type]
    ) as pub:
        sub = Collector(await client.subscribe(f"{ns}.>"))
        plan = [(f"{ns}.t{i}", i) for i in range(30)]
        await publish_plan(pub, plan, pause=0)
        await sub.wait_for(30)
        # 30 topics received; once the floor passes them only the newest
        # (whose ts may equal the floor while the connection is idle) is left.
        def listed() -> int:
            return (sub.sub.cursor or "").count("~") // 2

        for _ in range(50):
            await asyncio.sleep(0.1)
            if sub.sub.cursor is not None and listed() <= 2:
                break
        assert sub.sub.cursor is not None and listed() <= 2, sub.sub.cursor
        port = node.port
        node.kill()
        node.start(port=port)
        more = [(f"{ns}.t{i % 40}", 100 + i) for i in range(60)]
        await publish_plan(pub, more, pause=0)
        await sub.wait_for(90)
        await sub.settle(0.5)
        assert_exact(sub.messages, expected_by_topic(plan + more))
        assert sub.sub.stats.duplicates_dropped == 0 and sub.sub.stats.connects >= 2
        await sub.stop()
