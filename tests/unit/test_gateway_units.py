"""Small pure pieces of the gateway."""

from __future__ import annotations

import pytest

from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest, validate_body


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "Bearer iir-abc"}, "iir-abc"),
        ({"authorization": "bearer   iir-abc  "}, "iir-abc"),
        ({"x-api-key": "iir-xyz"}, "iir-xyz"),
        ({"authorization": "Basic Zm9v", "x-api-key": "iir-xyz"}, "iir-xyz"),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_extract_key(headers: dict[str, str], key: str | None) -> None:
    assert extract_key(headers) == key


def test_principal_scopes() -> None:
    assert Principal("1", "k", False, 0, ()).may_use("anything/x")
    scoped = Principal("1", "k", False, 0, ("openai/*", "local/llama-*"))
    assert scoped.may_use("openai/gpt-4o") and scoped.may_use("local/llama-3")
    assert not scoped.may_use("local/mistral") and not scoped.may_use("anthropic/claude")


def test_validation_error_names_nested_field() -> None:
    with pytest.raises(APIError) as err:
        validate_body(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user"}, {"role": 3}]})
    assert err.value.status == 400 and err.value.param == "messages[1].role"


def test_valid_body_keeps_unknown_fields() -> None:
    req = validate_body(
        ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": 5, "guided_json": {}},
    )
    assert req.model_extra == {"top_k": 5, "guided_json": {}}
