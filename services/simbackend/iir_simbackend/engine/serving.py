"""Answering a chat or completion through the engine: the prompt tokenized, one engine request per output
(as vLLM runs `n` samples and several prompts as separate requests), the answer's chunks sent as the
engine produces their tokens (coalesced as `--stream-interval` coalesces them), usage from the engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from iir_common.kv_blocks import BlockHasher
from iir_simbackend.answers import ChatAnswer, CompletionAnswer, Plan
from iir_simbackend.engine.calibration import PROFILES
from iir_simbackend.engine.engine import Engine, KvEventsConfig
from iir_simbackend.engine.request import EngineRequest, Lora
from iir_simbackend.engine.tokens import Tokenizer
from iir_simbackend.settings import SimSettings
from iir_simbackend.vllm_metrics import VllmMetrics

SESSION_ID_HEADER = "X-Session-ID"


def build_engine(settings: SimSettings, metrics: VllmMetrics) -> Engine:
    try:
        profile = PROFILES[settings.engine]
    except KeyError:
        raise ValueError(f"unknown engine profile {settings.engine!r}; known: {', '.join(PROFILES)}") from None
    profile = dataclasses.replace(
        profile,
        num_gpu_blocks=settings.kv_cache_blocks or profile.num_gpu_blocks,
        max_num_batched_tokens=settings.max_num_batched_tokens or profile.max_num_batched_tokens,
        max_num_seqs=settings.max_num_seqs or profile.max_num_seqs,
    )
    if profile.max_num_batched_tokens < profile.max_num_seqs:
        raise ValueError("max_num_batched_tokens must be at least max_num_seqs (vLLM refuses it too)")
    capacity = (profile.num_gpu_blocks - 1) * profile.block_size
    if settings.max_model_len > capacity:
        raise ValueError(
            f"max_model_len {settings.max_model_len} is larger than the KV cache's {capacity} tokens: "
            "vLLM refuses to start so, as one request of that length could never be scheduled"
        )
    hasher = BlockHasher(settings.prefix_caching_hash_algo, settings.hash_seed, profile.block_size)
    kv_events = None
    if settings.kv_events_endpoint:
        kv_events = KvEventsConfig(
            settings.kv_events_endpoint, settings.kv_events_replay_endpoint or None, settings.kv_events_topic
        )
    return Engine(profile, metrics, hasher, settings.time_scale, settings.stream_interval, kv_events)


def prompt_ids(tokenizer: Tokenizer, body: dict[str, Any], chat: bool) -> list[list[int]]:
    """The token ids of each prompt (a chat has one)."""
    if chat:
        return [tokenizer.chat_ids(body.get("messages") or [], body.get("tools") or None)]
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    prompts = prompt if isinstance(prompt, list) else [prompt]
    return [list(p) if isinstance(p, list) else tokenizer.prompt_ids(str(p)) for p in prompts]


def with_engine_usage(plan: Plan, prompts: Sequence[Sequence[int]]) -> Plan:
    """The plan with the engine's prompt token count."""
    return dataclasses.replace(plan, prompt_tokens=sum(len(p) for p in prompts))


