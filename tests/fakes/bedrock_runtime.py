"""A fake of Amazon Bedrock Runtime's Converse API (https://docs.aws.amazon.com/bedrock/latest/APIReference/
API_runtime_Converse.html and API_runtime_ConverseStream.html).

- `POST /model/{modelId}/converse` and `/converse-stream`, authenticated as AWS does: a SigV4 signature
  (service `bedrock`, this fake's region) verified here with its own implementation of the algorithm
  (the canonical URI is the request path encoded once more, as for every service but S3), the session
  token of temporary credentials, or `Authorization: Bearer` with a Bedrock API key. Refusals are 403
  with AWS's `x-amzn-ErrorType` (`InvalidSignatureException`, `UnrecognizedClientException`,
  `MissingAuthenticationTokenException`).
- Requests are validated as Converse does (`ValidationException`): known fields only, a first user turn,
  alternating roles, non-blank texts, one member per content block, `toolResult`s answering the `toolUse`s
  of the turn before, a `toolConfig` whenever tool blocks are used, a model ID it knows.
- Answers: "Bedrock heard: <last user text>"; with tools offered and "weather" asked, a `toolUse` of the
  first tool; a `toolResult` gets a final text; `maxTokens` cuts the words (`max_tokens`), a stop sequence
  ends them (`stop_sequence`). Streams are AWS's binary event stream (`application/vnd.amazon.eventstream`):
  `messageStart`, `contentBlockStart` (tool use only), `contentBlockDelta`s, `contentBlockStop`,
  `messageStop`, `metadata` (usage), each payload padded with `p` as Bedrock does, some messages split
  across network writes. `throttled-model` is a `ThrottlingException`; `stream-error-model` breaks its
  stream with a `modelStreamErrorException` message.
- `GET /_meta`: how the last request authenticated and the headers it signed.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import hmac
import struct
import time
import uuid
import zlib
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from tests.fakes.common import install_introspection, record, words

REGION = "us-east-1"
MODELS = frozenset(
    {
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "amazon.nova-pro-v1:0",
        "throttled-model",
        "stream-error-model",
    }
)
META = web.AppKey("meta", dict[str, Any])
_TOP = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
}
_INFERENCE = {"maxTokens", "temperature", "topP", "stopSequences"}
_BLOCKS = {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "reasoningContent"}


def _aws_error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"message": message}),
        status=status,
        content_type="application/json",
        headers={
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )


def _invalid(message: str) -> web.Response:
    return _aws_error(400, "ValidationException", message)


# Event stream encoding ----------------------------------------------------------------------------------------


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message: prelude, prelude CRC, string headers, payload, message CRC."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, data: dict[str, Any]) -> bytes:
    padding = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 1 + len(kind) % 30]  # Bedrock pads payloads with `p`
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return event_message(headers, orjson.dumps({**data, "p": padding}))


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return event_message(headers, orjson.dumps({"message": message, "originalStatusCode": 500}))


# SigV4, verified as AWS does ----------------------------------------------------------------------------------


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def verify_sigv4(request: web.Request, body: bytes, keys: dict[str, tuple[str, str]]) -> web.Response | None:
    """None when the request is signed by one of `keys` (access key id → (secret, session token))."""
    auth = request.headers.get("Authorization", "")
    if not auth:
        return _aws_error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    try:
        algorithm, rest = auth.split(" ", 1)
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        key_id, day, region, service, terminal = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
    except (ValueError, KeyError):
        return _aws_error(403, "IncompleteSignatureException", "Authorization header requires 'Credential' parameter.")
    if algorithm != "AWS4-HMAC-SHA256" or terminal != "aws4_request" or service != "bedrock" or region != REGION:
        return _aws_error(
            403, "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'."
        )
    if key_id not in keys:
        return _aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    secret, token = keys[key_id]
    if token and request.headers.get("x-amz-security-token") != token:
        return _aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = request.headers.get("x-amz-date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return _aws_error(403, "IncompleteSignatureException", "X-Amz-Date is missing or malformed.")
    if abs(time.time() - signed_at) > 300 or not amz_date.startswith(day):
        return _aws_error(403, "InvalidSignatureException", "Signature expired.")
    if "host" not in signed or "x-amz-date" not in signed or (token and "x-amz-security-token" not in signed):
        return _aws_error(403, "InvalidSignatureException", "The host and x-amz-date headers must be signed.")
    raw_path, _, query = request.raw_path.partition("?")
    canonical = "\n".join(
        [
            request.method,
            quote(raw_path, safe="/~"),
            _canonical_query(query),
            "".join(f"{name}:{' '.join(request.headers.get(name, '').strip().split())}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return _aws_error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.",
        )
    return None


# Converse -----------------------------------------------------------------------------------------------------


def validate(body: dict[str, Any]) -> str:
    """Converse's message for what is wrong with `body`, or ""."""
    for key in body:
        if key not in _TOP:
            return (
                f"Malformed input request: extraneous key [{key}] is not permitted, please "
                "reformat your input and try again."
            )
    for key in body.get("inferenceConfig") or {}:
        if key not in _INFERENCE:
            return f"Malformed input request: extraneous key [inferenceConfig.{key}] is not permitted."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (
            "A conversation must start with a user message. Try again with a conversation "
            "that starts with a user message."
        )
    uses: set[str] = set()
    tool_blocks = False
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("user", "assistant") or (i == 0 and role != "user"):
            return (
                "A conversation must start with a user message. Try again with a conversation "
                "that starts with a user message."
            )
        if i and messages[i - 1].get("role") == role:
            return (
                "A conversation must alternate between user and assistant roles. Make sure the conversation "
                "alternates between user and assistant roles and try again."
            )
        content = m.get("content")
        if not isinstance(content, list) or not content:
            return (
                f"The content field in the Message object at messages.{i} is empty. Add a "
                "ContentBlock object to the content field and try again."
            )
        results = set()
        for j, block in enumerate(content):
            members = [k for k in block if k in _BLOCKS]
            if len(members) != 1 or len(block) != 1:
                return f"messages.{i}.content.{j}: a ContentBlock must set exactly one member."
            if "text" in block and not str(block["text"]).strip():
                return (
                    f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. "
                    "Add text to the text field, and try again."
                )
            if "toolUse" in block:
                if role != "assistant" or not isinstance(block["toolUse"].get("input"), dict):
                    return (
                        f"messages.{i}.content.{j}.toolUse: tool use belongs to assistant turns and its "
                        "input is an object."
                    )
                tool_blocks = True
            if "toolResult" in block:
                tool_blocks = True
                results.add(block["toolResult"].get("toolUseId"))
                for item in block["toolResult"].get("content") or []:
                    if len(item) != 1 or next(iter(item)) not in ("text", "json", "image", "document"):
                        return f"messages.{i}.content.{j}.toolResult.content: invalid ToolResultContentBlock."
            if "image" in block and block["image"].get("format") not in ("png", "jpeg", "gif", "webp"):
                return f"messages.{i}.content.{j}.image.format: invalid image format."
        if results and results != uses:
            return (
                f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(sorted(uses))}"
            )
        uses = {b["toolUse"]["toolUseId"] for b in content if "toolUse" in b} if role == "assistant" else set()
    if tool_blocks and not body.get("toolConfig"):
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    for k, tool in enumerate((body.get("toolConfig") or {}).get("tools") or []):
        spec = tool.get("toolSpec") or {}
        if not spec.get("name") or not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
            return f"toolConfig.tools.{k}.toolSpec: a name and an inputSchema.json object are required."
    return ""


