"""Traces across the services into an in-process OTLP receiver; the dashboard against /metrics; UDP logs."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, SERVED
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf trace exports and keeps every span with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.metric_names: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith("/v1/metrics"):
                    metrics = ExportMetricsServiceRequest.FromString(body)
                    receiver.metric_names |= {
                        m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                    }
                    self.send_response(200)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                    for ss in rs.scope_spans:
                        receiver.spans += [(service, s) for s in ss.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# The stack, the OTLP receiver and the UDP socket the gateway forwards its log lines to.
Traced = tuple[Stack, OtlpReceiver, socket.socket]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str) -> Iterator[Traced]:
    receiver = OtlpReceiver()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    routing = tmp_path_factory.mktemp("otel") / "routing.yaml"
    routing.write_text(f"policies:\n  auto: {{default: local/{SERVED}}}\n")
    stack = Stack(
        workdir=tmp_path_factory.mktemp("traced"),
        database_url=database_url,
        redis_url=redis_url,
        master_key=MASTER_KEY,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "IIR_REDIS_PREFIX": f"iir-otel-{uuid.uuid4().hex[:8]}:",
            "IIR_ROUTING_FILE": str(routing),
            "IIR_CLASSIFIER_TIMEOUT_S": "2",
            "IIR_REMOTE_LOG_SINK": f"127.0.0.1:{udp.getsockname()[1]}",
        },
    )
    stack.start()
    yield stack, receiver, udp
    stack.stop()
    receiver.server.shutdown()
    udp.close()


def test_one_trace_per_request_across_gateway_auth_classifier_and_upstream(traced: Traced) -> None:
    stack, receiver, _ = traced
    key = stack.create_key("traced")  # not cached yet: the gateway asks auth
    resp = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert resp.status_code == 200

    def traced_root() -> Span | None:
        """The gateway's span, once the auth's and the classifier's spans of its trace have come too."""
        roots = [s for svc, s in receiver.spans if svc == "iir-gateway" and s.name == "chat auto"]
        services = {svc for svc, s in receiver.spans if roots and s.trace_id == roots[0].trace_id}
        return roots[0] if roots and {"iir-auth", "iir-classifier"} <= services else None

    root: Span = wait_for(traced_root, timeout=30, interval=0.1, what="the request's spans from every service")
    same = [(svc, s) for svc, s in receiver.spans if s.trace_id == root.trace_id]
    by_id = {s.span_id: (svc, s) for svc, s in same}
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["gen_ai.request.model"].string_value == "auto"
    assert attrs["gen_ai.response.model"].string_value == f"local/{SERVED}"
    assert attrs["gen_ai.usage.output_tokens"].int_value > 0 and attrs["gen_ai.usage.input_tokens"].int_value > 0
    assert not root.parent_span_id

    def parent_service(span: Span) -> str:
        return by_id[span.parent_span_id][0]

    servers = {svc: s for svc, s in same if svc in ("iir-auth", "iir-classifier")}
    for svc, server_span in servers.items():
        client = by_id[server_span.parent_span_id][1]  # the gateway's gRPC client span …
        assert parent_service(server_span) == "iir-gateway", svc
        assert client.parent_span_id == root.span_id, svc  # … child of the request's root span
    upstream = next(s for svc, s in same if svc == "iir-gateway" and s.name == "POST local")
    assert upstream.parent_span_id == root.span_id


def test_metrics_are_exported_over_otlp_too(traced: Traced) -> None:
    _, receiver, _ = traced
    wanted = {
        "iir_gateway_requests_total",
        "iir_gateway_model_request_duration_seconds_bucket",
        "iir_gateway_queue_depth",
    }
    assert wait_for(lambda: wanted <= receiver.metric_names, timeout=10, interval=0.1)


def test_dashboard_queries_only_exported_metrics(stack: Stack, api_key: str) -> None:
    httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": f"local/{SERVED}", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    text = httpx.get(stack.metrics_url).text
    exported = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        exported |= {
            "counter": {name if name.endswith("_total") else f"{name}_total"},
            "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
        }.get(kind, {name})
    dashboard = json.loads((REPO / "deploy" / "grafana" / "iir-overview.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"\biir_[a-z_]+", t["expr"])}
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    assert {
        "iir_gateway_time_to_first_token_seconds_bucket",
        "iir_gateway_inter_token_latency_seconds_bucket",
        "iir_gateway_key_tokens_total",
        "iir_gateway_queue_depth",
    } <= used


def test_logs_are_forwarded_over_udp(traced: Traced) -> None:
    stack, _, udp = traced
    httpx.get(f"{stack.gateway_url}/v1/models")  # 401: one access-log line at least
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30  # a guard only: the loop ends with the gateway's first line
    while time.monotonic() < deadline and not any(line.get("service") == "gateway" for line in lines):
        try:
            lines.append(json.loads(udp.recv(65536)))
        except TimeoutError:  # nothing for the socket's 5 s: a busy machine; wait on
            continue
    assert any(line.get("service") == "gateway" for line in lines)


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from iir_common import tracing

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.setup_tracing("test") is None and tracing.tracer() is None
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
