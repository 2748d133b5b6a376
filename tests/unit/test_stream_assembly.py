"""Property: for generated answers (several choices, tool calls, logprobs, text completions), the stream
an upstream sends assembles into exactly the non-streamed answer, and the cache's replay of that answer
assembles back into it. The cache and async jobs rely on both."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from iir_gateway.caching.assembler import StreamAssembler
from iir_gateway.caching.replay import replay

BASE = {"id": "chatcmpl-abc", "created": 1700000000, "model": "m"}
words = st.text(alphabet='abcdé xyz{}":,', min_size=0, max_size=40)
logprob_entries = st.lists(
    st.fixed_dictionaries(
        {"token": words, "logprob": st.floats(-20, 0), "bytes": st.lists(st.integers(0, 255), max_size=3)}
    ).map(lambda e: {**e, "top_logprobs": []}),
    max_size=6,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {"id": st.text("abc123", min_size=1, max_size=8), "name": st.sampled_from(["f", "get_x"]), "args": words}
    ),
    min_size=1,
    max_size=2,
)


@st.composite
def chat_choice(draw: Any, index: int) -> dict[str, Any]:
    calls = draw(st.none() | tool_calls)
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else draw(words), "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["args"]}} for c in calls
        ]
    entries = draw(st.none() | logprob_entries)
    return {
        "index": index,
        "message": message,
        "logprobs": {"content": entries, "refusal": None} if entries is not None else None,  # as OpenAI writes them
        "finish_reason": "tool_calls" if calls else draw(st.sampled_from(["stop", "length"])),
    }


@st.composite
def chat_answer(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    usage = {"prompt_tokens": draw(st.integers(1, 50)), "completion_tokens": draw(st.integers(0, 50))}
    return {**BASE, "object": "chat.completion", "choices": [draw(chat_choice(i)) for i in range(n)], "usage": usage}


def _split(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 4)))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)] or [text]


def upstream_stream(answer: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """How an upstream streams `answer`: pieces cut at random, the choices interleaved."""
    rng = random.Random(seed)
    chunk = {**BASE, "object": "chat.completion.chunk"}
    per_choice = []
    for choice in answer["choices"]:
        i, message, events = choice["index"], choice["message"], []
        events.append({"index": i, "delta": {"role": "assistant", "content": ""}})
        for piece in _split(message["content"] or "", rng) if message["content"] else []:
            events.append({"index": i, "delta": {"content": piece}})
        for k, call in enumerate(message.get("tool_calls") or []):
            head = {"index": k, "id": call["id"], "type": "function"}
            events.append(
                {
                    "index": i,
                    "delta": {
                        "tool_calls": [{**head, "function": {"name": call["function"]["name"], "arguments": ""}}]
                    },
                }
            )
            for piece in _split(call["function"]["arguments"], rng):
                events.append({"index": i, "delta": {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}})
        entries = (choice["logprobs"] or {}).get("content")
        if entries is not None:
            cut = rng.randint(0, len(entries))
            events.append({"index": i, "delta": {}, "logprobs": {"content": entries[:cut]}})
            events.append({"index": i, "delta": {}, "logprobs": {"content": entries[cut:]}})
        events.append({"index": i, "delta": {}, "finish_reason": choice["finish_reason"]})
        per_choice.append(events)
    out = []
    while any(per_choice):  # interleave, keeping each choice's own order
        events = rng.choice([e for e in per_choice if e])
        out.append({**chunk, "choices": [{"logprobs": None, "finish_reason": None, **events.pop(0)}]})
    out.append({**chunk, "choices": [], "usage": answer["usage"]})
    return out


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    assembler = StreamAssembler()
    for c in chunks:
        assembler.add(c)
    return assembler.completion()


@settings(max_examples=150, deadline=None)
@given(chat_answer(), st.integers(0, 2**32))
def test_a_chat_stream_assembles_into_the_answer_and_its_replay_back(answer: dict[str, Any], seed: int) -> None:
    assert assemble(upstream_stream(answer, seed)) == answer
    replayed = assemble([e.json() for e in replay(answer, True, True)])
    assert replayed is not None
    assert {**replayed, "created": answer["created"]} == answer


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(words, st.sampled_from(["stop", "length"])), min_size=1, max_size=3), st.booleans())
def test_a_text_completion_replays_losslessly(choices: list[tuple[str, str]], with_logprobs: bool) -> None:
    answer = {
        **BASE,
        "object": "text_completion",
        "choices": [
            {
                "index": i,
                "text": text,
                "logprobs": {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [None], "text_offset": [0]}
                if with_logprobs
                else None,
                "finish_reason": finish,
            }
            for i, (text, finish) in enumerate(choices)
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    replayed = assemble([e.json() for e in replay(answer, True, False)])
    assert replayed is not None and {**replayed, "created": answer["created"]} == answer


def test_a_cut_or_broken_stream_is_not_an_answer() -> None:
    answer = {**BASE, "object": "chat.completion", "choices": [], "usage": None}
    chunks = upstream_stream(
        {
            **answer,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
        },
        1,
    )
    assert assemble(chunks[:-2]) is None  # the finish never came
    assert assemble([*chunks[:2], {"error": {"message": "cut"}}]) is None


def test_a_recorded_vllm_stream_assembles_into_its_non_streamed_shape() -> None:
    """Real vLLM 0.32's streamed n=2 answer (tests/data/vllm): both choices, the usage without nulls,
    and the system fingerprint, which vLLM sends on its last chunk."""
    from tests.vllm.recording import load

    chunks = [c for c in load("chat_n2_stream")["body"] if isinstance(c, dict)]
    whole = assemble(chunks)
    assert whole is not None
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    assert all(c["message"]["content"] and c["message"]["refusal"] is None for c in whole["choices"])
    assert whole["usage"] == chunks[-1]["usage"] and whole["system_fingerprint"].startswith("vllm-")
    streamed_text = {
        i: "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == i
        )
        for i in (0, 1)
    }
    assert {c["index"]: c["message"]["content"] for c in whole["choices"]} == streamed_text


def test_usage_nulls_are_dropped() -> None:
    chunk = {**BASE, "object": "chat.completion.chunk"}
    whole = assemble(
        [
            {
                **chunk,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            },
            {
                **chunk,
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": None},
            },
        ]
    )
    assert whole is not None and whole["usage"] == {"prompt_tokens": 1, "completion_tokens": 1}
