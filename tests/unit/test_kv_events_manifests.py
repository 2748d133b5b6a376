"""KV events in the resources: the operator's vLLM flags, env and named ports (valid Kubernetes), the CRD
fields that steer them, the registry's reading of the EndpointSlice ports and of how blocks are hashed."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from iir_operator.manifests import build_deployment, build_service
from iir_operator.plan import plan_model
from iir_registry.resource_mapping import model_from_resource
from iir_registry.sources.kubernetes_source import slice_endpoints
from tests.crd_validation import validate_resource
from tests.unit.test_deploy_manifests import EXAMPLES, K8S_VERSION, NODES

UID = "0b0e5c3a-1111-2222-3333-444455556666"


def model(**spec_changes: Any) -> dict[str, Any]:
    im = copy.deepcopy(next(d for _, d in EXAMPLES if d["kind"] == "InferenceModel"))
    im["metadata"]["uid"] = UID
    im["spec"].update(spec_changes)
    return im


def built(im: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    plan = plan_model(im["spec"], NODES, 80)
    return build_deployment(im, plan)["spec"]["template"]["spec"]["containers"][0], build_service(im, plan)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_vllm_publishes_kv_events_on_named_ports_by_default() -> None:
    im = model()
    container, service = built(im)
    args = container["args"]
    config = json.loads(args[args.index("--kv-events-config") + 1])
    # Field names of vLLM 0.32's KVEventsConfig (vllm/config/kv_events.py).
    assert config == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "tcp://*:5557",
        "replay_endpoint": "tcp://*:5558",
        "topic": "kv-events",
    }
    assert args[args.index("--prefix-caching-hash-algo") + 1] == "sha256_cbor"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", 8000),
        ("kv-events", 5557),
        ("kv-replay", 5558),
    ]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 8000, "http"),
        ("kv-events", 5557, "kv-events"),
        ("kv-replay", 5558, "kv-replay"),
    ]
    plan = plan_model(im["spec"], NODES, 80)
    for obj in (build_deployment(im, plan), build_service(im, plan)):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    # Gateways are told the seed the engines run with.
    assert model_from_resource(im, "kubernetes").kv_cache.hash_seed == env_of(container)["PYTHONHASHSEED"]


@pytest.mark.parametrize(
    ("changes", "seed"),
    [
        ({}, str(int(UID.replace("-", ""), 16) % 1_000_000_000)),
        ({"routing": {"hashSeed": "12345"}}, "12345"),
        ({"env": [{"name": "PYTHONHASHSEED", "value": "777"}], "routing": {"hashSeed": "1"}}, "777"),
    ],
)
def test_the_registry_names_the_seed_the_operator_gives_the_engines(changes: dict[str, Any], seed: str) -> None:
    im = model(**changes)
    container, _ = built(im)
    assert [e["value"] for e in container["env"] if e["name"] == "PYTHONHASHSEED"] == [seed]  # never twice
    assert model_from_resource(im, "kubernetes").kv_cache.hash_seed == seed
    assert validate_resource(im) == []


def test_kv_events_off_leaves_vllm_as_it_was() -> None:
    im = model(routing={"kvEvents": False})
    container, service = built(im)
    assert "--kv-events-config" not in container["args"] and "PYTHONHASHSEED" not in env_of(container)
    assert [p["name"] for p in container["ports"]] == ["http"] == [p["name"] for p in service["spec"]["ports"]]
    assert not model_from_resource(im, "kubernetes").HasField("kv_cache")


def test_how_blocks_are_hashed_follows_the_engines_own_arguments() -> None:
    im = model(
        tokenizer="/tokenizers/llama",
        vllm={"extraArgs": ["--block-size=32", "--prefix-caching-hash-algo", "sha256"]},
    )
    assert validate_resource(im) == []
    kv = model_from_resource(im, "file").kv_cache
    assert (kv.tokenizer, kv.block_size, kv.hash_algo) == ("/tokenizers/llama", 32, "sha256")
    container, _ = built(im)
    assert container["args"][-3:] == ["--block-size=32", "--prefix-caching-hash-algo", "sha256"]  # the last wins


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"routing": {"hashSeed": "abc"}}, "does not match"),
        ({"routing": {"hashSeed": "12345678901"}}, "does not match"),  # PYTHONHASHSEED must fit 32 bits
        ({"tokenizer": "llama/../../etc"}, "must not contain '..'"),
        ({"tokenizer": "has space"}, "does not match"),
        ({"routing": {"kvEvents": "yes"}}, "is not of type"),
    ],
)
def test_bad_kv_fields_are_refused(changes: dict[str, Any], message: str) -> None:
    errors = validate_resource(model(**changes))
    assert errors and any(message in e for e in errors), errors


def test_endpoint_slices_give_each_pods_kv_event_sockets() -> None:
    ports = [
        {"name": "http", "port": 8000},
        {"name": "kv-events", "port": 5557},
        {"name": "kv-replay", "port": 5558},
    ]
    slices = [
        {"ports": ports, "endpoints": [{"addresses": ["10.1.0.4"], "conditions": {"ready": True}}]},
        {"ports": ports, "endpoints": [{"addresses": ["fd00::4"], "conditions": {"ready": True}}]},
        {"ports": ports[:1], "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": True}}]},
    ]
    got = [(e.url, e.kv_events, e.kv_events_replay) for e in slice_endpoints(slices)]
    assert got == [
        ("http://10.1.0.4:8000", "tcp://10.1.0.4:5557", "tcp://10.1.0.4:5558"),
        ("http://10.1.0.5:8000", "", ""),  # a pod without KV events (an older operator's Service)
        ("http://[fd00::4]:8000", "tcp://[fd00::4]:5557", "tcp://[fd00::4]:5558"),
    ]


def test_a_models_file_names_the_sockets_of_each_endpoint() -> None:
    im = model()
    im["status"] = {
        "phase": "Ready",
        "endpoints": [
            {"url": "http://127.0.0.1:8100", "ready": True, "kvEvents": "tcp://127.0.0.1:5557"},
            {"url": "http://127.0.0.1:8101", "ready": True},
        ],
    }
    assert validate_resource(im) == []
    m = model_from_resource(im, "file")
    assert [(e.kv_events, e.kv_events_replay) for e in m.endpoints] == [("tcp://127.0.0.1:5557", ""), ("", "")]
