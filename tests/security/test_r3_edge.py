"""Issue 29, the edges of a `make dev` stack: a browser page on another site (or a DNS-rebinding one)
cannot drive key-less admin, forwarded requests are never key-less, `/health` details are for admins,
one reused dev admin key, no fixed secret behind an Ingress, batch counts kept while finalizing."""

from __future__ import annotations

import http.server
import io
import json
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from iir_dev import dev_key
from iir_dev.stack import Stack
from tests.browser import chromium
from tests.conftest import MASTER_KEY
from tests.integration.test_batches import chat_line, finished, jsonl
from tests.unit.test_deploy_chart import render_overlay
from tests.waiting import wait_for


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _port(stack: Stack) -> int:
    return int(stack.gateway_url.rsplit(":", 1)[1])


def _key_names(stack: Stack) -> set[str]:
    listed = httpx.get(f"{stack.gateway_url}/api/v1/apikeys", headers=bearer(MASTER_KEY))
    assert listed.status_code == 200
    return {k["name"] for k in listed.json()["data"]}


# Finding 8: `make dev`'s key-less admin path, driven by a browser.


def test_cross_site_and_rebinding_requests_get_no_keyless_admin(stack: Stack) -> None:
    url, port = stack.gateway_url, _port(stack)
    name = f"csrf-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": name, "admin": True})
    # What a page on http://evil.example sends with fetch(…, {mode: "no-cors"}) or a <form>: no preflight.
    simple = [
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
        {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"},  # no Fetch Metadata
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/x-www-form-urlencoded"},
        {"Origin": f"http://127.0.0.1:{port + 1}", "Sec-Fetch-Site": "same-site", "Content-Type": "text/plain"},
        {"Origin": "null", "Content-Type": "multipart/form-data; boundary=x"},
    ]
    for headers in simple:
        resp = httpx.post(f"{url}/api/v1/apikeys", content=body, headers=headers)
        assert resp.status_code in (401, 403, 415), (headers, resp.text)
    # Same origin, but a body a page may send anywhere: refused for its type.
    same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        resp = httpx.post(f"{url}/api/v1/apikeys", content=body, headers={**same, "Content-Type": kind})
        assert resp.status_code == 415, (kind, resp.text)
    # DNS rebinding: the page's origin resolves to 127.0.0.1, so the request names the attacker's host.
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}", f"localhost.evil:{port}"):
        rebound = httpx.get(f"{url}/api/v1/apikeys", headers={"Host": host, "Origin": f"http://{host}"})
        assert rebound.status_code == 403 and '"data"' not in rebound.text, (host, rebound.text)
        assert rebound.json()["error"]["code"] == "cross_site_refused"
        made = httpx.post(f"{url}/api/v1/apikeys", json={"name": name}, headers={"Host": host})
        assert made.status_code == 403, made.text
    assert name not in _key_names(stack)
    # The same origin on a loopback name still manages without a key, in JSON.
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        ok = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
        made = httpx.post(f"{url}/api/v1/apikeys", json={"name": name}, headers=ok)
        assert made.status_code == 201, made.text
        assert httpx.get(f"{url}/api/v1/apikeys", headers={"Host": host, "Sec-Fetch-Site": "same-origin"}).is_success
        revoked = httpx.post(f"{url}/api/v1/apikeys/{made.json()['id']}/revoke", headers=ok)  # no body, no type
        assert revoked.status_code == 200, revoked.text
    # A key is not something a page can send without a preflight: keyed admin is unchanged, JSON required.
    keyed = httpx.post(
        f"{url}/api/v1/apikeys", content=body, headers={**bearer(MASTER_KEY), "Content-Type": "text/plain"}
    )
    assert keyed.status_code == 415


@pytest.fixture
def attacker_site() -> Iterator[tuple[int, list[str]]]:
    """An http server for the attacker's page (its body set by the test); the port and the page."""
    page: list[str] = [""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = page[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], page
    server.shutdown()
    server.server_close()


def test_a_page_in_chromium_cannot_create_or_list_keys(stack: Stack, attacker_site: tuple[int, list[str]]) -> None:
    """The issue's reproduction: headless Chromium on a page of evil.example (resolved to this machine)."""
    port, page = attacker_site
    gateway = _port(stack)
    name = f"csrf-browser-{uuid.uuid4().hex[:8]}"
    page[0] = f"""<html><head><title>loading</title></head><body><script>
fetch("http://127.0.0.1:{gateway}/api/v1/apikeys", {{method: "POST", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "{name}", admin: true}})}})
  .then(() => {{ document.title = "sent"; }}, (e) => {{ document.title = "failed " + e; }});
</script></body></html>"""
    with chromium("--host-resolver-rules=MAP evil.example 127.0.0.1") as driver:
        driver.get(f"http://evil.example:{port}/")
        wait_for(lambda: driver.title != "loading", timeout=15, what="the page's request")
        assert driver.title == "sent", driver.title
        # DNS rebinding: evil.example now resolves to the gateway; its page reads the admin API same-origin.
        driver.get(f"http://evil.example:{gateway}/ui/")
        read = driver.execute_async_script(
            "const done = arguments[0];"
            "fetch('/api/v1/apikeys').then(async (r) => done([r.status, await r.text()]), (e) => done([0, String(e)]));"
        )
        assert read[0] == 403 and '"data"' not in read[1], read
        post = "{method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}"
        written = driver.execute_async_script(
            f"const done = arguments[0]; fetch('/api/v1/apikeys', {post})"
            ".then((r) => done(r.status), (e) => done(String(e)));"
        )
        assert written == 403, written
    assert name not in _key_names(stack)


def test_make_dev_reuses_one_admin_key(stack: Stack, tmp_path: Path) -> None:
    first = dev_key.admin_key(stack, tmp_path)
    path = tmp_path / dev_key.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_key.admin_key(stack, tmp_path) == first  # a second `make dev`: the same key, no new one
    info = httpx.get(f"{stack.gateway_url}/api/v1/key/info", headers=bearer(first)).json()
    assert info["admin"] is True
    revoked = httpx.delete(f"{stack.gateway_url}/api/v1/apikeys/{info['id']}", headers=bearer(MASTER_KEY))
    assert revoked.status_code == 200
    second = dev_key.admin_key(stack, tmp_path)  # a revoked key is replaced, and the new one kept
    assert second != first and path.read_text().strip() == second
    assert dev_key.admin_key(stack, tmp_path) == second


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_no_fixed_secret_behind_an_ingress(overlay: str) -> None:
    objs = render_overlay(overlay)
    kinds = {o["kind"] for o in objs}
    secrets = [o for o in objs if o["kind"] == "Secret" and (o.get("data") or o.get("stringData"))]
    if "Ingress" in kinds:  # reachable from the network: the operator brings every secret
        assert not secrets, [s["metadata"]["name"] for s in secrets]
    services = [o for o in objs if o["kind"] == "Service"]
    if secrets:  # fixed secrets: nothing exposes the gateway beyond the cluster
        assert "Ingress" not in kinds
        assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services)


