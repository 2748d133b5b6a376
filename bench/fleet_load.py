"""Plays a workload against one target from a single asyncio process: the sessions in progress at the start
join first (unmeasured), then every session at its arrival time, each turn streamed, timed to its first
content chunk and to its end. Later turns carry the answers as they came. A target with several URLs
(gateway replicas) gets requests in turn."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from fleet_workloads import Session, Workload


@dataclass(frozen=True)
class Endpoint:
    urls: tuple[str, ...]  # base URLs (…/v1/chat/completions is appended)
    model: str
    key: str = ""


@dataclass
class Result:
    session: int
    turn: int
    start_s: float  # from the run's start
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int = 0
    error: str | None = None
    joining: bool = False  # sent before the run by a session in progress (`Runner.warm_up`)


@dataclass
class Answer:
    text: str
    ttft_s: float | None
    output_tokens: int


def request_body(endpoint: Endpoint, session: Session, messages: list[dict[str, str]], max_tokens: int) -> bytes:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "ignore_eos": True,  # vLLM's: exactly max_tokens, so every target gets the same work
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": session.user,
    }
    if session.prompt_cache_key:
        body["prompt_cache_key"] = session.prompt_cache_key
    return orjson.dumps(body)


async def read_stream(resp: aiohttp.ClientResponse, started: float) -> Answer:
    """The content of an OpenAI chat stream, the time to its first content, and its output tokens (the
    usage event's, else one per content chunk)."""
    parts: list[str] = []
    ttft: float | None = None
    chunks = usage = 0
    async for line in resp.content:
        if not line.startswith(b"data: {"):
            continue
        event = orjson.loads(line[6:])
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                if ttft is None:
                    ttft = time.perf_counter() - started
                parts.append(content)
                chunks += 1
        if event.get("usage"):
            usage = int(event["usage"].get("completion_tokens") or 0)
    return Answer("".join(parts), ttft, usage or chunks)


@dataclass
class Conversation:
    """One session as it is played: its messages so far and the next turn to send."""

    index: int
    session: Session
    messages: list[dict[str, str]]
    next_turn: int = 0
    alive: bool = True


class Runner:
    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession, cutoff_s: float) -> None:
        self.endpoint = endpoint
        self.http = session
        self.cutoff_s = cutoff_s  # no turn starts after this (from the run's start)
        self.results: list[Result] = []
        self._urls: Iterator[str] = itertools.cycle(endpoint.urls)
        self._headers = {"Content-Type": "application/json"}
        if endpoint.key:
            self._headers["Authorization"] = f"Bearer {endpoint.key}"
        self._t0 = time.perf_counter()

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    async def warm_up(self, workload: Workload) -> list[Conversation]:
        """Every session in progress at the start sends its next turn with its history, all at once, before
        the run (unmeasured): the router under test places them, as it would have placed their earlier
        turns."""
        conversations = []
        for index, session in enumerate(workload.sessions):
            messages = [{"role": "system", "content": session.system.render()}] if session.system else []
            for t in range(session.history):
                messages.append({"role": "user", "content": session.turns[t].content.render()})
                messages.append({"role": "assistant", "content": session.answer(t).render()})
            conversations.append(Conversation(index, session, messages, session.history))
        await asyncio.gather(*(self._turn(c, joining=True) for c in conversations if c.session.history))
        return conversations

    async def run(self, conversations: list[Conversation]) -> list[Result]:
        self._t0 = time.perf_counter()
        await asyncio.gather(*(self._play(c) for c in conversations if c.alive))
        return self.results

    async def _play(self, c: Conversation) -> None:
        await asyncio.sleep(max(0.0, c.session.start_s - self._now()))
        first = c.next_turn
        while c.alive and c.next_turn < len(c.session.turns):
            if c.next_turn > first or c.session.history:
                await asyncio.sleep(c.session.turns[c.next_turn].think_s)
            if self._now() > self.cutoff_s:
                return
            await self._turn(c)

    async def _turn(self, c: Conversation, joining: bool = False) -> None:
        turn = c.session.turns[c.next_turn]
        c.messages.append({"role": "user", "content": turn.content.render()})
        result = Result(c.index, c.next_turn, self._now(), joining=joining)
        self.results.append(result)
        answer = await self._send(request_body(self.endpoint, c.session, c.messages, turn.max_tokens), result)
        if answer is None:
            c.alive = False  # a session whose turn failed ends, as a client's would
            return
        c.messages.append({"role": "assistant", "content": answer.text})
        c.next_turn += 1

    async def _send(self, body: bytes, result: Result) -> Answer | None:
        url = f"{next(self._urls)}/v1/chat/completions"
        started = time.perf_counter()
        try:
            async with self.http.post(url, data=body, headers=self._headers) as resp:
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    return None
                answer = await read_stream(resp, started)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:200]
            return None
        result.e2e_s = time.perf_counter() - started
        result.ttft_s = answer.ttft_s
        result.output_tokens = answer.output_tokens
        if answer.ttft_s is None:
            result.error = "no content"
            return None
        return answer


async def play(
    endpoint: Endpoint,
    workload: Workload,
    cutoff_s: float,
    timeout_s: float,
    after_warm_up: Callable[[], object] | None = None,
) -> list[Result]:
    """Every request of `workload` sent to `endpoint` (turns due after `cutoff_s` are not sent); sessions in
    progress join first (`Runner.warm_up`, their results marked `joining`), then `after_warm_up` runs."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        runner = Runner(endpoint, http, cutoff_s)
        conversations = await runner.warm_up(workload)
        if after_warm_up is not None:
            after_warm_up()
        return await runner.run(conversations)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between ranks; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
