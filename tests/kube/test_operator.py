"""The operator end to end against the API emulator: resources built, status followed, drift repaired."""

from __future__ import annotations

from typing import Any

import kmock

from iir_common.kube import PLURAL, Kube
from tests.kube.conftest import A100, gpu_node, inference_model, pod
from tests.waiting import eventually

NS = "ml"


async def status_of(kube: Kube, name: str) -> dict[str, Any]:
    im = await kube.get(PLURAL, NS, name)
    return (im or {}).get("status") or {}


async def phase_is(kube: Kube, name: str, phase: str, reason: str | None = None) -> dict[str, Any] | None:
    status = await status_of(kube, name)
    if status.get("phase") == phase and (reason is None or status.get("reason") == reason):
        return status
    return None


async def events_for(kube: Kube, name: str) -> list[dict[str, Any]]:
    events, _ = await kube.list("events", NS)
    return [e for e in events if (e.get("involvedObject") or {}).get("name") == name]


async def test_model_becomes_deployment_service_and_ready(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(
        PLURAL,
        NS,
        inference_model(
            "llama",
            gpusPerReplica=2,
            gpu={"product": A100},
            tensorParallelSize=2,
            vllm={"maxModelLen": 8192},
            huggingFaceTokenSecret={"name": "hf"},
        ),
    )
    dep = await eventually(lambda: kube.get("deployments", NS, "iir-llama"))
    pod_spec = dep["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": A100}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod_spec["volumes"])  # /dev/shm
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    args = container["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--served-model-name") + 1] == "llama"
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in container["env"]
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "InferenceModel"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-llama"
    svc = await kube.get("services", NS, "iir-llama")
    assert svc is not None
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["spec"]["selector"] == {"iir.dev/model": "llama"}
    assert svc["metadata"]["ownerReferences"][0]["name"] == "llama"
    status = await eventually(lambda: phase_is(kube, "llama", "Progressing"))
    assert status["gpusPerReplica"] == 2

    await kube.create("pods", NS, pod("llama", 0))
    status = await eventually(lambda: phase_is(kube, "llama", "Ready"))
    assert status["readyReplicas"] == 1
    assert status["endpoints"] == [{"url": "http://10.0.0.10:8000", "ready": True, "target": "iir-llama-0"}]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastTransitionTime"]
    reasons = {e["reason"] for e in await eventually(lambda: events_for(kube, "llama"))}
    assert "DeploymentCreated" in reasons


async def test_scale_degraded_then_ready(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model("scaled", gpusPerReplica=1))
    await eventually(lambda: kube.get("deployments", NS, "iir-scaled"))
    await kube.create("pods", NS, pod("scaled", 0))
    await eventually(lambda: phase_is(kube, "scaled", "Ready"))
    await kube.merge_patch(PLURAL, NS, "scaled", {"spec": {"replicas": 2}})
    await eventually(lambda: _replicas_are(kube, "iir-scaled", 2))
    status = await eventually(lambda: phase_is(kube, "scaled", "Degraded"))
    assert status["message"] == "1/2 replicas ready"
    await kube.create("pods", NS, pod("scaled", 1))
    status = await eventually(lambda: phase_is(kube, "scaled", "Ready"))
    assert status["readyReplicas"] == 2 and len(status["endpoints"]) == 2


async def _replicas_are(kube: Kube, name: str, n: int) -> bool:
    dep = await kube.get("deployments", NS, name)
    return bool(dep and dep["spec"]["replicas"] == n)


async def test_drift_is_repaired(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model("drift", gpusPerReplica=1))
    dep = await eventually(lambda: kube.get("deployments", NS, "iir-drift"))
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    tampered = dep["spec"]["template"]["spec"]["containers"][0] | {"image": "evil:latest"}
    await kube.merge_patch(
        "deployments", NS, "iir-drift", {"spec": {"replicas": 5, "template": {"spec": {"containers": [tampered]}}}}
    )

    async def restored() -> bool:
        d = await kube.get("deployments", NS, "iir-drift")
        container = d["spec"]["template"]["spec"]["containers"][0] if d else {}
        return bool(d and d["spec"]["replicas"] == 1 and container["image"] == image)

    await eventually(restored)
    await kube.delete("deployments", NS, "iir-drift")
    await eventually(lambda: kube.get("deployments", NS, "iir-drift"))  # re-created
    await kube.delete("services", NS, "iir-drift")
    await eventually(lambda: kube.get("services", NS, "iir-drift"))


