"""Three clients behind HAProxy (deploy/haproxy/haproxy.cfg) in front of a
3-node cluster, each given only HAProxy's address: this Python client, the
JavaScript client (in node) and `herald sub` (the Rust client). Each
subscribes to its own pattern, so presence tells which node it is on. In
turn, the node each client is on is SIGKILLed while messages flow (and
restarted afterwards, so two nodes are always up): the client resumes
through HAProxy on another node, and in the end each one has received
every message of its topics once, in order — exactly the nodes' history.

Needs haproxy, node, and clients/js built (`npm ci && npm run build` there);
a missing one fails the test."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import HeraldNode, free_port, herald_bin

from herald_client import HeraldClient

REPO = Path(__file__).resolve().parents[3]
JS = REPO / "clients/js"
FAST = dict(reconnect_delay=0.05, reconnect_delay_max=0.5, connect_timeout=2.0)
WHO = ("py", "js", "cli")


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        pytest.fail(f"{name} is required for this test (apt-get install {name})", pytrace=False)
    return path


class Haproxy:
    """HAProxy in the foreground with the deploy config, in front of three nodes."""

    def __init__(self, nodes: list[HeraldNode], log: Path) -> None:
        self.port, self.stats = free_port(), free_port()
        env = {
            **os.environ,
            "HAPROXY_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_BIND": f"127.0.0.1:{self.stats}",
        }
        for i, n in enumerate(nodes, 1):
            env[f"HERALD_N{i}"] = f"127.0.0.1:{n.port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [tool("haproxy"), "-db", "-f", str(REPO / "deploy/haproxy/haproxy.cfg")],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_all_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        status: list[str] = []
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    csv = (await http.get(f"http://127.0.0.1:{self.stats}/;csv", timeout=1)).text
                    status = [
                        line.split(",")[17] for line in csv.splitlines() if line.startswith("herald,n")
                    ]
                    if status == ["UP"] * 3:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"HAProxy does not see 3 nodes up: {status}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Child:
    """A subscriber process printing one JSON object per line on stdout."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def items(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def received(who: str, py_items: list[Any], children: dict[str, Child]) -> list[tuple[str, int, Any]]:
    """(topic, seq, data) of every message the client `who` printed or yielded;
    a gap is recorded as (topic, -1, (from, to))."""
    if who == "py":
        return [(m.topic, m.seq, m.data) for m in py_items]
    out = []
    for item in children[who].items():
        if "gap" in item or item.get("type") == "gap":
            gap = item.get("gap", item)
            out.append((gap["topic"], -1, (gap["from"], gap["to"])))
        else:
            out.append((item["topic"], item["seq"], item["data"]))
    return out


