"""Everything one inference request carries through the pipeline, filled in step by step."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iir_common.logging import request_id_var
from iir_gateway.accounting.token_estimate import TokenEstimate, estimate_tokens
from iir_gateway.pipeline.request_span import RequestSpan
from iir_gateway.principal import Principal
from iir_gateway.providers.directory import ServedModel
from iir_gateway.schemas import InferenceRequest
from iir_gateway.wire.base import NativeBody

BodyReader = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class RequestContext:
    """One request. The edge sets what it received; each step reads what the steps before it set."""

    operation: str  # "chat/completions", "completions", "embeddings"
    schema: type[InferenceRequest]
    headers: Mapping[str, str] = field(default_factory=dict)
    client_ip: str = ""
    read_body: BodyReader | None = None  # the HTTP edge reads the body only once the key is known
    request_id: str = field(default_factory=lambda: request_id_var.get() or "")  # the edge's, for logs upstream
    count_request: bool = True  # False for a job, counted against its key's RPM when it was queued
    native: NativeBody | None = None  # the client's own format, for an upstream that speaks it

    principal: Principal | None = None  # authenticate (or set by the caller, for a job)
    body: dict[str, Any] = field(default_factory=dict)  # validate; scrub replaces it with a scrubbed copy
    stream: bool = False
    client_usage: bool = False  # the client asked for the usage event of its stream
    scrub_mode: str = "off"  # scrub
    scrubbed: set[str] = field(default_factory=set)  # kinds of secrets found
    model: str = ""  # the public model asked for, or chosen by auto routing
    served: ServedModel | None = None  # access: `model` parsed, with its provider
    estimate: TokenEstimate | None = None  # admit, for keys with token limits
    cache_key: str | None = None  # cache
    cache_hit: bool = False
    answered_by: str = ""  # the model that answered (a fallback, maybe)
    tried: list[str] = field(default_factory=list)  # dispatch: models that could not answer before it
    target: str = ""  # dispatch: the replica or provider that answered
    ttft_s: float = 0.0  # dispatch: a stream's time to its first bytes
    error_code: str = ""  # the code of the error the client got
    usage: dict[str, Any] | None = None  # once the answer ended
    ok: bool = False  # the answer ran to its end
    status: int = 0  # the HTTP status the client got
    started: float = field(default_factory=time.perf_counter)
    span: RequestSpan | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # steps' headers, on answers and errors
    state: dict[str, Any] = field(default_factory=dict)  # a step's own per-request state, by step name

    def token_counts(self) -> tuple[int, int]:
        """(prompt, completion) tokens to account: the upstream's usage, else the prompt's estimate."""
        usage = self.usage or {}
        prompt = usage.get("prompt_tokens")
        if not prompt:
            prompt = (self.estimate or estimate_tokens(self.body, 0)).prompt
        return int(prompt), int(usage.get("completion_tokens") or 0)
