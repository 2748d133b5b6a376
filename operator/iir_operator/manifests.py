"""The Deployment and Service the operator owns for each InferenceModel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from iir_common.gpus import PRODUCT_LABEL
from iir_common.inference_adapter import ADAPTERS_DIR
from iir_common.inference_model import InferenceModelView
from iir_common.kube import GPU_RESOURCE, GROUP, KIND, MANAGED_BY, MODEL_LABEL, VERSION, service_name
from iir_operator.drain import pre_stop
from iir_operator.plan import Plan

Obj = dict[str, Any]
MODEL_DIR = "/models"
CACHE_DIR = "/cache"
DEFAULT_DRAIN_S = 120  # spec.drainTimeoutSeconds when unset
# spec.vllm.image when unset (the CRD's default too): the vLLM release the repository tests against.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
# vLLM's KV event sockets (PUB and its replay ROUTER), on named ports the registry finds in the EndpointSlices.
KV_EVENTS_PORT, KV_REPLAY_PORT = 5557, 5558
KV_EVENTS_TOPIC = "kv-events"


# Pod spec fields the InferenceModel spec passes through as they are (the names are PodSpec's).
POD_SPEC_FIELDS = ("affinity", "priorityClassName", "serviceAccountName", "imagePullSecrets")
# On the Deployment: what of its pod template came from the spec's pod fields, podLabels, podAnnotations
# and nodeSelector. A merge patch only adds, so a drift repair removes what a later spec no longer asks
# for by this record, and leaves alone what others added (`kubectl rollout restart`'s annotation, say).
SPEC_OWNED = "iir.dev/spec-owned"
RESERVED_PREFIX = "iir.dev/"  # the operator's label and annotation keys; spec.podLabels/podAnnotations cannot set them


def labels(im: Obj) -> dict[str, str]:
    name = im["metadata"]["name"]
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "iir",
        MODEL_LABEL: name,
    }


def owner_reference(im: Obj) -> Obj:
    meta = im["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(im: Obj) -> Obj:
    meta = im["metadata"]
    return {
        "name": service_name(meta["name"]),
        "namespace": meta["namespace"],
        "labels": labels(im),
        "ownerReferences": [owner_reference(im)],
    }


def _pod_annotations(port: int) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def _user_map(spec: Obj, field: str) -> dict[str, str]:
    """spec.podLabels or spec.podAnnotations, less the keys the operator reserves (the CRD refuses them)."""
    return {str(k): str(v) for k, v in (spec.get(field) or {}).items() if not str(k).startswith(RESERVED_PREFIX)}


def _spec_owned(node_selector: Obj, pod_fields: Obj, pod_labels: Obj, pod_annotations: Obj) -> dict[str, str]:
    """The Deployment's annotation recording what the spec put in its pod template (none when nothing)."""
    record = {
        "annotations": sorted(pod_annotations),
        "fields": sorted(pod_fields),
        "labels": sorted(pod_labels),
        "nodeSelector": sorted(node_selector),
    }
    record = {k: v for k, v in record.items() if v}
    return {SPEC_OWNED: json.dumps(record, separators=(",", ":"))} if record else {}


def _removed(have: Any, want: Any) -> Any:
    """The merge patch nulls that take from `have` the keys of `want` it lacks, at every depth (lists are
    replaced whole by the patch, so none); None when there are none."""
    if not (isinstance(have, dict) and isinstance(want, dict)):
        return None
    out: Obj = {}
    for key, value in have.items():
        if key not in want:
            out[key] = None
        elif (inner := _removed(value, want[key])) is not None:
            out[key] = inner
    return out or None


def stale_patch(desired: Obj, existing: Obj) -> Obj:
    """A merge patch (nulls only) removing from the `existing` Deployment what an earlier spec put in its pod
    template, by its SPEC_OWNED record, and the desired one no longer has; {} when nothing is stale."""
    try:
        record = json.loads(((existing.get("metadata") or {}).get("annotations") or {}).get(SPEC_OWNED) or "{}")
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    have = ((existing.get("spec") or {}).get("template")) or {}
    want = desired["spec"]["template"]
    have_meta, want_meta = have.get("metadata") or {}, want["metadata"]
    have_spec, want_spec = have.get("spec") or {}, want["spec"]
    template: Obj = {}

    def drop_keys(part: Obj, name: str, have_map: Obj, want_map: Obj, owned: Any) -> None:
        gone = {str(k): None for k in (owned or []) if k in have_map and k not in want_map}
        if gone:
            part[name] = gone

    meta: Obj = {}
    drop_keys(meta, "labels", have_meta.get("labels") or {}, want_meta["labels"], record.get("labels"))
    drop_keys(
        meta, "annotations", have_meta.get("annotations") or {}, want_meta["annotations"], record.get("annotations")
    )
    pod: Obj = {}
    drop_keys(
        pod,
        "nodeSelector",
        have_spec.get("nodeSelector") or {},
        want_spec.get("nodeSelector") or {},
        record.get("nodeSelector"),
    )
    owned_fields = record.get("fields") or []
    for field in POD_SPEC_FIELDS:
        if field not in have_spec:
            continue
        if field in want_spec:  # the spec's value, whole: e.g. no podAntiAffinity the spec's affinity dropped
            if (inner := _removed(have_spec[field], want_spec[field])) is not None:
                pod[field] = inner
        elif field in owned_fields:
            pod[field] = None
            if field == "serviceAccountName":  # and its deprecated alias, which the API server sets with it
                pod["serviceAccount"] = None
    if meta:
        template["metadata"] = meta
    if pod:
        template["spec"] = pod
    patch: Obj = {"spec": {"template": template}} if template else {}
    if record and SPEC_OWNED not in ((desired["metadata"].get("annotations")) or {}):
        patch["metadata"] = {"annotations": {SPEC_OWNED: None}}
    return patch


