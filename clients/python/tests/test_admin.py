"""The admin API's signals to the client against a real node, on every
transport: a disconnect (WebSocket close 4004, SSE ``kicked``, long-poll
410) ends every subscription with :class:`Kicked` and nothing reconnects; a
server-side unsubscribe ends that subscription with :class:`Unsubscribed`
and the others go on; the publisher's connection kicked fails its publish
rather than retrying it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from conftest import HeraldNode
from helpers import Collector

from herald_client import ConnectionEvent, HeraldClient, Kicked, TransportName, Unsubscribed

FAST: dict[str, Any] = dict(reconnect_delay=0.05, reconnect_delay_max=0.3, connect_timeout=2.0, poll_timeout=5.0)


async def present(node: HeraldNode, topic: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{node.url}/v1/topics/{topic}/presence")
        assert r.status_code == 200, r.text
        return [c["client_id"] for c in r.json()["clients"]]


async def one_present(node: HeraldNode, topic: str) -> str:
    for _ in range(100):
        ids = await present(node, topic)
        if len(ids) == 1:
            return ids[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"not exactly one client present on {topic}: {ids}")


async def admin(node: HeraldNode, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{node.url}{path}", json=body) if body else await http.post(f"{node.url}{path}")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
async def test_kicked_stops_and_reports(node: HeraldNode, ns: str, transport: TransportName) -> None:
    events: list[ConnectionEvent] = []
    async with HeraldClient(
        [node.url], transports=(transport,), on_kicked=events.append, on_connect=events.append, **FAST
    ) as client:
        sub = await client.subscribe(f"{ns}.k")
        got = Collector(sub)
        client_id = await one_present(node, f"{ns}.k")
        assert (await admin(node, f"/v1/clients/{client_id}/disconnect"))["disconnected"] == 1
        await asyncio.wait({got.task}, timeout=10)
        with pytest.raises(Kicked):
            got.task.result()
        kicked = [e for e in events if e.kind == "kicked"]
        assert [(e.channel, e.transport) for e in kicked] == [(f"{ns}.k", transport)]
        # It stays gone: no new connection, nobody present.
        await asyncio.sleep(1.5)
        assert sum(e.kind == "connect" for e in events) == 1
        assert await present(node, f"{ns}.k") == []
        assert sub.cursor is not None  # the application may resume exactly if it decides to


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
async def test_server_unsubscribe_ends_that_subscription(node: HeraldNode, ns: str, transport: TransportName) -> None:
    events: list[ConnectionEvent] = []
    async with HeraldClient([node.url], transports=(transport,), on_unsubscribed=events.append, **FAST) as client:
        # Both before the connection opens: one SSE stream or poll session for both.
        sub_a, sub_b = client.subscribe(f"{ns}.a"), client.subscribe(f"{ns}.b")
        a, b = Collector(await sub_a), Collector(await sub_b)
        client_id = await one_present(node, f"{ns}.a")
        answer = await admin(node, f"/v1/clients/{client_id}/unsubscribe", {"topic": f"{ns}.a"})
        assert answer["unsubscribed"] == 1, answer
        await asyncio.wait({a.task}, timeout=10)
        with pytest.raises(Unsubscribed):
            a.task.result()
        assert [(e.kind, e.channel) for e in events] == [("unsubscribed", f"{ns}.a")]
        await client.publish(f"{ns}.a", "after")
        await client.publish(f"{ns}.b", "after")
        await b.wait_for(1)
        await b.settle(0.5)
        assert [m.data for m in b.messages] == ["after"]
        assert not b.task.done()
        for _ in range(40):
            if not await present(node, f"{ns}.a"):
                break
            await asyncio.sleep(0.05)
        assert await present(node, f"{ns}.a") == [], "resubscribed the ended pattern"
        await b.stop()


async def test_kicked_publisher_fails_its_publish(node: HeraldNode, ns: str) -> None:
    events: list[ConnectionEvent] = []
    async with HeraldClient([node.url], on_kicked=events.append, **FAST) as client:
        await client.publish(f"{ns}.p", 1)
        ids = await _publisher_ids(client)
        for cid in ids:
            await admin(node, f"/v1/clients/{cid}/disconnect")
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.05)
        assert [(e.kind, e.channel) for e in events] == [("kicked", "publish")]
        # The application decides: a new publish opens a new connection.
        assert (await client.publish(f"{ns}.p", 2)).seq == 2


async def _publisher_ids(client: HeraldClient) -> list[str]:
    """The publisher connection's presence id, from its answer to `ping`
    (a connection without subscriptions is not listed in presence)."""
    publisher = client._publisher
    assert publisher is not None and publisher._ws is not None
    ws = publisher._ws
    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    publisher._next_id += 1
    publisher._pending[publisher._next_id] = fut
    await ws.send(f'{{"op":"ping","id":{publisher._next_id}}}')
    reply = await asyncio.wait_for(fut, 5)
    return [str(reply["client_id"])]
