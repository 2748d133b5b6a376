"""Structured JSON logs, one object per line, carrying the current request id."""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import sys
import time
from typing import Any

import orjson

from iir_common.secret_scrubber import SecretScrubber, secret_env_values

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Record attributes that are not `extra=` fields; kopf's `settings` extra is a large dump, left out.
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "settings"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra={...}` fields are kept as top-level keys."""

    def __init__(self, service: str, scrubber: SecretScrubber | None = None) -> None:
        super().__init__()
        self.service = service
        self.scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        return self.scrubber.scrub(line)[0] if self.scrubber is not None else line


class UdpLineHandler(logging.Handler):
    """Sends each formatted line as one UDP datagram (IIR_REMOTE_LOG_SINK), for debugging: never blocks,
    drops what cannot be sent."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sock.sendto(self.format(record).encode()[:65000], self.address)
        except OSError:
            pass  # a debugging aid must never break the service

    def close(self) -> None:
        self.sock.close()
        super().close()


def remote_sink(value: str) -> tuple[str, int] | None:
    """`host:port` (or `[v6]:port`) → (host, port); None when unset or malformed."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Routes every logger (uvicorn's and grpc's included) to JSON lines on stderr, and to the UDP sink
    `IIR_REMOTE_LOG_SINK=host:port` when it is set."""
    # Secrets never leave in a log line: provider keys, tokens, and this process's secret variables.
    formatter = JsonFormatter(service, SecretScrubber(secret_env_values()))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    sink = remote_sink(os.environ.get("IIR_REMOTE_LOG_SINK", ""))
    if sink:
        udp = UdpLineHandler(*sink)
        udp.setFormatter(formatter)
        root.handlers.append(udp)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # The gateway writes its own access log with the request id; uvicorn's would be a duplicate.
    logging.getLogger("uvicorn.access").disabled = True
