"""Small fakes of the parts the pipeline's steps consume (each step declares the Protocol it needs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iir_gateway.accounting.prices import FREE, Price
from iir_gateway.accounting.rate_limiter import Admission
from iir_gateway.answer import Answer, Event, ListStream
from iir_gateway.errors import APIError
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.principal import Principal
from iir_gateway.providers.base import RouteRequest
from iir_gateway.providers.directory import ServedModel
from iir_gateway.upstream.errors import UpstreamError
from iir_gateway.upstream.target import Upstream

PRINCIPAL = Principal("k1", "key", admin=False, priority=0, allowed_models=())
LIMITED = Principal("k2", "limited", admin=False, priority=0, allowed_models=(), tpm_limit=10_000)


def completion(text: str = "hello", prompt: int = 3, completion_tokens: int = 2) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + 2},
    }


def chunks(words: list[str], usage: bool = True) -> list[Event]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        out.append({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words)}})
    return [Event.of(c) for c in out]


class FakeProvider:
    """The provider of every fake model, by its whole public name: an Upstream, or the APIError resolving
    it raises."""

    name = "fake"

    def __init__(
        self, models: dict[str, Upstream | APIError], fallback: dict[str, tuple[str, ...]], prices: dict[str, Price]
    ) -> None:
        self.models, self.fallback, self.prices = models, fallback, prices
        self.released: list[tuple[str, bool | None]] = []

    async def resolve(self, model: str, request: RouteRequest) -> Upstream:
        target = self.models[model]
        if isinstance(target, APIError):
            raise target
        return target

    def fallbacks(self, model: str) -> tuple[str, ...]:
        return self.fallback.get(model, ())

    def release(self, upstream: Upstream, ok: bool | None) -> None:
        self.released.append((upstream.public_model, ok))

    def list_models(self) -> list[dict[str, Any]]:
        return []

    def price(self, model: str) -> Price:
        return self.prices.get(model, FREE)

    def counter(self, model: str) -> Upstream | None:
        return None

    def knows(self, model: str) -> bool:
        return model in self.models


@dataclass
class FakeDirectory:
    """Models by public name (a name it lacks is 404), all of the one FakeProvider."""

    models: dict[str, Upstream | APIError]
    fallback: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    provider: FakeProvider = field(init=False)

    def __post_init__(self) -> None:
        self.provider = FakeProvider(self.models, self.fallback, self.prices)

    def find(self, model: str) -> ServedModel:
        if model not in self.models:
            raise APIError(404, f"no {model}", code="model_not_found")
        return ServedModel(model, self.provider, model)

    def check_access(self, model: str, principal: Principal) -> ServedModel:
        served = self.find(model)
        served.check_access(principal)
        return served

    def price(self, model: str) -> Price:
        return self.prices.get(model, FREE)


class FakeForwarder:
    """Answers per public model: a list of outcomes used in turn (an UpstreamError, or an Answer maker)."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def forward(
        self,
        provider: str,
        upstream: Upstream,
        operation: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        native: Any = None,
        native_answer: bool = False,
    ) -> Answer:
        self.calls.append((upstream.public_model, dict(body)))
        outcome = self.script[upstream.public_model].pop(0)
        if isinstance(outcome, UpstreamError | APIError):
            raise outcome
        return outcome()  # type: ignore[no-any-return]


def document_answer(model: str, **kw: Any) -> Any:
    return lambda: Answer(model, document=Event.of(completion(**kw)))


def stream_answer(model: str, words: list[str]) -> Any:
    return lambda: Answer(
        model, stream=ListStream(chunks(words), {"prompt_tokens": 3, "completion_tokens": len(words)})
    )


class FakeLimiter:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.admitted: list[int] = []
        self.settled: list[tuple[int, int]] = []

    async def admit(
        self,
        p: Principal,
        estimated_tokens: int,
        count_request: bool = True,
        ask: object = None,
        hold: bool = False,
    ) -> Admission:
        if self.refuse:
            raise APIError(429, "slow down", code="rate_limit_exceeded", headers={"retry-after": "1"})
        self.admitted.append(estimated_tokens)
        return Admission(estimated_tokens if p.limited else 0, {"x-ratelimit-limit-tokens": str(p.tpm_limit)})

    async def settle(self, p: Principal, admission: Admission, actual_tokens: int, actual_cost: int = 0) -> None:
        self.settled.append((admission.reserved_tokens, actual_tokens))


class FakeSpend:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.tracked: dict[str, Any] = {}
        self._ids = 0

    def record(self, record: Any) -> None:
        self.records.append(record)

    def new_id(self) -> str:
        self._ids += 1
        return f"r{self._ids}"

    def track(self, record_id: str, snapshot: Any) -> None:
        self.tracked[record_id] = snapshot

    def untrack(self, record_id: str) -> None:
        self.tracked.pop(record_id, None)


class FakeCache:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def key(self, path: str, body: dict[str, Any], key_id: str) -> str:
        return f"{path}:{body.get('model')}:{body['messages'][-1]['content']}"

    async def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    async def put(self, key: str, entry: dict[str, Any]) -> None:
        self.entries[key] = entry


class Spawner:
    """Runs what a step spawns when the test says so (as the gateway runs it after the response)."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def __call__(self, coro: Any) -> None:
        self.pending.append(coro)

    async def run(self) -> None:
        while self.pending:
            await self.pending.pop(0)


class FakePipeline:
    """A pipeline that answers each run with the next of `outcomes` (an answer, or an error raised)."""

    def __init__(self, outcomes: list[Answer | APIError]) -> None:
        self.outcomes = outcomes
        self.contexts: list[RequestContext] = []

    async def run(self, ctx: RequestContext) -> Answer:
        self.contexts.append(ctx)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, APIError):
            raise outcome
        return outcome
