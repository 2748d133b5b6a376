"""Maps an InferenceModel (spec + status, as a dict) to the catalogue's Model message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from iir.v1 import registry_pb2
from iir_common.inference_adapter import assign_names
from iir_common.inference_model import InferenceModelView

LOCAL_PROVIDER = "local"
DEFAULT_BLOCK_SIZE = 16
DEFAULT_HASH_ALGO = "sha256_cbor"


def _created(meta: Mapping[str, Any], default: int) -> int:
    stamp = meta.get("creationTimestamp")
    if not stamp:
        return default
    return int(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())


def endpoints_from_status(resource: Mapping[str, Any]) -> list[registry_pb2.Endpoint]:
    """The status's endpoints, with their KV event sockets (`kvEvents`, `kvEventsReplay`; the file source)."""
    raw = {
        str(e.get("url")): e for e in (resource.get("status") or {}).get("endpoints") or [] if isinstance(e, Mapping)
    }
    return [
        registry_pb2.Endpoint(
            url=e.url,
            ready=e.ready,
            target=e.target,
            kv_events=str(raw[e.url].get("kvEvents") or ""),
            kv_events_replay=str(raw[e.url].get("kvEventsReplay") or ""),
        )
        for e in InferenceModelView.of(resource).endpoints
    ]


def _flag(args: Iterable[Any], flag: str) -> str | None:
    """The last value of `--flag value` or `--flag=value` in vLLM's arguments (argparse keeps the last)."""
    value = None
    words = [str(a) for a in args]
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith(flag + "="):
            value = word.partition("=")[2]
    return value


def hash_seed(resource: Mapping[str, Any]) -> str:
    """The PYTHONHASHSEED of the model's engines: one given in spec.env, else spec.routing.hashSeed, else a
    number made from the object's uid (unguessable outside the cluster, the same for every replica), else
    "0". The operator sets the same (iir_operator/manifests.py); tests hold the two equal."""
    spec = resource.get("spec") or {}
    for env in spec.get("env") or []:
        if isinstance(env, Mapping) and env.get("name") == "PYTHONHASHSEED" and "value" in env:
            return str(env["value"])
    routing = spec.get("routing") or {}
    if routing.get("hashSeed"):
        return str(routing["hashSeed"])
    uid = str((resource.get("metadata") or {}).get("uid") or "").replace("-", "")
    try:
        return str(int(uid, 16) % 1_000_000_000) if uid else "0"
    except ValueError:
        return "0"


def kv_cache_config(resource: Mapping[str, Any]) -> registry_pb2.KvCacheConfig | None:
    """How the model's engines hash their blocks; None when its KV events are off (spec.routing.kvEvents)."""
    spec = resource.get("spec") or {}
    if (spec.get("routing") or {}).get("kvEvents", True) is False:
        return None
    args = (spec.get("vllm") or {}).get("extraArgs") or []
    try:
        block_size = int(_flag(args, "--block-size") or DEFAULT_BLOCK_SIZE)
    except ValueError:
        block_size = DEFAULT_BLOCK_SIZE
    return registry_pb2.KvCacheConfig(
        tokenizer=str(spec.get("tokenizer") or ""),
        block_size=block_size,
        hash_algo=_flag(args, "--prefix-caching-hash-algo") or DEFAULT_HASH_ALGO,
        hash_seed=hash_seed(resource),
    )


def model_from_resource(
    resource: Mapping[str, Any],
    source: str,
    default_created: int = 0,
    endpoints: list[registry_pb2.Endpoint] | None = None,
) -> registry_pb2.Model:
    """The catalogue entry for one InferenceModel; endpoints are given, or else taken from its status."""
    meta = resource.get("metadata") or {}
    spec = resource.get("spec") or {}
    status = resource.get("status") or {}
    routing = spec.get("routing") or {}
    view = InferenceModelView.of(resource)
    name = view.served_name
    if endpoints is None:
        endpoints = endpoints_from_status(resource)
    gpus = int(spec.get("gpusPerReplica") or status.get("gpusPerReplica") or 0)
    price_input, price_output = token_prices(routing.get("cost") or {}, gpus)
    return registry_pb2.Model(
        name=f"{LOCAL_PROVIDER}/{name}",
        provider=LOCAL_PROVIDER,
        served_name=name,
        phase=view.phase,
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        endpoints=endpoints,
        source=source,
        created=_created(meta, default_created),
        owned_by=meta.get("namespace", "iir"),
        fallbacks=routing.get("fallbacks") or [],
        cost_tier=routing.get("costTier", ""),
        categories=routing.get("categories") or [],
        message=status.get("message", ""),
        namespace=meta.get("namespace", ""),
        gpus_per_replica=gpus,
        price_input=price_input,
        price_output=price_output,
        scale_from_zero=view.scales_from_zero,
        resource_name=str(meta.get("name", "")),
        kv_cache=kv_cache_config(resource),
    )


def token_prices(cost: dict[str, Any], gpus_per_replica: int) -> tuple[float, float]:
    """(input, output) USD per million tokens from `spec.routing.cost`: given, or from a GPU-hour's cost
    and a replica's tokens per second (a replica's hour costs gpuHourUSD × its GPUs, at least one)."""
    try:
        if cost.get("gpuHourUSD") is not None and float(cost.get("tokensPerSecond") or 0) > 0:
            hour = float(cost["gpuHourUSD"]) * max(1, gpus_per_replica)
            per_million = hour / (float(cost["tokensPerSecond"]) * 3600) * 1e6
            return per_million, per_million
        return float(cost.get("inputPerMillion") or 0), float(cost.get("outputPerMillion") or 0)
    except (TypeError, ValueError):
        return 0.0, 0.0


def adapter_models(
    base: registry_pb2.Model, adapters: Iterable[Mapping[str, Any]], models: Iterable[str] = ()
) -> list[registry_pb2.Model]:
    """The catalogue entries of a model's LoRA adapters: each on the base model's endpoints that hold it
    (status.loadedOn), priced as the base model. One whose name is taken (`assign_names`: by the base
    model, by any of `models`, or by an older adapter) is left out."""
    out = []
    kept, _ = assign_names(adapters, {base.served_name, *models})
    for adapter, view in kept:
        holders = set(view.loaded_on)
        endpoints = [e for e in base.endpoints if e.target in holders]
        status = adapter.get("status") or {}
        out.append(
            registry_pb2.Model(
                name=f"{LOCAL_PROVIDER}/{view.served_name}",
                provider=LOCAL_PROVIDER,
                served_name=view.served_name,
                phase=view.phase,
                replicas=base.replicas,
                ready_replicas=sum(e.ready for e in endpoints),
                endpoints=endpoints,
                source=base.source,
                created=_created(adapter.get("metadata") or {}, base.created),
                owned_by=base.owned_by,
                cost_tier=base.cost_tier,
                message=str(status.get("message", "")),
                namespace=base.namespace,
                gpus_per_replica=base.gpus_per_replica,
                price_input=base.price_input,
                price_output=base.price_output,
                scale_from_zero=base.scale_from_zero,
                resource_name=base.resource_name,
                base_model=base.name,
                kv_cache=base.kv_cache if base.HasField("kv_cache") else None,
            )
        )
    return out
