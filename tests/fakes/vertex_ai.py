"""A fake of Google Vertex AI's prediction endpoints for Claude and Gemini, and of Google's OAuth token
endpoint for service accounts.

- `POST /token` (https://developers.google.com/identity/protocols/oauth2/service-account#httprest):
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an `assertion` JWT whose RS256 signature
  is verified with the service account's public key, its `iss` the account, `aud` this endpoint, `scope`
  cloud-platform, at most an hour long. Answers `{"access_token", "expires_in", "token_type"}` or
  Google's `invalid_grant`.
- `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict` and
  `:streamRawPredict` (https://docs.anthropic.com/en/api/claude-on-vertex-ai): a Messages request with
  `anthropic_version: vertex-2023-10-16` and no `model`, answered as Anthropic's fake answers.
- `POST …/publishers/google/models/{model}:generateContent` and `:streamGenerateContent` (with `alt=sse`
  an SSE stream of GenerateContentResponse objects, without it one JSON array), validated as the API does
  (unknown fields are 400 `Invalid JSON payload received`, function responses must answer the calls of
  the turn before). Gemini "hears" the last user text; with tools offered and "weather" asked, it calls
  the first tool; a function response gets a final text; "forbidden topic" is blocked by its prompt
  feedback; `maxOutputTokens` cuts the words (`MAX_TOKENS`); a JSON `responseMimeType` answers JSON; a
  model ending in `-429` is `RESOURCE_EXHAUSTED`.
- Every prediction needs a bearer token this fake issued (else 401 `UNAUTHENTICATED`) and the project
  it was made for (else 403 `PERMISSION_DENIED`). `GET /_meta` counts the tokens issued.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import anthropic_api
from tests.fakes.common import install_introspection, record, words

META = web.AppKey("meta", dict[str, Any])
TOKENS = web.AppKey("tokens", dict[str, float])
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_LIFETIME_S = 3599

_TOP_FIELDS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "labels"}
_GENERATION_FIELDS = {
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
}
_SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "default",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "properties",
    "propertyOrdering",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "minimum",
    "maximum",
}
_PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}


def service_account(token_uri: str, project: str) -> tuple[dict[str, Any], bytes]:
    """A new service account's JSON key (as Google's console downloads it) and its public key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    email = f"iir-gateway@{project}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem.decode(),
        "client_email": email,
        "client_id": "1" * 21,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    return info, public


def _google_error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": status, "message": message, "status": kind}}),
        status=status,
        content_type="application/json",
    )


def _invalid(message: str) -> web.Response:
    return _google_error(400, "INVALID_ARGUMENT", message)


