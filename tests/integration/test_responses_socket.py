"""The WebSocket mode of `/v1/responses` against a running gateway (uvicorn's WebSocket support is part of
what is tested), with the `websockets` client: turns in sequence on one socket, `store: false`
continuation on the same socket only, a failed continuation forgetting its response, errors as events
that leave the socket open, and a key checked at the handshake."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from iir_dev.stack import Stack
from tests.conftest import SERVED

MODEL = f"local/{SERVED}"
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
ANSWERED = ("response.completed", "response.incomplete")


def socket(stack: Stack, key: str) -> Any:
    url = stack.gateway_url.replace("http://", "ws://") + "/v1/responses"
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=30)


async def turn(ws: ClientConnection, **body: Any) -> list[dict[str, Any]]:
    """The events of one `response.create`, to its terminal event."""
    await ws.send(json.dumps({"type": "response.create", "model": MODEL, **body}))
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 60))
        events.append(event)
        if event["type"] in TERMINAL:
            return events


def test_turns_in_sequence_and_a_store_false_continuation(stack: Stack, api_key: str) -> None:
    async def go() -> None:
        async with socket(stack, api_key) as ws:
            first = await turn(ws, store=False, input="Remember the code word: cobalt.")
            assert first[0]["type"] == "response.created" and first[-1]["type"] in ANSWERED
            assert [e["sequence_number"] for e in first] == list(range(len(first)))
            answer = first[-1]["response"]
            text = "".join(e["delta"] for e in first if e["type"] == "response.output_text.delta")
            assert text and answer["output"][0]["content"][0]["text"] == text
            second = await turn(ws, store=False, previous_response_id=answer["id"], input="The word?")
            assert second[-1]["type"] in ANSWERED
            assert second[-1]["response"]["previous_response_id"] == answer["id"]
            # The continuation carried the conversation: more input tokens than the question alone.
            alone = await turn(ws, store=False, input="The word?")
            assert second[-1]["response"]["usage"]["input_tokens"] > alone[-1]["response"]["usage"]["input_tokens"]
        async with socket(stack, api_key) as other:  # store: false lives on its socket only
            [error] = await turn(other, store=False, previous_response_id=answer["id"], input="Again?")
            assert error["type"] == "error" and error["status"] == 400
            assert error["error"]["code"] == "previous_response_not_found"

    asyncio.run(go())


def test_a_failed_continuation_forgets_what_it_continued(stack: Stack, api_key: str) -> None:
    async def go() -> None:
        async with socket(stack, api_key) as ws:
            first = await turn(ws, store=False, input="Hello")
            previous = first[-1]["response"]["id"]
            stray = [{"type": "function_call_output", "call_id": "call_missing", "output": "x"}]
            [failed] = await turn(ws, store=False, previous_response_id=previous, input=stray)
            assert failed["type"] == "error" and "call_missing" in failed["error"]["message"]
            [again] = await turn(ws, store=False, previous_response_id=previous, input="Still there?")
            assert again["error"]["code"] == "previous_response_not_found"

    asyncio.run(go())


def test_bad_messages_are_error_events_and_the_socket_stays_open(stack: Stack, api_key: str) -> None:
    async def go() -> None:
        async with socket(stack, api_key) as ws:
            for message in (
                "not json",
                json.dumps({"type": "response.cancel"}),
                json.dumps({"type": "response.create"}),
            ):
                await ws.send(message)
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert event["type"] == "error" and event["status"] == 400 and event["error"]["message"], event
            stored = await turn(ws, input="Keep this one")  # store defaults to true
            assert stored[-1]["type"] in ANSWERED
        response_id = stored[-1]["response"]["id"]
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, headers={"Authorization": f"Bearer {api_key}"}
        ) as http:
            assert (await http.get(f"/v1/responses/{response_id}")).json()["id"] == response_id

    asyncio.run(go())


def test_a_socket_without_a_valid_key_is_refused(stack: Stack) -> None:
    async def go() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with socket(stack, "iir-not-a-key-0123456789"):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(go())
