"""The official `openai` SDK against the real running stack."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from iir_dev.stack import Stack
from tests.conftest import SERVED

MODEL = f"local/{SERVED}"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello"},
]


def test_models_list_shows_ready_local_models(openai_client: openai.OpenAI) -> None:
    ids = [m.id for m in openai_client.models.list()]
    assert MODEL in ids
    assert "local/pending" not in ids  # not ready: no endpoint
    model = openai_client.models.retrieve(MODEL)
    assert model.object == "model" and model.id == MODEL and model.created > 0


def test_chat_completion_has_openai_shape(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=12)
    resp = raw.parse()
    assert raw.headers["x-iir-model"] == MODEL
    assert raw.headers["x-request-id"]
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-") and resp.created > 0 and resp.model == SERVED
    choice = resp.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None and resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_completion_is_deterministic(openai_client: openai.OpenAI) -> None:
    first = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    second = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert first.choices[0].message.content == second.choices[0].message.content


def test_streaming_chat_matches_non_streaming(openai_client: openai.OpenAI) -> None:
    whole = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    chunks = list(
        openai_client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=10, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert whole.usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_without_include_usage_has_no_usage_chunk(openai_client: openai.OpenAI) -> None:
    chunks = list(openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)


def test_raw_sse_ends_with_done(stack: Stack, api_key: str) -> None:
    with httpx.stream(
        "POST",
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": MODEL, "messages": MESSAGES, "stream": True},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_text_completion(openai_client: openai.OpenAI) -> None:
    resp = openai_client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5)
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.choices[0].text and resp.usage is not None and resp.usage.completion_tokens <= 5
    streamed = list(openai_client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == resp.choices[0].text


def test_x_api_key_header_and_request_id_are_honoured(stack: Stack, api_key: str) -> None:
    resp = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"X-API-Key": api_key, "X-Request-ID": "my-trace-42"},
        json={"model": MODEL, "messages": MESSAGES},
    )
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == "my-trace-42"


def test_master_key_works(stack: Stack) -> None:
    from tests.conftest import MASTER_KEY

    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices


def test_key_scoped_to_other_models_gets_403(stack: Stack) -> None:
    key = stack.create_key("scoped", allowed_models=["openai/*"])
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_allowed"
    assert client.models.list().data == []
