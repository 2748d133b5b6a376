"""OpenAI request bodies, for validation and the OpenAPI docs. Unknown fields are kept and forwarded."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iir_gateway.errors import APIError, invalid_value

# Bounds that keep absurd numbers (2^63 tokens) from reaching an upstream or the limiter.
MAX_TOKENS = 10_000_000
_INT64 = 2**63 - 1


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class ToolCall(_Open):
    function: dict[str, Any] | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class _Sampling(_Open):
    model: str = Field(min_length=1, description='"<provider>/<model>", e.g. "local/llama-3-8b-instruct"')
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-_INT64 - 1, le=_INT64)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1, description='"<provider>/<model>", e.g. "openai/text-embedding-3-small"')
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    user: str | None = None


InferenceRequest = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


# Pydantic names the member of a union that failed inside `loc`; those are not field names.
_UNION_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _param(loc: tuple[Any, ...]) -> str:
    """`("messages", 0, "role")` → `messages[0].role`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _UNION_TAGS and "[" not in str(part):
            out += f".{part}" if out else str(part)
    return out


def validate_body(schema: type[BaseModel], body: dict[str, Any], *, named: bool = False) -> Any:
    """Validates `body` against `schema`, turning the first problem into a 400 naming the field; `named`:
    worded as Anthropic does (`max_tokens: Field required`)."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(tuple(err["loc"]))
        if named:
            raise invalid_value(err["msg"], param, named=True) from None
        if err["type"] == "missing":
            raise APIError(
                400, f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
            ) from None
        raise APIError(400, f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param) from None


def openapi_body(schema: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body the route reads itself (it skips FastAPI's slower parsing)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}},
        }
    }


OPENAPI_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)
