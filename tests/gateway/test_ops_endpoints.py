"""Health, version, docs, the admin UI, the registry's status and JSON logs with the request id (moved from
tests/integration/test_ops_endpoints.py; the metrics port's text stays there)."""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest

from tests.conftest import MASTER_KEY, SERVED
from tests.gateway.conftest import Gateway, logged_lines, openai_sdk
from tests.waiting import eventually


async def test_health_reports_each_dependency(gateway: Gateway) -> None:
    resp = await gateway.client.get("/health")
    assert resp.status_code == 200
    report = resp.json()
    assert report["status"] == "ok"
    assert set(report["dependencies"]) == {"auth", "registry", "classifier", "redis"}
    assert all(d["status"] == "ok" for d in report["dependencies"].values())
    assert report["dependencies"]["registry"]["watch"] == "connected"


async def test_version_and_docs(gateway: Gateway) -> None:
    client = gateway.client
    assert (await client.get("/version")).json()["version"]
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/chat/completions" in spec["paths"]
    assert "ChatCompletionRequest" in spec["components"]["schemas"]
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")


async def test_docs_work_offline_with_bearer_auth_and_real_statuses(gateway: Gateway) -> None:
    client = gateway.client
    docs = await client.get("/docs")
    page = docs.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith(("/docs/assets/", "/openapi.json")) for a in assets), assets
    for asset in assets:
        assert (await client.get(asset)).status_code == 200, asset
    # Its one inline script by hash, everything else from the gateway (tests/ui/test_api_docs.py renders it).
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy and "connect-src 'self'" in policy and "http" not in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    for path in ("/docs/assets/index.html", "/docs/assets/__init__.py", "/docs/assets/%2e%2e%2fmain.py"):
        assert (await client.get(path)).status_code == 404, path
    spec = (await client.get("/openapi.json")).json()
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


async def test_the_admin_ui_is_served_from_the_package_with_a_strict_policy(gateway: Gateway) -> None:
    client = gateway.client
    assert (await client.get("/ui")).headers["location"] == "/ui/"
    page = await client.get("/ui/")
    assert page.status_code == 200 and "IIR admin" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "http" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/ui/app.js")).headers["content-type"].startswith("text/javascript")
    for path in ("/ui/../settings.py", "/ui/%2e%2e%2fsettings.py", "/ui/nothing.js"):
        assert (await client.get(path)).status_code == 404, path
    assert "https://" not in (await client.get("/ui/app.js")).text  # nothing loaded from elsewhere


async def test_logs_are_json_lines_with_the_request_id(gateway: Gateway, api_key: str) -> None:
    with logged_lines() as log:
        await gateway.client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}", "X-Request-ID": "log-check-7"},
            json={"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "log"}]},
        )

        def logged() -> list[dict[str, Any]]:
            entries = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
            return [e for e in entries if e.get("request_id") == "log-check-7"]

        mine = await eventually(logged, timeout=3)
    assert mine and mine[0]["status"] == 200 and mine[0]["service"] == "gateway"
    assert api_key not in log.getvalue()


async def test_registry_status_and_refresh(gateway: Gateway, api_key: str) -> None:
    client = gateway.client
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    plain = {"Authorization": f"Bearer {api_key}"}
    status = await client.get("/v1/registry/status", headers=admin)
    assert status.status_code == 200
    body = status.json()
    assert body["source"] == "file" and body["nodes"] == [] and body["last_refresh"]
    pending = next(m for m in body["models"] if m["name"] == "local/pending")
    assert pending["phase"] == "Pending" and pending["endpoints"] == [] and pending["message"]
    ready = next(m for m in body["models"] if m["name"] == f"local/{SERVED}")
    assert ready["endpoints"][0]["ready"] is True and ready["source"] == "file"
    # Other keys see names and states, never endpoint URLs, pods or GPU nodes.
    public = await client.get("/v1/registry/status", headers=plain)
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
        public_refresh = await client.post("/v1/registry/refresh", headers=plain)
        assert public_refresh.status_code == 200 and "127.0.0.1" not in public_refresh.text
    ok = await client.post("/v1/registry/refresh", headers=admin)
    assert ok.status_code == 200 and ok.json()["models"]
    assert (await client.get("/v1/registry/status")).status_code == 401


async def test_an_sdk_without_v1_in_its_base_url_is_told_what_to_set(gateway: Gateway, api_key: str) -> None:
    async with openai_sdk(gateway, api_key) as client:
        root = client.with_options(base_url="http://127.0.0.1")
        with pytest.raises(openai.NotFoundError) as missed:
            await root.chat.completions.create(model="local/x", messages=[{"role": "user", "content": "hi"}])
    assert "http://127.0.0.1/v1" in missed.value.message and "/v1" in missed.value.message
