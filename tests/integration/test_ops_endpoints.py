"""Metrics on their own port, as Prometheus text (health, docs, the UI, the registry's status and logs are
tested through the gateway app in tests/gateway/test_ops_endpoints.py)."""

from __future__ import annotations

import httpx

from iir_dev.stack import Stack
from tests.conftest import SERVED


def test_metrics_are_prometheus_text(stack: Stack, api_key: str) -> None:
    httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "m"}]},
    )
    text = httpx.get(stack.metrics_url).text
    assert 'iir_gateway_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert f'iir_gateway_model_requests_total{{model="local/{SERVED}",provider="local",status="200"}}' in text
    assert "iir_gateway_request_duration_seconds_bucket" in text
