"""`UpstreamClient.forward` against an upstream on a real socket: answers come back in OpenAI's format,
each failure becomes the status, code and retryability the pipeline acts on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from iir_dev.datastores import free_port
from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.upstream.client import UpstreamClient
from iir_gateway.upstream.errors import UpstreamError
from iir_gateway.upstream.target import Timeouts, Upstream
from iir_gateway.wire.base import NativeBody
from tests.fakes import anthropic_api
from tests.gateway.servers import serve_aiohttp

ANTHROPIC_KEY = "sk-ant-" + uuid.uuid4().hex
BODY = {"messages": [{"role": "user", "content": "hi"}]}
FAST = Timeouts(connect_s=2, first_token_s=5, read_s=5, total_s=5)


def _completion(text: str = "hello") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice], "usage": usage}


def _chunk(content: str | None = None, usage: bool = False) -> bytes:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices}
    if usage:
        chunk["usage"] = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": "max_tokens", **extra}}
    return web.json_response(body, status=status)


class Upstreams:
    """One aiohttp app whose first path segment picks the behaviour; `seen` keeps each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.release = asyncio.Event()  # what the hanging behaviours wait for (set at teardown)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{behaviour}/v1/{path:.*}", self.handle)
        app.router.add_post("/{behaviour}/tokenize", self.tokenize)
        return app

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        """vLLM's /tokenize (outside /v1): the count of what it would be sent, or a failure."""
        behaviour = request.match_info["behaviour"]
        body = orjson.loads(await request.read())
        self.seen.append(("tokenize", {k.lower(): v for k, v in request.headers.items()}, body))
        if behaviour == "ok":
            return web.json_response({"count": 7, "max_model_len": 2048, "tokens": list(range(7)), "token_strs": None})
        if behaviour == "hang":
            await self.release.wait()
        if behaviour == "notjson":
            return web.Response(body=b"[1, 2]", content_type="application/json")
        return web.json_response({"detail": "Not Found"}, status=404)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        body = orjson.loads(await request.read())
        self.seen.append((request.match_info["path"], {k.lower(): v for k, v in request.headers.items()}, body))
        if behaviour == "ok":
            return (
                await self._stream(request, ["Hel", "lo"]) if body.get("stream") else web.json_response(_completion())
            )
        if behaviour.startswith("status"):
            return self._status(int(behaviour[6:]))
        if behaviour == "detail404":
            return web.json_response({"detail": "Not Found"}, status=404)
        if behaviour == "text500":
            return web.Response(text="boom", status=500)
        if behaviour == "notjson":
            return web.Response(body=b"[1, 2]", content_type="application/json")
        if behaviour == "hang":
            await self.release.wait()
        if behaviour == "cut":  # promises 1000 bytes, sends 10, hangs up
            resp = web.StreamResponse(headers={"content-length": "1000", "content-type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"id": "c1')
            assert request.transport is not None
            request.transport.close()
            return resp
        if behaviour == "emptystream":
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            return resp
        if behaviour == "streambreak":
            return await self._stream(request, ["a", "b"], then="close")
        if behaviour == "streamstall":
            return await self._stream(request, ["a"], then="hang")
        raise web.HTTPNotFound()

    def _status(self, status: int) -> web.Response:
        if status == 429:
            headers = {"retry-after": "3", "x-ratelimit-remaining-requests": "0", "x-other": "no"}
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers=headers)
        if status == 400:
            return _error(400, "max_tokens is too large", code="context_length_exceeded")
        if status == 422:  # vLLM repeats the status as the code: replaced by IIR's
            return _error(422, "bad field", code=422)
        return _error(status, f"failure {status}")

    async def _stream(self, request: web.Request, pieces: list[str], then: str = "end") -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(_chunk(piece))
        if then == "close":
            assert request.transport is not None
            request.transport.close()
            return resp
        if then == "hang":
            await self.release.wait()
        await resp.write(_chunk(usage=True) + b"data: [DONE]\n\n")
        return resp


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstreams() -> AsyncIterator[tuple[Upstreams, str]]:
    fake = Upstreams()
    async with serve_aiohttp(fake.app()) as url:
        yield fake, url
        fake.release.set()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def anthropic_url() -> AsyncIterator[str]:
    async with serve_aiohttp(anthropic_api.make_app(ANTHROPIC_KEY)) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client() -> AsyncIterator[UpstreamClient]:
    upstream_client = UpstreamClient(FAST, GatewayMetrics())
    await upstream_client.start()
    yield upstream_client
    await upstream_client.close()


def target(base_url: str, timeouts: Timeouts | None = FAST, **extra: Any) -> Upstream:
    return Upstream(base_url, "served-m", public_model="fake/m", timeouts=timeouts, **extra)


async def forward(
    client: UpstreamClient, upstream: Upstream, stream: bool = False, body: dict[str, Any] | None = None, **kw: Any
) -> Answer:
    sent = {**(body or BODY), "stream": stream}  # as the pipeline's body says it
    return await client.forward("fake", upstream, "chat/completions", sent, stream=stream, request_id="req-1", **kw)


async def failure(client: UpstreamClient, upstream: Upstream, stream: bool = False) -> APIError:
    with pytest.raises(APIError) as caught:
        await forward(client, upstream, stream)
    return caught.value


async def events(answer: Answer) -> list[Event]:
    assert answer.stream is not None
    return [event async for event in answer.stream]


async def test_a_document_comes_back_with_the_public_model(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    fake, url = upstreams
    answer = await forward(client, target(f"{url}/ok/v1", headers={"authorization": "Bearer up"}))
    assert answer.document is not None and answer.document.json()["choices"][0]["message"]["content"] == "hello"
    assert answer.headers == {"x-iir-model": "fake/m"} and answer.usage() == _completion()["usage"]
    path, headers, body = fake.seen[-1]
    assert path == "chat/completions" and body["model"] == "served-m"  # the upstream's own name
    assert headers["x-request-id"] == "req-1" and headers["authorization"] == "Bearer up"


async def test_a_stream_is_relayed_event_by_event_with_its_usage(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    fake, url = upstreams
    answer = await forward(client, target(f"{url}/ok/v1"), stream=True)
    got = await events(answer)
    assert [e.json()["choices"][0]["delta"]["content"] for e in got[:2]] == ["Hel", "lo"]
    assert answer.stream is not None and answer.stream.completed
    assert answer.stream.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert fake.seen[-1][2]["stream_options"] == {"include_usage": True}  # asked for, to account the stream


@pytest.mark.parametrize(
    ("behaviour", "status", "code", "retryable", "message"),
    [
        ("status500", 502, "upstream_error", True, "answered 500: failure 500"),
        ("status503", 502, "upstream_error", True, "answered 503: failure 503"),
        ("text500", 502, "upstream_error", True, "answered 500: boom"),
        ("status401", 502, "upstream_auth_failed", False, "refused the gateway's credentials (401)"),
        ("status403", 502, "upstream_auth_failed", False, "refused the gateway's credentials (403)"),
        ("notjson", 502, "upstream_error", False, "not a JSON object"),
        ("cut", 502, "upstream_error", False, "failed"),
    ],
)
async def test_failures_that_are_not_the_callers(
    client: UpstreamClient,
    upstreams: tuple[Upstreams, str],
    behaviour: str,
    status: int,
    code: str,
    retryable: bool,
    message: str,
) -> None:
    err = await failure(client, target(f"{upstreams[1]}/{behaviour}/v1"))
    assert isinstance(err, UpstreamError) and (err.status, err.code, err.retryable) == (status, code, retryable)
    assert message in err.message and "fake/m" in err.message


async def test_rate_limiting_passes_its_headers_and_may_be_retried(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    err = await failure(client, target(f"{upstreams[1]}/status429/v1"))
    assert isinstance(err, UpstreamError) and err.retryable
    assert (err.status, err.code) == (429, "upstream_rate_limited") and "slow down" in err.message
    assert err.headers == {"x-iir-model": "fake/m", "retry-after": "3", "x-ratelimit-remaining-requests": "0"}


async def test_client_errors_pass_through_with_the_upstreams_fields(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    err = await failure(client, target(f"{upstreams[1]}/status400/v1"))
    assert not isinstance(err, UpstreamError)  # the caller's to fix: no retry, no fallback
    assert (err.status, err.code, err.type, err.param) == (
        400,
        "context_length_exceeded",
        "invalid_request_error",
        "max_tokens",
    )
    assert err.message == "max_tokens is too large" and err.headers == {"x-iir-model": "fake/m"}
    assert (await failure(client, target(f"{upstreams[1]}/status422/v1"))).code == "upstream_rejected"
    err = await failure(client, target(f"{upstreams[1]}/detail404/v1"))
    assert (err.status, err.code) == (404, "upstream_rejected")
    assert err.message == "The upstream for `fake/m` answered 404: Not Found."


async def test_an_unreachable_upstream_is_502_and_retryable(client: UpstreamClient) -> None:
    err = await failure(client, target(f"http://127.0.0.1:{free_port()}/v1"))
    assert isinstance(err, UpstreamError) and err.retryable
    assert (err.status, err.code) == (502, "upstream_unreachable")


async def test_a_non_streamed_answer_past_the_total_timeout_is_504(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    short = Timeouts(connect_s=2, first_token_s=60, read_s=60, total_s=0.2)
    err = await failure(client, target(f"{upstreams[1]}/hang/v1", short))
    assert isinstance(err, UpstreamError) and not err.retryable  # the upstream may be generating still
    assert (err.status, err.code) == (504, "upstream_timeout")


async def test_a_stream_without_its_first_token_in_time_is_504(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    short = Timeouts(connect_s=2, first_token_s=0.2, read_s=60, total_s=60)
    err = await failure(client, target(f"{upstreams[1]}/hang/v1", short), stream=True)
    assert (err.status, err.code) == (504, "upstream_timeout")


async def test_the_gateways_default_timeouts_apply_when_the_upstream_names_none(
    upstreams: tuple[Upstreams, str],
) -> None:
    upstream_client = UpstreamClient(Timeouts(total_s=0.2), GatewayMetrics())
    await upstream_client.start()
    try:
        err = await failure(upstream_client, target(f"{upstreams[1]}/hang/v1", timeouts=None))
    finally:
        await upstream_client.close()
    assert err.code == "upstream_timeout"


async def test_a_stream_closed_before_anything_is_502_and_retryable(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    err = await failure(client, target(f"{upstreams[1]}/emptystream/v1"), stream=True)
    assert isinstance(err, UpstreamError) and err.retryable
    assert (err.status, err.code) == (502, "upstream_error") and "closed the stream" in err.message


async def test_a_stream_that_breaks_off_ends_with_an_error_event(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    answer = await forward(client, target(f"{upstreams[1]}/streambreak/v1"), stream=True)
    got = await events(answer)
    assert [e.json()["choices"][0]["delta"]["content"] for e in got[:2]] == ["a", "b"]
    assert got[-1].json()["error"]["code"] == "upstream_error" and "broke off" in got[-1].json()["error"]["message"]
    assert answer.stream is not None and not answer.stream.completed
    assert answer.stream.usage == {"completion_tokens": 2}  # counted from the text relayed


async def test_a_stream_that_stalls_past_the_read_timeout_ends_with_a_504_event(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    stalling = Timeouts(connect_s=2, first_token_s=5, read_s=0.2, total_s=60)
    answer = await forward(client, target(f"{upstreams[1]}/streamstall/v1", stalling), stream=True)
    got = await events(answer)
    assert got[0].json()["choices"][0]["delta"]["content"] == "a"
    assert got[-1].json()["error"]["code"] == "upstream_timeout"


async def test_an_anthropic_upstream_answers_in_openais_format(client: UpstreamClient, anthropic_url: str) -> None:
    claude = target(
        anthropic_url, wire="anthropic", headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    )
    body = {**BODY, "max_tokens": 20}
    document = (await forward(client, claude, body=body)).document
    assert document is not None
    message = document.json()["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"]
    streamed = await events(await forward(client, claude, stream=True, body=body))
    text = "".join((e.json().get("choices") or [{}])[0].get("delta", {}).get("content") or "" for e in streamed)
    assert text == message["content"]


async def test_a_native_body_is_sent_as_the_client_wrote_it(client: UpstreamClient, anthropic_url: str) -> None:
    claude = target(
        anthropic_url, wire="anthropic", headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    )
    native = {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "u-native"}}
    answer = await forward(client, claude, native=NativeBody("anthropic", native), native_answer=True)
    assert answer.document is not None and answer.document.native is not None
    assert orjson.loads(answer.document.native[0])["type"] == "message"  # the upstream's own bytes, untouched


async def test_token_counts_come_from_the_replica_or_not_at_all(
    client: UpstreamClient, upstreams: tuple[Upstreams, str]
) -> None:
    fake, url = upstreams
    body = {**BODY, "tools": [{"type": "function", "function": {"name": "f"}}], "max_tokens": 9}
    upstream = Upstream(base_url=f"{url}/ok/v1", model="served-name")
    assert await client.count_tokens(upstream, body) == 7
    sent = fake.seen[-1][2]  # the served name, the messages and tools; nothing of the answer's settings
    assert sent == {"model": "served-name", "messages": BODY["messages"], "tools": body["tools"]}
    for behaviour in ("status404", "notjson", "hang"):  # an older server, a broken answer, a stall
        failing = Upstream(base_url=f"{url}/{behaviour}/v1", model="m")
        assert await client.count_tokens(failing, body, timeout_s=0.5) is None, behaviour
    closed = Upstream(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    assert await client.count_tokens(closed, body) is None
