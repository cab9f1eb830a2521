"""Exponential backoff with jitter, and URL helpers."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial * 2**(attempt-1)`` capped at ``maximum``, then scaled by a
    random factor in ``[1 - jitter, 1]`` so that many clients reconnecting at
    once spread out."""

    initial: float = 0.25
    maximum: float = 8.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        if attempt <= 0:
            return 0.0
        base = min(self.maximum, self.initial * float(2 ** min(attempt - 1, 30)))
        return float(base * (1.0 - self.jitter * random.random()))


def normalize_url(url: str) -> str:
    """``http://host:port`` without a trailing slash; ``ws``/``wss`` and a
    missing scheme are accepted."""
    url = url.strip().rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    elif "://" not in url:
        url = "http://" + url
    if url.endswith("/v1/ws"):
        url = url[: -len("/v1/ws")]
    return url


def ws_url(base: str, path: str = "/v1/ws") -> str:
    if base.startswith("https://"):
        return "wss://" + base[8:] + path
    return "ws://" + base[len("http://") :] + path
