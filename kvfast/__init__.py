"""kvfast: a small, fast int64 key-value server (compiled epoll loop) and its client."""
from kvfast._version import __version__
from kvfast.client import Client
from kvfast.errors import (
    AuthenticationError,
    ConnectionLostError,
    InvalidRequestError,
    KeyExistsError,
    KeyNotFoundError,
    KvfastError,
)
from kvfast.server import LogError, Server

__all__ = [
    "AuthenticationError",
    "Client",
    "ConnectionLostError",
    "InvalidRequestError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KvfastError",
    "LogError",
    "Server",
    "__version__",
]