def _unknown(name: str, where: str) -> web.Response:
    return _invalid(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _check_jwt(assertion: str, public_pem: bytes, email: str, audience: str) -> str:
    """What is wrong with the assertion, or ""."""
    try:
        head, claims_part, signature = assertion.split(".")
        header, claims = orjson.loads(_unb64(head)), orjson.loads(_unb64(claims_part))
        public = serialization.load_pem_public_key(public_pem)
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(_unb64(signature), f"{head}.{claims_part}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "Invalid JWT Signature."
    except (ValueError, orjson.JSONDecodeError):
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    now = time.time()
    if header.get("alg") != "RS256" or claims.get("iss") != email or claims.get("aud") != audience:
        return "Invalid JWT: the issuer or the audience is not the service account's."
    if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
        return "Invalid JWT: the scope is missing."
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp < now or iat > now + 60:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    return ""


def _validate_schema(value: Any, where: str) -> web.Response | None:
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if key not in _SCHEMA_FIELDS:
            return _unknown(key, where)
        if key == "properties" and isinstance(item, dict):
            for name, prop in item.items():
                refused = _validate_schema(prop, f"{where}.properties[{name}].value")
                if refused is not None:
                    return refused
        if key == "items":
            refused = _validate_schema(item, f"{where}.items")
            if refused is not None:
                return refused
        if key == "type" and not isinstance(item, str):
            return _invalid(f"Invalid value at '{where}.type': expected a Type enum name")
    return None


def _validate_gemini(body: dict[str, Any]) -> web.Response | None:
    for key in body:
        if key not in _TOP_FIELDS:
            return _unknown(key, "")
    for key in body.get("generationConfig") or {}:
        if key not in _GENERATION_FIELDS:
            return _unknown(key, "generation_config")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return _invalid("Unable to submit request because it must include at least one parts field.")
    calls: list[str] = []  # the function calls of the last model turn
    for i, content in enumerate(contents):
        role = content.get("role")
        if role not in ("user", "model"):
            return _invalid(f"Please use a valid role: user, model. (contents[{i}].role: {role!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return _invalid("Unable to submit request because it has an empty parts field.")
        responses = []
        for j, part in enumerate(parts):
            fields = [k for k in part if k in _PART_FIELDS]
            unknown = [k for k in part if k not in _PART_FIELDS and k not in ("thought", "thoughtSignature")]
            if unknown:
                return _unknown(unknown[0], f"contents[{i}].parts[{j}]")
            if len(fields) != 1:
                return _invalid(f"contents[{i}].parts[{j}]: a part must hold exactly one kind of data")
            if "functionCall" in part and role != "model":
                return _invalid("Please ensure that function call turns come from the model.")
            if "functionResponse" in part:
                if not isinstance(part["functionResponse"].get("response"), dict):
                    return _invalid(f"contents[{i}].parts[{j}].function_response.response: must be an object")
                responses.append(part["functionResponse"].get("name"))
            if "inlineData" in part and not part["inlineData"].get("mimeType"):
                return _invalid("inline_data.mime_type is required")
        if responses:
            if sorted(responses) != sorted(calls):
                return _invalid(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
        calls = [p["functionCall"].get("name") for p in parts if "functionCall" in p] if role == "model" else []
    for t, tool in enumerate(body.get("tools") or []):
        for d, declaration in enumerate(tool.get("functionDeclarations") or []):
            for key in declaration:
                if key not in ("name", "description", "parameters", "response"):
                    return _unknown(key, f"tools[{t}].function_declarations[{d}]")
            refused = _validate_schema(
                declaration.get("parameters"), f"tools[{t}].function_declarations[{d}].parameters"
            )
            if refused is not None:
                return refused
    return None


def _gemini_plan(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The parts and finishReason of the answer."""
    last = body["contents"][-1]
    text = " ".join(p.get("text", "") for p in last["parts"] if "text" in p)
    answered = any("functionResponse" in p for p in last["parts"])
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
    if declarations and mode != "NONE" and "weather" in text.lower() and not answered:
        return [{"functionCall": {"name": declarations[0]["name"], "args": {"location": "Paris"}}}], "STOP"
    answer = "It is 18 degrees in Paris." if answered else f"Gemini heard: {text}"
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        return [{"text": orjson.dumps({"answer": answer}).decode()}], "STOP"
    tokens = answer.split(" ")
    limit = config.get("maxOutputTokens")
    if isinstance(limit, int) and len(tokens) > limit:
        return [{"text": " ".join(tokens[:limit])}], "MAX_TOKENS"
    return [{"text": answer}], "STOP"


def make_app(project: str, public_pem: bytes, email: str) -> web.Application:
    """Vertex AI for `project`, whose service account `email` signs with the key of `public_pem`."""

    def authorized(request: web.Request, model_path: str) -> web.Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if request.app[TOKENS].get(token, 0.0) < time.time():
            return _google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential.",
            )
        if request.match_info["project"] != project:
            return _google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/"
                f"{model_path}' (or it may not exist).",
            )
        return None

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return web.json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Invalid grant_type: {form.get('grant_type')!s}",
                },
                status=400,
            )
        audience = f"http://{request.host}{request.path}"
        problem = _check_jwt(str(form.get("assertion", "")), public_pem, email, audience)
        if problem:
            return web.json_response({"error": "invalid_grant", "error_description": problem}, status=400)
        issued = f"ya29.{uuid.uuid4().hex}{uuid.uuid4().hex}"
        request.app[TOKENS][issued] = time.time() + TOKEN_LIFETIME_S
        request.app[META]["tokens_issued"] = request.app[META].get("tokens_issued", 0) + 1
        return web.json_response({"access_token": issued, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"})

    async def predict(request: web.Request) -> web.StreamResponse:
        publisher = request.match_info["publisher"]
        model, _, method = request.match_info["tail"].rpartition(":")
        model_path = request.path.removeprefix("/v1/").rpartition(":")[0]
        refused = authorized(request, model_path)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _invalid("Invalid JSON payload received.")
        if publisher == "anthropic" and method in ("rawPredict", "streamRawPredict"):
            return await claude(request, model, method, body)
        if publisher == "google" and method in ("generateContent", "streamGenerateContent"):
            return await gemini(request, model, method, body)
        return _google_error(404, "NOT_FOUND", f"Publisher Model `{model_path}` not found.")

    async def claude(request: web.Request, model: str, method: str, body: dict[str, Any]) -> web.StreamResponse:
        if not model.startswith("claude"):
            return _google_error(404, "NOT_FOUND", f"Publisher Model `publishers/anthropic/models/{model}` not found.")
        if "model" in body:
            return anthropic_api._invalid("model: Extra inputs are not permitted")
        if body.get("anthropic_version") != "vertex-2023-10-16":
            return anthropic_api._invalid("anthropic_version: Input should be 'vertex-2023-10-16'")
        if bool(body.get("stream")) != (method == "streamRawPredict"):
            return anthropic_api._invalid("stream: streamRawPredict streams, rawPredict does not")
        request_body = {**body, "model": model.split("@", 1)[0]}
        problem = anthropic_api._validate(request_body)
        if problem:
            return anthropic_api._invalid(problem)
        record(request, {**body, "model": model})
        return await anthropic_api.answer(request, request_body)

    async def gemini(request: web.Request, model: str, method: str, body: dict[str, Any]) -> web.StreamResponse:
        refused = _validate_gemini(body)
        if refused is not None:
            return refused
        record(request, {"model": model, "sent": body})
        if model.endswith("-429"):
            return _google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource exhausted. Please try again later. Please refer to "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
            )
        prompt = sum(words(p.get("text", "")) for c in body["contents"] for p in c["parts"])
        prompt += sum(words(p.get("text", "")) for p in (body.get("systemInstruction") or {}).get("parts") or [])
        head = {"modelVersion": model, "createTime": "2025-10-01T10:00:00.000000Z", "responseId": uuid.uuid4().hex[:22]}
        last_text = " ".join(p.get("text", "") for p in body["contents"][-1]["parts"] if "text" in p)
        if "forbidden topic" in last_text:
            blocked = {
                "promptFeedback": {
                    "blockReason": "PROHIBITED_CONTENT",
                    "blockReasonMessage": "The prompt was blocked.",
                },
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt, "trafficType": "ON_DEMAND"},
                **head,
            }
            return web.json_response(blocked)
        parts, finish = _gemini_plan(body)
        completion = sum(words(p["text"]) for p in parts if "text" in p) + sum(7 for p in parts if "functionCall" in p)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
            "trafficType": "ON_DEMAND",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": completion}],
        }
        if method == "generateContent":
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish, "avgLogprobs": -0.25}
            return web.json_response({"candidates": [candidate], "usageMetadata": usage, **head})
        pieces: list[dict[str, Any]] = []
        for part in parts:
            if "text" in part:
                split = part["text"].split(" ")
                pieces += [{"text": w if i == 0 else " " + w} for i, w in enumerate(split)]
            else:
                pieces.append(part)
        events = []
        for i, piece in enumerate(pieces):
            event: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [piece]}}], **head}
            if i == len(pieces) - 1:
                event["candidates"][0]["finishReason"] = finish
                event["usageMetadata"] = usage
            else:
                event["usageMetadata"] = {"trafficType": "ON_DEMAND"}
            events.append(event)
        if request.query.get("alt") != "sse":  # without alt=sse, Vertex streams one JSON array
            return web.json_response(events)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            await resp.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
            await asyncio.sleep(0.002)
        return resp

    async def meta(request: web.Request) -> web.Response:
        return web.json_response(request.app[META])

    app = web.Application()
    app[META] = {}
    app[TOKENS] = {}
    app.router.add_post("/token", token)
    app.router.add_post("/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{tail}", predict)
    app.router.add_get("/_meta", meta)
    install_introspection(app)
    return app
