"""A fake of api.openai.com's chat completions, embeddings and models endpoints.

Wire format as in https://platform.openai.com/docs/api-reference/chat (responses, chunks, errors).
The model name chooses a behaviour: `*-500` always fails, `*-flaky` fails twice with 503 (per model
and `user`), `*-429` is always rate limited, `*-hang` waits 30 s, `*-die` drops the connection midway,
`*-bad` refuses the request with 400, `*-leaky*` adds an AWS key to its answer, `*-chars` streams one
character per chunk (as a model can be made to spell a secret), `*-spaced` writes its stream's JSON with
spaces (`"content": "w"`, as some servers do), `*-toolargs-N` answers with two tool calls whose
arguments hold the secret of `TOOL_SECRETS` named by the last message (`github`, `openai`, `aws`,
`aws_secret`, `jwt`), streamed N characters per chunk; any other name answers.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.common import install_introspection, record, serve, words


def _error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}),
        status=status,
        content_type="application/json",
        headers=headers,
    )


LEAKED = "AKIAIOSFODNN7EXAMPLE"


def _answer_text(body: dict[str, Any]) -> str:
    last = body["messages"][-1].get("content")
    last = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last or [])
    if "-leaky" in str(body["model"]):
        last += f" (my AWS key is {LEAKED})"
    return f"Echo from {body['model']}: {last}"


# Secrets a `*-toolargs-N` model writes into its tool calls' arguments (fakes of each format).
TOOL_SECRETS = {
    "github": "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "openai": "sk-proj-Qw3rTy8uIoP2aSdF5gHjK7lZxC9vBnM4qWeRtY6uIoPaSd",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


def tool_arguments(kind: str) -> list[str]:
    """The arguments of the two calls a `*-toolargs-N` model makes for `kind` (JSON, the secret in a
    string, the second call's beside an escaped quote)."""
    secret = TOOL_SECRETS.get(kind, "none")
    field = "aws_secret_access_key" if kind == "aws_secret" else "token"
    return [
        json.dumps({"query": "look it up", field: secret}),
        json.dumps({"note": 'a "quoted" word', field: secret, "n": 1}),
    ]


async def _tool_calls(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    last = body["messages"][-1].get("content")
    last = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last or [])
    size = int(str(body["model"]).rsplit("-", 1)[1])
    rid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), body["model"]
    arguments = tool_arguments(last.strip())
    calls: list[dict[str, Any]] = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": a}}
        for i, a in enumerate(arguments)
    ]
    usage = {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        document = {"id": rid, "object": "chat.completion", "created": created, "model": model}
        return web.json_response({**document, "choices": [choice], "usage": usage})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)

    async def send(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if delta or finish else []
        chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
        await resp.write(b"data: " + orjson.dumps({**chunk, **extra}) + b"\n\n")

    await send({"role": "assistant", "content": None})
    for i, call in enumerate(calls):
        await send({"tool_calls": [{"index": i, **call, "function": {"name": "lookup", "arguments": ""}}]})
        text = call["function"]["arguments"]
        for start in range(0, len(text), size):
            await send({"tool_calls": [{"index": i, "function": {"arguments": text[start : start + size]}}]})
    await send({}, "tool_calls")
    if (body.get("stream_options") or {}).get("include_usage"):
        await send({}, usage=usage)
    await resp.write(b"data: [DONE]\n\n")
    return resp


def make_app(key: str) -> web.Application:
    async def authorized(request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    async def fault(request: web.Request, body: dict[str, Any]) -> web.StreamResponse | None:
        model = str(body.get("model", ""))
        seen = record(request, body)
        if model.endswith("-500"):
            return _error(500, "The server had an error while processing your request.", "server_error")
        if model.endswith("-flaky") and seen < 2:
            return _error(503, "The engine is currently overloaded, please try again later.", "server_error")
        if model.endswith("-429"):
            return _error(
                429,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
                headers={
                    "retry-after": "0",
                    "x-ratelimit-limit-requests": "60",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "1s",
                },
            )
        if model.endswith("-bad"):
            return _error(
                400,
                "Invalid 'messages[0].content': string too long.",
                "invalid_request_error",
                "string_above_max_length",
            )
        if model.endswith("-hang"):
            await asyncio.sleep(30)
        if model.endswith("-die") and not body.get("stream"):
            assert request.transport is not None
            request.transport.close()  # the client sees the connection drop; aiohttp cancels this handler
            await asyncio.sleep(60)
        return None

    async def chat(request: web.Request) -> web.StreamResponse:
        denied = await authorized(request)
        if denied:
            return denied
        body = orjson.loads(await request.read())
        if not body.get("model") or not body.get("messages"):
            return _error(400, "you must provide a model parameter", "invalid_request_error")
        failed = await fault(request, body)
        if failed is not None:
            return failed
        if "-toolargs-" in str(body["model"]):
            return await _tool_calls(request, body)
        text = _answer_text(body)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {
            "prompt_tokens": sum(words(str(m.get("content"))) for m in body["messages"]),
            "completion_tokens": words(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                },
                dumps=lambda o: orjson.dumps(o).decode(),
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        spaced = str(body["model"]).endswith("-spaced")

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": choices,
                **extra,
            }
            if include_usage and "usage" not in extra:
                chunk["usage"] = None
            data = json.dumps(chunk).encode() if spaced else orjson.dumps(chunk)
            await resp.write(b"data: " + data + b"\n\n")

        await send(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
        pieces = list(text) if str(body["model"]).endswith("-chars") else text.split(" ")
        joiner = "" if str(body["model"]).endswith("-chars") else " "
        for i, word in enumerate(pieces):
            if str(body["model"]).endswith("-die") and i == 2:
                assert request.transport is not None
                request.transport.close()
                return resp
            await send(
                [
                    {
                        "index": 0,
                        "delta": {"content": word if i == 0 else joiner + word},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            if joiner:
                await asyncio.sleep(0.01)
        await send([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if include_usage:
            await send([], usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def embeddings(request: web.Request) -> web.StreamResponse:
        denied = await authorized(request)
        if denied:
            return denied
        body = orjson.loads(await request.read())
        failed = await fault(request, body)
        if failed is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1)] * int(body.get("dimensions") or 4)}
            for i in range(len(inputs))
        ]
        used = sum(words(str(x)) for x in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    async def models(request: web.Request) -> web.Response:
        denied = await authorized(request)
        return denied or web.json_response(
            {
                "object": "list",
                "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    install_introspection(app)
    return app


if __name__ == "__main__":
    serve(make_app, __doc__ or "")