def _model_arg(source: Obj) -> tuple[str, list[Obj], list[Obj]]:
    """vLLM's --model value, plus the volumes and mounts the source needs."""
    if "huggingFace" in source:
        return source["huggingFace"]["id"], [], []
    if "pvc" in source:
        vol = {"name": "model", "persistentVolumeClaim": {"claimName": source["pvc"]["claimName"], "readOnly": True}}
        path = f"{MODEL_DIR}/{source['pvc'].get('path', '')}".rstrip("/")
        return path, [vol], [{"name": "model", "mountPath": MODEL_DIR, "readOnly": True}]
    if "hostPath" in source:
        vol = {"name": "model", "hostPath": {"path": source["hostPath"]["path"], "type": "Directory"}}
        return MODEL_DIR, [vol], [{"name": "model", "mountPath": MODEL_DIR, "readOnly": True}]
    return str(source["uri"]), [], []


def kv_events(im: Obj) -> bool:
    """spec.routing.kvEvents (on unless false): the replicas publish their KV-cache events."""
    return ((im["spec"].get("routing") or {}).get("kvEvents", True)) is not False


def hash_seed(im: Obj) -> str:
    """The engines' PYTHONHASHSEED (unless spec.env sets one): spec.routing.hashSeed, else a number made
    from the object's uid (the same for every replica, unguessable outside the cluster), else "0". The
    registry computes the same (iir_registry/resource_mapping.py) to tell gateways; tests hold them equal."""
    routing = im["spec"].get("routing") or {}
    if routing.get("hashSeed"):
        return str(routing["hashSeed"])
    uid = str(im["metadata"].get("uid") or "").replace("-", "")
    try:
        return str(int(uid, 16) % 1_000_000_000) if uid else "0"
    except ValueError:
        return "0"


def kv_events_args() -> list[str]:
    """vLLM's KV events on (ZeroMQ PUB and replay sockets) and a block hash any process can compute."""
    config = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": f"tcp://*:{KV_EVENTS_PORT}",
        "replay_endpoint": f"tcp://*:{KV_REPLAY_PORT}",
        "topic": KV_EVENTS_TOPIC,
    }
    return [
        "--kv-events-config",
        json.dumps(config, separators=(",", ":")),
        "--prefix-caching-hash-algo",
        "sha256_cbor",
    ]


def vllm_args(im: Obj, plan: Plan, model: str) -> list[str]:
    spec = im["spec"]
    vllm = spec.get("vllm") or {}
    args = [
        "--model",
        model,
        "--served-model-name",
        InferenceModelView.of(im).served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(vllm.get("port", 8000)),
        "--tensor-parallel-size",
        str(plan.tensor_parallel),
        "--dtype",
        vllm.get("dtype", "auto"),
        "--gpu-memory-utilization",
        str(vllm.get("gpuMemoryUtilization", 0.9)),
    ]
    if vllm.get("maxModelLen"):
        args += ["--max-model-len", str(vllm["maxModelLen"])]
    if vllm.get("quantization"):
        args += ["--quantization", vllm["quantization"]]
    revision = ((spec.get("source") or {}).get("huggingFace") or {}).get("revision")
    if revision:
        args += ["--revision", revision]
    lora = spec.get("lora")
    if lora:
        args += ["--enable-lora", "--max-loras", str(lora.get("maxLoras", 4))]
        args += ["--max-lora-rank", str(lora.get("maxLoraRank", 16))]
        if lora.get("maxCpuLoras"):
            args += ["--max-cpu-loras", str(lora["maxCpuLoras"])]
    if kv_events(im):
        args += kv_events_args()
    return args + list(vllm.get("extraArgs") or [])


