"""The Helm chart and the kustomize overlays: rendered with default and other values, linted, every object
validated against the Kubernetes schemas; the Dockerfile has a hardened target per service."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from iir_dev import kustomize_base
from iir_dev.helm import helm_env
from iir_gateway.cpus import WORKER_MIB
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


POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return values | dict(secret.get("stringData") or {})


def secret_refs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, str, str | None]]:
    """(workload, Secret, key) for every Secret key a pod needs to start: env `secretKeyRef`s, `envFrom`
    Secrets (key None: the whole Secret), secret and projected volumes (their items, else the whole Secret);
    those marked optional left out."""
    for obj in objs:
        if obj["kind"] not in POD_KINDS:
            continue
        where, spec = f"{obj['kind']}/{obj['metadata']['name']}", pod_spec(obj)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    yield where, ref["name"], ref["key"]
            for source in container.get("envFrom", []):
                ref = source.get("secretRef")
                if ref and not ref.get("optional"):
                    yield where, ref["name"], None
        for volume in spec.get("volumes", []):
            sources = [volume["secret"] | {"name": volume["secret"]["secretName"]}] if "secret" in volume else []
            sources += [s["secret"] for s in (volume.get("projected") or {}).get("sources", []) if "secret" in s]
            for source in sources:
                if not source.get("optional"):
                    for key in [item["key"] for item in source.get("items", [])] or [None]:
                        yield where, source["name"], key


def mounted_secret(workload: dict[str, Any], secrets: dict[str, dict[str, str]], path: str) -> str:
    """The value of the Secret key a container of `workload` reads at file `path`."""
    spec = pod_spec(workload)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in spec["containers"]:
        for mount in container.get("volumeMounts", []):
            if path.startswith(mount["mountPath"].rstrip("/") + "/") and "secret" in volumes[mount["name"]]:
                secret = volumes[mount["name"]]["secret"]
                file = path[len(mount["mountPath"].rstrip("/")) + 1 :]
                key = next((i["key"] for i in secret.get("items", []) if i["path"] == file), file)
                return secrets[secret["secretName"]][key]
    raise AssertionError(f"no Secret of {workload['metadata']['name']} is mounted at {path}")


def service_of(objs: list[dict[str, Any]], workload: dict[str, Any], port: int) -> str:
    """The name of the Service that sends `port` to `workload`'s pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    for name, service in by_kind(objs, "Service").items():
        selector = service["spec"].get("selector") or {}
        if selector and selector.items() <= labels.items() and port in [p["port"] for p in service["spec"]["ports"]]:
            return name
    raise AssertionError(f"no Service sends port {port} to {workload['metadata']['name']}")


def check_secrets_and_datastore_urls(objs: list[dict[str, Any]]) -> None:
    """Every Secret key a pod needs is there (a missing one leaves the pod in ContainerCreating), and the
    bundled Redis and PostgreSQL are reached by the URLs in the Secret: their Service, the password each
    server is started with, PostgreSQL's user and database."""
    secrets = {name: secret_values(obj) for name, obj in by_kind(objs, "Secret").items()}
    missing = [
        f"{where} needs {name}/{key or '*'}"
        for where, name, key in secret_refs(objs)
        if name not in secrets or (key is not None and key not in secrets[name])
    ]
    assert not missing, missing
    urls = secrets["iir-secrets"]
    statefulsets = by_kind(objs, "StatefulSet")

    redis = statefulsets["iir-redis"]
    started = re.search(r'--requirepass "\$\(cat ([^)"]+)\)"', " ".join(pod_spec(redis)["containers"][0]["command"]))
    assert started, "the bundled Redis is started without --requirepass"
    redis_url = urlsplit(urls["redis-url"])
    assert redis_url.password == mounted_secret(redis, secrets, started.group(1)), "redis-url lacks Redis's password"
    assert redis_url.hostname == service_of(objs, redis, redis_url.port or 6379)

    postgres = statefulsets["iir-postgresql"]
    env = env_of(postgres)
    database_url = urlsplit(urls["database-url"])
    assert database_url.password == mounted_secret(postgres, secrets, env["POSTGRES_PASSWORD_FILE"])
    assert (database_url.username, database_url.path) == (env["POSTGRES_USER"], f"/{env['POSTGRES_DB']}")
    assert database_url.hostname == service_of(objs, postgres, database_url.port or 5432)


def test_dev_overlay_secret_has_every_key_its_pods_use_and_reaches_the_datastores() -> None:
    check_secrets_and_datastore_urls(render_overlay("dev"))


def test_default_install_secret_has_every_key_its_pods_use_and_reaches_the_datastores(helm: str) -> None:
    check_secrets_and_datastore_urls(render(helm))


def test_the_readme_says_how_many_workers_the_charts_gateway_runs(helm: str) -> None:
    """`gateway.workers: 0` with the chart's default resources: one worker per CPU of the node (no CPU
    limit), at most one per WORKER_MIB of the memory limit (iir_gateway.cpus.auto_workers)."""
    gateway = by_kind(render(helm), "Deployment")["iir-gateway"]
    limits = pod_spec(gateway)["containers"][0]["resources"]["limits"]
    assert env_of(gateway)["IIR_GATEWAY_WORKERS"] == "0" and "cpu" not in limits
    memory = re.fullmatch(r"(\d+)Mi", limits["memory"])
    assert memory, limits
    cap = int(memory.group(1)) // WORKER_MIB
    said = " ".join((REPO / "README.md").read_text().split())
    sentence = said[said.index("`gateway.workers: 0`") :].split(". ", 1)[0]
    assert "the node's cores" in sentence and f"{cap} with the default {memory.group(1)} MiB" in sentence, sentence


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
