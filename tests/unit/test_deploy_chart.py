"""The Helm chart and the kustomize overlays: rendered with default and other values, linted, every object
validated against the Kubernetes schemas; the Dockerfile has a hardened target per service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from iir_dev import kustomize_base
from iir_dev.helm import helm_env
from tests.waiting import unavailable

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "iir"
K8S_VERSION = "1.30.0"
# Kinds of CRDs the schemas do not know: checked for shape only.
CUSTOM = {"ClusterKopfPeering", "ServiceMonitor"}
OTHER_VALUES = {
    "image.tag": "1.2.3",
    "gateway.ingress.host": "llm.example.com",
    "gateway.autoscaling.enabled": "false",
    "gateway.replicas": "3",
    "gateway.workers": "4",
    "gateway.podDisruptionBudget.enabled": "false",
    "database.url": "postgresql://iir:pw@db.internal:5432/iir",
    "redis.existingSecret": "my-redis",
    "masterKey.existingSecret": "my-master",
    "providers.apiKeys.ANTHROPIC_API_KEY": "sk-ant-x",
    "providers.config.providers.anthropic.models[0]": "claude-sonnet-4-5",
    "routing.policies.auto.default": "anthropic/claude-sonnet-4-5",
    "serviceMonitor.enabled": "true",
    "operator.enabled": "false",
    "otel.endpoint": "http://otel-collector:4318",
    "registry.watchNamespace": "ml",
    "grafanaDashboard.enabled": "false",
    "gateway.env.IIR_ENDPOINT_PICKER": "round_robin",
}


def render(helm: str, values: dict[str, str] | None = None, *extra: str) -> list[dict[str, Any]]:
    args = [a for k, v in (values or {}).items() for a in ("--set", f"{k}={v}")]
    out = subprocess.run(
        [helm, "template", "iir", str(CHART), "--namespace", "iir-system", "--include-crds", *args, *extra],
        capture_output=True,
        text=True,
        env=helm_env(),
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def validate_all(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        if obj["kind"] in CUSTOM:
            assert obj["apiVersion"] and obj["metadata"]["name"]
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {exc}") from None


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_lint_strict(helm: str) -> None:
    run = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, env=helm_env())
    assert run.returncode == 0, run.stdout + run.stderr


def test_default_install_is_complete_and_valid(helm: str) -> None:
    objs = render(helm)
    validate_all(objs)
    deployments = by_kind(objs, "Deployment")
    assert set(deployments) == {f"iir-{c}" for c in ("gateway", "auth", "classifier", "registry", "operator")}
    assert {"iir-gateway"} <= set(by_kind(objs, "Ingress")) and by_kind(objs, "HorizontalPodAutoscaler")
    # The bundled PostgreSQL and Redis keep their data on volumes; Redis with an append-only file and
    # noeviction, so queued jobs survive a restart and a full Redis refuses rather than drops.
    assert by_kind(objs, "PodDisruptionBudget") and set(by_kind(objs, "StatefulSet")) == {"iir-postgresql", "iir-redis"}
    redis_args = by_kind(objs, "StatefulSet")["iir-redis"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert redis_args[redis_args.index("--maxmemory-policy") + 1] == "noeviction"
    crds = {"inferencemodels.iir.dev", "inferenceadapters.iir.dev", "clusterkopfpeerings.kopf.dev"}
    assert set(by_kind(objs, "CustomResourceDefinition")) == crds
    assert set(by_kind(objs, "ClusterRole")) == {"iir-registry", "iir-operator"}
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"], name
        container = pod["containers"][0]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert "readinessProbe" in container or name == "iir-operator", name
    gateway = env_of(deployments["iir-gateway"])
    assert gateway["IIR_AUTH_ADDR"] == "iir-auth:50051" and gateway["IIR_REGISTRY_ADDR"] == "iir-registry:50052"
    secret = by_kind(objs, "Secret")["iir-secrets"]["stringData"]
    assert secret["master-key"].startswith("iir-admin-") and "@iir-postgresql:5432/iir" in secret["database-url"]
    dashboard = by_kind(objs, "ConfigMap")["iir-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["iir-overview.json"])["uid"] == "iir-overview"


def test_other_values_are_honoured_and_valid(helm: str) -> None:
    objs = render(helm, OTHER_VALUES)
    validate_all(objs)
    deployments = by_kind(objs, "Deployment")
    assert "iir-operator" not in deployments and "iir-redis" not in deployments and not by_kind(objs, "StatefulSet")
    assert not by_kind(objs, "HorizontalPodAutoscaler") and not by_kind(objs, "PodDisruptionBudget")
    gw = deployments["iir-gateway"]
    assert (
        gw["spec"]["replicas"] == 3
        and gw["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/iir-dev/iir-gateway:1.2.3"
    )
    env = env_of(gw)
    assert env["IIR_GATEWAY_WORKERS"] == "4" and env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["IIR_REDIS_URL_FILE"] == "/var/run/secrets/iir/redis-url"
    assert env["IIR_ENDPOINT_PICKER"] == "round_robin"
    volumes = {v["name"]: v for v in gw["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["projected"]["sources"][0]["secret"]["name"] == "my-redis"
    assert volumes["provider-keys"]["secret"]["secretName"] == "iir-provider-keys"
    assert env["IIR_PROVIDER_KEYS_DIR"] == "/var/run/secrets/iir/providers"
    assert by_kind(objs, "Secret")["iir-provider-keys"]["stringData"] == {"ANTHROPIC_API_KEY": "sk-ant-x"}
    auth_sources = deployments["iir-auth"]["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert {"name": "my-master", "items": [{"key": "master-key", "path": "master-key"}]} in [
        s["secret"] for s in auth_sources
    ]
    assert env_of(deployments["iir-registry"])["IIR_REGISTRY_NAMESPACE"] == "ml"
    config = by_kind(objs, "ConfigMap")["iir-config"]["data"]
    assert yaml.safe_load(config["providers.yaml"]) == {"providers": {"anthropic": {"models": ["claude-sonnet-4-5"]}}}
    assert yaml.safe_load(config["routing.yaml"])["policies"]["auto"]["default"] == "anthropic/claude-sonnet-4-5"
    assert by_kind(objs, "Ingress")["iir-gateway"]["spec"]["rules"][0]["host"] == "llm.example.com"
    assert by_kind(objs, "ServiceMonitor")["iir-gateway"]["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway.replicas": "-1"}, "minimum"),
        ({"gateway.service.type": "Magic"}, "gateway/service/type"),
        ({"colour": "red"}, "colour"),
        ({"providers.apiKeys.lower-case": "x"}, "lower-case"),
    ],
)
def test_values_schema_refuses_bad_values(helm: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as exc:
        render(helm, values)
    assert message in exc.value.stderr


def test_kustomize_base_is_rendered_from_the_chart(helm: str) -> None:
    for path, content in kustomize_base.render().items():
        assert (REPO / "deploy" / "kustomize" / path).read_text() == content, f"{path} is stale: run `make kustomize`"


def render_overlay(overlay: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for an overlay, each validated (skipped without kubectl)."""
    if not shutil.which("kubectl"):
        unavailable("kubectl is not installed: kustomize overlays not rendered")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy" / "kustomize" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    validate_all(objs)
    return objs


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kustomize_overlays_render_valid_objects(overlay: str) -> None:
    objs = render_overlay(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ClusterRole", "CustomResourceDefinition", "ConfigMap"} <= kinds
    if overlay == "dev":  # its fixed dev secrets are not exposed: no Ingress (tests/security/test_r3_edge.py)
        assert "Secret" in kinds and "StatefulSet" in kinds and "HorizontalPodAutoscaler" not in kinds
        assert "Ingress" not in kinds
    else:
        assert by_kind(objs, "HorizontalPodAutoscaler")["iir-gateway"]["spec"]["minReplicas"] == 3
        assert "Ingress" in kinds


def test_dockerfile_has_a_hardened_target_per_service() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = {stage: parent for parent, stage in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)}
    for service in ("gateway", "auth", "classifier", "registry", "operator", "simbackend"):
        assert stages.get(service) == "runtime", service
        block = text.split(f" AS {service}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "HEALTHCHECK" in block and "CMD [" in block, service
    runtime = text.split(" AS runtime\n", 1)[1].split("\nFROM ", 1)[0]
    assert "USER 10001" in runtime and "torch" not in runtime
    assert "services/classifier/model" in (REPO / ".dockerignore").read_text()


PRODUCTION = REPO / "deploy" / "examples" / "values" / "production.yaml"


def test_production_values_render_every_pod_option_and_validate(helm: str) -> None:
    objs = render(helm, None, "-f", str(PRODUCTION))
    validate_all(objs)
    deployments = by_kind(objs, "Deployment")
    assert {"iir-gateway", "iir-auth", "iir-classifier", "iir-registry", "iir-operator"} <= set(deployments)
    assert "iir-postgresql" not in by_kind(objs, "StatefulSet") and "iir-secrets" not in by_kind(objs, "Secret")
    gw = deployments["iir-gateway"]["spec"]["template"]
    spec, container = gw["spec"], gw["spec"]["containers"][0]
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/ingress-tier": "true"}
    assert spec["tolerations"][0]["value"] == "gateway" and spec["priorityClassName"] == "iir-critical"
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert "podAntiAffinity" in spec["affinity"]
    assert gw["metadata"]["labels"]["team"] == "platform"
    assert gw["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"
    assert "checksum/config" in gw["metadata"]["annotations"]  # the chart's own annotations stay
    assert container["envFrom"] == [{"secretRef": {"name": "iir-provider-keys"}}]
    assert env_of(deployments["iir-gateway"])["IIR_LOG_LEVEL"] == "info"
    assert {"name": "ca-bundle", "configMap": {"name": "corporate-ca"}} in spec["volumes"]
    assert any(m["name"] == "ca-bundle" for m in container["volumeMounts"])
    accounts = by_kind(objs, "ServiceAccount")
    assert accounts["iir-gateway"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("iir-gateway")
    assert "iam.gke.io/gcp-service-account" in accounts["iir-registry"]["metadata"]["annotations"]
    auth = deployments["iir-auth"]
    assert env_of(auth)["IIR_SPEND_RETENTION_DAYS"] == "730"
    assert auth["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    registry = deployments["iir-registry"]["spec"]["template"]["spec"]
    assert registry["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    operator = deployments["iir-operator"]["spec"]["template"]
    assert operator["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    assert operator["spec"]["containers"][0]["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert operator["metadata"]["annotations"] == {"example.com/owner": "platform"}


@pytest.mark.parametrize(
    "values",
    [
        {"gateway.extraEnv[0].value": "no-name"},
        {"auth.extraVolumeMounts[0].name": "no-path"},
        {"registry.priorityClassName": "{}"},
        {"operator.serviceAccount.colour": "red"},
    ],
)
def test_values_schema_refuses_bad_pod_options(helm: str, values: dict[str, str]) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        render(helm, values)


def test_gitops_renders_are_stable_or_fail_clearly(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        subprocess.run(
            [helm, "template", "iir", str(CHART), "--set", "requireSecrets=true"],
            capture_output=True,
            text=True,
            env=helm_env(),
            check=True,
        )
    assert "masterKey.value" in refused.value.stderr and "bundled.postgresql.password" in refused.value.stderr
    given = {
        "requireSecrets": "true",
        "masterKey.value": "iir-admin-fixed",
        "bundled.postgresql.password": "pg-fixed",
        "bundled.redis.password": "redis-fixed",
    }
    assert render(helm, given) == render(helm, given)  # nothing random: Argo CD and Flux see no drift
    secret = by_kind(render(helm, given), "Secret")["iir-secrets"]
    assert (
        "pg-fixed" in secret["stringData"]["database-url"] and secret["stringData"]["master-key"] == "iir-admin-fixed"
    )
    assert render(helm, None, "-f", str(PRODUCTION)) == render(helm, None, "-f", str(PRODUCTION))