# Finding 16 (parts).

FORWARDED = [
    {"X-Original-Forwarded-For": "127.0.0.1"},
    {"X-Envoy-External-Address": "127.0.0.1"},
    {"X-Envoy-Original-Path": "/api/v1/apikeys"},
    {"Via": "1.1 proxy"},
    {"X-Cluster-Client-IP": "127.0.0.1"},
    {"Forwarded-For": "127.0.0.1"},
    {"True-Client-IP": "127.0.0.1"},
    {"CF-Connecting-IP": "127.0.0.1"},
    {"CF-Connecting-IPv6": "::1"},
    {"Fastly-Client-IP": "127.0.0.1"},
    {"X-Client-IP": "127.0.0.1"},
    {"X-Forwarded": "for=127.0.0.1"},
    {"X-ProxyUser-Ip": "127.0.0.1"},
    {"X-Original-Host": "localhost"},
    {"X-Forwarded-Server": "localhost"},
    {"X-Forwarded-Proto": "http"},
    {"X-Real-IP": "127.0.0.1"},
    {"X_Forwarded_For": "127.0.0.1"},
    {"WL-Proxy-Client-IP": "127.0.0.1"},
    {"X-Coming-From": "127.0.0.1"},
]


def test_any_forwarding_header_ends_keyless_admin(stack: Stack) -> None:
    url = f"{stack.gateway_url}/api/v1/apikeys"
    for headers in FORWARDED:
        resp = httpx.get(url, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"]["code"] == "missing_api_key"
    assert httpx.get(url).status_code == 200  # loopback, nothing forwarded: the dev convenience stays


def test_health_details_are_for_admins(stack: Stack, api_key: str) -> None:
    url = f"{stack.gateway_url}/health"
    outside = {"X-Forwarded-For": "203.0.113.9"}  # a client behind the (trusted) proxy
    anyone = {"status", "redis_connected", "model_loaded", "version"}  # the task API's seed fields
    for headers in (outside, {**outside, **bearer(api_key)}, {"Host": "evil.example"}, bearer("iir-not-a-key")):
        resp = httpx.get(url, headers=headers)
        keyed = headers.get("Authorization") == f"Bearer {api_key}"  # what the key may call; no dependencies
        shown = anyone | ({"backend", "model", "available_models"} if keyed else set())
        assert resp.status_code == 200 and set(resp.json()) == shown, (headers, resp.text)
        assert resp.json()["status"] in ("ok", "degraded") and resp.json()["redis_connected"] is True
        ready = httpx.get(f"{url}/ready", headers=headers)  # how many keys are active: not for anyone
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}, (headers, ready.text)
    assert httpx.get(f"{url}/ready", headers={**outside, **bearer(MASTER_KEY)}).json()["cached_keys"] >= 1
    for headers in ({**outside, **bearer(MASTER_KEY)}, {}):  # an admin key; key-less admin from loopback
        report = httpx.get(url, headers=headers).json()
        assert report["dependencies"]["registry"]["models"] >= 1 and "latency_ms" in report["dependencies"]["redis"]


def test_batch_counts_stay_while_finalizing(stack: Stack, openai_client: openai.OpenAI, redis_url: str) -> None:
    lines = [chat_line(f"f-{i}", f"question {i}") for i in range(4)]
    uploaded = openai_client.files.create(file=("f.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert finished(openai_client, batch.id).request_counts.completed == 4  # type: ignore[union-attr]
    # The batch object as the runner leaves it while it writes the output files: status `finalizing`,
    # the counts it had when it started; the line counts are in their own hash.
    r = redis.Redis.from_url(redis_url)
    key = f"{stack.env['IIR_REDIS_PREFIX']}batches:{batch.id}"
    record = json.loads(r.get(key))  # type: ignore[arg-type]
    record["batch"] |= {
        "status": "finalizing",
        "completed_at": None,
        "output_file_id": None,
        "request_counts": {"total": 4, "completed": 0, "failed": 0},
    }
    r.set(key, json.dumps(record), keepttl=True)
    # The line counts as they are until the final status is written (the runner drops them after).
    r.hset(f"{key}:counts", mapping={"completed": 4, "failed": 0})
    seen = openai_client.batches.retrieve(batch.id)
    assert seen.status == "finalizing"
    assert seen.request_counts.total == 4 and seen.request_counts.completed == 4  # type: ignore[union-attr]