def build_deployment(im: Obj, plan: Plan, adapter_claims: Sequence[str] = ()) -> Obj:
    """The vLLM Deployment; `adapter_claims` are the PersistentVolumeClaims of its LoRA adapters, mounted
    read-only under /adapters/<claim>."""
    spec = im["spec"]
    vllm = spec.get("vllm") or {}
    port = int(vllm.get("port", 8000))
    gpu_resource = (spec.get("gpu") or {}).get("resourceName", GPU_RESOURCE)
    model, volumes, mounts = _model_arg(spec["source"])
    resources = spec.get("resources") or {}
    env: list[Obj] = [{"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"}]
    token = spec.get("huggingFaceTokenSecret")
    if token:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": token["name"], "key": token.get("key", "token")}},
            }
        )
    if spec.get("lora"):  # adapters are loaded and unloaded at run time through vLLM's own endpoints
        env.append({"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"})
    user_env = list(spec.get("env") or [])
    if kv_events(im) and not any(e.get("name") == "PYTHONHASHSEED" for e in user_env):
        # The root of the block hash chain: gateways compute the same hashes only with the same seed.
        env.append({"name": "PYTHONHASHSEED", "value": hash_seed(im)})
    env += user_env
    for i, claim in enumerate(adapter_claims):
        volumes.append({"name": f"adapters-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": f"adapters-{i}", "mountPath": f"{ADAPTERS_DIR}/{claim}", "readOnly": True})
    cache = spec.get("cache") or {}
    cache_volume = (
        {"name": "cache", "persistentVolumeClaim": {"claimName": cache["claimName"]}}
        if cache.get("claimName")
        else {"name": "cache", "emptyDir": {"sizeLimit": cache.get("sizeLimit", "100Gi")}}
    )
    node_selector = {**({PRODUCT_LABEL: plan.product} if plan.product else {}), **(spec.get("nodeSelector") or {})}
    tolerations = [
        {"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"},
        *(spec.get("tolerations") or []),
    ]
    pod_fields = {field: spec[field] for field in POD_SPEC_FIELDS if spec.get(field)}
    # The spec's labels and annotations never replace the operator's: its selector and scrape settings hold.
    user_labels, user_annotations = _user_map(spec, "podLabels"), _user_map(spec, "podAnnotations")
    pod_labels = {**user_labels, **labels(im)}
    pod_annotations = {**user_annotations, **_pod_annotations(port)}
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    drain_s = int(spec.get("drainTimeoutSeconds", DEFAULT_DRAIN_S))
    container = {
        "name": "vllm",
        "image": vllm.get("image", DEFAULT_VLLM_IMAGE),
        "args": vllm_args(im, plan, model),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}, *_kv_ports(im, service=False)],
        "env": env,
        "resources": {
            "requests": {**(resources.get("requests") or {}), gpu_resource: str(plan.gpus)},
            "limits": {**(resources.get("limits") or {}), gpu_resource: str(plan.gpus)},
        },
        # Loading weights can take many minutes: the startup probe allows 30 before liveness applies.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 15, "failureThreshold": 4},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "cache", "mountPath": CACHE_DIR}, *mounts],
        # Stop only once the requests in flight are done (the endpoint is terminating meanwhile).
        "lifecycle": {"preStop": pre_stop(port, drain_s)},
    }
    metadata = _metadata(im)
    owned = _spec_owned(node_selector, pod_fields, user_labels, user_annotations)
    if owned:
        metadata["annotations"] = owned
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "selector": {"matchLabels": {MODEL_LABEL: im["metadata"]["name"]}},
            # Keep the capacity during a rollout: a new replica is ready before an old one drains.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    # None when empty: the API server drops an empty map, and the drift check would never settle.
                    **({"nodeSelector": node_selector} if node_selector else {}),
                    "tolerations": tolerations,
                    **pod_fields,
                    "containers": [container],
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                        cache_volume,
                        *volumes,
                    ],
                    # Above the drain, so a draining replica is never killed mid-request.
                    "terminationGracePeriodSeconds": drain_s + 30,
                },
            },
        },
    }


def _kv_ports(im: Obj, service: bool) -> list[Obj]:
    """The KV event ports, named: the container's, or the Service's (pointing at the container's)."""
    if not kv_events(im):
        return []
    ports = (("kv-events", KV_EVENTS_PORT), ("kv-replay", KV_REPLAY_PORT))
    if service:
        return [{"name": name, "port": number, "targetPort": name, "protocol": "TCP"} for name, number in ports]
    return [{"name": name, "containerPort": number, "protocol": "TCP"} for name, number in ports]


def build_service(im: Obj, plan: Plan) -> Obj:
    port = int((im["spec"].get("vllm") or {}).get("port", 8000))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(im),
        "spec": {
            "selector": {MODEL_LABEL: im["metadata"]["name"]},
            # The KV event ports reach the EndpointSlices, where the registry finds each pod's sockets.
            "ports": [
                {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"},
                *_kv_ports(im, service=True),
            ],
        },
    }
