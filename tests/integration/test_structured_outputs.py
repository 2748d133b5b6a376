"""Structured outputs as users write them, against the whole stack `make dev` runs (the simulated vLLM
follows the schema as vLLM's guided decoding does): the OpenAI SDK's `parse` on chat completions and
responses, and LangChain's `with_structured_output` with its default method (a strict JSON schema)."""

from __future__ import annotations

from typing import Literal

import openai
from pydantic import BaseModel, Field

from iir_dev.stack import Stack
from tests.conftest import SERVED

MODEL = f"local/{SERVED}"


class Step(BaseModel):
    explanation: str
    output: str


class MathReasoning(BaseModel):
    steps: list[Step]
    final_answer: str


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)
    role: Literal["engineer", "manager"]
    nickname: str | None


def test_chat_completions_parse(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.parse(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful math tutor. Guide the user through the solution."},
            {"role": "user", "content": "how can I solve 8x + 7 = -23"},
        ],
        response_format=MathReasoning,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, MathReasoning) and parsed.steps


def test_responses_parse(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.parse(
        model=MODEL, input="Alice is an engineer. Describe her.", text_format=Person
    )
    assert isinstance(response.output_parsed, Person)


def test_langchain_with_structured_output(stack: Stack, api_key: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=f"{stack.gateway_url}/v1", api_key=api_key)
    person = llm.with_structured_output(Person).invoke("Alice is an engineer. Describe her.")
    assert isinstance(person, Person)
    # And with a JSON schema rather than a class, as LangChain also takes one.
    schema = Person.model_json_schema()
    as_dict = llm.with_structured_output(schema, method="json_schema", strict=True).invoke("Describe Bob.")
    assert isinstance(as_dict, dict) and Person.model_validate(as_dict)
