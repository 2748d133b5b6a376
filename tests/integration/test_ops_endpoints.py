"""Health, metrics, version, docs, and JSON logs with the request id."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from iir_dev.stack import Stack
from tests.conftest import SERVED
from tests.waiting import wait_for


def test_health_reports_each_dependency(stack: Stack) -> None:
    resp = httpx.get(f"{stack.gateway_url}/health")
    assert resp.status_code == 200
    report = resp.json()
    assert report["status"] == "ok"
    assert set(report["dependencies"]) == {"auth", "registry", "classifier", "redis"}
    assert all(d["status"] == "ok" for d in report["dependencies"].values())
    assert report["dependencies"]["registry"]["watch"] == "connected"


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


def test_version_and_docs(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway_url}/version").json()["version"]
    assert httpx.get(f"{stack.gateway_url}/docs").status_code == 200
    spec = httpx.get(f"{stack.gateway_url}/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]
    assert "ChatCompletionRequest" in spec["components"]["schemas"]
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")


def test_docs_work_offline_with_bearer_auth_and_real_statuses(stack: Stack) -> None:
    page = httpx.get(f"{stack.gateway_url}/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith(("/docs/assets/", "/openapi.json")) for a in assets), assets
    for asset in assets:
        assert httpx.get(f"{stack.gateway_url}{asset}").status_code == 200, asset
    spec = httpx.get(f"{stack.gateway_url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        **spec["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    create = spec["paths"]["/api/v1/apikeys"]["post"]
    assert "201" in create["responses"] and {"400", "401", "403"} <= set(create["responses"])
    assert "max_budget" in create["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "201" in spec["paths"]["/api/v1/teams"]["post"]["responses"]
    assert "404" in spec["paths"]["/api/v1/teams/{team_id}"]["get"]["responses"]


def test_the_admin_ui_is_served_from_the_package_with_a_strict_policy(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway_url}/ui").headers["location"] == "/ui/"
    page = httpx.get(f"{stack.gateway_url}/ui/")
    assert page.status_code == 200 and "IIR admin" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "http" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{stack.gateway_url}/ui/app.js").headers["content-type"].startswith("text/javascript")
    for path in ("/ui/../settings.py", "/ui/%2e%2e%2fsettings.py", "/ui/nothing.js"):
        assert httpx.get(f"{stack.gateway_url}{path}").status_code == 404, path
    assert "https://" not in httpx.get(f"{stack.gateway_url}/ui/app.js").text  # nothing loaded from elsewhere


def test_logs_are_json_lines_with_the_request_id(stack: Stack, api_key: str) -> None:
    httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}", "X-Request-ID": "log-check-7"},
        json={"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "log"}]},
    )
    log_path = stack.processes["gateway"].log_path

    def logged() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        return [e for e in entries if e.get("request_id") == "log-check-7"]

    mine = wait_for(logged, timeout=3, interval=0.1)
    assert mine and mine[0]["status"] == 200 and mine[0]["service"] == "gateway"
    assert api_key not in log_path.read_text()


def test_registry_status_and_refresh(stack: Stack, api_key: str) -> None:
    from tests.conftest import MASTER_KEY

    status = httpx.get(f"{stack.gateway_url}/v1/registry/status", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert status.status_code == 200
    body = status.json()
    assert body["source"] == "file" and body["nodes"] == [] and body["last_refresh"]
    pending = next(m for m in body["models"] if m["name"] == "local/pending")
    assert pending["phase"] == "Pending" and pending["endpoints"] == [] and pending["message"]
    ready = next(m for m in body["models"] if m["name"] == f"local/{SERVED}")
    assert ready["endpoints"][0]["ready"] is True and ready["source"] == "file"
    # Other keys see names and states, never endpoint URLs, pods or GPU nodes.
    public = httpx.get(f"{stack.gateway_url}/v1/registry/status", headers={"Authorization": f"Bearer {api_key}"})
    assert public.status_code == 200 and set(public.json()) == {"models"}
    model = next(m for m in public.json()["models"] if m["name"] == f"local/{SERVED}")
    assert model == {
        "name": f"local/{SERVED}",
        "provider": "local",
        "phase": "Ready",
        "replicas": model["replicas"],
        "ready_replicas": 1,
    }
    assert "127.0.0.1" not in public.text
    # Any key may ask for a re-list (at most every 10 s per gateway) and sees only the public view.
    for _ in range(3):
        public_refresh = httpx.post(
            f"{stack.gateway_url}/v1/registry/refresh", headers={"Authorization": f"Bearer {api_key}"}
        )
        assert public_refresh.status_code == 200 and "127.0.0.1" not in public_refresh.text
    ok = httpx.post(f"{stack.gateway_url}/v1/registry/refresh", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert ok.status_code == 200 and ok.json()["models"]
    assert httpx.get(f"{stack.gateway_url}/v1/registry/status").status_code == 401


def test_an_sdk_without_v1_in_its_base_url_is_told_what_to_set(stack: Stack, api_key: str) -> None:
    import openai

    client = openai.OpenAI(base_url=stack.gateway_url, api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missed:
        client.chat.completions.create(model="local/x", messages=[{"role": "user", "content": "hi"}])
    assert f"{stack.gateway_url}/v1" in missed.value.message and "/v1" in missed.value.message
