"""Unit tests of cursor handling and backoff (no server)."""

from __future__ import annotations

import pytest

from herald_client import Cursor
from herald_client._backoff import Backoff, normalize_url, ws_url
from herald_client._cursor import Position, is_concrete


def test_cursor_round_trip_sorts_topics_bytewise() -> None:
    c = Cursor(1764000000123, {"orders.eu": 42, "a": 0, "Orders.x": 7})
    text = c.encode()
    assert text == "1~1764000000123~Orders.x~7~a~0~orders.eu~42"
    assert Cursor.decode(text) == c


@pytest.mark.parametrize(
    "bad", ["", "2~1", "1", "1~x", "1~1~a", "1~1~a~", "1~1~a~-1", "1~1~a*~1", "1~1~a~1~a~2", "1~" + "9" * 21]
)
def test_cursor_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        Cursor.decode(bad)


def test_patterns() -> None:
    assert is_concrete("orders.eu")
    assert not is_concrete("orders.*")
    assert not is_concrete("orders.>")
    for bad in ["", "a..b", "a.>.b", "a.b*", "x" * 65]:
        with pytest.raises(ValueError):
            is_concrete(bad)


def test_position_dedups_and_lists_what_was_seen() -> None:
    p = Position("orders.*")
    assert p.cursor() is None  # live start
    p.adopt("1~1000~orders.x~0", delivery_floor=False)  # a WebSocket subscribed reply
    assert p.cursor() == "1~1000"  # wildcard: positions of the reply are not taken
    assert p.is_new("orders.eu", 1)
    p.record_message("orders.eu", 1, 1001)
    p.record_message("orders.eu", 2, 1002)
    assert not p.is_new("orders.eu", 2)
    assert not p.is_new("orders.eu", 1)
    assert p.is_new("orders.eu", 3)
    p.record_message("orders.us", 5, 999)
    # A start floor (WebSocket) never prunes: every topic seen is listed.
    assert p.cursor() == "1~1000~orders.eu~2~orders.us~5"
    # A delivery floor (SSE/long-poll) drops topics whose last message is older.
    p.adopt("1~1002", delivery_floor=True)
    assert p.cursor() == "1~1002~orders.eu~2"
    assert not p.is_new("orders.us", 5)  # still deduplicated


def test_concrete_position_is_always_listed() -> None:
    p = Position("orders.eu")
    p.adopt("1~500~orders.eu~7", delivery_floor=False)
    assert p.cursor() == "1~500~orders.eu~7"
    p.record_message("orders.eu", 8, 400)
    p.adopt("1~9000", delivery_floor=True)
    assert p.cursor() == "1~9000~orders.eu~8"


def test_since() -> None:
    p = Position("orders.eu")
    p.start_since(5)
    assert p.cursor() == "1~0~orders.eu~5"
    w = Position("orders.>")
    w.start_since(0)
    assert w.cursor() == "1~0"
    with pytest.raises(ValueError):
        Position("orders.*").start_since(3)


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(0.5, 4.0, 0.5)
    assert b.delay(0) == 0
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        for _ in range(50):
            d = b.delay(attempt)
            assert base * 0.5 <= d <= base


def test_urls() -> None:
    assert normalize_url("127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert normalize_url("ws://h:1/v1/ws") == "http://h:1"
    assert ws_url("https://h") == "wss://h/v1/ws"