async def test_auto_sizing_picks_gpus_from_product_memory(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a", product=A100, gpus=8))
    await kube.create(
        PLURAL,
        NS,
        inference_model(
            "big", source={"huggingFace": {"id": "meta-llama/Llama-3.3-70B-Instruct"}}, gpu={"product": A100}
        ),
    )
    dep = await eventually(lambda: kube.get("deployments", NS, "iir-big"))
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    status = await eventually(lambda: phase_is(kube, "big", "Progressing"))
    assert status["gpusPerReplica"] == 4 and status["sizing"]["gpuMemoryGiB"] == 80


async def test_model_that_fits_no_node_is_pending_insufficient_gpu(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("l4-node", product="NVIDIA-L4", gpus=1, memory_mib=23034))
    await kube.create(
        PLURAL, NS, inference_model("huge", source={"huggingFace": {"id": "meta-llama/Llama-3.1-70B-Instruct"}})
    )
    status = await eventually(lambda: phase_is(kube, "huge", "Pending", "InsufficientGPU"))
    assert await kube.get("deployments", NS, "iir-huge")  # created anyway: a cluster autoscaler acts on pending pods
    assert "largest GPU node, l4-node, offers 1× NVIDIA-L4 (22 GiB each)" in status["message"]
    assert "needs 16× GPU per replica" in status["message"]
    capacity = next(c for c in status["conditions"] if c["type"] == "GPUCapacity")
    assert capacity["status"] == "False" and capacity["reason"] == "InsufficientGPU"
    events = await eventually(lambda: events_for(kube, "huge"))
    assert any(e["reason"] == "InsufficientGPU" and e["type"] == "Warning" for e in events)
    # A big enough node joins: the model is re-planned without any edit.
    await kube.create("nodes", None, gpu_node("h200-node", product="NVIDIA-H200", gpus=8))
    status = await eventually(lambda: phase_is(kube, "huge", "Progressing"))
    assert status["gpusPerReplica"] == 2  # sized on the H200s (141 GiB) now


async def test_bad_spec_fails_without_crashing_the_operator(kube: Kube, operator: None) -> None:
    await kube.create(PLURAL, NS, inference_model("mystery", source={"huggingFace": {"id": "acme/unknown-model"}}))
    status = await eventually(lambda: phase_is(kube, "mystery", "Failed", "InvalidSpec"))
    assert "spec.sizing.parametersBillions" in status["message"]
    assert await kube.get("deployments", NS, "iir-mystery") is None
    events = await eventually(lambda: events_for(kube, "mystery"))
    assert any(e["reason"] == "InvalidSpec" for e in events)
    # The operator goes on serving other models; a fixed spec recovers.
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.merge_patch(PLURAL, NS, "mystery", {"spec": {"sizing": {"parametersBillions": 3}}})
    await eventually(lambda: kube.get("deployments", NS, "iir-mystery"))
    await eventually(lambda: phase_is(kube, "mystery", "Progressing"))


async def test_crashing_pod_sets_failed_with_its_reason(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model("crashy", gpusPerReplica=1))
    await eventually(lambda: kube.get("deployments", NS, "iir-crashy"))
    await kube.create(
        "pods",
        NS,
        pod("crashy", 0, ready=False, waiting=("CrashLoopBackOff", "back-off 5m0s restarting failed container")),
    )
    status = await eventually(lambda: phase_is(kube, "crashy", "Failed"))
    assert status["reason"] == "CrashLoopBackOff"
    assert "pod iir-crashy-0: CrashLoopBackOff" in status["message"]


async def test_deleting_the_model_leaves_owned_objects_to_garbage_collection(
    kube: Kube, operator: None, apiserver: kmock.KubernetesEmulator
) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model("gone", gpusPerReplica=1))
    dep = await eventually(lambda: kube.get("deployments", NS, "iir-gone"))
    im = await kube.get(PLURAL, NS, "gone")
    assert im is not None
    assert not (im["metadata"].get("finalizers") or [])  # owner references suffice; no finalizer to block delete
    owner = dep["metadata"]["ownerReferences"][0]
    assert owner["controller"] and owner["blockOwnerDeletion"] and owner["uid"] == "uid-gone"
    await kube.delete(PLURAL, NS, "gone")
    assert await kube.get(PLURAL, NS, "gone") is None


