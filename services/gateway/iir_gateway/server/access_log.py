"""The access log, written off the event loop.

A request appends one tuple to a queue; a writer thread turns what has queued into the JSON lines
every other log has (`iir_common.logging.JsonFormatter`'s fields) and writes them at once, every
`FLUSH_S`. Through `logging`, a line cost the request a LogRecord, a formatter pass over its fields,
a secret scan of the whole line and a write() of its own.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque

import orjson

from iir_common.logging import UdpLineHandler
from iir_common.secret_scrubber import SecretScrubber, secret_env_values

FLUSH_S = 0.2
LOGGER = "iir_gateway.access"


class AccessLog:
    def __init__(self, service: str = "gateway", flush_s: float = FLUSH_S) -> None:
        self.service = service
        self.enabled = logging.getLogger(LOGGER).isEnabledFor(logging.INFO)
        self._queue: deque[tuple[float, str, str, str, int, float]] = deque()
        self._scrubber = SecretScrubber(secret_env_values())
        self._paths: dict[str, str] = {}  # paths as logged (most requests share a few)
        self._wake = threading.Event()
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, request_id: str, method: str, path: str, status: int, duration_ms: float) -> None:
        if not self.enabled:
            return
        self._queue.append((time.time(), request_id, method, path, status, duration_ms))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_s)
            self.flush()

    def lines(self) -> list[bytes]:
        """What has queued, as JSON lines (taken off the queue)."""
        out: list[bytes] = []
        queue = self._queue
        second, stamp = -1, ""
        while queue:
            created, rid, method, path, status, duration_ms = queue.popleft()
            if int(created) != second:
                second = int(created)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            # What the client chose (path, request id) may hold a key: never logged as it came.
            logged = self._paths.get(path)
            if logged is None:
                logged = self._clean(path)
                if len(self._paths) < 1024:
                    self._paths[path] = logged
            path, rid = logged, self._clean(rid)
            entry = {
                "ts": f"{stamp}.{int(created * 1000) % 1000:03d}Z",
                "level": "info",
                "service": self.service,
                "logger": LOGGER,
                "msg": "request",
                "request_id": rid,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
            }
            out.append(orjson.dumps(entry))
        return out

    def _clean(self, text: str) -> str:
        return self._scrubber.scrub(text)[0] if self._scrubber.may_hold_secret(text.encode()) else text

    def flush(self) -> None:
        with self._lock:  # the writer thread and the exit handler
            lines = self.lines()
            if not lines:
                return
            for handler in logging.getLogger().handlers:
                if isinstance(handler, UdpLineHandler):
                    for line in lines:
                        try:
                            handler.sock.sendto(line, handler.address)
                        except OSError:
                            pass  # a debugging aid must never break the service
                elif isinstance(handler, logging.StreamHandler):
                    text = b"\n".join(lines).decode() + "\n"
                    with handler.lock or threading.Lock():
                        try:
                            handler.stream.write(text)
                            handler.stream.flush()
                        except (OSError, ValueError):  # a closed stream at exit
                            pass
