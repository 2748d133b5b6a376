"""A fake of an Azure OpenAI resource (data plane inference, https://learn.microsoft.com/azure/ai-services/
openai/reference) and of Microsoft Entra ID's token endpoint (OAuth 2.0 client credentials).

- `POST /openai/deployments/{deployment}/chat/completions?api-version=…` and `…/embeddings`: an unknown
  `api-version` (or none) is 404 `Resource not found`, an unknown deployment 404 `DeploymentNotFound`.
  Authenticated by the `api-key` header, or `Authorization: Bearer` with a token this fake's Entra
  endpoint issued (expired or unknown: 401).
- Answers as Azure does: OpenAI's shapes plus `prompt_filter_results` and `content_filter_results`; a
  stream starts with Azure's empty-choices chunk carrying the prompt filter results.
- Behaviours by deployment: `*-429` is rate limited, `*-500` fails; a prompt with "forbidden topic" is
  refused 400 `content_filter` as Azure's content management policy does. A prompt mentioning
  "weather" with tools offered gets a tool call; a tool result gets a final text.
- `POST /{tenant}/oauth2/v2.0/token`: `grant_type=client_credentials`, the client id and secret, a
  `scope` ending in `/.default`; answers `{"token_type": "Bearer", "expires_in": …, "access_token": …}`
  or 401 `invalid_client` (AADSTS7000215).
- `GET /_meta`: the last request's api-version and how it authenticated, and how many tokens were issued.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.common import install_introspection, record, serve, words

API_VERSIONS = frozenset({"2024-06-01", "2024-10-21", "2025-04-01-preview"})
# Deployments of this resource and the model each runs.
DEPLOYMENTS = {
    "gpt-4o-prod": "gpt-4o-2024-11-20",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "embed-small": "text-embedding-3-small",
    "gpt-429": "gpt-4o-mini-2024-07-18",
    "gpt-500": "gpt-4o-mini-2024-07-18",
}
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"
TOKEN_LIFETIME_S = 3599

META = web.AppKey("meta", dict[str, Any])
TOKENS = web.AppKey("tokens", dict[str, float])

_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER}]


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": code, "message": message, **extra}}),
        status=status,
        content_type="application/json",
        headers={"apim-request-id": str(uuid.uuid4())},
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def make_app(key: str, client_secret: str = "") -> web.Application:
    """The resource with API key `key`; its tenant's token endpoint accepts `CLIENT_ID` with `client_secret`."""

    def authenticated(request: web.Request) -> web.Response | None:
        meta = request.app[META]
        meta["api_version"] = request.query.get("api-version")
        if "api-key" in request.headers:
            meta["auth"] = "api-key"
            if request.headers["api-key"] != key:
                return _error(
                    401,
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                    "valid key for an active subscription and use a correct regional API endpoint for your resource.",
                )
            return None
        auth = request.headers.get("Authorization", "")
        meta["auth"] = "bearer" if auth.startswith("Bearer ") else "none"
        expires = request.app[TOKENS].get(auth.removeprefix("Bearer "), 0.0)
        if expires < time.time():
            return _error(
                401,
                "PermissionDenied",
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired.",
            )
        return None

    def check(request: web.Request) -> tuple[str, web.Response | None]:
        """The deployment's model, or the error Azure answers."""
        if request.query.get("api-version") not in API_VERSIONS:
            return "", _error(404, "404", "Resource not found")
        refused = authenticated(request)
        if refused is not None:
            return "", refused
        deployment = request.match_info["deployment"]
        if deployment not in DEPLOYMENTS:
            return "", _error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the "
                "last 5 minutes, please wait a moment and try again.",
            )
        return DEPLOYMENTS[deployment], None

    async def chat(request: web.Request) -> web.StreamResponse:
        model, refused = check(request)
        if refused is not None:
            return refused
        deployment = request.match_info["deployment"]
        body = orjson.loads(await request.read())
        record(request, {**body, "model": deployment})
        if deployment.endswith("-429"):
            return web.Response(
                body=orjson.dumps(
                    {
                        "error": {
                            "code": "429",
                            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                            "version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing "
                            "tier. Please retry after 1 second.",
                        }
                    }
                ),
                status=429,
                content_type="application/json",
                headers={"retry-after": "1", "x-ratelimit-remaining-requests": "0"},
            )
        if deployment.endswith("-500"):
            return _error(500, "InternalServerError", "The server had an error while processing your request.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "BadRequest", "'messages' is a required property", type="invalid_request_error")
        last = messages[-1]
        prompt = _text(last.get("content"))
        if "forbidden topic" in prompt:
            return web.Response(
                body=orjson.dumps(
                    {
                        "error": {
                            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                            "content management policy. Please modify your prompt and retry.",
                            "type": None,
                            "param": "prompt",
                            "code": "content_filter",
                            "status": 400,
                            "innererror": {
                                "code": "ResponsibleAIPolicyViolation",
                                "content_filter_result": {
                                    **CONTENT_FILTER,
                                    "violence": {"filtered": True, "severity": "high"},
                                },
                            },
                        }
                    }
                ),
                status=400,
                content_type="application/json",
            )
        tool_call: dict[str, Any] | None = None
        if body.get("tools") and "weather" in prompt.lower() and last.get("role") == "user":
            name = body["tools"][0]["function"]["name"]
            tool_call = {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": '{"location":"Paris"}'},
            }
            text = None
        elif last.get("role") == "tool":
            text = "It is 18 degrees in Paris."
        else:
            text = f"Azure {model} heard: {prompt}"
        finish = "tool_calls" if tool_call else "stop"
        prompt_tokens = sum(words(_text(m.get("content"))) for m in messages)
        completion_tokens = words(text or "") if text else 12
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:29]}", int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            if tool_call:
                message["tool_calls"] = [tool_call]
            return web.json_response(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_b705f0c291",
                    "prompt_filter_results": PROMPT_FILTER,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish,
                            "content_filter_results": {} if tool_call else CONTENT_FILTER,
                        }
                    ],
                    "usage": usage,
                },
                dumps=lambda o: orjson.dumps(o).decode(),
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)

        async def send(data: dict[str, Any]) -> None:
            await resp.write(b"data: " + orjson.dumps(data) + b"\n\n")
            await asyncio.sleep(0.002)

        # Azure's first chunk: no choices, the prompt's filter results.
        await send(
            {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": PROMPT_FILTER}
        )
        head = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_b705f0c291",
        }

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
                "content_filter_results": {} if finish_reason or not delta.get("content") else CONTENT_FILTER,
            }

        await send({**head, "choices": [choice({"role": "assistant", "content": "", "refusal": None})]})
        if tool_call:
            await send(
                {
                    **head,
                    "choices": [
                        choice(
                            {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        **tool_call,
                                        "function": {"name": tool_call["function"]["name"], "arguments": ""},
                                    }
                                ]
                            }
                        )
                    ],
                }
            )
            for piece in ('{"location"', ':"Paris"}'):
                await send(
                    {**head, "choices": [choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})]}
                )
        else:
            for i, word in enumerate((text or "").split(" ")):
                await send({**head, "choices": [choice({"content": word if i == 0 else " " + word})]})
        await send({**head, "choices": [choice({}, finish)]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**head, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def embeddings(request: web.Request) -> web.Response:
        model, refused = check(request)
        if refused is not None:
            return refused
        body = orjson.loads(await request.read())
        record(request, {**body, "model": request.match_info["deployment"]})
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        size = int(body.get("dimensions") or 8)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": [0.5] * size} for i in range(len(items))],
                "model": model,
                "usage": {"prompt_tokens": len(items), "total_tokens": len(items)},
            }
        )

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if request.match_info["tenant"] != TENANT:
            return web.json_response(
                {
                    "error": "invalid_request",
                    "error_description": f"AADSTS90002: Tenant '{request.match_info['tenant']}' not found.",
                },
                status=400,
            )
        if form.get("grant_type") != "client_credentials" or not str(form.get("scope", "")).endswith("/.default"):
            return web.json_response(
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS900144: The request body must contain the following parameter: "
                    "'grant_type'.",
                },
                status=400,
            )
        if form.get("client_id") != CLIENT_ID or not client_secret or form.get("client_secret") != client_secret:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                    f"sent in the request is the client secret value, not the client secret ID, for a secret added "
                    f"to app '{CLIENT_ID}'.",
                    "error_codes": [7000215],
                },
                status=401,
            )
        issued = f"eyJ0eXAiOiJKV1Qi.{uuid.uuid4().hex}.sig"
        request.app[TOKENS][issued] = time.time() + TOKEN_LIFETIME_S
        request.app[META]["tokens_issued"] = request.app[META].get("tokens_issued", 0) + 1
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_S,
                "ext_expires_in": TOKEN_LIFETIME_S,
                "access_token": issued,
            }
        )

    async def meta(request: web.Request) -> web.Response:
        return web.json_response(request.app[META])

    app = web.Application()
    app[META] = {}
    app[TOKENS] = {}
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", embeddings)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    app.router.add_get("/_meta", meta)
    install_introspection(app)
    return app


if __name__ == "__main__":
    serve(make_app, __doc__ or "")
