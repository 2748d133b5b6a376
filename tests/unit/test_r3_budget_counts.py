"""Issue 29, the attacker's review of the money budgets: what a request is reserved for.

The number of answers (`n` for each prompt of a list), counts sent as floats or booleans, every
completion limit capped, and the prompt's bound for text (its UTF-8 bytes), which the budgets reserve."""

from __future__ import annotations

import asyncio
from typing import Any

from iir_gateway.accounting.admission import Admission, BudgetAsk
from iir_gateway.accounting.prices import Price
from iir_gateway.accounting.token_estimate import (
    MESSAGE_OVERHEAD,
    asked_max_tokens,
    choices,
    estimate_tokens,
    prompt_bound,
    prompts,
)
from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.access import Access
from iir_gateway.pipeline.steps.admit import Admit
from iir_gateway.pipeline.steps.dispatch import Dispatch
from iir_gateway.pipeline.steps.validate import Validate
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest
from iir_gateway.upstream.target import Upstream
from iir_gateway.wire.base import NativeBody
from tests.unit.fakes import FakeDirectory, FakeForwarder, Spawner, document_answer

A = "fake/a"
FUNDED = Principal("k3", "funded", admin=False, priority=0, allowed_models=(), max_budget=10.0)


# Finding 1: a list of prompts paid for one answer and got one per prompt.


def test_a_list_of_prompts_is_an_answer_per_prompt_times_n() -> None:
    assert choices({"prompt": ["hi"] * 500}) == 500
    assert choices({"prompt": ["hi"] * 100, "n": 8}) == 800
    assert choices({"prompt": [[1, 2, 3]] * 20, "n": 2}) == 40  # lists of token ids
    assert prompts({"prompt": [1] * 6000}) == 1 and choices({"prompt": [1] * 6000, "n": 3}) == 3  # one prompt of ids
    assert choices({"prompt": "hi"}) == 1 and choices({"messages": [], "n": 4}) == 4
    assert estimate_tokens({"prompt": ["hi"] * 500, "max_tokens": 16}, 256).completion == 500 * 16


def test_token_id_prompts_count_one_token_per_id() -> None:
    assert estimate_tokens({"prompt": [1] * 6000, "max_tokens": 1}, 256).prompt == 6000
    assert estimate_tokens({"prompt": [[1] * 6000] * 20, "max_tokens": 1}, 256).prompt == 120_000
    assert prompt_bound({"prompt": [1] * 6000}) >= 6000
    assert prompt_bound({"prompt": [[1] * 6000] * 20}) >= 120_000
    assert estimate_tokens({"input": [[1] * 50] * 2}, 0).prompt == 100  # embeddings too


# Finding 2: `n: 8.0` reserved one answer; `max_completion_tokens: 4000.0` counted as not given.


def test_integral_floats_count_and_booleans_do_not() -> None:
    assert choices({"messages": [], "n": 8.0}) == 8
    assert choices({"messages": [], "n": True}) == 1
    assert asked_max_tokens({"max_completion_tokens": 4000.0}) == 4000
    assert asked_max_tokens({"max_tokens": True}) is None
    assert asked_max_tokens({"max_tokens": 10, "max_completion_tokens": 4000}) == 4000  # the larger one


class AskingLimiter:
    """Records what the budgets were asked and grants `granted` completion tokens to a flexible ask."""

    def __init__(self, granted: int = 7) -> None:
        self.asks: list[BudgetAsk] = []
        self.granted = granted

    async def admit(
        self, p: Principal, estimated_tokens: int, count_request: bool = True, ask: Any = None, hold: bool = False
    ) -> Admission:
        assert isinstance(ask, BudgetAsk)
        self.asks.append(ask)
        return Admission(0, {}, 1, granted=self.granted if ask.flexible else ask.completion)

    async def settle(self, p: Principal, admission: Admission, actual_tokens: int, actual_cost: int = 0) -> None:
        pass


def _send(
    body: dict[str, Any], operation: str = "chat/completions", native: NativeBody | None = None
) -> tuple[BudgetAsk, dict[str, Any], Answer]:
    directory = FakeDirectory(
        {A: Upstream("http://x/v1", "a", public_model=A)}, prices={A: Price(input=1.0, output=2.0)}
    )
    forwarder, limiter = FakeForwarder({A: [document_answer(A)]}), AskingLimiter()
    schema = ChatCompletionRequest if operation == "chat/completions" else CompletionRequest
    steps = [Validate(), Access(directory), Admit(limiter, directory, 100, Spawner()), Dispatch(directory, forwarder)]
    ctx = RequestContext(operation, schema, principal=FUNDED, body={"model": A, **body}, native=native)
    answer = asyncio.run(Pipeline(steps).run(ctx))
    return limiter.asks[0], forwarder.calls[0][1], answer


def test_counts_are_forwarded_as_the_integers_reserved() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    ask, sent, _ = _send({**chat, "n": 8.0, "max_tokens": 5})
    assert ask.choices == 8 and sent["n"] == 8 and type(sent["n"]) is int
    ask, sent, answer = _send({**chat, "max_completion_tokens": 4000.0})
    assert not ask.flexible and ask.completion == 4000
    assert sent["max_completion_tokens"] == 4000 and type(sent["max_completion_tokens"]) is int
    assert "max_tokens" not in sent and "x-iir-max-tokens" not in answer.headers
    ask, sent, _ = _send({**chat, "n": "3", "max_tokens": "9"})
    assert ask.choices == 3 and ask.completion == 9 and (sent["n"], sent["max_tokens"]) == (3, 9)
    ask, sent, _ = _send({"prompt": ["hi"] * 10, "n": 2.0, "max_tokens": 4}, operation="completions")
    assert ask.choices == 20 and sent["n"] == 2


def test_a_cap_is_written_to_every_completion_limit() -> None:
    native = NativeBody("anthropic", {"model": A, "max_tokens": 4000, "messages": []})
    ask, sent, answer = _send(
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": None}, native=native
    )
    assert ask.flexible and answer.headers["x-iir-max-tokens"] == "7"
    assert sent["max_tokens"] == 7 and sent["max_completion_tokens"] == 7
    assert native.body["max_tokens"] == 7


# Finding 3: the budgets reserved the characters ÷ 4 estimate; "a a a" is one token per 2 characters.


def test_the_prompt_bound_counts_every_byte_of_text() -> None:
    text = "a " * 5500
    body = {"messages": [{"role": "user", "content": text}]}
    assert estimate_tokens(body, 0).prompt == 2754  # what was reserved: the simulator bills 7,150
    assert prompt_bound(body) == 11_000 + 2 * MESSAGE_OVERHEAD
    assert prompt_bound({"messages": [{"role": "user", "content": "日本語🙂"}]}) >= 13  # UTF-8 bytes
    parts = [{"type": "text", "text": "x" * 100}, {"type": "image_url", "image_url": {"url": "data:," + "A" * 9999}}]
    assert 100 <= prompt_bound({"messages": [{"role": "user", "content": parts}]}) < 200  # the image: not bytes
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "y" * 500}}
    tools = [{"type": "function", "function": {"name": "g", "description": "z" * 700, "parameters": {}}}]
    with_tools = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}], "tools": tools}
    assert prompt_bound(with_tools) >= 1200
    assert prompt_bound({"prompt": ["hi"] * 500}) >= 1000
