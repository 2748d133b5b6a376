"""What real vLLM answers, through the gateway, must reach the client whole."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolChoiceOptionParam
from pydantic import BaseModel, Field

from iir_dev.stack import Stack
from tests.json_values import json_object
from tests.vllm.conftest import MODEL
from tests.vllm.recording import TOOLS, WEATHER
from tests.waiting import wait_for

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello in three words."}]


@pytest.fixture(scope="module")
def client(vllm_stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vllm_stack.gateway_url}/v1", api_key=key, timeout=120)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]


def test_chat_completion(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert out.choices[0].message.content and out.usage and out.usage.completion_tokens > 0


@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_with_and_without_usage(client: openai.OpenAI, include_usage: bool) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True} if include_usage else None,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert bool(chunks[-1].usage) is include_usage


def test_n_two_answers_two_choices(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=6, n=2, temperature=0.8, seed=1)
    assert sorted(c.index for c in out.choices) == [0, 1]


def test_an_upstream_validation_error_reaches_the_client(vllm_stack: Stack, key: str) -> None:
    resp = httpx.post(
        f"{vllm_stack.gateway_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100_000},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    assert "error" in resp.json()


def test_logprobs_and_stop_pass_through(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, stop=["\n"]
    )
    entries = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert entries and len(entries[0].top_logprobs) == 2
    assert "\n" not in (out.choices[0].message.content or "")


def test_a_cached_streamed_n2_answer_replays_both_choices_whole(client: openai.OpenAI) -> None:
    def streamed() -> dict[int, str]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=6,
            n=2,
            seed=7,
            temperature=0.9,
            stream=True,
            extra_headers={"x-iir-cache": "on"},
        )
        texts: dict[int, str] = {}
        for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        return texts

    first = streamed()
    assert sorted(first) == [0, 1]
    assert streamed() == first  # from the cache: both choices, each its own text


def test_an_async_job_keeps_the_answer_and_its_id(vllm_stack: Stack, key: str) -> None:
    headers = {"authorization": f"Bearer {key}"}
    job = httpx.post(
        f"{vllm_stack.gateway_url}/v1/async/chat/completions",
        headers=headers,
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 6},
        timeout=30,
    ).json()

    def finished() -> dict[str, Any] | None:
        got = httpx.get(f"{vllm_stack.gateway_url}/v1/async/chat/completions/{job['job_id']}", headers=headers).json()
        return got if got["status"] in ("completed", "failed") else None

    done = wait_for(finished, timeout=120, interval=0.5, what="the job to finish")
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["id"] != "chatcmpl-" and result["choices"][0]["message"]["content"]


def test_completions_streamed_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert whole.choices[0].text and whole.usage and whole.usage.completion_tokens == 5
    two = client.completions.create(model=MODEL, prompt=["One, two,", "A, B,"], max_tokens=3, temperature=0)
    assert sorted(c.index for c in two.choices) == [0, 1]
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text


def test_a_seed_gives_the_same_sample(client: openai.OpenAI) -> None:
    def sample() -> str | None:
        out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=1.0, seed=42)
        return out.choices[0].message.content

    assert sample() == sample()


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}], ids=["required", "named"]
)
def test_tool_calls(client: openai.OpenAI, tool_choice: ChatCompletionToolChoiceOptionParam) -> None:
    out = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER,
        tools=TOOLS,
        tool_choice=tool_choice,
        max_tokens=80,
        temperature=0,
    )
    calls = out.choices[0].message.tool_calls
    assert calls and calls[0].type == "function" and calls[0].function.name == "get_weather"
    assert calls[0].id.startswith("chatcmpl-tool-")


def test_tool_choice_auto_answers(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER,
        tools=TOOLS,
        tool_choice="auto",
        max_tokens=20,
        temperature=0,
    )
    message = out.choices[0].message
    assert message.content or message.tool_calls  # the tiny model answers in text; either is a valid answer


def test_a_streamed_tool_call_is_whole_and_replays_whole_from_the_cache(client: openai.OpenAI) -> None:
    def streamed() -> tuple[str, str, str | None]:
        name, args, finish = "", "", None
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=WEATHER,
            tools=TOOLS,
            tool_choice="required",
            max_tokens=80,
            temperature=0,
            stream=True,
            extra_headers={"x-iir-cache": "on"},
        ):
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    name += (call.function and call.function.name) or ""
                    args += (call.function and call.function.arguments) or ""
                finish = choice.finish_reason or finish
        return name, args, finish

    first = streamed()
    assert first[0] == "get_weather" and first[1] and first[2] == "tool_calls"
    assert streamed() == first  # the cached replay: the same call, not a bare finish_reason


def test_json_object_response_format(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a name."}],
        response_format={"type": "json_object"},
        max_tokens=10,
        temperature=0,
    )
    assert (out.choices[0].message.content or "").lstrip().startswith("{")


def test_embeddings_on_a_chat_model_is_a_readable_404(vllm_stack: Stack, key: str) -> None:
    resp = httpx.post(
        f"{vllm_stack.gateway_url}/v1/embeddings",
        headers={"authorization": f"Bearer {key}"},
        json={"model": MODEL, "input": "hello"},
        timeout=30,
    )
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == f"The upstream for `{MODEL}` answered 404: Not Found."


def test_upstream_refusals_keep_their_fields(vllm_stack: Stack, key: str) -> None:
    def refusal(**body: object) -> dict[str, Any]:
        resp = httpx.post(
            f"{vllm_stack.gateway_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": MODEL, "messages": MESSAGES, **body},
            timeout=30,
        )
        assert resp.status_code == 400, resp.text
        return json_object(resp.json()["error"])

    assert refusal(max_tokens=100_000)["param"] == "max_tokens"
    assert refusal(top_p=0)["param"] == "top_p"
    assert "greedy" in refusal(n=2, temperature=0)["message"]


def test_the_client_request_id_names_the_answer(vllm_stack: Stack, key: str) -> None:
    resp = httpx.post(
        f"{vllm_stack.gateway_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", "x-request-id": "contract-42"},
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 3},
        timeout=60,
    )
    assert resp.json()["id"] == "contract-42" and resp.headers["x-request-id"] == "contract-42"


def _running(vllm_url: str) -> float:
    text = httpx.get(f"{vllm_url}/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("vllm:num_requests_running{"))
    return float(line.rsplit(" ", 1)[1])


def test_a_client_that_leaves_stops_the_generation(vllm_stack: Stack, key: str, vllm_url: str) -> None:
    """Not streamed (600 tokens take about 16 s here, at 35-38 tokens/s): the client gives up after 3 s,
    and vLLM stops."""
    outcome: list[BaseException] = []

    def give_up() -> None:
        try:
            httpx.post(
                f"{vllm_stack.gateway_url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": MODEL, "messages": MESSAGES, "max_tokens": 600, "min_tokens": 600},
                timeout=httpx.Timeout(30, read=3),
            )
        except httpx.ReadTimeout as exc:
            outcome.append(exc)

    client = threading.Thread(target=give_up)
    client.start()
    assert wait_for(lambda: _running(vllm_url) == 1, timeout=3, interval=0.1, what="vLLM to start generating")
    client.join()
    assert outcome, "the answer came before the client gave up"
    assert wait_for(lambda: _running(vllm_url) == 0, timeout=5, interval=0.2, what="vLLM to abort the request")


def test_a_cut_stream_is_billed_for_what_was_generated(vllm_stack: Stack) -> None:
    admin = vllm_stack.create_key("contract-admin", admin=True)
    made = httpx.post(
        f"{vllm_stack.gateway_url}/api/v1/apikeys",
        headers={"authorization": f"Bearer {admin}"},
        json={"name": "cut-stream"},
    ).json()
    seen = 0
    with httpx.stream(
        "POST",
        f"{vllm_stack.gateway_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {made['key']}"},
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 200, "min_tokens": 200, "stream": True},
        timeout=60,
    ) as resp:
        for line in resp.iter_lines():
            seen += '"content":"' in line and '"content":""' not in line
            if seen == 10:
                break

    def billed() -> dict[str, Any] | None:
        usage = httpx.get(
            f"{vllm_stack.gateway_url}/api/v1/apikeys/{made['id']}/usage", headers={"authorization": f"Bearer {admin}"}
        ).json()["totals"]
        return usage if usage["completion_tokens"] >= 10 else None

    totals = wait_for(billed, timeout=10, interval=0.3, what="the cut stream's usage")
    assert 10 <= totals["completion_tokens"] < 60 and totals["prompt_tokens"] > 0


def test_an_async_job_whose_answer_is_a_tool_call_completes(vllm_stack: Stack, key: str) -> None:
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": WEATHER, "tools": TOOLS, "tool_choice": "required", "max_tokens": 80}
    job = httpx.post(f"{vllm_stack.gateway_url}/v1/async/chat/completions", headers=headers, json=body).json()

    def finished() -> dict[str, Any] | None:
        got = httpx.get(f"{vllm_stack.gateway_url}/v1/async/chat/completions/{job['job_id']}", headers=headers).json()
        return got if got["status"] in ("completed", "failed") else None

    done = wait_for(finished, timeout=120, interval=0.5, what="the job to finish")
    assert done["status"] == "completed", done
    assert done["result"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


class Greeting(BaseModel):
    greeting: str = Field(max_length=20)
    words: int


def test_structured_outputs_parse_through_the_gateway(client: openai.OpenAI) -> None:
    """`client.chat.completions.parse` with a pydantic model: vLLM's guided decoding follows the strict
    schema, and the SDK reads the answer back into the model."""
    out = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello in three words."}],
        response_format=Greeting,
        max_tokens=60,
        temperature=0,
    )
    assert isinstance(out.choices[0].message.parsed, Greeting)


def test_count_tokens_is_what_the_answer_bills(vllm_stack: Stack, key: str) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=vllm_stack.gateway_url, api_key=key, max_retries=0, timeout=120)
    asked: Any = {"system": "Be brief.", "messages": [{"role": "user", "content": "Say hello."}]}
    counted = client.messages.count_tokens(model=MODEL, **asked)
    answer = client.messages.create(model=MODEL, max_tokens=4, **asked)
    usage = answer.usage
    billed = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    assert counted.input_tokens == billed


def test_responses_include_the_text_s_logprobs(client: openai.OpenAI) -> None:
    asked: Any = {"model": MODEL, "input": "Say hello.", "max_output_tokens": 5, "temperature": 0}
    whole = client.responses.create(**asked, include=["message.output_text.logprobs"], top_logprobs=2)
    part = whole.output[0].content[0]
    assert part.logprobs and len(part.logprobs[0].top_logprobs) == 2
    assert "".join(lp.token for lp in part.logprobs) == part.text
    streamed = [
        e
        for e in client.responses.create(**asked, include=["message.output_text.logprobs"], stream=True)
        if e.type == "response.output_text.delta"
    ]
    assert streamed and all(e.logprobs for e in streamed)


def test_the_messages_api_against_vllm(vllm_stack: Stack, key: str) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=vllm_stack.gateway_url, api_key=key, max_retries=0, timeout=120)
    message = client.messages.create(
        model=MODEL, max_tokens=8, system="Be brief.", messages=[{"role": "user", "content": "Say hello."}]
    )
    assert message.content[0].text and message.usage.output_tokens > 0  # type: ignore[union-attr]
    weather = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": TOOLS[0]["function"]["parameters"],
    }
    with client.messages.stream(
        model=MODEL,
        max_tokens=150,
        extra_body={"temperature": 0},  # greedy: the tiny model's call is the same every time
        tools=[weather],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and any(
        b.type == "tool_use" and b.name == "get_weather" for b in final.content
    )


def test_the_responses_api_against_vllm(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=8)
    assert response.output_text and response.usage and response.usage.output_tokens > 0
    followed = client.responses.create(
        model=MODEL, input="Again.", previous_response_id=response.id, max_output_tokens=8
    )
    assert followed.output_text
    events = list(client.responses.create(model=MODEL, input="Count to three.", max_output_tokens=8, stream=True))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")


def test_a_batch_against_vllm(client: openai.OpenAI) -> None:
    import io
    import json

    lines = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": MESSAGES, "max_tokens": 4},
        }
        for i in range(3)
    ]
    uploaded = client.files.create(
        file=("b.jsonl", io.BytesIO("\n".join(map(json.dumps, lines)).encode())), purpose="batch"
    )
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")

    def done() -> object:
        got = client.batches.retrieve(batch.id)
        return got if got.status in ("completed", "failed") else None

    final = wait_for(done, timeout=120, interval=0.5, what="the batch to finish")
    assert final.status == "completed" and final.request_counts.completed == 3  # type: ignore[attr-defined]


def test_a_budgeted_request_gets_the_max_tokens_its_budget_pays_and_integer_counts(vllm_stack: Stack) -> None:
    """A key with a budget and no `max_tokens`: vLLM is sent the `max_tokens` the budget can pay; counts
    the client sent as floats reach vLLM as integers (issue 29)."""
    url = vllm_stack.gateway_url
    admin = {"authorization": f"Bearer {vllm_stack.create_key('budget-admin', admin=True)}"}
    made = httpx.post(f"{url}/api/v1/apikeys", headers=admin, json={"name": "budgeted", "budget_tokens": 400}).json()
    headers = {"authorization": f"Bearer {made['key']}"}
    capped = httpx.post(
        f"{url}/v1/chat/completions", headers=headers, json={"model": MODEL, "messages": MESSAGES}, timeout=120
    )
    assert capped.status_code == 200, capped.text
    granted = int(capped.headers["x-iir-max-tokens"])
    assert 0 < granted < 400 and capped.json()["usage"]["completion_tokens"] <= granted
    floats = httpx.post(
        f"{url}/v1/chat/completions",
        headers=headers,
        json={"model": MODEL, "messages": MESSAGES, "n": 2.0, "max_tokens": 3.0},
        timeout=120,
    )
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert len(body["choices"]) == 2 and body["usage"]["completion_tokens"] <= 6
