"""A model's chat template rendered as transformers' `apply_chat_template(tokenize=False)` renders it, with the
message preprocessing vLLM's OpenAI server applies first (text parts joined, tool-call arguments parsed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _text(content: Any) -> Any:
    """vLLM's "string" content format: a list of text parts becomes their texts joined by newlines."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content


def conversation(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """The messages as vLLM hands them to the template."""
    out = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        message = dict(m)
        if "content" in message:
            message["content"] = _text(message["content"])
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            parsed = []
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    function = dict(call["function"])
                    if isinstance(function.get("arguments"), str):
                        try:
                            function["arguments"] = json.loads(function["arguments"])
                        except ValueError:
                            pass
                    call = {**call, "function": function}
                parsed.append(call)
            message["tool_calls"] = parsed
        out.append(message)
    return out


class ChatTemplate:
    def __init__(self, source: str, special_tokens: dict[str, str]) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = _strftime_now
        self.template = env.from_string(source)
        self.special_tokens = special_tokens

    def render(
        self, messages: Sequence[Any], tools: Sequence[Any] | None = None, add_generation_prompt: bool = True
    ) -> str:
        return self.template.render(
            messages=conversation(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )
