"""The access log: JSON lines like every other log, written off the event loop, never holding a key."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import orjson
import pytest

from iir_gateway.server.access_log import AccessLog

KEY = "sk-proj-AbC12dEf34GhI56jKl78mNo90pQr12StU34vWx56Yz78aB"


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield stream
    root.handlers[:] = saved
    root.setLevel(level)


def test_lines_carry_the_fields_of_the_other_logs(stderr: io.StringIO) -> None:
    log = AccessLog()
    log.record("rid-1", "POST", "/v1/chat/completions", 200, 1.234)
    log.flush()
    entry = orjson.loads(stderr.getvalue())
    assert entry.pop("ts").endswith("Z")
    assert entry == {
        "level": "info",
        "service": "gateway",
        "logger": "iir_gateway.access",
        "msg": "request",
        "request_id": "rid-1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 1.234,
    }


def test_the_writer_thread_writes_what_queued_in_one_go(stderr: io.StringIO) -> None:
    log = AccessLog(flush_s=0.05)
    for i in range(100):
        log.record(f"r{i}", "GET", "/health", 200, 0.1)
    deadline = time.monotonic() + 5
    while stderr.getvalue().count("\n") < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [orjson.loads(line)["request_id"] for line in stderr.getvalue().splitlines()] == [
        f"r{i}" for i in range(100)
    ]


def test_a_key_in_the_path_or_the_request_id_is_not_logged(stderr: io.StringIO) -> None:
    log = AccessLog()
    log.record(KEY, "GET", f"/v1/keys/{KEY}", 404, 0.5)
    log.flush()
    assert KEY not in stderr.getvalue()
    assert "REDACTED" in orjson.loads(stderr.getvalue())["path"]


def test_nothing_is_queued_when_info_is_off(stderr: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    log = AccessLog()
    log.record("r", "GET", "/health", 200, 0.1)
    log.flush()
    assert stderr.getvalue() == ""
