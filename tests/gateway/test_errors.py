"""Bad input and failing upstreams: every failure is a 4xx/5xx with an OpenAI error body, nothing crashes.
(Moved from tests/integration/test_errors.py; the client-disconnect case stays there: it needs a socket.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import SERVED
from tests.gateway.conftest import Gateway

MODEL = f"local/{SERVED}"
MESSAGES = [{"role": "user", "content": "hi"}]


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if code:
        assert err["code"] == code
    return err


async def test_invalid_bodies_are_400_naming_the_field(http: httpx.AsyncClient) -> None:
    # The whole matrix of bad bodies is tests/unit/test_validation.py; this checks the answer end to end.
    err = assert_error(await http.post("/v1/chat/completions", json={"model": MODEL, "messages": "hi"}), 400)
    assert err["param"] == "messages"


async def test_unparseable_bodies_are_400(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/v1/chat/completions", content=b"{not json"), 400, "invalid_json")


async def test_completions_validate_prompt(http: httpx.AsyncClient) -> None:
    err = assert_error(await http.post("/v1/completions", json={"model": MODEL}), 400, "missing_required_parameter")
    assert err["param"] == "prompt"


async def test_body_over_limit_is_413(http: httpx.AsyncClient) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 70_000}]}  # the limit: 64 KiB
    assert_error(await http.post("/v1/chat/completions", json=big), 413, "request_too_large")


async def test_chunked_body_over_limit_is_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "local/x", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}]}'

    assert_error(await http.post("/v1/chat/completions", content=chunks()), 413, "request_too_large")


async def test_missing_and_wrong_keys_are_401(gateway: Gateway) -> None:
    client = gateway.client
    body = {"model": MODEL, "messages": MESSAGES}
    assert_error(await client.post("/v1/chat/completions", json=body), 401, "missing_api_key")
    wrong = {"Authorization": "Bearer iir-nope"}
    assert_error(await client.post("/v1/chat/completions", json=body, headers=wrong), 401, "invalid_api_key")
    basic = {"Authorization": "Basic abc"}
    assert_error(await client.post("/v1/chat/completions", json=body, headers=basic), 401, "missing_api_key")
    err = assert_error(
        await client.get("/v1/models", headers={"X-API-Key": "iir-wrong-key-123456"}), 401, "invalid_api_key"
    )
    assert "iir-wrong-key-123456" not in err["message"]  # keys are masked


@pytest.mark.parametrize("model", ["local/nope", "nosuchprovider/x", "no-slash", "local/"])
async def test_unknown_models_are_404(http: httpx.AsyncClient, model: str) -> None:
    resp = await http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
    assert assert_error(resp, 404, "model_not_found")["param"] == "model"


async def test_model_without_ready_replica_is_503(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json={"model": "local/pending", "messages": MESSAGES})
    assert "waiting for a GPU node" in assert_error(resp, 503, "model_not_ready")["message"]


async def test_unknown_url_and_method(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/nothing-here"), 404, "unknown_url")
    assert_error(await http.get("/v1/chat/completions"), 405, "method_not_allowed")


async def test_backend_down_is_502(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json={"model": "local/dead", "messages": MESSAGES})
    assert_error(resp, 502, "upstream_unreachable")


async def test_backend_timeout_is_504(http: httpx.AsyncClient) -> None:
    # `slowsim` gives a non-streamed answer 1 s; 50 tokens at 10 a second take 5.
    body = {"model": "slowsim/slow", "messages": MESSAGES, "max_tokens": 50}
    assert_error(await http.post("/v1/chat/completions", json=body), 504, "upstream_timeout")


async def test_a_long_non_streamed_answer_is_not_cut_by_the_read_timeout(http: httpx.AsyncClient) -> None:
    # 5 tokens at 10 a second: 0.5 s with no byte sent, longer than `patient`'s read timeout (0.2 s).
    body = {"model": "patient/slow", "messages": MESSAGES, "max_tokens": 5}
    resp = await http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text


async def test_vllm_refusals_reach_the_client_with_their_fields(http: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 100_000}
    err = assert_error(await http.post("/v1/chat/completions", json=body), 400)
    assert err["param"] == "max_tokens" and err["type"] == "BadRequestError" and "max_model_len" in err["message"]
    # vLLM answers FastAPI's {"detail": "Not Found"} for a route its model lacks: a readable OpenAI error.
    err = assert_error(await http.post("/v1/embeddings", json={"model": MODEL, "input": "x"}), 404)
    assert err["message"] == f"The upstream for `{MODEL}` answered 404: Not Found."
    assert err["code"] == "upstream_rejected"


async def test_upstream_client_error_is_passed_through(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json={"model": "local/ghost", "messages": MESSAGES})
    err = assert_error(resp, 404)
    assert "ghost" in err["message"] and err["code"] == "upstream_rejected"


async def test_openai_sdk_raises_typed_errors(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(model="local/nope", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        await openai_client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "x"}])  # type: ignore[misc,list-item]


async def test_services_survive_bad_input(http: httpx.AsyncClient, openai_client: openai.AsyncOpenAI) -> None:
    for junk in (b"\x00" * 100, b"{" * 5000, b'{"model": {"a": [' + b"[" * 3000 + b"]}"):
        assert (await http.post("/v1/chat/completions", content=junk)).status_code == 400
    assert (await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)).choices  # type: ignore[arg-type]
