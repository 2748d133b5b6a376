"""Cost of secret scrubbing per request: the request body's prompts and the answer, as the gateway does.

A typical chat request (system prompt and three turns, about 1.5 KB) and its answer (about 1 KB), clean
and with a secret in them. Target: under 0.2 ms per request. Then a streamed answer of 200 one-token
chunks through the stream scrubber (which holds text back across chunks), beside the per-event byte check
alone (what a stream cost before secrets were matched across chunks). Median of several rounds.
Usage: .venv/bin/python bench/scrub_overhead.py [--rounds 5] [--requests 5000]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import orjson

from iir_common.secret_scrubber import SecretScrubber, secret_env_values
from iir_gateway.answer import Event
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.scrubbing.policy import Scrubbing

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEM = "You are a helpful assistant for an e-commerce company. Answer briefly and politely. " * 5
TURNS = [
    "Where is my order 48213? It was supposed to arrive on Monday and the tracking page shows nothing.",
    "I am sorry to hear that. Let me check the status of order 48213 for you right away.",
    "Thanks. Also, can you change the delivery address to 12 Rue de Rivoli, Paris, and tell me the new date?",
]
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Your order 48213 left our warehouse yesterday. " * 20},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 400, "completion_tokens": 200, "total_tokens": 600},
    }
)


def body(secret: bool) -> dict[str, object]:
    messages = [{"role": "system", "content": SYSTEM}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(TURNS)
    ]
    if secret:
        messages[-1]["content"] += " My API key is sk-proj-" + "Ab3" * 20
    return {"model": "local/x", "messages": messages}


def measure(scrubbing: Scrubbing, secret: bool, requests: int) -> float:
    bodies = [copy.deepcopy(body(secret)) for _ in range(requests)]
    start = time.perf_counter()
    for b in bodies:
        scrubbing.request(b, "redact")
        scrubbing.answer(ANSWER)
    return (time.perf_counter() - start) / requests * 1000


def chunks(count: int = 200) -> list[bytes]:
    """The JSON of each event of a stream."""
    words = ("Your order 48213 left our warehouse yesterday and should arrive on Friday morning. " * 20).split(" ")
    return [
        orjson.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": " " + w}, "finish_reason": None}],
            }
        )
        for w in words[:count]
    ]


def measure_stream(scrubbing: Scrubbing, streams: int, across_chunks: bool) -> float:
    """Microseconds per chunk."""
    events = chunks()
    start = time.perf_counter()
    for _ in range(streams):
        if across_chunks:
            scrubber = scrubbing.stream()
            for event in events:
                scrubber.feed(Event(event))  # a fresh event, parsed as the gateway parses each one
            scrubber.flush()
        else:
            for event in events:
                scrubbing.answer(event)
    return (time.perf_counter() - start) / (streams * len(events)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    scrubbing = Scrubbing(SecretScrubber(secret_env_values()), "redact", GatewayMetrics())
    result = {
        name: statistics.median(measure(scrubbing, secret, args.requests) for _ in range(args.rounds))
        for name, secret in (("clean_ms", False), ("with_secret_ms", True))
    }
    streams = max(1, args.requests // 50)
    result["stream_chunk_us"] = statistics.median(measure_stream(scrubbing, streams, True) for _ in range(args.rounds))
    result["event_check_chunk_us"] = statistics.median(
        measure_stream(scrubbing, streams, False) for _ in range(args.rounds)
    )
    print(f"secret scrubbing per request (request body + answer), median of {args.rounds} rounds:")
    print(f"  clean request: {result['clean_ms']:.3f} ms    with a secret: {result['with_secret_ms']:.3f} ms")
    print(
        f"per streamed chunk: {result['stream_chunk_us']:.1f} µs across chunks, "
        f"{result['event_check_chunk_us']:.1f} µs for the per-event byte check alone "
        f"({result['stream_chunk_us'] / result['event_check_chunk_us']:.1f}×)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scrub_overhead.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
