"""The request pipeline with fakes for everything it consumes: step order, hooks, exactly-once
completion, retries and fallbacks, usage hiding, limits settling, the cache, accounting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iir_gateway.accounting.prices import Price
from iir_gateway.answer import Answer, Event, ListStream
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.step import Step
from iir_gateway.pipeline.steps.access import Access
from iir_gateway.pipeline.steps.account import Account
from iir_gateway.pipeline.steps.admit import Admit
from iir_gateway.pipeline.steps.cache import Cache
from iir_gateway.pipeline.steps.dispatch import Dispatch
from iir_gateway.pipeline.steps.validate import Validate
from iir_gateway.providers.directory import ServedModel
from iir_gateway.schemas import ChatCompletionRequest
from iir_gateway.upstream.errors import UpstreamError
from iir_gateway.upstream.target import Upstream
from tests.unit.fakes import (
    LIMITED,
    PRINCIPAL,
    FakeCache,
    FakeDirectory,
    FakeForwarder,
    FakeLimiter,
    FakeSpend,
    Spawner,
    document_answer,
    stream_answer,
)

A, B = "fake/a", "fake/b"


def upstream(model: str, retries: int = 2) -> Upstream:
    return Upstream("http://x/v1", model.split("/")[1], public_model=model, retries=retries)


def ctx(body: dict[str, Any] | None = None, principal: Any = PRINCIPAL, **kw: Any) -> RequestContext:
    body = body or {"model": A, "messages": [{"role": "user", "content": "hi"}]}
    return RequestContext("chat/completions", ChatCompletionRequest, principal=principal, body=body, **kw)


class Recorder(Step):
    def __init__(self, name: str, log: list[str], answer: Answer | None = None, fail: APIError | None = None):
        self.name, self.log, self.answer, self.fail = name, log, answer, fail

    async def before(self, ctx: RequestContext) -> Answer | None:
        self.log.append(f"{self.name}.before")
        if self.fail:
            raise self.fail
        return self.answer

    def on_document(self, ctx: RequestContext, document: Event) -> Event:
        self.log.append(f"{self.name}.document")
        return document

    def on_chunk(self, ctx: RequestContext, event: Event) -> list[Event]:
        self.log.append(f"{self.name}.chunk")
        return [event]

    def on_complete(self, ctx: RequestContext) -> None:
        self.log.append(f"{self.name}.complete:{ctx.status}:{ctx.ok}")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_steps_run_in_order_and_the_answering_step_ends_the_befores() -> None:
    log: list[str] = []
    answer = Answer("m", document=Event.of({"usage": {"prompt_tokens": 1}}))
    steps = [Recorder("a", log), Recorder("b", log, answer=answer), Recorder("c", log)]
    got = run(Pipeline(steps).run(ctx()))
    assert got is answer
    assert log == ["a.before", "b.before", "a.document", "b.document", "a.complete:200:True", "b.complete:200:True"]


def test_an_error_completes_only_the_steps_that_ran_and_carries_their_headers() -> None:
    log: list[str] = []

    class Header(Step):
        async def before(self, ctx: RequestContext) -> Answer | None:
            ctx.response_headers["x-iir-route"] = "policy=p"
            return None

    steps = [Header(), Recorder("a", log), Recorder("b", log, fail=APIError(403, "no")), Recorder("c", log)]
    with pytest.raises(APIError) as err:
        run(Pipeline(steps).run(ctx()))
    assert err.value.headers["x-iir-route"] == "policy=p"
    assert log == ["a.before", "b.before", "a.complete:403:False", "b.complete:403:False"]


async def _consume(answer: Answer, take: int | None = None) -> list[Event]:
    assert answer.stream is not None
    out = []
    async for event in answer.stream:
        out.append(event)
        if take is not None and len(out) == take:
            break
    await answer.stream.aclose()
    await answer.stream.aclose()  # twice: completes once
    return out


@pytest.mark.parametrize("take", [None, 1, 0])
def test_a_stream_completes_once_whether_read_to_the_end_cut_or_never_read(take: int | None) -> None:
    log: list[str] = []
    source = ListStream([Event.of({"choices": [{"delta": {"content": w}}]}) for w in "abc"], {"completion_tokens": 3})
    pipeline = Pipeline([Recorder("a", log), Recorder("b", log, answer=Answer("m", stream=source))])

    async def go() -> list[Event]:
        answer = await pipeline.run(ctx())
        assert log == ["a.before", "b.before"]  # nothing completes before the stream ends
        if take == 0:
            assert answer.stream is not None
            await answer.stream.aclose()
            return []
        return await _consume(answer, take)

    events = run(go())
    assert len(events) == (3 if take is None else take)
    ended = [entry for entry in log if "complete" in entry]
    assert ended == [f"a.complete:200:{take is None}", f"b.complete:200:{take is None}"]


def dispatch_pipeline(directory: FakeDirectory, forwarder: FakeForwarder) -> Pipeline:
    return Pipeline([Validate(), Dispatch(directory, forwarder)])


def test_retryable_failures_are_retried_then_the_fallback_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("iir_gateway.pipeline.steps.dispatch.BACKOFF_S", 0.0)
    directory = FakeDirectory({A: upstream(A, retries=1), B: upstream(B)}, fallback={A: (B,)})
    fail = UpstreamError(502, "down", "upstream_error", retryable=True)
    forwarder = FakeForwarder({A: [fail, fail], B: [document_answer(B)]})
    answer = run(dispatch_pipeline(directory, forwarder).run(ctx()))
    assert answer.model == B
    assert [m for m, _ in forwarder.calls] == [A, A, B]
    assert directory.provider.released == [(A, False), (A, False), (B, True)]
    assert all(body["model"] == A for _, body in forwarder.calls)  # the client's body is never rewritten


def test_a_non_retryable_failure_goes_to_the_fallback_at_once() -> None:
    directory = FakeDirectory({A: upstream(A), B: upstream(B)}, fallback={A: (B,)})
    forwarder = FakeForwarder(
        {A: [UpstreamError(504, "slow", "upstream_timeout", retryable=False)], B: [document_answer(B)]}
    )
    assert run(dispatch_pipeline(directory, forwarder).run(ctx())).model == B
    assert [m for m, _ in forwarder.calls] == [A, B]


def test_the_callers_own_refusal_is_not_hidden_by_fallbacks() -> None:
    directory = FakeDirectory({A: APIError(403, "not yours", code="model_not_allowed"), B: upstream(B)}, {A: (B,)})
    with pytest.raises(APIError) as err:
        run(dispatch_pipeline(directory, FakeForwarder({})).run(ctx()))
    assert err.value.code == "model_not_allowed"


def test_an_unavailable_model_falls_back_and_the_last_attempts_error_is_raised_when_all_fail() -> None:
    saturated = APIError(429, "busy", code="model_saturated")
    directory = FakeDirectory({A: saturated, B: upstream(B)}, fallback={A: (B,)})
    forwarder = FakeForwarder({B: [UpstreamError(502, "down", "upstream_error", retryable=False)]})
    with pytest.raises(APIError) as err:
        run(dispatch_pipeline(directory, forwarder).run(ctx()))
    assert err.value.code == "upstream_error"  # what the last real attempt answered


def test_the_asked_model_is_found_once_and_a_fallback_only_when_it_is_tried() -> None:
    directory = FakeDirectory({A: APIError(503, "not ready", code="model_not_ready"), B: upstream(B)}, {A: (B,)})
    found: list[str] = []
    find = directory.find

    def counting_find(model: str) -> ServedModel:
        found.append(model)
        return find(model)

    directory.find = counting_find  # type: ignore[method-assign]
    steps = [
        Validate(),
        Access(directory),
        Admit(FakeLimiter(), directory, 100, Spawner()),
        Account(FakeSpend(), directory, GatewayMetrics()),
        Dispatch(directory, FakeForwarder({B: [document_answer(B)]})),
    ]
    assert run(Pipeline(steps).run(ctx())).model == B
    assert found == [A, B]


def test_the_usage_event_is_hidden_unless_asked_for_but_still_accounted() -> None:
    directory = FakeDirectory({A: upstream(A)})
    spend = FakeSpend()
    metrics = GatewayMetrics()

    async def go(include_usage: bool) -> list[dict[str, Any]]:
        forwarder = FakeForwarder({A: [stream_answer(A, ["x", "y"])]})
        pipeline = Pipeline(
            [Validate(), Access(directory), Account(spend, directory, metrics), Dispatch(directory, forwarder)]
        )
        body = {"model": A, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        return [e.json() for e in await _consume(await pipeline.run(ctx(body)))]

    hidden, shown = run(go(False)), run(go(True))
    assert not any("usage" in e for e in hidden) and "usage" in shown[-1]
    rows = [(r.key_id, r.model, r.prompt_tokens, r.completion_tokens) for r in spend.records]
    assert rows == [("k1", A, 3, 2), ("k1", A, 3, 2)]
    assert len({r.record_id for r in spend.records}) == 2 and not spend.tracked  # one id each, untracked


def test_limits_reserve_the_estimate_and_settle_what_was_used_once() -> None:
    directory = FakeDirectory({A: upstream(A)})
    limiter, spawn = FakeLimiter(), Spawner()

    async def go(forward: list[Any]) -> None:
        steps = [
            Validate(),
            Admit(limiter, FakeDirectory({}), 100, spawn),
            Dispatch(directory, FakeForwarder({A: forward})),
        ]
        try:
            await Pipeline(steps).run(
                ctx(
                    principal=LIMITED,
                    body={"model": A, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50},
                )
            )
        except APIError:
            pass
        await spawn.run()

    run(go([document_answer(A, prompt=3, completion_tokens=7)]))
    run(go([UpstreamError(400, "bad", "upstream_rejected", retryable=False)]))
    assert limiter.admitted[0] == limiter.admitted[1] > 50  # prompt estimate plus max_tokens
    assert limiter.settled == [(limiter.admitted[0], 10), (limiter.admitted[0], 0)]


def test_a_refused_admission_stops_before_anything_is_sent() -> None:
    forwarder = FakeForwarder({})
    steps = [
        Validate(),
        Admit(FakeLimiter(refuse=True), FakeDirectory({}), 100, Spawner()),
        Dispatch(FakeDirectory({}), forwarder),
    ]
    with pytest.raises(APIError) as err:
        run(Pipeline(steps).run(ctx(principal=LIMITED)))
    assert err.value.status == 429 and forwarder.calls == []


def test_the_cache_stores_a_miss_and_answers_the_next_as_a_stream() -> None:
    directory, cache, spawn = FakeDirectory({A: upstream(A)}), FakeCache(), Spawner()
    forwarder = FakeForwarder({A: [document_answer(A, text="cached words")]})
    pipeline = Pipeline([Validate(), Cache(cache, GatewayMetrics(), spawn), Dispatch(directory, forwarder)])
    body = {"model": A, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}

    async def go() -> tuple[Answer, list[Event]]:
        first = await pipeline.run(ctx(dict(body)))
        await spawn.run()
        second = await pipeline.run(ctx({**body, "stream": True, "stream_options": {"include_usage": True}}))
        return first, await _consume(second)

    first, events = run(go())
    assert first.headers["x-iir-cache"] == "miss" and len(forwarder.calls) == 1
    text = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.json()["choices"])
    assert text == "cached words" and events[-1].json()["usage"]["completion_tokens"] == 2


def test_a_cut_stream_is_not_cached() -> None:
    directory, cache, spawn = FakeDirectory({A: upstream(A)}), FakeCache(), Spawner()
    forwarder = FakeForwarder({A: [stream_answer(A, ["a", "b", "c"])]})
    pipeline = Pipeline([Validate(), Cache(cache, GatewayMetrics(), spawn), Dispatch(directory, forwarder)])
    body = {"model": A, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "stream": True}

    async def go() -> None:
        await _consume(await pipeline.run(ctx(body)), take=1)
        await spawn.run()

    run(go())
    assert cache.entries == {}


def test_access_refuses_unknown_models_before_the_limits() -> None:
    limiter = FakeLimiter()
    steps = [Validate(), Access(FakeDirectory({})), Admit(limiter, FakeDirectory({}), 100, Spawner())]
    with pytest.raises(APIError) as err:
        run(Pipeline(steps).run(ctx()))
    assert err.value.status == 404 and limiter.admitted == []


def test_a_failing_provider_model_opens_its_circuit_and_fallbacks_take_over() -> None:
    from iir_gateway.picking.state import EndpointStates
    from iir_gateway.providers.config import ProviderConfig
    from iir_gateway.providers.directory import ModelDirectory
    from iir_gateway.providers.external import ExternalProvider

    states = EndpointStates(failure_threshold=2, base_ejection_s=60)
    config = ProviderConfig(base_url="http://x/v1", api_key_required=False, models={"a": {"fallbacks": ["ext/b"]}})
    directory = ModelDirectory({"ext": ExternalProvider("ext", config, states)})
    fail = UpstreamError(502, "down", "upstream_error", retryable=False)
    forwarder = FakeForwarder({"ext/a": [fail, fail], "ext/b": [document_answer("ext/b")] * 3})
    pipeline = Pipeline([Validate(), Dispatch(directory, forwarder)])
    body = {"model": "ext/a", "messages": [{"role": "user", "content": "hi"}]}
    answered = [run(pipeline.run(ctx(dict(body)))).model for _ in range(3)]
    assert answered == ["ext/b"] * 3
    assert [m for m, _ in forwarder.calls] == ["ext/a", "ext/b", "ext/a", "ext/b", "ext/b"]  # then skipped


def test_what_a_step_holds_back_passes_only_the_steps_after_it() -> None:
    seen: list[str] = []

    class Holder(Step):
        name = "holder"

        def on_chunk(self, ctx: RequestContext, event: Event) -> list[Event]:
            seen.append("holder")
            return []  # holds everything until the end

        def on_stream_end(self, ctx: RequestContext) -> list[Event]:
            return [Event.of({"held": True})]

    class Watcher(Step):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_chunk(self, ctx: RequestContext, event: Event) -> list[Event]:
            seen.append(self.name)
            return [event]

    source = ListStream([Event.of({"n": 1}), Event.of({"n": 2})], None)
    answering = Recorder("answer", [], answer=Answer("m", stream=source))
    pipeline = Pipeline([Watcher("before"), Holder(), Watcher("after"), answering])
    events = run(_consume(run_answer(pipeline)))
    assert [e.json() for e in events] == [{"held": True}]
    assert sorted(seen) == ["after", "before", "before", "holder", "holder"] and seen[-1] == "after"


def run_answer(pipeline: Pipeline) -> Answer:
    answer: Answer = run(pipeline.run(ctx()))
    return answer


def test_the_directory_parses_a_name_into_its_provider_or_refuses_it() -> None:
    from iir_gateway.picking.state import EndpointStates
    from iir_gateway.principal import Principal
    from iir_gateway.providers.config import ProviderConfig
    from iir_gateway.providers.directory import ModelDirectory
    from iir_gateway.providers.external import ExternalProvider

    config = ProviderConfig(
        base_url="http://x/v1", api_key_required=False, models={"a": {"price": {"input": 1, "output": 2}}}
    )
    directory = ModelDirectory({"ext": ExternalProvider("ext", config, EndpointStates())})
    only_a = Principal("k", "only-a", admin=False, priority=0, allowed_models=("ext/a",))
    for name, status, says in [
        ("a", 404, "Model names are `<provider>/<model>`"),
        ("ext/", 404, "Model names are"),
        ("other/a", 404, "Unknown provider `other` in model `other/a`; known providers: ext."),
        ("ext/b", 403, "This API key may not use the model `ext/b`."),
    ]:
        with pytest.raises(APIError) as refused:
            directory.check_access(name, only_a)
        assert (refused.value.status, refused.value.param) == (status, "model") and says in refused.value.message
    served = directory.check_access("ext/a", only_a)
    assert (served.public, served.name, served.labels(), served.fallbacks()) == ("ext/a", "a", ("ext/a", "ext"), ())
    assert served.price().output == 2 and directory.price("ext/a") == served.price()
    assert directory.find("ext/made-up").labels() == ("other", "ext")  # made-up names do not grow the metrics
    assert directory.price("nonsense") == directory.price("other/a") == Price()
