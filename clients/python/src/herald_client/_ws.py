"""Opening WebSocket connections, with failures sorted into node/transport problems."""

from __future__ import annotations

from collections.abc import Mapping

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from ._backoff import ws_url
from ._errors import NodeDown, NodeUnavailable, TransportDown, Unauthorized, retry_after

USER_AGENT = "herald-client-python/0.1"


async def open_ws(
    base_url: str,
    headers: Mapping[str, str],
    *,
    open_timeout: float,
    ping_interval: float,
    ping_timeout: float,
) -> ClientConnection:
    """Opens ``/v1/ws`` on ``base_url``.

    Raises :class:`NodeUnavailable` when the node answers that it cannot
    serve now (503, 429), :class:`NodeDown` when it is unreachable or
    answers another 5xx, and
    :class:`TransportDown` when the upgrade itself is refused or times out
    (a proxy that blocks WebSocket, a node without the route).
    """
    try:
        return await connect(
            ws_url(base_url),
            additional_headers=dict(headers),
            user_agent_header=USER_AGENT,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            # The node echoes a close at once but keeps the TCP connection
            # open for seconds afterwards; do not wait for it.
            close_timeout=0.25,
            max_size=2**24,
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 401:
            raise Unauthorized("ws: HTTP 401") from exc
        if status in (503, 429):  # cannot serve now, or too many connections
            after = exc.response.headers.get("Retry-After")
            raise NodeUnavailable(f"ws: HTTP {status}", retry_after(after)) from exc
        if status >= 500:
            raise NodeDown(f"ws: HTTP {status}") from exc
        raise TransportDown(f"ws: HTTP {status}") from exc
    except TimeoutError as exc:  # (a subclass of OSError: test first)
        raise TransportDown("ws: opening handshake timed out") from exc
    except OSError as exc:
        raise NodeDown(f"ws: {exc}") from exc
    except WebSocketException as exc:
        raise TransportDown(f"ws: {exc}") from exc


def close_code(exc: BaseException) -> tuple[int, str]:
    """Close code and reason of a ``ConnectionClosed`` (1006 when none was received)."""
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is None:
        return 1006, "connection lost"
    return int(rcvd.code), str(rcvd.reason)
