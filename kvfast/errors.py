"""Exceptions raised by :class:`kvfast.Client` for the server's error replies."""


class KvfastError(Exception):
    """Base class of every kvfast error."""


class KeyExistsError(KvfastError, KeyError):
    """``put`` found the key already present; the stored value is unchanged."""


class KeyNotFoundError(KvfastError, KeyError):
    """``get`` or ``del`` named a key that is not stored."""


class InvalidRequestError(KvfastError, ValueError):
    """The server answered ``Invalid request: <reason>``; ``reason`` holds the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ConnectionLostError(KvfastError, ConnectionError):
    """The server closed the connection before it answered."""


class AuthenticationError(KvfastError):
    """The server refused the password (it answered ``Invalid password``, or
    anything but ``OK``, to ``auth PASSWORD``); ``reply`` holds its answer."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply
