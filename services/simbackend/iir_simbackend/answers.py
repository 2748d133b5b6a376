"""What a request will generate (a `Plan`), and its answer in vLLM 0.32's shapes: a whole body, or the
stream's chunks (one role chunk per choice, one chunk per token, tool calls as name then argument
pieces, the finish on the last token's chunk, then the usage chunk when asked for)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from iir_simbackend.generation import (
    Generated,
    call_id,
    count_tokens,
    generate,
    logprob_entry,
    text_logprobs,
    tokens,
    tool_arguments,
)
from iir_simbackend.structured import schema_value

SYSTEM_FINGERPRINT = "vllm-0.32.0-simulated"
_ARGUMENT_PIECE = 3  # characters of a tool call's arguments per streamed token


@dataclass(frozen=True)
class Output:
    """One choice: its tokens (a tool call's argument pieces when `tool` is set)."""

    generated: Generated
    tool: dict[str, Any] | None = None
    call_id: str = ""


@dataclass(frozen=True)
class Plan:
    prompt_tokens: int
    outputs: list[Output]
    logprobs: int | None  # top alternatives per token; None: no logprobs
    include_usage: bool

    @property
    def completion_tokens(self) -> int:
        return sum(len(o.generated.tokens) for o in self.outputs)

    def usage(self, details: bool) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if details:
            usage |= {"prompt_tokens_details": None, "completion_tokens_details": None}
        return usage


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]


# The simulated model's context: an answer that ignores EOS (vLLM's `ignore_eos`) and has no max_tokens
# stops there.
CONTEXT_TOKENS = 4096


def _max_tokens(body: dict[str, Any], default: int) -> int:
    """The request's limit, else `default`, else none: the deterministic text ends by itself."""
    value = body.get("max_completion_tokens") or body.get("max_tokens") or default or 1_000_000
    limit = int(value) if isinstance(value, int) else 1_000_000
    return min(limit, CONTEXT_TOKENS) if _ignore_eos(body) else limit


def _ignore_eos(body: dict[str, Any]) -> bool:
    return body.get("ignore_eos") is True


def _seed(prompt: str, body: dict[str, Any], choice: int) -> str:
    seed = body.get("seed")
    return prompt + (f"#{choice}" if choice else "") + (f"@{seed}" if seed is not None else "")


def _tool_to_call(body: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(the tool the answer calls, whether the caller named it). `auto` calls the first tool when the
    user spoke last, as a capable model would; after a tool's result it answers in text."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None, False
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t["function"].get("name") == name), None), True
    if choice == "required":
        return tools[0], False
    messages = body.get("messages") or [{}]
    return (tools[0] if isinstance(messages[-1], dict) and messages[-1].get("role") == "user" else None), False


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def plan_chat(body: dict[str, Any], default_max_tokens: int) -> Plan:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = "\n".join(_content_text(m.get("content")) for m in messages)
    max_tokens = _max_tokens(body, default_max_tokens)
    tool, named = _tool_to_call(body)
    fmt = (body.get("response_format") or {}).get("type")
    outputs = []
    schema = json_schema(body)
    for i in range(body.get("n") or 1):
        seed = _seed(prompt, body, i)
        if tool is None and schema is not None:
            outputs.append(Output(_pieces(orjson.dumps(schema_value(schema, _word(seed))).decode(), max_tokens)))
        elif tool is None:
            json_object = fmt == "json_object"
            outputs.append(Output(generate(seed, max_tokens, _stops(body), json_object, _ignore_eos(body))))
        else:
            generated = _pieces(tool_arguments(tool, prompt), max_tokens)
            finish = generated.finish if generated.finish == "length" else "stop" if named else "tool_calls"
            outputs.append(Output(Generated(generated.tokens, finish), tool, call_id(seed)))
    return Plan(count_tokens(prompt), outputs, _top(body, chat=True), _include_usage(body))


def json_schema(body: dict[str, Any]) -> Any:
    """The JSON Schema the answer must follow, as vLLM takes one: `response_format` `json_schema`, the
    `guided_json` extra parameter, or `structured_outputs.json` (a schema, or its JSON text); None if none."""
    fmt = body.get("response_format") or {}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {}
    structured = body.get("structured_outputs")
    schema = structured.get("json") if isinstance(structured, dict) else body.get("guided_json")
    if isinstance(schema, str):
        try:
            schema = orjson.loads(schema)
        except orjson.JSONDecodeError:
            return None
    return schema if isinstance(schema, dict) else None


def _word(seed: str) -> str:
    return next(tokens(seed, 1)).strip()


def _pieces(text: str, max_tokens: int) -> Generated:
    """`text` as tokens of a few characters each, cut at `max_tokens` (a JSON value left unfinished, as
    vLLM leaves one)."""
    pieces = [text[k : k + _ARGUMENT_PIECE] for k in range(0, len(text), _ARGUMENT_PIECE)]
    return Generated(pieces[:max_tokens], "length" if len(pieces) > max_tokens else "stop")


def _top(body: dict[str, Any], chat: bool) -> int | None:
    if chat:
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    value = body.get("logprobs")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _include_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _prompts(prompt: Any) -> list[str]:
    """`/v1/completions` takes a string, a list of strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        return [orjson.dumps(prompt).decode()]
    if isinstance(prompt, list):
        return [p if isinstance(p, str) else orjson.dumps(p).decode() for p in prompt]
    return [str(prompt)]


def plan_completion(body: dict[str, Any], default_max_tokens: int) -> Plan:
    prompts = _prompts(body.get("prompt"))
    max_tokens = _max_tokens(body, default_max_tokens)
    n = body.get("n") or 1
    schema = json_schema(body)

    def output(seed: str) -> Output:
        if schema is not None:
            return Output(_pieces(orjson.dumps(schema_value(schema, _word(seed))).decode(), max_tokens))
        return Output(generate(seed, max_tokens, _stops(body), ignore_eos=_ignore_eos(body)))

    outputs = [output(_seed(p, body, i)) for p in prompts for i in range(n)]
    return Plan(sum(count_tokens(p) for p in prompts), outputs, _top(body, chat=False), _include_usage(body))


class _Answer:
    object_name = ""

    def __init__(self, plan: Plan, answer_id: str, model: str) -> None:
        self.plan = plan
        self.head = {"id": answer_id, "object": self.object_name, "created": int(time.time()), "model": model}

    def _rounds(self) -> Iterator[tuple[int, Output, int]]:
        """(choice, output, token position) with the choices' tokens interleaved, as vLLM batches them."""
        longest = max((len(o.generated.tokens) for o in self.plan.outputs), default=0)
        for t in range(longest):
            for i, out in enumerate(self.plan.outputs):
                if t < len(out.generated.tokens):
                    yield i, out, t

    def _tail(self, chunks: list[dict[str, Any]], head: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
        if self.plan.include_usage:
            chunks.append({**head, "choices": [], "usage": self.plan.usage(details=False)})
        if chunks:
            chunks[-1]["system_fingerprint"] = SYSTEM_FINGERPRINT
        yield from ((c, False) for c in chunks)


class ChatAnswer(_Answer):
    object_name = "chat.completion"

    def _message(self, out: Output) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": out.generated.text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
        }
        if out.tool is not None:
            call = {"name": out.tool["function"].get("name", ""), "arguments": out.generated.text}
            message |= {"content": "", "tool_calls": [{"id": out.call_id, "type": "function", "function": call}]}
        message["reasoning"] = None
        return message

    def _logprobs(self, tokens: list[str]) -> dict[str, Any] | None:
        top = self.plan.logprobs
        return None if top is None else {"content": [logprob_entry(t, top) for t in tokens]}

    def document(self) -> dict[str, Any]:
        choices = [
            {
                "index": i,
                "message": self._message(out),
                "logprobs": self._logprobs(out.generated.tokens),
                "finish_reason": out.generated.finish,
                "stop_reason": out.generated.stop_reason,
                "token_ids": None,
                "routed_experts": None,
            }
            for i, out in enumerate(self.plan.outputs)
        ]
        return {
            **self.head,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": self.plan.usage(details=True),
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }

    def chunks(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """The stream's chunks, each with whether it carries a generated token."""
        head = {**self.head, "object": "chat.completion.chunk"}
        for i, _ in enumerate(self.plan.outputs):
            role = {"role": "assistant", "content": ""}
            choice = {"index": i, "delta": role, "logprobs": None, "finish_reason": None}
            yield {**head, "choices": [choice], "prompt_token_ids": None, "prompt_text": None}, False
        last: list[dict[str, Any]] = []
        for i, out, t in self._rounds():
            if last:
                yield last.pop(), True
            token = out.generated.tokens[t]
            delta: dict[str, Any]
            if out.tool is None:
                delta = {"content": token}
            else:
                if t == 0:
                    name = {"name": out.tool["function"].get("name", "")}
                    call = {"id": out.call_id, "type": "function", "index": 0, "function": name}
                    yield {**head, "choices": [_chat_choice(i, {"content": None, "tool_calls": [call]})]}, False
                delta = {"content": None, "tool_calls": [{"index": 0, "function": {"arguments": token}}]}
            choice = _chat_choice(i, delta, self._logprobs([token]))
            if t == len(out.generated.tokens) - 1:
                if out.tool is not None:  # a call ends in a chunk of its own
                    yield {**head, "choices": [choice]}, True
                    choice = _chat_choice(i, {})
                choice |= {"finish_reason": out.generated.finish, "stop_reason": out.generated.stop_reason}
            last.append({**head, "choices": [choice]})
        yield from self._tail(last, head)


def _chat_choice(index: int, delta: dict[str, Any], logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None, "token_ids": None}


class CompletionAnswer(_Answer):
    object_name = "text_completion"

    def _logprobs(self, tokens: list[str]) -> dict[str, Any] | None:
        top = self.plan.logprobs
        return None if top is None else text_logprobs(tokens, top)

    def document(self) -> dict[str, Any]:
        choices = [
            {
                "index": i,
                "text": out.generated.text,
                "logprobs": self._logprobs(out.generated.tokens),
                "finish_reason": out.generated.finish,
                "stop_reason": out.generated.stop_reason,
                "token_ids": None,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "routed_experts": None,
            }
            for i, out in enumerate(self.plan.outputs)
        ]
        return {
            **self.head,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": self.plan.usage(details=True),
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }

    def chunks(self) -> Iterator[tuple[dict[str, Any], bool]]:
        last: list[dict[str, Any]] = []
        for i, out, t in self._rounds():
            if last:
                yield last.pop(), True
            token = out.generated.tokens[t]
            end = t == len(out.generated.tokens) - 1
            choice = {
                "index": i,
                "text": token,
                "logprobs": self._logprobs([token]),
                "finish_reason": out.generated.finish if end else None,
                "stop_reason": out.generated.stop_reason if end else None,
                "prompt_token_ids": None,
                "token_ids": None,
            }
            last.append({**self.head, "choices": [choice]})
        yield from self._tail(last, self.head)
