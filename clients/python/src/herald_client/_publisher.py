"""Publishing with acks: WebSocket ``publish`` ops, falling back to REST.

Every publish carries an idempotency key (the caller's, or a generated one),
and every internal retry reuses it, so a publish that reached the broker
before the connection broke is answered with its original seq instead of
being stored twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ._binary import encode_publish, is_binary
from ._cursor import validate_topic
from ._errors import KICKED, NodeDown, TransportDown, Unauthorized, error_body
from ._types import ConnectionEvent, HeraldAPIError, Kicked, PublishResult, PublishTimeout
from ._ws import close_code, open_ws

if TYPE_CHECKING:
    from ._client import HeraldClient

log = logging.getLogger("herald_client")


# Data up to the default `max_payload_bytes` fits a WebSocket frame on any
# node (the frame limit is max_payload_bytes + 4096); bigger payloads go over
# REST, which accepts what the node allows and answers 413 otherwise.
WS_MAX_DATA = 64 * 1024


class FrameTooBig(TransportDown):
    """The node closed the publish connection with 1009."""


def encode_data(data: Any) -> str:
    """Compact JSON; NaN/Infinity and non-JSON values are refused here."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Publisher:
    def __init__(self, client: HeraldClient) -> None:
        self._client = client
        self._url_i = 0
        self._ws: ClientConnection | None = None
        self._ws_base: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._lock = asyncio.Lock()

    async def publish(self, topic: str, data: Any, idempotency_key: str | None) -> PublishResult:
        client = self._client
        validate_topic(topic)
        # Raw bytes go as they are (a binary frame, an octet-stream body).
        body: str | bytes = bytes(data) if is_binary(data) else encode_data(data)
        key = idempotency_key or f"py-{uuid.uuid4().hex}"
        if not (1 <= len(key) <= 255 and all(0x21 <= ord(ch) <= 0x7E for ch in key)):
            raise ValueError("an idempotency key is 1-255 printable ASCII characters, no spaces")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + client.publish_timeout
        failures = 0
        urls = client.urls
        while True:
            url = urls[self._url_i % len(urls)]
            try:
                if (
                    "ws" in client.transports
                    and len(body if isinstance(body, bytes) else body.encode()) <= WS_MAX_DATA
                    and not client._is_blocked(url, "ws")
                ):
                    try:
                        return await self._publish_ws(url, topic, body, key)
                    except FrameTooBig:
                        pass  # this one goes over REST, which answers 413 properly
                    except TransportDown as exc:
                        log.info("publish: WebSocket unavailable at %s (%s); using REST", url, exc)
                        client._mark_blocked(url, "ws")
                return await self._publish_rest(url, topic, body, key)
            except NodeDown as exc:
                reason = str(exc)
                self._url_i += 1
            failures += 1
            delay = client.backoff.delay(failures)
            if loop.time() + delay > deadline:
                raise PublishTimeout(
                    f"publish to {topic!r} not acknowledged within {client.publish_timeout}s "
                    f"(last error: {reason}); retrying with idempotency key {key!r} is safe"
                )
            client._emit(
                ConnectionEvent(
                    "reconnecting",
                    "publish",
                    urls[self._url_i % len(urls)],
                    None,
                    attempt=failures,
                    delay=delay,
                    reason=reason,
                )
            )
            await asyncio.sleep(delay)

    # -- REST ------------------------------------------------------------------

    async def _publish_rest(self, url: str, topic: str, body: str | bytes, key: str) -> PublishResult:
        client = self._client
        raw = isinstance(body, bytes)
        headers = {
            "Content-Type": "application/octet-stream" if raw else "application/json",
            "Idempotency-Key": key,
            **(await client._headers()),
        }
        try:
            resp = await client._http.post(
                f"{url}/v1/topics/{quote(topic, safe='')}/messages",
                content=body if isinstance(body, bytes) else body.encode(),
                headers=headers,
                timeout=httpx.Timeout(client.ack_timeout, connect=client.connect_timeout),
            )
        except httpx.TransportError as exc:
            raise NodeDown(f"rest: {exc!r}") from exc
        if resp.status_code == 200:
            answer = resp.json()
            return PublishResult(str(answer["topic"]), int(answer["seq"]))
        # 408: the node (or a proxy) timed the request out before reading
        # it — a node that was paused answers so when it resumes. The key
        # makes sending it again safe.
        if (
            resp.status_code >= 500
            or resp.status_code in (408, 429)
            or (resp.status_code == 401 and client._refreshable_token)
        ):
            raise NodeDown(f"rest: HTTP {resp.status_code}")
        err = error_body(resp.text)
        if err is None:
            raise HeraldAPIError(f"http_{resp.status_code}", resp.text[:200], resp.status_code)
        raise HeraldAPIError(err[0], err[1], resp.status_code)

    # -- WebSocket -------------------------------------------------------------

    async def _publish_ws(self, url: str, topic: str, body: str | bytes, key: str) -> PublishResult:
        client = self._client
        ws = await self._connection(url)
        self._next_id += 1
        op_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[op_id] = future
        frame: str | bytes
        if isinstance(body, bytes):
            # The node echoes the id of a binary publish as a JSON string.
            frame = encode_publish(topic, body, op_id=str(op_id), idempotency_key=key)
        else:
            frame = (
                f'{{"op":"publish","id":{op_id},"topic":{json.dumps(topic)},'
                f'"idempotency_key":{json.dumps(key)},"data":{body}}}'
            )
        try:
            await ws.send(frame)
            async with asyncio.timeout(client.ack_timeout):
                reply = await future
        except ConnectionClosed as exc:
            code, why = close_code(exc)
            if code == 1009:
                raise FrameTooBig(why) from exc
            if code == KICKED:
                # The reader reports it (once); this publish fails with it.
                raise Kicked(why or "disconnected by the server") from exc
            raise NodeDown(f"ws closed {code} {why}") from exc
        except Kicked:
            raise
        except TimeoutError as exc:
            await self._drop(ws, "ack timed out")
            raise NodeDown("ws: no ack in time") from exc
        finally:
            self._pending.pop(op_id, None)
        if reply.get("type") == "ack":
            return PublishResult(str(reply["topic"]), int(reply["seq"]))
        err_code, message = str(reply.get("code")), str(reply.get("message"))
        if err_code in ("unavailable", "rate_limited"):
            raise NodeDown(f"ws: {err_code}: {message}")
        raise HeraldAPIError(err_code, message)

    async def _connection(self, url: str) -> ClientConnection:
        async with self._lock:
            if self._ws is not None and self._ws_base == url:
                return self._ws
            if self._ws is not None:
                await self._drop(self._ws, "moving to another node")
            client = self._client
            try:
                ws = await self._open(url)
            except Unauthorized as exc:
                if client._refreshable_token:
                    raise NodeDown(str(exc)) from exc
                raise HeraldAPIError("unauthorized", str(exc), 401) from exc
            self._ws, self._ws_base = ws, url
            self._reader = asyncio.get_running_loop().create_task(
                self._read(ws, url), name="herald-publisher"
            )
            client._emit(ConnectionEvent("connect", "publish", url, "ws"))
            return ws

    async def _open(self, url: str) -> ClientConnection:
        client = self._client
        return await open_ws(
            url,
            await client._headers(),
            open_timeout=client.connect_timeout,
            ping_interval=client.ping_interval,
            ping_timeout=client.ping_interval,
        )

    async def _read(self, ws: ClientConnection, url: str) -> None:
        reason = "closed"
        too_big = False
        kicked: Kicked | None = None
        try:
            while True:
                frame = json.loads(await ws.recv())
                if not isinstance(frame, dict):
                    continue
                op_id = frame.get("id")
                if isinstance(op_id, str) and op_id.isdigit():
                    op_id = int(op_id)  # a binary publish's id comes back as a string
                future = self._pending.get(op_id) if isinstance(op_id, int) else None
                if future is not None and not future.done():
                    future.set_result(frame)
                elif frame.get("type") == "error":
                    log.warning("publish connection: server error frame %s", frame)
        except ConnectionClosed as exc:
            code, why = close_code(exc)
            too_big = code == 1009
            reason = f"ws closed {code}" + (f" ({why})" if why else "")
            if code == KICKED:
                kicked = self._kicked(url, why)
        except (ValueError, TypeError) as exc:
            reason = f"bad frame: {exc}"
            await ws.close()
        finally:
            if self._ws is ws:
                self._ws = None
                self._ws_base = None
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(
                        kicked or (FrameTooBig(reason) if too_big else NodeDown(f"ws: {reason}"))
                    )
            self._client._emit(ConnectionEvent("disconnect", "publish", url, "ws", reason=reason))

    def _kicked(self, url: str, why: str) -> Kicked:
        """Close 4004: publishes in flight fail rather than retry on a new
        connection; the next ``publish`` call opens one (the application's
        decision)."""
        self._client._emit(ConnectionEvent("kicked", "publish", url, "ws", reason=why))
        return Kicked(why or "disconnected by the server")

    async def _drop(self, ws: ClientConnection, why: str) -> None:
        if self._ws is ws:
            self._ws = None
            self._ws_base = None
        try:
            async with asyncio.timeout(1.0):
                await ws.close(reason=why)
        except BaseException:  # noqa: BLE001
            ws.transport.abort()

    async def aclose(self) -> None:
        ws, reader = self._ws, self._reader
        if ws is not None:
            await self._drop(ws, "client closed")
        if reader is not None and not reader.done():
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass
