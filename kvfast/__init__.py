"""kvfast: a small, fast int64 key-value server (compiled epoll loop) and its client."""
from kvfast._version import __version__
from kvfast.client import AsyncClient, Client
from kvfast.errors import (
    AuthenticationError,
    ConnectionLostError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    KvfastError,
    OutOfRangeError,
)
from kvfast.server import LogError, Server

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConnectionLostError",
    "InvalidRequestError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KvfastError",
    "LogError",
    "OutOfRangeError",
    "Server",
    "__version__",
]
