"""JWT auth (HS256): tokens travel as `Authorization: Bearer` on every
transport; a missing token fails for good; with a token provider, an expired
token (WebSocket close 4003) is replaced on reconnect and the sequence stays
exact."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
from conftest import HeraldNode
from helpers import Collector, assert_exact, expected_by_topic, publish_plan

from herald_client import HeraldAPIError, HeraldClient, SubscriptionError, TransportName

SECRET = "py-client-test-secret"


def jwt(lifetime: float, **claims: object) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = {"sub": "py", "exp": int(time.time() + lifetime), "subscribe": [">"], "publish": [">"]}
    body.update(claims)
    payload = b64(json.dumps(body).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


@pytest.fixture
def secured(workdir) -> HeraldNode:  # type: ignore[no-untyped-def]
    node = HeraldNode(workdir, config=f'[auth]\njwt_secret = "{SECRET}"\n').start()
    yield node  # type: ignore[misc]
    node.stop()


@pytest.mark.parametrize("transports", [("ws",), ("sse",), ("poll",)], ids=lambda t: "+".join(t))
async def test_token_on_every_transport(secured: HeraldNode, ns: str, transports: tuple[TransportName, ...]) -> None:
    async with HeraldClient([secured.url], token=jwt(300), transports=transports) as client:
        sub = Collector(await client.subscribe(f"{ns}.*"))
        plan = [(f"{ns}.a", i) for i in range(5)]
        await publish_plan(client, plan, pause=0)
        assert_exact(await sub.wait_for(5), expected_by_topic(plan))
        await sub.stop()
    async with HeraldClient([secured.url], transports=transports, connect_timeout=2) as anonymous:
        with pytest.raises(SubscriptionError):
            await asyncio.wait_for(anonymous.subscribe(f"{ns}.*").ready(), 10)
        with pytest.raises(HeraldAPIError) as err:
            await anonymous.publish(f"{ns}.a", 1)
        assert err.value.code == "unauthorized"
    narrow = jwt(300, subscribe=[f"{ns}.a"], publish=[f"{ns}.a"])
    async with HeraldClient([secured.url], token=narrow, transports=transports) as limited:
        with pytest.raises(SubscriptionError):
            await asyncio.wait_for(limited.subscribe(f"{ns}.*").ready(), 10)
        with pytest.raises(HeraldAPIError) as err:
            await limited.publish(f"{ns}.b", 1)
        assert err.value.code == "forbidden"


async def test_expired_token_is_replaced_and_the_stream_resumes(secured: HeraldNode, ns: str) -> None:
    issued: list[str] = []

    async def provider() -> str:
        issued.append(jwt(1.5))
        return issued[-1]

    reasons: list[str] = []
    async with HeraldClient(
        [secured.url], token=provider, transports=("ws",),
        on_disconnect=lambda e: reasons.append(e.reason or ""), reconnect_delay=0.05,
    ) as client, HeraldClient([secured.url], token=lambda: jwt(300)) as pub:
        sub = Collector(await client.subscribe(f"{ns}.*"))
        plan = [(f"{ns}.a" if i % 2 else f"{ns}.b", i) for i in range(40)]
        await publish_plan(pub, plan, pause=0.1)
        await sub.wait_for(len(plan))
        await sub.settle(0.3)
        assert_exact(sub.messages, expected_by_topic(plan))
        assert any("4003" in r for r in reasons), reasons
        assert sub.sub.stats.connects >= 2 and len(issued) >= 2
        assert sub.sub.stats.duplicates_dropped == 0
        await sub.stop()