class EngineCall:
    """The engine requests behind one HTTP request."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        plan: Plan,
        prompts: list[list[int]],
        answer_id: str,
        lora: Lora | None,
        session_id: str | None,
    ) -> None:
        self.engine = engine
        per_prompt = max(1, len(plan.outputs) // max(1, len(prompts)))
        self.widths = [len(o.generated.tokens) for o in plan.outputs]
        self.requests: list[EngineRequest] = []
        for k, out in enumerate(plan.outputs):
            output = tokenizer.output_ids(out.generated.tokens) or [0]
            ids = prompts[min(k // per_prompt, len(prompts) - 1)]
            self.requests.append(engine.submit(f"{answer_id}-{k}", ids, output, lora, session_id))
        self.first_of_prompt = self.requests[::per_prompt]

    def outputs_for(self, choice: int, sent: int) -> int:
        """Engine outputs that must exist before the choice's `sent`-th streamed token goes out."""
        width = self.widths[choice]
        total = self.requests[choice].max_output
        if sent >= width:
            return total
        # The first streamed token needs only the first output (vLLM sends it at once, whatever the
        # stream interval); the rest spread evenly up to the last.
        return 1 + (sent - 1) * (total - 1) // max(1, width - 1)

    async def finished(self) -> None:
        for request in self.requests:
            await request.wait_for(request.max_output)

    def abort(self) -> None:
        for request in self.requests:
            self.engine.abort(request)

    def prompt_details(self, block_size: int) -> dict[str, Any]:
        """vLLM's `prompt_tokens_details` (with --enable-prompt-tokens-details)."""
        cached = sum(r.cached_tokens for r in self.first_of_prompt)
        created = sum(max(0, r.num_prompt // block_size * block_size - r.cached_tokens) for r in self.first_of_prompt)
        return {"cached_tokens": cached, "created_cache_tokens": created, "multimodal_tokens": None}


def _with_details(chunk: dict[str, Any], details: dict[str, Any] | None) -> dict[str, Any]:
    usage = chunk.get("usage")
    if details is not None and isinstance(usage, dict):
        chunk["usage"] = {**usage, "prompt_tokens_details": details}
    return chunk


async def document(call: EngineCall, answer: ChatAnswer | CompletionAnswer, details: bool) -> web.Response:
    await call.finished()
    body = answer.document()
    _with_details(body, call.prompt_details(call.engine.profile.block_size) if details else None)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _mergeable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two token chunks of one choice that vLLM would send as one with `--stream-interval` > 1."""
    (ca,), (cb,) = a["choices"], b["choices"]
    if ca["index"] != cb["index"] or ca.get("finish_reason") or ca.get("logprobs") or cb.get("logprobs"):
        return False
    if "delta" in ca:
        return set(ca["delta"]) == {"content"} == set(cb["delta"]) and isinstance(ca["delta"]["content"], str)
    return isinstance(ca.get("text"), str) and isinstance(cb.get("text"), str)


def _merge(chunks: list[tuple[dict[str, Any], bool]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    last_token = False
    for chunk, is_token in chunks:
        if is_token and last_token and len(chunk.get("choices", ())) == 1 and _mergeable(out[-1], chunk):
            prev = out[-1]["choices"][0]
            merged = dict(chunk["choices"][0])
            if "delta" in merged:
                merged["delta"] = {"content": prev["delta"]["content"] + merged["delta"]["content"]}
            else:
                merged["text"] = prev["text"] + merged["text"]
            out[-1] = {**chunk, "choices": [merged]}
        else:
            out.append(chunk)
        last_token = is_token
    return out


async def stream(
    request: web.Request, call: EngineCall, answer: ChatAnswer | CompletionAnswer, details: bool, interval: int
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    sent = [0] * len(call.requests)
    pending: list[tuple[dict[str, Any], bool]] = []
    started = False  # vLLM sends the role chunk with the first token

    async def flush() -> None:
        chunks = _merge(pending) if interval > 1 else [c for c, _ in pending]
        usage = call.prompt_details(call.engine.profile.block_size) if details else None
        await resp.write(b"".join(b"data: " + orjson.dumps(_with_details(c, usage)) + b"\n\n" for c in chunks))
        pending.clear()

    for chunk, is_token in answer.chunks():
        if is_token:
            choice = chunk["choices"][0]["index"]
            sent[choice] += 1
            engine_request = call.requests[choice]
            need = call.outputs_for(choice, sent[choice])
            if engine_request.visible < need:
                if started and pending:
                    await flush()
                await engine_request.wait_for(need)
            started = True
        pending.append((chunk, is_token))
    await call.finished()
    await flush()
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
