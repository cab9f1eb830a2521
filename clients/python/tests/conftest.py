"""Real herald (and nats-server) processes for the tests.

HERALD_BIN points at the server binary (default: ../../target/debug/herald
relative to clients/python). NATS_SERVER may point at nats-server (default:
the one on PATH, or /usr/sbin/nats-server). A missing binary fails the tests
that need it; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PYTHON_ROOT = Path(__file__).resolve().parents[1]


def ready_port(output: bytes) -> int | None:
    """The port from herald's ready line (stdout, protocol-spec §15.7):
    `{"listening":"http://127.0.0.1:PORT","addr":"127.0.0.1:PORT","node":...}`."""
    for line in output.splitlines():
        if not line.startswith(b"{") or b'"listening"' not in line:
            continue
        try:
            ready = json.loads(line)
        except ValueError:
            continue  # the line is still being written
        if isinstance(ready, dict) and "listening" in ready:
            return int(ready["addr"].rsplit(":", 1)[1])
    return None


def herald_bin() -> Path:
    raw = os.environ.get("HERALD_BIN")
    path = Path(raw) if raw else PYTHON_ROOT / "../../target/debug/herald"
    path = path.resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"herald binary not found at {path}: run `cargo build -p herald` at the repository "
            "root or set HERALD_BIN",
            pytrace=False,
        )
    return path


def nats_bin() -> Path:
    raw = os.environ.get("NATS_SERVER") or shutil.which("nats-server")
    if not raw and os.access("/usr/sbin/nats-server", os.X_OK):
        raw = "/usr/sbin/nats-server"
    if not raw:
        pytest.fail(
            "nats-server not found (apt-get install nats-server, or set NATS_SERVER): "
            "the cluster tests need it",
            pytrace=False,
        )
    return Path(raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HeraldNode:
    """One `herald serve` process; restartable on the same port and data dir."""

    def __init__(
        self,
        workdir: Path,
        name: str = "n1",
        *,
        nats: str | None = None,
        config: str | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.data_dir = workdir / f"{name}-data"
        self.log_path = workdir / f"{name}.log"
        self.nats = nats
        self.config = config
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> HeraldNode:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        args = [
            str(herald_bin()),
            "serve",
            "--listen",
            f"127.0.0.1:{port if port is not None else 0}",
            "--data-dir",
            str(self.data_dir),
        ]
        if self.nats:
            args += ["--nats", self.nats, "--node-id", self.name]
        if self.config:
            cfg = self.workdir / f"{self.name}.toml"
            cfg.write_text(self.config)
            args += ["--config", str(cfg)]
        deadline = time.monotonic() + 15
        while True:
            with open(self.log_path, "ab") as log:
                log.write(f"\n==== start #{self.starts}: {' '.join(args)}\n".encode())
                offset = log.tell()
                env = {**os.environ, "HERALD_LOG": os.environ.get("HERALD_LOG", "info")}
                # Stdout (the ready line) and stderr (the logs) share the file,
                # in the order written.
                self.proc = subprocess.Popen(
                    args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env
                )
            while time.monotonic() < deadline:
                with open(self.log_path, "rb") as log:
                    log.seek(offset)
                    port = ready_port(log.read())
                if port is not None:
                    self.port = port
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} printed no ready line:\n{self.tail()}")
            # Exited: a restart on the same port can race the old socket.
            if port is None or time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} exited at start:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-n:])

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    r = await http.get(f"{self.url}/readyz", timeout=1.0)
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")
                await asyncio.sleep(0.1)


class NatsServer:
    """A real `nats-server` on a loopback port of its own.

    The first start lets the kernel pick the port (`-p -1`) and reads it from
    the server's ports file, written once it listens and named after its pid:
    a port picked by binding and releasing could be picked by another process
    too, and a connect would then reach that process's server.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = -1
        self.dir = workdir / "nats"
        self.dir.mkdir(exist_ok=True)
        self.log_path = self.dir / "nats.log"
        self.log = open(self.log_path, "ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Starts (again) on its port."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                str(nats_bin()),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--ports_file_dir",
                str(self.dir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        ports = self.dir / f"{nats_bin().name}_{self.proc.pid}.ports"
        deadline = time.monotonic() + 10
        while True:
            try:
                url = json.loads(ports.read_text())["nats"][0]
                self.port = int(url.rsplit(":", 1)[1])
                return
            except (OSError, ValueError, KeyError, IndexError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise AssertionError(
                        "nats-server did not start:\n" + self.log_path.read_text(errors="replace")
                    ) from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the nodes lose their cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def node(workdir: Path) -> Iterator[HeraldNode]:
    n = HeraldNode(workdir).start()
    yield n
    n.stop()


@pytest.fixture
def cluster(workdir: Path) -> Iterator[list[HeraldNode]]:
    nats = NatsServer(workdir)
    nodes = [HeraldNode(workdir, f"n{i}", nats=nats.url) for i in (1, 2, 3)]
    try:
        for n in nodes:
            n.start()
        asyncio.run(_all_ready(nodes))
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        nats.stop()


async def _all_ready(nodes: list[HeraldNode]) -> None:
    await asyncio.gather(*(n.wait_ready() for n in nodes))


@pytest.fixture
def ns() -> str:
    """A fresh namespace per test, so topics never carry over."""
    return "t" + uuid.uuid4().hex[:10]
