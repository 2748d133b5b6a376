"""The CRDs, the examples and every object the operator builds are valid Kubernetes (the chart and the
kustomize overlays: test_deploy_chart.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from iir_common.gpus import GpuNode
from iir_dev import real_vllm
from iir_operator.manifests import DEFAULT_VLLM_IMAGE, SPEC_OWNED, build_deployment, build_service, stale_patch
from iir_operator.plan import plan_model
from tests.crd_validation import crd, validate_resource

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"
NODES = [
    GpuNode("gpu-a", "NVIDIA-A100-SXM4-80GB", 80, 8, 8),
    GpuNode("gpu-b", "NVIDIA-L4", 22.5, 4, 4),
    GpuNode("gpu-c", "NVIDIA-A10G", 24, 4, 4),
]


def docs(folder: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((DEPLOY / folder).glob("*.yaml")):
        out += [(f"{path.name}#{i}", d) for i, d in enumerate(yaml.safe_load_all(path.read_text())) if d]
    return out


BUILTIN = docs("crds")
EXAMPLES = docs("examples")
DEV_MODELS = [(n, d) for n, d in docs("dev") if d.get("kind") == "InferenceModel"]  # `make dev`'s models file


@pytest.mark.parametrize(("name", "doc"), BUILTIN, ids=[n for n, _ in BUILTIN])
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("name", "doc"), EXAMPLES + DEV_MODELS, ids=[n for n, _ in EXAMPLES + DEV_MODELS])
def test_example_matches_the_crd(name: str, doc: dict[str, Any]) -> None:
    assert doc["kind"] in ("InferenceModel", "InferenceAdapter")
    assert validate_resource(doc) == []


MODEL_EXAMPLES = [(n, d) for n, d in EXAMPLES if d["kind"] == "InferenceModel"]


@pytest.mark.parametrize(("name", "doc"), MODEL_EXAMPLES, ids=[n for n, _ in MODEL_EXAMPLES])
def test_operator_objects_are_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    im = copy.deepcopy(doc)
    im["metadata"]["uid"] = "0b0e5c3a-1111-2222-3333-444455556666"
    plan = plan_model(im["spec"], NODES, 80)
    assert plan.fit_problem is None, plan.fit_problem
    for obj in (build_deployment(im, plan, ["adapters-pvc"]), build_service(im, plan)):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _adapter(**spec_changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(next(d for _, d in EXAMPLES if d["kind"] == "InferenceAdapter"))
    doc["spec"].update(spec_changes)
    return doc


def _example(**spec_changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES[0][1])
    doc["spec"].update(spec_changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_example(source={"huggingFace": {"id": "a/b"}, "uri": "s3://bucket/model"}), "exactly one of"),
        (_example(source={}), "exactly one of"),
        (_example(gpusPerReplica=2, tensorParallelSize=4), "must not exceed spec.gpusPerReplica"),
        (_example(replicas=-1), "minimum"),
        (_example(vllm={"dtype": "float8"}), "is not one of"),
        (_example(vllm={"gpuMemoryUtilization": 1.5}), "maximum"),
        (_example(routing={"categories": ["gossip"]}), "is not one of"),
        (_example(source={"huggingFace": {"id": "no-slash"}}), "does not match"),
        ({**_example(), "metadata": {"name": "x" * 60, "namespace": "ml"}}, "at most 58 characters"),
        (_example(autoscaling={"minReplicas": 3, "maxReplicas": 2}), "must not exceed maxReplicas"),
        (_example(autoscaling={"minReplicas": 0}), "'maxReplicas' is a required property"),
        (_example(autoscaling={"maxReplicas": 2, "targetKVCacheUsage": 1.5}), "maximum"),
        (_example(lora={"maxLoras": 4, "maxCpuLoras": 2}), "at least maxLoras"),
        (_example(lora={"maxLoraRank": 12}), "is not one of"),
        (_example(podLabels={"iir.dev/model": "other"}), "must not set the operator's labels"),
        (_example(podLabels={"app.kubernetes.io/managed-by": "me"}), "must not set the operator's labels"),
        (_example(podLabels={"team": "not a label value"}), "does not match"),
        (_example(podAnnotations={"prometheus.io/scrape": "false"}), "must not set the operator's annotations"),
        (_example(podAnnotations={"iir.dev/spec-owned": "{}"}), "must not set the operator's annotations"),
        (_example(priorityClassName="High_Priority"), "does not match"),
        (_example(serviceAccountName="Reader"), "does not match"),
        (_example(imagePullSecrets=[{}]), "'name' is a required property"),
        (_example(imagePullSecrets=["creds"]), "is not of type 'object'"),
        (_adapter(source={"huggingFace": {"id": "a/b"}, "path": "/x"}), "exactly one of"),
        (_adapter(source={"path": "relative/dir"}), "does not match"),
        (_adapter(source={"pvc": {"claimName": "c", "path": "sql/../../etc"}}), "must not contain '..'"),
        (_adapter(source={"path": "/models/../etc"}), "must not contain '..'"),
        (_adapter(source={"pvc": {"claimName": "c", "path": "/abs"}}), "does not match"),
        (_adapter(baseModel="Not_A_Name"), "does not match"),
        ({**_adapter(), "spec": {"source": {"path": "/x"}}}, "'baseModel' is a required property"),
    ],
)
def test_bad_manifests_are_refused_with_a_clear_message(doc: dict[str, Any], message: str) -> None:
    errors = validate_resource(doc)
    assert errors and any(message in e for e in errors), errors


def test_vllm_replicas_drain_before_they_stop_and_rollouts_keep_capacity() -> None:
    im = copy.deepcopy(EXAMPLES[0][1])
    im["metadata"]["uid"] = "0b0e5c3a-1111-2222-3333-444455556666"
    im["spec"]["drainTimeoutSeconds"] = 300
    deployment = build_deployment(im, plan_model(im["spec"], NODES, 80))
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 330  # above the drain
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python3", "-c"] and command[-2:] == ["8000", "300"]
    del im["spec"]["drainTimeoutSeconds"]
    assert (
        build_deployment(im, plan_model(im["spec"], NODES, 80))["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        == 150
    )


POD_SETTINGS: dict[str, Any] = {
    "affinity": {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"iir.dev/model": "m"}}}
            ]
        }
    },
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "nodeSelector": {"pool": "inference"},
    "priorityClassName": "inference-high",
    "serviceAccountName": "vllm-reader",
    "imagePullSecrets": [{"name": "registry-creds"}],
    "podLabels": {"team": "search", "app.kubernetes.io/version": "3"},
    "podAnnotations": {"team.example.com/owner": "search"},
}


def test_pod_settings_are_accepted_and_make_valid_kubernetes() -> None:
    im = _example(**POD_SETTINGS)
    assert validate_resource(im) == []
    im["metadata"]["uid"] = "0b0e5c3a-1111-2222-3333-444455556666"
    deployment = build_deployment(im, plan_model(im["spec"], NODES, 80))
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    for field in ("affinity", "priorityClassName", "serviceAccountName", "imagePullSecrets"):
        assert pod[field] == POD_SETTINGS[field]
    assert pod["tolerations"][1:] == POD_SETTINGS["tolerations"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "search" and labels["app.kubernetes.io/version"] == "3"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["team.example.com/owner"] == "search"
    assert "team" not in deployment["metadata"]["labels"]  # the pods', not the Deployment's


def test_pod_labels_never_replace_the_operators_labels() -> None:
    """The CRD refuses them; a resource that got past it (an older CRD, the models file) cannot move the
    pods out of their Deployment's selector or the Service's either."""
    im = _example(podLabels={"iir.dev/model": "other", "app.kubernetes.io/managed-by": "me", "team": "a"})
    im["metadata"]["uid"] = "0b0e5c3a-1111-2222-3333-444455556666"
    name = im["metadata"]["name"]
    plan = plan_model(im["spec"], NODES, 80)
    deployment = build_deployment(im, plan)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["iir.dev/model"] == name and labels["app.kubernetes.io/managed-by"] == "iir-operator"
    assert deployment["spec"]["selector"] == {"matchLabels": {"iir.dev/model": name}}
    assert build_service(im, plan)["spec"]["selector"] == {"iir.dev/model": name}


def _deployment(**spec_changes: Any) -> dict[str, Any]:
    im = _example(**spec_changes)
    im["metadata"]["uid"] = "0b0e5c3a-1111-2222-3333-444455556666"
    return build_deployment(im, plan_model(im["spec"], NODES, 80))


def test_a_dropped_pod_setting_is_removed_and_what_others_added_is_kept() -> None:
    before = _deployment(**POD_SETTINGS)
    existing = copy.deepcopy(before)
    pod = existing["spec"]["template"]["spec"]
    pod["serviceAccount"] = pod["serviceAccountName"]  # the deprecated alias the API server adds
    pod["schedulerName"] = "from-a-webhook"
    assert stale_patch(before, existing) == {}
    patch = stale_patch(_deployment(**{k: v for k, v in POD_SETTINGS.items() if k != "serviceAccountName"}), existing)
    assert patch["spec"]["template"]["spec"] == {"serviceAccountName": None, "serviceAccount": None}
    # Nothing the spec gave any more: every such field, label and annotation goes.
    patch = stale_patch(_deployment(), existing)
    template = patch["spec"]["template"]
    assert template["metadata"] == {
        "labels": {"team": None, "app.kubernetes.io/version": None},
        "annotations": {"team.example.com/owner": None},
    }
    assert template["spec"]["nodeSelector"] == {"pool": None}
    assert set(template["spec"]) == {
        "nodeSelector",
        "affinity",
        "priorityClassName",
        "serviceAccountName",
        "serviceAccount",
        "imagePullSecrets",
    }
    assert "schedulerName" not in template["spec"]
    assert SPEC_OWNED in _deployment()["metadata"]["annotations"]  # the GPU product label is the operator's too
    # Nothing recorded any more (no GPU product either): the record goes too.
    bare = _deployment()
    del bare["metadata"]["annotations"], bare["spec"]["template"]["spec"]["nodeSelector"]
    patch = stale_patch(bare, existing)
    assert patch["metadata"] == {"annotations": {SPEC_OWNED: None}}
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": None, "pool": None}
    # A Deployment that never had the record (made before it existed) loses nothing.
    del existing["metadata"]["annotations"]
    assert stale_patch(_deployment(), existing) == {}


def test_an_affinity_changes_whole() -> None:
    zone: dict[str, Any] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
    }
    existing = _deployment(affinity={**POD_SETTINGS["affinity"], **zone})
    patch = stale_patch(_deployment(affinity=zone), existing)
    assert patch["spec"]["template"]["spec"] == {"affinity": {"podAntiAffinity": None}}


def test_the_default_vllm_image_is_the_release_the_repository_tests() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["vllm"]["properties"]["image"]["default"] == DEFAULT_VLLM_IMAGE
    tested = real_vllm.VLLM.split("==")[1]  # the vLLM `make test-vllm` runs
    assert DEFAULT_VLLM_IMAGE == f"vllm/vllm-openai:v{tested}"
    im = _example()
    im["spec"].pop("vllm", None)
    im["metadata"]["uid"] = "u"
    assert (
        build_deployment(im, plan_model(im["spec"], NODES, 80))["spec"]["template"]["spec"]["containers"][0]["image"]
        == DEFAULT_VLLM_IMAGE
    )


def test_the_readmes_pod_settings_example_is_a_valid_spec() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    snippet = next(yaml.safe_load(b) for b in blocks if "podLabels:" in b)
    im = _example(**snippet["spec"])
    assert validate_resource(im) == []
    im["metadata"]["uid"] = "0b0e5c3a-1111-2222-3333-444455556666"
    kubernetes_validate.validate(build_deployment(im, plan_model(im["spec"], NODES, 80)), K8S_VERSION, strict=True)
