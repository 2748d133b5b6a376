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
from iir_operator.manifests import build_deployment, build_service
from iir_operator.plan import plan_model
from tests.crd_validation import validate_resource

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
