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


class OutOfRangeError(OverflowError, ValueError):
    """A key, value or delta given to :class:`kvfast.Client` is outside the
    signed 64-bit range (refused before anything is sent). Both an
    OverflowError (as NumPy and ``array('q')`` say it) and a ValueError (as the
    single-key methods always said it)."""