POD_SETTINGS: dict[str, Any] = {
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"iir.dev/model": "tuned"}},
                    },
                }
            ]
        },
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        },
    },
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "nodeSelector": {"pool": "inference"},
    "priorityClassName": "inference-high",
    "imagePullSecrets": [{"name": "registry-creds"}],
    "serviceAccountName": "vllm-reader",
    "podAnnotations": {"team.example.com/owner": "search", "prometheus.io/scrape": "false"},
    # The CRD refuses the operator's own keys; the operator keeps its own all the same.
    "podLabels": {"team": "search", "iir.dev/model": "someone-else", "app.kubernetes.io/name": "x"},
}


async def test_pod_settings_reach_the_pod_template_and_leave_with_the_spec(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model("tuned", gpusPerReplica=1, gpu={"product": A100}, **POD_SETTINGS))
    dep = await eventually(lambda: kube.get("deployments", NS, "iir-tuned"))
    template = dep["spec"]["template"]
    pod_spec = template["spec"]
    assert pod_spec["affinity"] == POD_SETTINGS["affinity"]
    assert pod_spec["priorityClassName"] == "inference-high"
    assert pod_spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod_spec["serviceAccountName"] == "vllm-reader"
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": A100, "pool": "inference"}
    assert pod_spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        *POD_SETTINGS["tolerations"],
    ]
    labels, annotations = template["metadata"]["labels"], template["metadata"]["annotations"]
    assert labels["team"] == "search"
    # The selector and the operator's labels hold: podLabels cannot take the pods out of their Deployment.
    assert labels["iir.dev/model"] == "tuned" and labels["app.kubernetes.io/name"] == "vllm"
    assert dep["spec"]["selector"] == {"matchLabels": {"iir.dev/model": "tuned"}}
    assert annotations["team.example.com/owner"] == "search" and annotations["prometheus.io/scrape"] == "true"
    svc = await kube.get("services", NS, "iir-tuned")
    assert svc is not None and svc["spec"]["selector"] == {"iir.dev/model": "tuned"}
    assert "team" not in svc["metadata"]["labels"]

    # Something else annotates the template (as `kubectl rollout restart` does): the operator leaves it.
    restarted = {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    await kube.merge_patch(
        "deployments", NS, "iir-tuned", {"spec": {"template": {"metadata": {"annotations": restarted}}}}
    )
    # Dropped from the spec, gone from the pods; changed, changed whole (no podAntiAffinity left over).
    await kube.merge_patch(
        PLURAL,
        NS,
        "tuned",
        {
            "spec": {
                "affinity": {"podAntiAffinity": None},
                "priorityClassName": None,
                "serviceAccountName": None,
                "imagePullSecrets": [{"name": "other-creds"}],
                "nodeSelector": None,
                "podLabels": {"team": None, "tier": "gold"},
                "podAnnotations": None,
            }
        },
    )

    async def followed() -> dict[str, Any] | None:
        d = await kube.get("deployments", NS, "iir-tuned")
        tpl = (d or {}).get("spec", {}).get("template", {})
        spec = tpl.get("spec", {})
        if d and "priorityClassName" not in spec and "team" not in tpl["metadata"]["labels"]:
            return d
        return None

    dep = await eventually(followed)
    template = dep["spec"]["template"]
    pod_spec = template["spec"]
    assert pod_spec["affinity"] == {"nodeAffinity": POD_SETTINGS["affinity"]["nodeAffinity"]}
    assert "serviceAccountName" not in pod_spec and "serviceAccount" not in pod_spec
    assert pod_spec["imagePullSecrets"] == [{"name": "other-creds"}]
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": A100}
    assert (
        template["metadata"]["labels"]["tier"] == "gold" and template["metadata"]["labels"]["iir.dev/model"] == "tuned"
    )
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
        **restarted,
    }
