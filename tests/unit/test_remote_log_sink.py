"""IIR_REMOTE_LOG_SINK parsing and the UDP handler (the end-to-end path: test_observability.py)."""

from __future__ import annotations

import json
import logging
import socket

from iir_common.logging import JsonFormatter, UdpLineHandler, remote_sink


def test_sink_addresses() -> None:
    assert remote_sink("logs.internal:5140") == ("logs.internal", 5140)
    assert remote_sink("[::1]:9000") == ("::1", 9000)
    assert remote_sink("") is None and remote_sink("nohost") is None and remote_sink("h:port") is None


def test_each_record_is_one_json_datagram_and_failures_are_silent() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    handler = UdpLineHandler("127.0.0.1", receiver.getsockname()[1])
    handler.setFormatter(JsonFormatter("test"))
    handler.emit(logging.LogRecord("x", logging.INFO, "", 0, "hello %s", ("udp",), None))
    assert json.loads(receiver.recv(65536))["msg"] == "hello udp"
    receiver.close()
    handler.sock.close()  # a broken socket: the record is dropped, nothing is raised
    handler.emit(logging.LogRecord("x", logging.INFO, "", 0, "lost", (), None))
