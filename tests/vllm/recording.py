"""Requests whose real vLLM answers are recorded under `tests/data/vllm/`, and the shape both the
recording and the simulator's answer are compared by (keys, value types, and error fields' values).

`make test-vllm` checks real vLLM against the recordings (`IIR_VLLM_RECORD=1` rewrites them);
`tests/unit/test_simulator_fidelity.py` checks the simulator against them in `make test`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

MODEL = "smollm2-135m-instruct"
RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "vllm"
VLLM_VERSION = "0.32.0"

_HI = [{"role": "user", "content": "Say hello in three words."}]
WEATHER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


# Enough tokens for the tiny model to finish its call (greedy: the same answer every time).
_TOOL_CALL = {"max_tokens": 80, "temperature": 0}

# A strict structured output, as `client.chat.completions.parse` sends a pydantic model's schema.
GREETING = {
    "type": "object",
    "properties": {"greeting": {"type": "string", "maxLength": 20}, "words": {"type": "integer"}},
    "required": ["greeting", "words"],
    "additionalProperties": False,
}
STRUCTURED = ("chat_json_schema", "chat_structured_outputs")  # answers that must be values of GREETING
_JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "Greeting", "schema": GREETING, "strict": True}}


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: dict[str, Any] | None = None  # None: a GET
    method: str = "POST"
    stream: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stream", bool((self.body or {}).get("stream")))


def _chat(name: str, **body: Any) -> Case:
    return Case(name, "/v1/chat/completions", {"model": MODEL, "messages": _HI, "max_tokens": 6, **body})


def _text(name: str, **body: Any) -> Case:
    return Case(
        name, "/v1/completions", {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5, **body}
    )


CASES = [
    Case("models", "/v1/models", method="GET"),
    _chat("chat", temperature=0),
    _chat("chat_stream", temperature=0, stream=True),
    _chat("chat_stream_usage", temperature=0, stream=True, stream_options={"include_usage": True}),
    _chat("chat_n2", n=2, temperature=0.8, seed=1),
    _chat("chat_n2_stream", n=2, temperature=0.8, seed=1, stream=True, stream_options={"include_usage": True}),
    _chat("chat_logprobs", temperature=0, logprobs=True, top_logprobs=2),
    _chat("chat_logprobs_stream", temperature=0, logprobs=True, top_logprobs=2, stream=True),
    _chat("chat_stop", temperature=0, stop=["\n", "."], max_tokens=20),
    _chat("chat_json_object", temperature=0, response_format={"type": "json_object"}, max_tokens=10),
    _chat("chat_json_schema", temperature=0, response_format=_JSON_SCHEMA, max_tokens=60),
    _chat("chat_structured_outputs", temperature=0, structured_outputs={"json": GREETING}, max_tokens=60),
    Case("tokenize_chat", "/tokenize", {"model": MODEL, "messages": _HI}),
    _chat("chat_tools_auto", messages=WEATHER, tools=TOOLS, tool_choice="auto", temperature=0),
    _chat("chat_tools_required", messages=WEATHER, tools=TOOLS, tool_choice="required", **_TOOL_CALL),
    _chat(
        "chat_tools_named",
        messages=WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **_TOOL_CALL,
    ),
    _chat(
        "chat_tools_required_stream", messages=WEATHER, tools=TOOLS, tool_choice="required", **_TOOL_CALL, stream=True
    ),
    _text("completion", temperature=0),
    _text("completion_stream", temperature=0, stream=True, stream_options={"include_usage": True}),
    _text("completion_two_prompts", prompt=["The capital of France is", "One, two,"], temperature=0),
    _text("completion_logprobs", temperature=0, logprobs=2),
    Case("embeddings_on_a_chat_model", "/v1/embeddings", {"model": MODEL, "input": "hello"}),
    _chat("error_max_tokens_above_context", max_tokens=100_000),
    _chat("error_max_tokens_zero", max_tokens=0),
    _chat("error_temperature_negative", temperature=-1),
    _chat("error_top_p_zero", top_p=0),
    _chat("error_n2_greedy", n=2, temperature=0),
    _chat("error_stream_options_without_stream", stream_options={"include_usage": True}),
    _chat("error_unknown_model", model="nope"),
    Case("error_missing_messages", "/v1/chat/completions", {"model": MODEL}),
]


def parse_stream(text: str) -> list[Any]:
    """The JSON payloads of an SSE body, and "[DONE]" where it ends so."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def shape(value: Any) -> Any:
    """The structure of a JSON value: dict keys with their values' shapes, a list's distinct element
    shapes (sorted: order and count are the generation's, not the format's), scalars' types; `object`
    keeps its value, and an error object its `type`, `param` and `code` values."""
    if isinstance(value, dict):
        out = {k: _token_map(v) if k == "top_logprobs" else shape(v) for k, v in sorted(value.items())}
        if isinstance(value.get("object"), str):
            out["object"] = value["object"]  # what a client dispatches on
        err = value.get("error")
        if isinstance(err, dict):
            out["error"] = {**shape(err), **{k: err.get(k) for k in ("type", "param", "code") if k in err}}
        return out
    if isinstance(value, list):
        distinct = {json.dumps(item, sort_keys=True): item for item in map(shape, value)}
        return [distinct[k] for k in sorted(distinct)]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    return "str"


def _token_map(value: Any) -> Any:
    """A completion's `top_logprobs` maps tokens to logprobs: its keys are generated, not the format's."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if all(isinstance(x, float | int) for v in value for x in v.values()):
            return [{"<token>": "num"}]
    return shape(value)


def answer_shape(status: int, body: Any) -> dict[str, Any]:
    """What is compared of one answer: the status and the shape of its body (a stream's events)."""
    return {"status": status, "body": shape(body)}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text())
    return data
