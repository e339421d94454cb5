"""Settings shared by :class:`kvfast.Server`, ``kvfast-server`` and ``kvfast-client``.

Every limit the server enforces is named here once, so the CLI help, the README
and the compiled loop all speak of the same numbers.
"""
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_LEVEL = "info"

#: Longest request line, in bytes, not counting its ``\n`` or ``\r\n`` ending.
#: A longer line gets ``Invalid request: line too long`` and its connection is closed.
MAX_LINE_BYTES = 64 * 1024

#: Largest RESP (Redis protocol) request, in bytes. Larger ones are refused with
#: ``-ERR Protocol error: request too large`` and the connection is closed, as soon
#: as a header declares the size (before the body is buffered).
MAX_REQUEST_BYTES = 1024 * 1024

#: Bytes read from one connection per readable event (a bounded read, as Redis does),
#: so one busy client cannot starve the others in a loop iteration.
READ_CHUNK_BYTES = 16 * 1024

#: Once a connection has this many reply bytes waiting to be sent, the server stops
#: reading its requests until the client has read enough of its replies
#: (below half of it). This bounds per-connection memory whatever the client sends.
OUTPUT_HIGH_WATER_BYTES = 1024 * 1024

#: Backlog passed to listen(2) (the kernel caps it at net.core.somaxconn): room for
#: thousands of clients connecting at once while the loop accepts them.
LISTEN_BACKLOG = 4096


#: Most clients connected at once; one more gets ``max number of clients reached``
#: (native: ``Error: max number of clients reached``; RESP: ``-ERR max number of
#: clients reached``) and is closed, as Redis's maxclients.
MAX_CLIENTS = 10000

#: Seconds a client may stay idle (nothing received) before the server closes it;
#: 0 means never, the default, as in Redis.
IDLE_TIMEOUT = 0

#: Before a client has authenticated (when a password is set), requests are held
#: to these sizes: a native line, a RESP argument count, a RESP argument.
UNAUTHENTICATED_MAX_LINE_BYTES = 1024
UNAUTHENTICATED_MAX_ARGUMENTS = 10
UNAUTHENTICATED_MAX_BULK_BYTES = 16 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server needs to start; the CLI builds one from its arguments."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = DEFAULT_LOG_LEVEL
    max_line_bytes: int = MAX_LINE_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    read_chunk_bytes: int = READ_CHUNK_BYTES
    output_high_water_bytes: int = OUTPUT_HIGH_WATER_BYTES
    backlog: int = LISTEN_BACKLOG
    max_clients: int = MAX_CLIENTS
    timeout: int = IDLE_TIMEOUT
    requirepass: str | None = field(default=None, repr=False)   # never shown in logs or reprs
    protected_mode: bool = True

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.max_line_bytes < 16 or self.max_request_bytes < 64:
            raise ValueError("max_line_bytes must be at least 16 and max_request_bytes at least 64")
        if self.read_chunk_bytes < 1 or self.output_high_water_bytes < 1:
            raise ValueError("read_chunk_bytes and output_high_water_bytes must be positive")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {self.max_clients}")
        if self.timeout < 0:
            raise ValueError(f"timeout must be 0 (never) or a number of seconds, not {self.timeout}")
        if self.requirepass is not None and not 1 <= len(self.requirepass.encode()) <= 512:
            raise ValueError("requirepass must be 1 to 512 bytes")
