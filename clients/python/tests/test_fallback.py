"""Transport fallback: with WebSocket blocked by a proxy the client uses SSE,
with SSE blocked too it uses long-poll, and once they are allowed again it
upgrades back — with the exact sequence throughout."""

from __future__ import annotations

import asyncio

from conftest import HeraldNode
from helpers import BlockingProxy, Collector, assert_exact, expected_by_topic, publish_plan

from herald_client import HeraldClient


async def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_fallback_to_sse_then_poll_and_upgrade_back(node: HeraldNode, ns: str) -> None:
    proxy = await BlockingProxy(node.port or 0).start()
    proxy.blocked = {"/v1/ws"}
    try:
        async with HeraldClient(
            [proxy.url], upgrade_interval=1.0, reconnect_delay=0.05, reconnect_delay_max=0.3
        ) as client, HeraldClient([node.url]) as direct:
            wild = Collector(await client.subscribe(f"{ns}.>"))
            conc = Collector(await client.subscribe(f"{ns}.a"))
            assert wild.sub.transport == "sse" and conc.sub.transport == "sse"
            assert "/v1/ws" in proxy.refused

            plan = [(f"{ns}.a" if i % 2 else f"{ns}.b.c", i) for i in range(60)]
            # Through the proxy too: WebSocket publish is refused, REST works.
            await publish_plan(client, plan[:10], pause=0)
            await wild.wait_for(10)

            # SSE blocked as well; cut the open streams: the client goes to long-poll.
            proxy.blocked = {"/v1/ws", "/v1/sse"}
            proxy.cut_all()
            publishing = asyncio.create_task(publish_plan(direct, plan[10:40], pause=0.01))
            await wait_until(lambda: wild.sub.transport == "poll", 10, "long-poll")
            await wait_until(lambda: conc.sub.transport == "poll", 10, "long-poll")
            await publishing
            await wild.wait_for(40)

            # Everything allowed again: within upgrade_interval it is back on WebSocket.
            proxy.blocked = set()
            publishing = asyncio.create_task(publish_plan(direct, plan[40:], pause=0.05))
            await wait_until(lambda: wild.sub.transport == "ws", 10, "upgrade to WebSocket")
            await wait_until(lambda: conc.sub.transport == "ws", 10, "upgrade to WebSocket")
            await publishing
            expected = expected_by_topic(plan)
            await wild.wait_for(len(plan))
            await conc.wait_for(len(expected[f"{ns}.a"]))
            await wild.settle(0.3)
            assert_exact(wild.messages, expected)
            assert_exact(conc.messages, {f"{ns}.a": expected[f"{ns}.a"]})
            used = [t for _, t in wild.sub.stats.transports]
            assert used[0] == "sse" and "poll" in used and used[-1] == "ws", used
            for c in (wild, conc):
                assert c.sub.stats.duplicates_dropped == 0 and c.sub.stats.skipped == 0, c.sub.stats
                await c.stop()
    finally:
        await proxy.close()


async def test_only_poll_when_everything_else_is_blocked(node: HeraldNode, ns: str) -> None:
    proxy = await BlockingProxy(node.port or 0).start()
    proxy.blocked = {"/v1/ws", "/v1/sse"}
    try:
        async with HeraldClient([proxy.url], upgrade_interval=0.5) as client:
            sub = Collector(await client.subscribe(f"{ns}.*"))
            assert sub.sub.transport == "poll"
            plan = [(f"{ns}.x", i) for i in range(20)]
            await publish_plan(client, plan, pause=0.02)
            await sub.wait_for(20)
            await sub.settle(1.2)  # a few failed upgrade attempts in between
            assert_exact(sub.messages, expected_by_topic(plan))
            assert sub.sub.transport == "poll"
            await sub.stop()
    finally:
        await proxy.close()
