"""How many GPUs a replica needs, estimated from the model and the GPU product.

Formula (all in bytes, then GiB):

    weights  = parameters × bytes_per_parameter(dtype, quantization)
    kv_cache = 2 × layers × kv_heads × head_dim × max_model_len × kv_bytes × concurrent_sequences
    required = (weights + kv_cache) × 1.2                      # activations, CUDA graphs, fragmentation
    usable   = gpu_memory × gpu_memory_utilization
    gpus     = smallest power of two ≥ required / usable       # tensor parallelism wants 1, 2, 4, 8, 16

Bytes per parameter: 2 for float16/bfloat16/auto, 4 for float32, 1 for fp8/int8/compressed-tensors,
0.5 for awq/gptq/int4/marlin/bitsandbytes, 0.56 for gguf (about Q4_K). KV cache in float16 (4 bytes
for float32). The shape (layers, kv_heads, head_dim, context) comes from a table of known models;
for other models `spec.sizing.parametersBillions` is required and the KV cache is scaled from
Llama-3-8B's (131,072 bytes per token) by √(parameters / 8B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A spec the schema accepts but the operator cannot act on."""


@dataclass(frozen=True)
class ModelShape:
    parameters_b: float
    layers: int
    kv_heads: int
    head_dim: int
    context: int


# Hugging Face ids, lower case.
KNOWN_MODELS: dict[str, ModelShape] = {
    "meta-llama/meta-llama-3-8b-instruct": ModelShape(8.03, 32, 8, 128, 8192),
    "meta-llama/llama-3.1-8b-instruct": ModelShape(8.03, 32, 8, 128, 131072),
    "meta-llama/llama-3.1-70b-instruct": ModelShape(70.6, 80, 8, 128, 131072),
    "meta-llama/llama-3.3-70b-instruct": ModelShape(70.6, 80, 8, 128, 131072),
    "meta-llama/llama-3.2-3b-instruct": ModelShape(3.21, 28, 8, 128, 131072),
    "mistralai/mistral-7b-instruct-v0.3": ModelShape(7.25, 32, 8, 128, 32768),
    "mistralai/mixtral-8x7b-instruct-v0.1": ModelShape(46.7, 32, 8, 128, 32768),
    "qwen/qwen2.5-7b-instruct": ModelShape(7.62, 28, 4, 128, 32768),
    "qwen/qwen2.5-7b-instruct-awq": ModelShape(7.62, 28, 4, 128, 32768),
    "qwen/qwen2.5-32b-instruct": ModelShape(32.8, 64, 8, 128, 32768),
    "qwen/qwen2.5-72b-instruct": ModelShape(72.7, 80, 8, 128, 32768),
    "qwen/qwen2.5-coder-7b-instruct": ModelShape(7.62, 28, 4, 128, 32768),
    "google/gemma-2-9b-it": ModelShape(9.24, 42, 8, 256, 8192),
    "microsoft/phi-3-mini-4k-instruct": ModelShape(3.82, 32, 32, 96, 4096),
    "deepseek-ai/deepseek-r1-distill-llama-70b": ModelShape(70.6, 80, 8, 128, 131072),
    "huggingfacetb/smollm2-135m-instruct": ModelShape(0.135, 30, 3, 64, 8192),
}

_BYTES_PER_PARAM = {
    None: 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "compressed-tensors": 1.0,
    "awq": 0.5,
    "gptq": 0.5,
    "int4": 0.5,
    "marlin": 0.5,
    "bitsandbytes": 0.5,
    "gguf": 0.56,
}
_OVERHEAD = 1.2
_GIB = 1024**3
_REFERENCE_KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # Llama-3-8B, float16
MAX_GPUS = 16
FORMULA = "((params × bytes/param) + (2 × layers × kv_heads × head_dim × max_len × kv_bytes × seqs)) × 1.2"


@dataclass(frozen=True)
class Estimate:
    required_gib: float
    gpus: int
    usable_gib_per_gpu: float


def model_id(spec: dict[str, Any]) -> str:
    return str(((spec.get("source") or {}).get("huggingFace") or {}).get("id", "")).lower()


def estimate(spec: dict[str, Any], gpu_memory_gib: float) -> Estimate:
    """GPUs per replica for `spec` on GPUs of `gpu_memory_gib`; SpecError when it cannot be sized."""
    vllm = spec.get("vllm") or {}
    sizing = spec.get("sizing") or {}
    shape = KNOWN_MODELS.get(model_id(spec))
    params_b = sizing.get("parametersBillions") or (shape.parameters_b if shape else None)
    if not params_b:
        raise SpecError(
            "cannot size this model: set spec.gpusPerReplica, or spec.sizing.parametersBillions "
            "(the model is not in the operator's table of known models)"
        )
    dtype = vllm.get("dtype", "auto")
    per_param = _BYTES_PER_PARAM.get(vllm.get("quantization"), 2.0)
    if dtype == "float32" and not vllm.get("quantization"):
        per_param = 4.0
    kv_bytes = 4 if dtype == "float32" else 2
    max_len = int(vllm.get("maxModelLen") or (shape.context if shape else 8192))
    seqs = int(sizing.get("concurrentSequences") or 1)
    kv_per_token: float
    if shape:
        kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * kv_bytes
    else:
        kv_per_token = _REFERENCE_KV_PER_TOKEN * math.sqrt(params_b / 8) * kv_bytes / 2
    weights = params_b * 1e9 * per_param
    kv_cache = kv_per_token * max_len * seqs
    required = (weights + kv_cache) * _OVERHEAD / _GIB
    usable = gpu_memory_gib * float(vllm.get("gpuMemoryUtilization", 0.9))
    needed = max(1, math.ceil(required / usable))
    gpus = 1 << (needed - 1).bit_length()
    if gpus > MAX_GPUS:
        raise SpecError(
            f"the model needs about {required:.0f} GiB, more than {MAX_GPUS} GPUs of "
            f"{gpu_memory_gib:.0f} GiB per replica"
        )
    return Estimate(round(required, 1), gpus, round(usable, 1))
