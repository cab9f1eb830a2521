"""Issue 25: a node that cannot serve subscriptions (not connected to NATS,
not caught up, draining) refuses them, and the client waits and retries —
on another node when it has one — without an error, never asking a
refusing node again before its ``Retry-After``, without falling back to
another transport, and resumes with no gap and no duplicate.

Each refusal the protocol defines is played by a gate in front of a real
node; then a real 2-node cluster loses its NATS server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import HeraldNode, NatsServer
from helpers import Collector, Gate, assert_exact, expected_by_topic, publish_plan

from herald_client import ConnectionEvent, HeraldClient, TransportName

PATHS = {"ws": "/v1/ws", "sse": "/v1/sse", "poll": "/v1/poll"}
FAST = dict(reconnect_delay=0.02, reconnect_delay_max=0.2, poll_timeout=2.0)


@pytest.mark.parametrize(
    ("transports", "mode"),
    [
        (("ws", "sse", "poll"), "http503"),
        (("ws",), "ws_error_frame"),
        (("sse",), "sse_event"),
        (("poll",), "http503"),
    ],
    ids=["ws-upgrade-503", "ws-error-frame", "sse-event", "poll-503"],
)
async def test_a_refusing_node_is_retried_after_retry_after_and_resumed_from(
    node: HeraldNode, ns: str, transports: tuple[TransportName, ...], mode: str
) -> None:
    gate = await Gate(node.port or 0).start()
    try:
        async with HeraldClient([gate.url], transports=transports, **FAST) as client, HeraldClient(  # type: ignore[arg-type]
            [node.url], transports=("poll",)
        ) as pub:
            sub = Collector(await client.subscribe(f"{ns}.>"))
            transport = sub.sub.transport
            assert transport is not None
            plan = [(f"{ns}.{'ab'[i % 2]}", i) for i in range(30)]
            await publish_plan(pub, plan[:10], pause=0)
            await sub.wait_for(10)

            gate.refuse(mode)
            await publish_plan(pub, plan[10:20], pause=0)
            await asyncio.sleep(3.5)
            refused = list(gate.refused)
            assert 2 <= len(refused) <= 5, refused
            for (a, _), (b, _) in zip(refused, refused[1:]):
                assert b - a >= 0.9, f"asked again after {b - a:.3f} s: {refused}"
            assert all(p == PATHS[transport] for _, p in refused), f"fell back: {refused}"
            assert len(sub.messages) == 10 and not sub.task.done()

            gate.forward()
            await publish_plan(pub, plan[20:], pause=0)
            await sub.wait_for(30)
            await sub.settle(0.3)
            assert_exact(sub.messages, expected_by_topic(plan))
            assert sub.sub.transport == transport
            assert sub.sub.stats.skipped == 0
            await sub.stop()
    finally:
        await gate.close()


async def test_a_refusing_node_sends_the_client_to_the_next(node: HeraldNode, ns: str) -> None:
    gate = await Gate(node.port or 0).start()
    gate.refuse("http503")
    try:
        async with HeraldClient([gate.url, node.url], **FAST) as client:  # type: ignore[arg-type]
            started = asyncio.get_running_loop().time()
            sub = await client.subscribe(f"{ns}.>")
            assert asyncio.get_running_loop().time() - started < 0.9
            assert (sub.url, sub.transport) == (node.url, "ws")
            assert [p for _, p in gate.refused] == ["/v1/ws"]
    finally:
        await gate.close()


async def test_a_408_publish_is_sent_again_with_its_key_and_stored_once(node: HeraldNode, ns: str) -> None:
    """A node paused past its request timeout answers the requests it had
    not read with 408 once it resumes. The publish is retried (the same
    idempotency key) instead of failing, and stored once."""
    gate = await Gate(node.port or 0).start()
    gate.refuse("http408")
    try:
        async with HeraldClient([gate.url], transports=("poll",), **FAST) as client:  # type: ignore[arg-type]

            async def reopen() -> None:
                while not gate.refused:
                    await asyncio.sleep(0.01)
                gate.forward()

            opener = asyncio.create_task(reopen())
            result = await client.publish(f"{ns}.paused", {"n": 1})
            await opener
            assert [p for _, p in gate.refused][:1] == [f"/v1/topics/{ns}.paused/messages"], gate.refused
            page = await client.history(f"{ns}.paused")
            assert [(m.seq, m.data) for m in page.messages] == [(result.seq, {"n": 1})]
    finally:
        await gate.close()


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
async def test_subscribers_wait_out_a_nats_outage(workdir: Path, ns: str, transport: TransportName) -> None:
    """Both nodes lose NATS and the subscriber's node restarts meanwhile:
    the client waits (both refuse) without an error, then resumes exactly,
    including what was published before, during and after the outage."""
    nats = NatsServer(workdir)
    nodes = [HeraldNode(workdir, f"n{i}", nats=nats.url) for i in (1, 2)]
    events: list[ConnectionEvent] = []
    try:
        for n in nodes:
            n.start()
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        urls = [n.url for n in nodes]
        async with HeraldClient(
            urls, transports=(transport,), on_connect=events.append,
            on_reconnecting=events.append, reconnect_delay=0.05, reconnect_delay_max=0.5, poll_timeout=3.0,
        ) as client, HeraldClient(
            urls, transports=("poll",), publish_timeout=60.0, reconnect_delay=0.05, reconnect_delay_max=0.5
        ) as pub:
            sub = Collector(await client.subscribe(f"{ns}.>"))
            plan = [(f"{ns}.{'ab'[i % 2]}", i) for i in range(36)]
            await publish_plan(pub, plan[:10], pause=0)
            await sub.wait_for(10)
            victim = next(n for n in nodes if n.url == sub.sub.url)

            events.clear()
            nats.kill()
            during = asyncio.create_task(publish_plan(pub, plan[10:16], pause=0))
            port = victim.port
            victim.kill()
            victim.start(port=port)
            await asyncio.sleep(3)
            assert not [e for e in events if e.kind == "connect"], "a node without NATS served it"
            rounds = [e for e in events if e.kind == "reconnecting"]
            assert 2 <= len(rounds) <= 12, f"{len(rounds)} reconnection rounds in 3 s"
            assert len(sub.messages) == 10 and not sub.task.done()

            nats.start()
            await asyncio.gather(*(n.wait_ready(30) for n in nodes))
            await asyncio.wait_for(during, 60)
            await publish_plan(pub, plan[16:], pause=0)
            await sub.wait_for(len(plan), timeout=30)
            await sub.settle(0.5)
            assert_exact(sub.messages, expected_by_topic(plan))
            await sub.stop()
    finally:
        for n in nodes:
            n.stop()
        nats.stop()
