"""A subscriber that reads as fast as it can is never cut off by a burst.

Under the default configuration, a plain `websockets` client (not Herald's
own client: nothing resumes for it) subscribes on loopback while 40 batches
of 500 x 1 KB messages are published over REST as fast as REST allows
(20 MB). The reader does a little work per message (10 ms per 50), so it
falls behind the publisher by far more than its 1 MiB queue. It must still
get all 20,000 messages, in seq order, on the one connection, and the
node's RSS (read from /proc, outside the process) must stay under 256 MiB
throughout.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import websockets

from conftest import HeraldNode

BATCHES = 40
PER_BATCH = 500
TOTAL = BATCHES * PER_BATCH


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_reading_subscriber_gets_a_20_mb_burst_whole(node: HeraldNode, ns: str) -> None:
    assert node.proc is not None
    topic = f"{ns}.burst"
    ws_url = node.url.replace("http://", "ws://") + "/v1/ws"
    peak = rss_kib(node.proc.pid)
    sampling = True

    async def sample() -> None:
        nonlocal peak
        assert node.proc is not None
        while sampling:
            peak = max(peak, rss_kib(node.proc.pid))
            await asyncio.sleep(0.05)

    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "id": "s", "topic": topic}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "subscribed", reply

        async def publish() -> None:
            filler = "x" * 1000
            async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
                for b in range(BATCHES):
                    batch = [
                        {"topic": topic, "data": {"n": b * PER_BATCH + i, "pad": filler}}
                        for i in range(PER_BATCH)
                    ]
                    r = await http.post("/v1/publish", json=batch)
                    assert r.status_code == 200, r.text

        sampler = asyncio.create_task(sample())
        publisher = asyncio.create_task(publish())
        seqs: list[int] = []
        closed: str | None = None
        deadline = time.monotonic() + 90
        try:
            while len(seqs) < TOTAL and time.monotonic() < deadline:
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                except websockets.ConnectionClosed as e:
                    closed = f"closed {e.rcvd.code if e.rcvd else None}"
                    break
                if frame["type"] == "message":
                    seqs.append(frame["seq"])
                    if len(seqs) % 50 == 0:
                        await asyncio.sleep(0.01)
                elif frame["type"] == "gap":
                    raise AssertionError(f"gap under the default policy: {frame}")
            await publisher
        finally:
            sampling = False
            await sampler
    assert closed is None, f"the reading subscriber was cut off ({closed}) after {len(seqs)}"
    assert seqs == list(range(1, TOTAL + 1)), (
        f"got {len(seqs)} messages; first out of order at "
        f"{next((i for i, s in enumerate(seqs) if s != i + 1), None)}"
    )
    assert peak < 256 * 1024, f"node RSS peaked at {peak} KiB"