def plan(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and the stopReason of the answer."""
    last = body["messages"][-1]["content"]
    text = " ".join(b["text"] for b in last if "text" in b)
    answered = any("toolResult" in b for b in last)
    tools = (body.get("toolConfig") or {}).get("tools") or []
    if tools and "weather" in text.lower() and not answered:
        name = tools[0]["toolSpec"]["name"]
        use = {"toolUseId": f"tooluse_{uuid.uuid4().hex[:22]}", "name": name, "input": {"location": "Paris"}}
        return [{"text": "Let me check."}, {"toolUse": use}], "tool_use"
    answer = "It is 18 degrees in Paris." if answered else f"Bedrock heard: {text}"
    config = body.get("inferenceConfig") or {}
    for stop in config.get("stopSequences") or []:
        if stop in answer:
            return [{"text": answer.split(stop, 1)[0]}], "stop_sequence"
    tokens = answer.split(" ")
    limit = config.get("maxTokens")
    if isinstance(limit, int) and len(tokens) > limit:
        return [{"text": " ".join(tokens[:limit])}], "max_tokens"
    return [{"text": answer}], "end_turn"


def make_app(keys: dict[str, tuple[str, str]], api_key: str = "") -> web.Application:
    """Bedrock in `REGION` for the AWS access keys `keys` (id → (secret, session token)) and a Bedrock API key."""

    async def converse(request: web.Request) -> web.StreamResponse:
        body_bytes = await request.read()
        meta = request.app[META]
        auth = request.headers.get("Authorization", "")
        if api_key and auth == f"Bearer {api_key}":
            meta.update(auth="bearer", signed=[])
        else:
            refused = verify_sigv4(request, body_bytes, keys)
            if refused is not None:
                return refused
            meta.update(auth="sigv4", signed=auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";"))
        model = request.match_info["model"]
        if model not in MODELS:
            return _invalid("The provided model identifier is invalid.")
        try:
            body = orjson.loads(body_bytes)
        except orjson.JSONDecodeError:
            return _aws_error(400, "SerializationException", "Unexpected character")
        problem = validate(body)
        if problem:
            return _invalid(problem)
        record(request, {**body, "model": model})
        if model == "throttled-model":
            return _aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        blocks, stop_reason = plan(body)
        prompt = sum(words(b.get("text", "")) for m in body["messages"] for b in m["content"])
        prompt += sum(words(s.get("text", "")) for s in body.get("system") or [])
        completion = sum(words(b.get("text", "")) for b in blocks) + sum(6 for b in blocks if "toolUse" in b)
        usage = {
            "inputTokens": prompt,
            "outputTokens": completion,
            "totalTokens": prompt + completion + 2,
            "cacheReadInputTokens": 2,
            "cacheWriteInputTokens": 0,
        }
        if request.path.endswith("/converse"):
            return web.json_response(
                {
                    "output": {"message": {"role": "assistant", "content": blocks}},
                    "stopReason": stop_reason,
                    "usage": usage,
                    "metrics": {"latencyMs": 321},
                },
                headers={"x-amzn-RequestId": str(uuid.uuid4())},
            )
        resp = web.StreamResponse(
            headers={"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": str(uuid.uuid4())}
        )
        await resp.prepare(request)

        async def send(message: bytes, split: bool = False) -> None:
            if split:  # one message over two network writes
                await resp.write(message[:7])
                await asyncio.sleep(0.002)
                message = message[7:]
            await resp.write(message)
            await asyncio.sleep(0.002)

        await send(event("messageStart", {"role": "assistant"}))
        for index, block in enumerate(blocks):
            if "text" in block:
                for i, word in enumerate(block["text"].split(" ")):
                    if model == "stream-error-model" and i == 2:
                        await send(exception("modelStreamErrorException", "The model stream failed midway."))
                        return resp
                    delta = {"contentBlockIndex": index, "delta": {"text": word if i == 0 else " " + word}}
                    await send(event("contentBlockDelta", delta), split=i % 2 == 1)
            else:
                use = block["toolUse"]
                start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
                await send(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
                arguments = orjson.dumps(use["input"]).decode()
                for piece in (arguments[:6], arguments[6:]):
                    delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
                    await send(event("contentBlockDelta", delta), split=True)
            await send(event("contentBlockStop", {"contentBlockIndex": index}))
        await send(event("messageStop", {"stopReason": stop_reason}))
        await send(event("metadata", {"usage": usage, "metrics": {"latencyMs": 321}}))
        return resp

    async def meta(request: web.Request) -> web.Response:
        return web.json_response(request.app[META])

    app = web.Application()
    app[META] = {}
    app.router.add_post("/model/{model}/converse", converse)
    app.router.add_post("/model/{model}/converse-stream", converse)
    app.router.add_get("/_meta", meta)
    install_introspection(app)
    return app
