"""The client's one connection.

One background task keeps a session open on some node with some transport —
one WebSocket with a ``subscribe`` op per pattern, or one SSE stream / long
poll loop carrying every pattern — for all the subscriptions of a client.
When the session ends it reconnects (backoff with jitter, rotating through
the URLs, falling back WebSocket → SSE → long-poll) and resumes every
subscription from its own position, from one combined cursor
(:func:`~herald_client._cursor.combine`).

A node that cannot serve (``unavailable``: not connected to its cluster or
not caught up, draining) sends the connection to the next URL; it is asked
again no sooner than its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httpx

from ._cursor import answer_start, is_concrete
from ._errors import (
    Drop,
    NodeDown,
    NodeUnavailable,
    TransportDown,
    Unauthorized,
    classify_stream_refusal,
    is_connect_error,
    loads,
)
from ._types import ConnectionEvent, Kicked, SubscriptionError, TransportName, Unsubscribed

if TYPE_CHECKING:
    from ._client import HeraldClient
    from ._sessions import Session
    from ._subscription import Subscription

log = logging.getLogger("herald_client")

# A session that lasted this long (seconds) resets the reconnect backoff.
STABLE_SESSION = 5.0

# Most `topic=` parameters one SSE or long-poll request may carry.
MAX_STREAM_PATTERNS = 64


class Mux:
    """Carries every subscription of a client over one connection."""

    def __init__(self, client: HeraldClient) -> None:
        self.client = client
        self.subs: list[Subscription[Any]] = []
        self.poll_session: tuple[str, str] | None = None
        """The long-poll presence session (``client_id``) and its node."""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._session: Session | None = None
        self._not_before: dict[str, float] = {}

    # -- the subscriptions -------------------------------------------------

    def add(self, sub: Subscription[Any]) -> None:
        self.subs.append(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="herald-connection"
            )
        if self._session is not None:
            self._session.added(sub)
        self._wake.set()

    def remove(self, sub: Subscription[Any]) -> None:
        if sub in self.subs:
            self.subs.remove(sub)
            if self._session is not None:
                self._session.removed(sub)

    def fail_pattern(self, pattern: str, error: BaseException) -> None:
        for sub in [s for s in self.subs if s.pattern == pattern]:
            sub.fail(error)

    def fail_all(self, error: BaseException) -> None:
        for sub in list(self.subs):
            sub.fail(error)

    def server_unsubscribed(self, pattern: str, url: str, transport: TransportName) -> None:
        """The node ended ``pattern`` on its own (admin API): its
        subscriptions end with :class:`Unsubscribed`, and the connection
        carries on without it (never subscribing it again)."""
        ended = [s for s in self.subs if s.pattern == pattern]
        if not ended:
            return
        error = Unsubscribed(f"the server ended the subscription to {pattern!r}")
        for sub in ended:
            self.client._emit(
                ConnectionEvent("unsubscribed", pattern, url, transport, reason=str(error))
            )
            sub.fail(error)

    def patterns(self) -> list[str]:
        """The distinct patterns, wildcards first."""
        seen = {s.pattern for s in self.subs}
        return sorted(seen, key=lambda p: (is_concrete(p), p))

    def stream_patterns(self) -> list[str]:
        """The patterns of one SSE or long-poll request; the newest
        subscriptions beyond the protocol's limit fail."""
        kept: list[str] = []
        for sub in list(self.subs):
            if sub.pattern in kept:
                continue
            if len(kept) == MAX_STREAM_PATTERNS:
                sub.fail(
                    SubscriptionError(
                        f"SSE and long-poll carry at most {MAX_STREAM_PATTERNS} patterns per "
                        f"client; {sub.pattern!r} is one too many (use the WebSocket)"
                    )
                )
                continue
            kept.append(sub.pattern)
        return self.patterns()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- the connection loop -------------------------------------------------

    async def _run(self) -> None:
        from ._sessions import SESSIONS

        client = self.client
        urls = client.urls
        loop = asyncio.get_running_loop()
        url_i = 0
        failures = 0
        resume_on: TransportName | None = None
        try:
            while True:
                while not self.subs:
                    self._wake.clear()
                    await self._wake.wait()
                url = urls[url_i % len(urls)]
                order = client._transport_order(url)
                if resume_on in order:
                    order = order[order.index(resume_on) :]
                resume_on = None
                drop: Drop | None = None
                refusal: NodeUnavailable | None = None
                changed = False
                reason = "no transport worked"
                started = loop.time()
                for transport in order:
                    session = SESSIONS[transport](self, url)
                    task = loop.create_task(session.run(), name=f"herald-{transport}")
                    session.task = task
                    self._session = session
                    started = loop.time()
                    try:
                        drop = await task
                        if drop.kind == "kicked":
                            self._kicked(url, transport, drop.reason)
                    except asyncio.CancelledError:
                        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                            task.cancel()
                            raise
                        # The subscriptions changed in a way this session
                        # cannot follow: again at once, same node and transport.
                        drop = Drop("now", session.restart_reason or "resubscribing")
                        changed = True
                        resume_on = transport
                    except TransportDown as exc:
                        reason = str(exc)
                        log.info("%s unavailable at %s: %s", transport, url, exc)
                        client._mark_blocked(url, transport)
                        continue
                    except Unauthorized as exc:
                        reason = str(exc)
                        if not client._refreshable_token:
                            self.fail_all(SubscriptionError(f"unauthorized: {exc}"))
                    except NodeUnavailable as exc:
                        reason = str(exc)
                        refusal = exc
                        log.info("%s cannot serve now: %s", url, exc)
                    except NodeDown as exc:
                        reason = str(exc)
                        log.info("%s unavailable: %s", url, exc)
                    finally:
                        self._session = None
                        why = drop.reason if drop is not None else reason
                        for sub in list(self.subs):
                            sub.lost(why)
                    break
                now = loop.time()
                if drop is None:
                    failures += 1
                    if refusal is not None:
                        self._not_before[url] = now + refusal.retry_after
                    url_i += 1
                else:
                    reason = drop.reason
                    # A session that did not last keeps the backoff growing,
                    # so a node that accepts and drops at once is not hammered.
                    stable = now - started >= STABLE_SESSION
                    if drop.kind == "now":
                        failures = 0 if stable or changed else failures
                    elif drop.kind == "next":
                        failures = 0 if stable else failures + 1
                        if drop.retry_after > 0:
                            self._not_before[url] = now + drop.retry_after
                        url_i += 1
                    else:
                        failures = 1 if stable else failures + 1
                if changed:
                    continue
                delay = client.backoff.delay(failures)
                upcoming = urls[url_i % len(urls)]
                delay = max(delay, self._not_before.get(upcoming, 0.0) - now)
                for sub in list(self.subs):
                    client._emit(
                        ConnectionEvent(
                            "reconnecting",
                            sub.pattern,
                            upcoming,
                            None,
                            attempt=failures,
                            delay=delay,
                            reason=reason,
                        )
                    )
                if delay > 0:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: surface it to every iterator
            log.exception("herald connection failed")
            self.fail_all(exc)

    def _kicked(self, url: str, transport: TransportName, reason: str) -> None:
        """The node disconnected the client on purpose: every subscription
        ends with :class:`Kicked` (the loop then waits for new ones), so
        nothing reconnects unless the application subscribes again."""
        error = Kicked(reason)
        self.poll_session = None  # that session is gone: a 410 for a minute
        for sub in list(self.subs):
            self.client._emit(ConnectionEvent("kicked", sub.pattern, url, transport, reason=reason))
            sub.fail(error)

    # -- starting live subscriptions over HTTP ----------------------------------

    async def probe(self, url: str, patterns: list[str] | None = None) -> None:
        """Gives every new live subscription its start with a zero-timeout
        poll of its pattern (while others resume from their own
        positions). A pattern the node refuses fails its subscriptions."""
        if patterns is None:
            wanted = {s.pattern for s in self.subs if not s.position.started}
            patterns = sorted(wanted)
            for i in range(0, len(patterns), MAX_STREAM_PATTERNS):
                await self.probe(url, patterns[i : i + MAX_STREAM_PATTERNS])
            return
        client = self.client
        params: list[tuple[str, str | int | float | bool | None]] = [("topic", p) for p in patterns]
        params.append(("timeout_ms", "0"))
        try:
            resp = await client._http.get(
                f"{url}/v1/poll",
                params=params,
                headers=await client._headers(),
                timeout=httpx.Timeout(client.connect_timeout),
            )
        except httpx.TransportError as exc:
            if is_connect_error(exc):
                raise NodeDown(f"poll: {exc!r}") from exc
            raise TransportDown(f"poll: {exc!r}") from exc
        if resp.status_code != 200:
            refusal = classify_stream_refusal(
                resp.status_code, resp.text, "poll", resp.headers.get("Retry-After")
            )
            if not isinstance(refusal, SubscriptionError):
                raise refusal
            if len(patterns) == 1:
                self.fail_pattern(patterns[0], refusal)
            else:
                for p in patterns:
                    await self.probe(url, [p])
            return
        start = answer_start(loads(resp.content, "poll answer"))
        for sub in list(self.subs):
            if not sub.position.started and sub.pattern in patterns:
                await sub.start(start, keep_zero=True)

    async def refused(self, url: str, status: int, text: str, after: str | None, kind: str) -> Drop:
        """A refused SSE or long-poll request: a node that cannot serve (or is
        down, or a proxy's page) raises; a refusal of the request itself
        fails the subscriptions concerned — each pattern is probed alone
        to find them — and the session starts again without them."""
        refusal = classify_stream_refusal(status, text, kind, after)
        if not isinstance(refusal, SubscriptionError):
            raise refusal
        before = len(self.subs)
        for p in self.patterns():
            await self.probe(url, [p])
        if len(self.subs) == before:
            # Every pattern passes alone: the resume cursor is refused.
            self.fail_all(refusal)
        return Drop("now", f"{kind}: {refusal}")
