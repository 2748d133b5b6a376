"""KV events in a cluster (the API emulator): the operator turns them on in the vLLM Deployment and names
their ports in the Service; the registry finds each pod's sockets in the EndpointSlice those ports make,
follows them, and tells gateways how the model's blocks are hashed."""

from __future__ import annotations

import json
import uuid

from iir_common.kube import MODEL_LABEL, PLURAL, Kube, Obj
from iir_registry.catalogue import Catalogue
from iir_registry.kv_events.service import KvBlocks
from iir_registry.sources.kubernetes_source import KubernetesSource
from tests.fakes.kv_publisher import FakeEngine, stored
from tests.kube.conftest import A100, gpu_node, inference_model
from tests.waiting import eventually

NS = "ml"


def endpoint_slice(service: Obj, numbers: dict[str, int], address: str) -> Obj:
    """What the EndpointSlice controller makes of the Service for one ready pod: the Service's port names,
    with the pod's port numbers (here, those of the stand-in engine)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": f"{service['metadata']['name']}-abcde",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service["metadata"]["name"], **service["metadata"]["labels"]},
        },
        "ports": [{"name": p["name"], "port": numbers[p["name"]], "protocol": "TCP"} for p in service["spec"]["ports"]],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "iir-llama-0"}}
        ],
    }


async def test_operator_ports_lead_the_registry_to_each_pods_kv_events(kube: Kube, operator: None) -> None:
    await kube.create("nodes", None, gpu_node("gpu-a"))
    im = inference_model("llama", gpusPerReplica=1, gpu={"product": A100}, tokenizer="/tokenizers/llama")
    im["metadata"]["uid"] = str(uuid.UUID(int=0x0B0E5C3A_1111_2222_3333_444455556666))
    await kube.create(PLURAL, NS, im)
    dep = await eventually(lambda: kube.get("deployments", NS, "iir-llama"))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    config = json.loads(args[args.index("--kv-events-config") + 1])
    assert config["enable_kv_cache_events"] is True and config["publisher"] == "zmq"
    assert (config["endpoint"], config["replay_endpoint"]) == ("tcp://*:5557", "tcp://*:5558")
    assert args[args.index("--prefix-caching-hash-algo") + 1] == "sha256_cbor"
    seed = next(e["value"] for e in container["env"] if e["name"] == "PYTHONHASHSEED")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8000,
        "kv-events": 5557,
        "kv-replay": 5558,
    }
    service = await eventually(lambda: kube.get("services", NS, "iir-llama"))
    assert service["metadata"]["labels"][MODEL_LABEL] == "llama"
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", "http"),
        ("kv-events", "kv-events"),
        ("kv-replay", "kv-replay"),
    ]

    engine = FakeEngine()
    catalogue = Catalogue()
    kv = KvBlocks(catalogue, flush_interval_s=0.005)
    kv.start()
    source = KubernetesSource(await Kube.connect(str(kube.api.configuration.host)), catalogue)
    source.start()
    try:
        numbers = {"http": 8000, "kv-events": engine.pub_port, "kv-replay": engine.replay_port}
        await kube.create("endpointslices", NS, endpoint_slice(service, numbers, "127.0.0.1"))
        model = await eventually(lambda: (m := catalogue.get("local/llama")) is not None and m.endpoints and m)
        endpoint = model.endpoints[0]
        assert (endpoint.url, endpoint.kv_events, endpoint.kv_events_replay) == (
            "http://127.0.0.1:8000",
            engine.pub_address,
            engine.replay_address,
        )
        assert (model.kv_cache.tokenizer, model.kv_cache.hash_seed) == ("/tokenizers/llama", seed)
        assert (model.kv_cache.block_size, model.kv_cache.hash_algo) == (16, "sha256_cbor")

        await engine.publish(stored([5, 6]))
        await eventually(lambda: kv.index.held(endpoint.url)[0] == {5, 6})
    finally:
        await source.stop()
        await kv.stop()
        await engine.close()
