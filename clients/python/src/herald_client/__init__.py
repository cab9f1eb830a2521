"""asyncio client for the Herald pub/sub broker.

WebSocket, Server-Sent Events and long-poll with automatic fallback,
reconnection with backoff and jitter across the cluster's nodes, and resume
from the last message seen with no gap and no duplicate.
"""

from ._client import HeraldClient, History
from ._cursor import Cursor
from ._subscription import Subscription
from ._types import (
    ClientClosed,
    ConnectionEvent,
    Gap,
    HeraldAPIError,
    HeraldError,
    Kicked,
    Message,
    PublishResult,
    PublishTimeout,
    SubscriptionError,
    SubscriptionStats,
    TransportName,
    UndecodableError,
    Unsubscribed,
)

__all__ = [
    "ClientClosed",
    "ConnectionEvent",
    "Cursor",
    "Gap",
    "HeraldAPIError",
    "HeraldClient",
    "HeraldError",
    "History",
    "Kicked",
    "Message",
    "PublishResult",
    "PublishTimeout",
    "Subscription",
    "SubscriptionError",
    "SubscriptionStats",
    "TransportName",
    "UndecodableError",
    "Unsubscribed",
]

__version__ = "0.1.0"
