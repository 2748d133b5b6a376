"""Request validation, without a server: bad bodies are 400s naming the field (OpenAI's `param`), and
bodies that are not a JSON object are 400 `invalid_json`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iir_gateway.errors import APIError
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.steps.validate import Validate
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, InferenceRequest
from iir_gateway.server.bodies import parse_json_object

MODEL = "local/m"
MESSAGES = [{"role": "user", "content": "hi"}]


def validate(body: dict[str, Any], schema: type[InferenceRequest] = ChatCompletionRequest) -> RequestContext:
    ctx = RequestContext("chat/completions", schema, body=body)
    asyncio.run(Validate().before(ctx))
    return ctx


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": MODEL}, "messages", "missing_required_parameter"),
        ({"messages": MESSAGES}, "model", "missing_required_parameter"),
        ({"model": MODEL, "messages": "hi"}, "messages", "invalid_value"),
        ({"model": MODEL, "messages": []}, "messages", "invalid_value"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": MODEL, "messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter"),
        ({"model": MODEL, "messages": MESSAGES, "temperature": "hot"}, "temperature", "invalid_value"),
        ({"model": MODEL, "messages": MESSAGES, "temperature": 9}, "temperature", "invalid_value"),
        ({"model": MODEL, "messages": MESSAGES, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"model": MODEL, "messages": MESSAGES, "max_tokens": 10**9}, "max_tokens", "invalid_value"),
        ({"model": MODEL, "messages": MESSAGES, "stream": "yes please"}, "stream", "invalid_value"),
        ({"model": MODEL, "messages": MESSAGES, "seed": 2**70}, "seed", "invalid_value"),
        ({"model": 42, "messages": MESSAGES}, "model", "invalid_value"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(APIError) as err:
        validate(body)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)


def test_completions_and_embeddings_name_their_own_fields() -> None:
    with pytest.raises(APIError) as err:
        validate({"model": MODEL}, CompletionRequest)
    assert err.value.param == "prompt"
    with pytest.raises(APIError) as err:
        validate({"model": MODEL}, EmbeddingRequest)
    assert err.value.param == "input"


def test_a_valid_body_fills_in_the_context() -> None:
    ctx = validate({"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
    assert (ctx.model, ctx.stream, ctx.client_usage) == (MODEL, True, True)


@pytest.mark.parametrize("content", [b"", b"   ", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_unparseable_bodies_are_400(content: bytes) -> None:
    with pytest.raises(APIError) as err:
        parse_json_object(content)
    assert (err.value.status, err.value.code) == (400, "invalid_json")


def test_a_request_without_a_model_goes_to_the_default_model() -> None:
    ctx = RequestContext("chat/completions", ChatCompletionRequest, body={"messages": MESSAGES})
    asyncio.run(Validate(default_model="auto").before(ctx))
    assert ctx.model == "auto"
    embeddings = RequestContext("embeddings", EmbeddingRequest, body={"input": "x"})
    with pytest.raises(APIError) as refused:  # an embedding model is never guessed
        asyncio.run(Validate(default_model="auto").before(embeddings))
    assert refused.value.param == "model"
