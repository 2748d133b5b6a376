"""The simulator's structured outputs: whatever schema a client sends (pydantic's, with `$defs`, enums,
optional fields and lists; OpenAI's strict form; vLLM's `guided_json`), the answer is a JSON value the
schema accepts, as vLLM's guided decoding guarantees."""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from iir_simbackend.answers import plan_chat, plan_completion
from iir_simbackend.generation import tool_arguments
from iir_simbackend.structured import schema_value


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip_code: str = Field(min_length=5, max_length=5)


class Person(BaseModel):
    name: str
    age: int = Field(ge=18, le=130)
    height_m: float
    member: bool
    colour: Colour
    kind: Literal["staff", "guest"]
    nickname: str | None = None
    addresses: list[Address]
    tags: list[str] = Field(min_length=2)
    manager: Person | None = None  # recursive


SCHEMAS: dict[str, dict[str, Any]] = {
    "pydantic": Person.model_json_schema(),
    "strict": {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False,
                },
            },
            "final_answer": {"type": ["string", "null"]},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["steps", "final_answer", "when"],
        "additionalProperties": False,
    },
    "scalar": {"type": "integer", "minimum": 3, "maximum": 9},
    "anything": {},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_value_of_every_schema(name: str) -> None:
    schema = SCHEMAS[name]
    value = schema_value(schema, "Paris")
    jsonschema.validate(value, schema)
    assert schema_value(schema, "Paris") == value  # deterministic


def test_the_answer_is_the_schema_s_value_and_parses_with_pydantic() -> None:
    schema = Person.model_json_schema()
    body = {
        "messages": [{"role": "user", "content": "Describe someone."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "Person", "schema": schema, "strict": True}},
    }
    out = plan_chat(body, 4096).outputs[0].generated
    assert out.finish == "stop"
    Person.model_validate_json(out.text)
    # Out of tokens: cut like vLLM's guided decoding cuts, unfinished JSON and `length`.
    short = plan_chat({**body, "max_tokens": 3}, 4096).outputs[0].generated
    assert short.finish == "length" and len(short.tokens) == 3


@pytest.mark.parametrize(
    "extra",
    [
        {"guided_json": SCHEMAS["strict"]},
        {"guided_json": json.dumps(SCHEMAS["strict"])},
        {"structured_outputs": {"json": SCHEMAS["strict"]}},
    ],
    ids=["guided_json", "guided_json_text", "structured_outputs"],
)
def test_vllm_s_own_parameters(extra: dict[str, Any]) -> None:
    chat = plan_chat({"messages": [{"role": "user", "content": "Solve 8x + 7 = -23"}], **extra}, 4096)
    jsonschema.validate(json.loads(chat.outputs[0].generated.text), SCHEMAS["strict"])
    text = plan_completion({"prompt": "Solve 8x + 7 = -23", **extra}, 4096)
    jsonschema.validate(json.loads(text.outputs[0].generated.text), SCHEMAS["strict"])


def test_json_object_stays_an_object() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}
    assert isinstance(json.loads(plan_chat(body, 4096).outputs[0].generated.text), dict)


def test_a_strict_tool_s_arguments_follow_its_schema() -> None:
    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
            "hourly": {"type": ["boolean", "null"]},
        },
        "required": ["city", "unit", "days", "hourly"],
        "additionalProperties": False,
    }
    tool = {"type": "function", "function": {"name": "forecast", "parameters": parameters, "strict": True}}
    arguments = json.loads(tool_arguments(tool, "What is the weather in Paris?"))
    jsonschema.validate(arguments, parameters)
    assert arguments["city"] == "Paris"  # a name from the prompt, as a capable model fills it
