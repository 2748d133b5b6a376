"""A fake of api.openai.com's chat completions, embeddings and models endpoints.

Wire format as in https://platform.openai.com/docs/api-reference/chat (responses, chunks, errors).
The model name chooses a behaviour: `*-500` always fails, `*-flaky` fails twice with 503 (per model
and `user`), `*-429` is always rate limited, `*-hang` waits 30 s, `*-die` drops the connection midway,
`*-bad` refuses the request with 400, `*-leaky*` adds an AWS key to its answer, `*-chars` streams one
character per chunk (as a model can be made to spell a secret); any other name answers.
"""

from __future__ import annotations

import asyncio
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
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

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
