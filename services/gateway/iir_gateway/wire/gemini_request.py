"""OpenAI chat completion request → Gemini `generateContent` request
(https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference).

System and developer messages become `systemInstruction`; user and assistant turns become `contents` of
roles `user` and `model` (consecutive turns of one role merged); images become `inlineData` (data URLs)
or `fileData` (http(s) and gs:// URLs); assistant `tool_calls` become `functionCall` parts and `tool`
messages `functionResponse` parts (named by the call they answer); `tools` become `functionDeclarations`
(parameters cut down to the OpenAPI subset Gemini reads) and `tool_choice` a `functionCallingConfig`;
sampling options go to `generationConfig`, JSON response formats to `responseMimeType`/`responseSchema`.
"""

from __future__ import annotations

import mimetypes
from typing import Any

import orjson

from iir_gateway.errors import invalid_value
from iir_gateway.wire.anthropic_request import text_of
from iir_gateway.wire.tool_calls import call_arguments

_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# The fields of Gemini's `Schema` (an OpenAPI 3.0 subset); any other (`additionalProperties`, `$schema`,
# `strict`…) is refused by the API, so it is left out.
_SCHEMA_FIELDS = frozenset(
    {
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
)
# OpenAI sampling parameters and their generationConfig names.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
}


def schema(value: Any) -> Any:
    """A JSON schema as Gemini's `Schema`: unknown fields left out, `type: [x, "null"]` as `nullable`."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _SCHEMA_FIELDS:
            continue
        if key == "properties" and isinstance(item, dict):
            out[key] = {name: schema(prop) for name, prop in item.items()}
        elif key == "items":
            out[key] = schema(item)
        elif key == "anyOf" and isinstance(item, list):
            out[key] = [schema(option) for option in item]
        elif key == "type" and isinstance(item, list):
            kinds = [k for k in item if k != "null"]
            out[key] = kinds[0] if kinds else "null"
            if "null" in item:
                out["nullable"] = True
        else:
            out[key] = item
    return out


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        if not data or ";base64" not in header:
            raise invalid_value("Images must be base64 data URLs or http(s)/gs:// URLs.", param)
        return {"inlineData": {"mimeType": header[5:].split(";", 1)[0], "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise invalid_value("Images must be base64 data URLs or http(s)/gs:// URLs.", param)


def _parts(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "image_url":
            parts.append(_image(part, f"{param}[{j}]"))
        else:
            raise invalid_value(f"Content parts of type {kind!r} are not supported for Gemini models.", f"{param}[{j}]")
    return parts


def _function_call(call: dict[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function") or {}
    args = call_arguments(call, param)
    return {"functionCall": {"name": function.get("name", ""), "args": args}}


def _function_response(message: dict[str, Any], names: dict[str, str], param: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id", "")
    name = names.get(call_id)
    if name is None:
        raise invalid_value(f"No assistant tool call has the id {call_id!r}.", f"{param}.tool_call_id")
    text = text_of(message.get("content"))
    try:
        result = orjson.loads(text)
    except orjson.JSONDecodeError:
        result = None
    return {"functionResponse": {"name": name, "response": result if isinstance(result, dict) else {"content": text}}}


def _contents(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the responses
    for i, m in enumerate(messages):
        role, param = m.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
            continue
        if role == "user":
            parts = _parts(m.get("content"), f"{param}.content")
        elif role == "assistant":
            role = "model"
            parts = _parts(m.get("content"), f"{param}.content")
            for j, call in enumerate(m.get("tool_calls") or []):
                parts.append(_function_call(call, f"{param}.tool_calls[{j}]"))
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
        elif role == "tool":
            role, parts = "user", [_function_response(m, names, param)]
        else:
            raise invalid_value(
                f"Messages with role {role!r} are not supported for Gemini models; use `tool`.", f"{param}.role"
            )
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["parts"] += parts
        else:
            out.append({"role": role, "parts": parts})
    return "\n\n".join(s for s in system if s), out


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {name: body[field] for field, name in _GENERATION.items() if body.get(field) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = schema(spec["schema"])
    elif kind not in (None, "text"):
        raise invalid_value(f"response_format {kind!r} is not supported for Gemini models.", "response_format")
    return config


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if not tools:
        return {}
    declarations = []
    for t in tools:
        function = t["function"]
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, dict) and parameters.get("properties"):
            declaration["parameters"] = schema(parameters)
        declarations.append(declaration)
    out: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]}
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        if choice not in _MODES:
            raise invalid_value(f"Unknown tool_choice {choice!r}.", "tool_choice")
        out["toolConfig"] = {"functionCallingConfig": {"mode": _MODES[choice]}}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name", "")
        out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return out


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent request for an OpenAI chat completion request (400 for what cannot be expressed)."""
    if (body.get("n") or 1) > 1:
        raise invalid_value("Gemini models are asked for one choice here: `n` must be 1.", "n")
    system, contents = _contents(body["messages"])
    if not contents:
        raise invalid_value("At least one user or assistant message is required.", "messages")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    out.update(_tools(body))
    return out
