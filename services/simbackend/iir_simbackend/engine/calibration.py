"""The engine's constants: one named model/GPU pair, and the time a scheduler step takes on it.

A step's time is a roofline: a fixed per-step overhead plus the larger of the time to read the weights
and the KV the step attends to at the GPU's effective bandwidth, and the time to do the step's FLOPs
at its effective compute rate. The hardware and model figures are published ones; the two efficiencies
and the overhead are fitted to published vLLM measurements (docs/simulated-fleet.md gives the sources).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """A model served by vLLM on one GPU: its scheduler limits, KV capacity and step-time constants."""

    name: str
    block_size: int  # tokens per KV block (vLLM's default 16)
    num_gpu_blocks: int  # KV capacity in blocks, the null block included, as vLLM counts them
    max_num_batched_tokens: int  # token budget of one step
    max_num_seqs: int  # most requests running at once
    weight_bytes: float  # read once per step
    kv_bytes_per_token: float  # 2 (K, V) x layers x KV heads x head dim x dtype bytes
    flops_per_token: float  # 2 x parameters: the linear layers, per token in the step
    attention_flops_per_pair: float  # 4 x layers x query dims, per (query token, context token) pair
    bandwidth: float  # effective bytes/s (peak x fitted efficiency)
    compute: float  # effective FLOP/s (peak x fitted efficiency)
    step_overhead_s: float  # per step: launch, sampling, scheduling


_GIB = 1 << 30
_H100_SXM_HBM = 3.35e12  # bytes/s, NVIDIA H100 SXM datasheet
_H100_SXM_BF16 = 989e12  # dense FLOP/s, NVIDIA H100 SXM datasheet
_LLAMA_31_8B_PARAMS = 8.03e9  # meta-llama/Llama-3.1-8B-Instruct model card
# config.json: 32 layers, 8 KV heads, head dim 128, 32 query heads; bf16
_LLAMA_31_8B_KV_BYTES = 2 * 32 * 8 * 128 * 2  # 131072: 128 KiB a token
_LLAMA_31_8B_ATTENTION = 4 * 32 * (32 * 128)


def _kv_blocks(gpu_bytes: float, utilization: float, weights: float, activations: float) -> int:
    """KV blocks vLLM makes from what `--gpu-memory-utilization` leaves after weights and the profile
    run's activation peak (the null block is one of them)."""
    return int((gpu_bytes * utilization - weights - activations) // (_LLAMA_31_8B_KV_BYTES * 16))


LLAMA_31_8B_H100 = Profile(
    name="llama-3.1-8b-h100",
    block_size=16,
    # 81,559 MiB on an H100 80GB SXM, vLLM 0.32's default utilization 0.92, ~3 GiB activation peak:
    # 28,359 blocks, about 454k tokens.
    num_gpu_blocks=_kv_blocks(81_559 * (1 << 20), 0.92, _LLAMA_31_8B_PARAMS * 2, 3 * _GIB),
    # vLLM 0.32's defaults for the OpenAI server on a >= 70 GiB GPU other than an A100 (arg_utils.py)
    max_num_batched_tokens=8192,
    max_num_seqs=1024,
    weight_bytes=_LLAMA_31_8B_PARAMS * 2,
    kv_bytes_per_token=_LLAMA_31_8B_KV_BYTES,
    flops_per_token=2 * _LLAMA_31_8B_PARAMS,
    attention_flops_per_pair=_LLAMA_31_8B_ATTENTION,
    bandwidth=0.8 * _H100_SXM_HBM,
    compute=0.4 * _H100_SXM_BF16,
    step_overhead_s=1.5e-3,
)

PROFILES: dict[str, Profile] = {LLAMA_31_8B_H100.name: LLAMA_31_8B_H100}


def step_seconds(profile: Profile, tokens: int, attention_pairs: float, kv_read_tokens: int) -> float:
    """The GPU time of one step that runs `tokens` tokens (prefill chunks plus one per decoding request),
    whose queries attend to `attention_pairs` context tokens in all, reading `kv_read_tokens` tokens of
    cached KV (the decoding requests' contexts)."""
    memory = (profile.weight_bytes + kv_read_tokens * profile.kv_bytes_per_token) / profile.bandwidth
    compute = (tokens * profile.flops_per_token + attention_pairs * profile.attention_flops_per_pair) / profile.compute
    return profile.step_overhead_s + max(memory, compute)


def prefill_pairs(start: int, length: int) -> float:
    """Context tokens the queries of a prefill chunk attend to (causal): tokens `start .. start+length`."""
    return length * start + length * (length + 1) / 2
