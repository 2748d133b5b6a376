"""The rendered chart: who may reach each workload, a password on the bundled Redis, no API token where no
API is called, secrets as files, images by digest."""

from __future__ import annotations

from typing import Any

from tests.json_values import json_object
from tests.unit.test_deploy_chart import by_kind, render, validate_all

API_CALLERS = {"iir-registry", "iir-operator"}  # the only pods that talk to the Kubernetes API


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    return json_object(obj["spec"]["template"]["spec"])


def test_network_policies_admit_only_who_needs_each_workload(helm: str) -> None:
    objs = render(helm)
    validate_all(objs)
    policies = by_kind(objs, "NetworkPolicy")
    assert set(policies) == {
        "iir-gateway",
        "iir-auth",
        "iir-registry",
        "iir-classifier",
        "iir-postgresql",
        "iir-redis",
        "iir-operator",
    }
    assert policies["iir-operator"]["spec"]["ingress"] == []
    gw = policies["iir-gateway"]["spec"]["ingress"]
    assert gw[0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert gw[0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert gw[1]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert gw[1]["ports"] == [{"port": "metrics", "protocol": "TCP"}]

    def pods(component: str) -> dict[str, object]:
        return {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": component, "app.kubernetes.io/instance": "iir"}}
        }

    for name in ("iir-auth", "iir-registry", "iir-classifier"):
        (rule,) = policies[name]["spec"]["ingress"]
        # The registry also takes the operator (its autoscaler follows the Watch); nothing else reaches them.
        callers = [pods("iir-gateway"), pods("iir-operator")] if name == "iir-registry" else [pods("iir-gateway")]
        assert rule["from"] == callers
    for name in ("iir-postgresql", "iir-redis"):
        (rule,) = policies[name]["spec"]["ingress"]
        assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/part-of"] == "iir"
    assert not by_kind(render(helm, {"networkPolicy.enabled": "false"}), "NetworkPolicy")


def test_bundled_redis_needs_a_password_and_services_use_it(helm: str) -> None:
    objs = render(helm)
    redis = by_kind(objs, "StatefulSet")["iir-redis"]
    container = _pod(redis)["containers"][0]
    assert '--requirepass "$(cat /run/secrets/iir/redis-password)"' in container["command"][2]
    secret = by_kind(objs, "Secret")["iir-secrets"]["stringData"]
    assert len(secret["redis-password"]) >= 32
    assert secret["redis-url"].startswith(f"redis://:{secret['redis-password']}@iir-redis:6379")


def test_tokens_and_secrets_are_mounted_only_where_needed(helm: str) -> None:
    objs = render(helm)
    workloads = {**by_kind(objs, "Deployment"), **by_kind(objs, "StatefulSet")}
    for name, obj in workloads.items():
        pod = _pod(obj)
        account = by_kind(objs, "ServiceAccount").get(pod.get("serviceAccountName", ""), {})
        automount = pod.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
        assert automount is (name in API_CALLERS), name
        for container in pod["containers"]:
            env = container.get("env", [])
            assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env), name
            assert "envFrom" not in container, name
    gateway = _pod(workloads["iir-gateway"])["containers"][0]
    assert {"name": "secrets", "mountPath": "/var/run/secrets/iir", "readOnly": True} in gateway["volumeMounts"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def test_images_can_be_pinned_by_digest(helm: str) -> None:
    digest = "sha256:" + "ab" * 32
    objs = render(helm, {"image.digests.gateway": digest})
    images = {n: _pod(o)["containers"][0]["image"] for n, o in by_kind(objs, "Deployment").items()}
    assert images["iir-gateway"] == f"ghcr.io/iir-dev/iir-gateway@{digest}"
    assert images["iir-auth"].endswith(":0.1.0")