async def present_on(lb: str, topic: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{lb}/v1/topics/{topic}/presence", timeout=3)
        r.raise_for_status()
        return [c["node"] for c in r.json()["clients"]]


async def wait_until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Polls `check` (plain or async) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def front(cluster: list[HeraldNode], workdir: Path) -> Iterator[Haproxy]:
    proxy = Haproxy(cluster, workdir / "haproxy.log")
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_clients_behind_haproxy_survive_the_loss_of_their_node(
    cluster: list[HeraldNode], front: Haproxy, ns: str, workdir: Path
) -> None:
    node_bin = tool("node")
    dist = JS / "dist/index.js"
    if not dist.exists() or not (JS / "node_modules/ws").exists():
        pytest.fail(f"clients/js is not built: run `npm ci && npm run build` in {JS}", pytrace=False)
    await front.wait_all_up()
    lb = front.url
    by_name = {n.name: n for n in cluster}
    children: dict[str, Child] = {}
    try:
        async with HeraldClient([lb], **FAST) as sub_client, HeraldClient(  # type: ignore[arg-type]
            [lb], publish_timeout=45.0, **FAST  # type: ignore[arg-type]
        ) as pub:
            py_sub = sub_client.subscribe(f"{ns}.py.*", since=0)
            py_items: list[Any] = []

            async def drain() -> None:
                async for m in py_sub:
                    py_items.append(m)

            py_task = asyncio.create_task(drain())
            here = Path(__file__).parent
            children["js"] = Child(
                "js", [node_bin, str(here / "js_subscriber.mjs"), lb, f"{ns}.js.*"], workdir / "js.log"
            )
            children["cli"] = Child(
                "cli",
                [str(herald_bin()), "sub", f"{ns}.cli.*", "--since", "0", "--json", "--url", lb],
                workdir / "cli.log",
            )
            for who in WHO:
                topic = f"{ns}.{who}.a"
                await wait_until(lambda: present_on(lb, topic), f"{who} subscribed")

            stop = asyncio.Event()
            acks: list[tuple[str, int, Any]] = []

            async def publish() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    for who in WHO:
                        topic = f"{ns}.{who}.{'ab'[i % 2]}"
                        t, seq = await pub.publish(topic, {"i": i}, idempotency_key=f"{who}-{i}")
                        acks.append((t, seq, {"i": i}))
                    await asyncio.sleep(0.02)

            publishing = asyncio.create_task(publish())
            moves = []
            for who in WHO:
                topic = f"{ns}.{who}.a"
                # The client's node, once presence lists it alone (a
                # restarted node's stale entries vanish with its snapshot).
                async def one_node(topic: str = topic) -> str | None:
                    live = {n.name for n in cluster if n.proc and n.proc.poll() is None}
                    nodes = await present_on(lb, topic)
                    return nodes[0] if len(nodes) == 1 and nodes[0] in live else None

                victim = by_name[await wait_until(one_node, f"{who} on one live node")]
                before = len(received(who, py_items, children))
                acked_before = sum(1 for t, _, _ in acks if t.startswith(f"{ns}.{who}."))
                victim.kill()
                # It moved: messages published after the kill arrive.
                await wait_until(
                    lambda: len(received(who, py_items, children)) > max(before, acked_before) + 20,
                    f"{who} gets messages after its node {victim.name} was killed",
                    timeout=45,
                )
                now = await wait_until(one_node, f"{who} present again")
                moves.append(f"{who}: {victim.name} -> {now}")
                assert now != victim.name
                victim.start(port=victim.port)
                await victim.wait_ready()
                await front.wait_all_up()

            stop.set()
            await asyncio.wait_for(publishing, 60)

            # The truth: each topic's history (identical on every node).
            history: dict[str, list[tuple[int, Any]]] = {}
            async with httpx.AsyncClient() as http:
                for who in WHO:
                    for t in "ab":
                        topic = f"{ns}.{who}.{t}"
                        history[topic] = []
                        while True:
                            since = len(history[topic])
                            url = f"{lb}/v1/topics/{topic}/messages?since={since}&limit=1000"
                            page = (await http.get(url, timeout=10)).json()["messages"]
                            if not page:
                                break
                            history[topic] += [(m["seq"], m["data"]) for m in page]
            for t, seq, data in acks:
                assert history[t][seq - 1] == (seq, data), f"acked {t}#{seq} lost"
            for who in WHO:
                mine = {t: h for t, h in history.items() if t.startswith(f"{ns}.{who}.")}
                total = sum(len(h) for h in mine.values())
                await wait_until(
                    lambda: len(received(who, py_items, children)) >= total,
                    f"{who} receives all {total} messages",
                )
            await asyncio.sleep(0.5)
            for who in WHO:
                got: dict[str, list[tuple[int, Any]]] = {}
                for t, seq, data in received(who, py_items, children):
                    got.setdefault(t, []).append((seq, data))
                mine = {t: h for t, h in history.items() if t.startswith(f"{ns}.{who}.")}
                assert got == mine, f"{who}: {summary(got)} != {summary(mine)}"
            print("moves:", moves, "; messages:", {t: len(h) for t, h in history.items()})
            py_task.cancel()
    finally:
        for child in children.values():
            child.stop()


def summary(by_topic: dict[str, list[tuple[int, Any]]]) -> dict[str, Any]:
    return {t: [s for s, _ in v] for t, v in by_topic.items()}
