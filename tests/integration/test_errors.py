"""Bad input and failing upstreams: every failure is a 4xx/5xx with an OpenAI error body, nothing crashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from iir_dev.stack import Stack
from tests.conftest import SERVED
from tests.json_values import json_object
from tests.waiting import wait_for

MODEL = f"local/{SERVED}"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def http(stack: Stack, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20)


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if code:
        assert err["code"] == code
    return json_object(err)


def test_invalid_bodies_are_400_naming_the_field(http: httpx.Client) -> None:
    # The whole matrix of bad bodies is tests/unit/test_validation.py; this checks the answer end to end.
    err = assert_error(http.post("/v1/chat/completions", json={"model": MODEL, "messages": "hi"}), 400)
    assert err["param"] == "messages"


def test_unparseable_bodies_are_400(http: httpx.Client) -> None:
    assert_error(http.post("/v1/chat/completions", content=b"{not json"), 400, "invalid_json")


def test_completions_validate_prompt(http: httpx.Client) -> None:
    err = assert_error(http.post("/v1/completions", json={"model": MODEL}), 400, "missing_required_parameter")
    assert err["param"] == "prompt"


def test_body_over_limit_is_413(http: httpx.Client) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert_error(http.post("/v1/chat/completions", json=big), 413, "request_too_large")


def test_chunked_body_over_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "local/x", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}]}'

    assert_error(http.post("/v1/chat/completions", content=chunks()), 413, "request_too_large")


def test_missing_and_wrong_keys_are_401(stack: Stack) -> None:
    url = f"{stack.gateway_url}/v1/chat/completions"
    body = {"model": MODEL, "messages": MESSAGES}
    assert_error(httpx.post(url, json=body), 401, "missing_api_key")
    assert_error(httpx.post(url, json=body, headers={"Authorization": "Bearer iir-nope"}), 401, "invalid_api_key")
    assert_error(httpx.post(url, json=body, headers={"Authorization": "Basic abc"}), 401, "missing_api_key")
    err = assert_error(
        httpx.get(f"{stack.gateway_url}/v1/models", headers={"X-API-Key": "iir-wrong-key-123456"}),
        401,
        "invalid_api_key",
    )
    assert "iir-wrong-key-123456" not in err["message"]  # keys are masked


@pytest.mark.parametrize("model", ["local/nope", "nosuchprovider/x", "no-slash", "local/"])
def test_unknown_models_are_404(http: httpx.Client, model: str) -> None:
    err = assert_error(
        http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES}), 404, "model_not_found"
    )
    assert err["param"] == "model"


def test_model_without_ready_replica_is_503(http: httpx.Client) -> None:
    err = assert_error(
        http.post("/v1/chat/completions", json={"model": "local/pending", "messages": MESSAGES}), 503, "model_not_ready"
    )
    assert "waiting for a GPU node" in err["message"]


def test_unknown_url_and_method(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing-here"), 404, "unknown_url")
    assert_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_backend_down_is_502(http: httpx.Client) -> None:
    assert_error(
        http.post("/v1/chat/completions", json={"model": "local/dead", "messages": MESSAGES}),
        502,
        "upstream_unreachable",
    )


def test_backend_timeout_is_504(http: httpx.Client) -> None:
    start = time.monotonic()
    assert_error(
        http.post("/v1/chat/completions", json={"model": "local/slow", "messages": MESSAGES, "max_tokens": 50}),
        504,
        "upstream_timeout",
    )
    assert time.monotonic() - start < 7  # IIR_UPSTREAM_TOTAL_TIMEOUT_S (4 s) bounds a non-streamed call


def test_a_long_non_streamed_answer_is_not_cut_by_the_read_timeout(http: httpx.Client) -> None:
    # 10 tokens at 4 a second: 2.5 s with no byte sent, longer than the read timeout (1.5 s).
    resp = http.post("/v1/chat/completions", json={"model": "local/slow", "messages": MESSAGES, "max_tokens": 10})
    assert resp.status_code == 200, resp.text


def test_vllm_refusals_reach_the_client_with_their_fields(http: httpx.Client) -> None:
    err = assert_error(
        http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100_000}), 400
    )
    assert err["param"] == "max_tokens" and err["type"] == "BadRequestError" and "max_model_len" in err["message"]
    # vLLM answers FastAPI's {"detail": "Not Found"} for a route its model lacks: a readable OpenAI error.
    err = assert_error(http.post("/v1/embeddings", json={"model": MODEL, "input": "x"}), 404)
    assert (
        err["message"] == f"The upstream for `{MODEL}` answered 404: Not Found." and err["code"] == "upstream_rejected"
    )


def test_upstream_client_error_is_passed_through(http: httpx.Client) -> None:
    err = assert_error(http.post("/v1/chat/completions", json={"model": "local/ghost", "messages": MESSAGES}), 404)
    assert "ghost" in err["message"] and err["code"] == "upstream_rejected"


def test_openai_sdk_raises_typed_errors(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="local/nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        robot = cast(ChatCompletionMessageParam, {"role": "robot", "content": "x"})  # invalid on purpose
        openai_client.chat.completions.create(model=MODEL, messages=[robot])


def test_client_disconnect_cancels_the_upstream_request(stack: Stack, api_key: str, slow_sim: str) -> None:
    def running() -> float:
        metrics = httpx.get(f"{slow_sim}/metrics").text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("vllm:num_requests_running"))
        return float(line.rsplit(" ", 1)[1])

    assert running() == 0
    with httpx.stream(
        "POST",
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "local/slow", "messages": MESSAGES, "max_tokens": 40, "stream": True},
    ) as resp:
        lines = resp.iter_lines()  # keep it: dropping the iterator closes the connection
        next(lines)
        assert running() == 1
    assert wait_for(lambda: running() == 0, timeout=3)  # the whole generation would take 10 s

    # Not streamed: the client gives up after two seconds, and the generation stops with it.
    def give_up() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{stack.gateway_url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {api_key}"},
                json={"model": "local/slow", "messages": MESSAGES, "max_tokens": 40},
                timeout=httpx.Timeout(10, read=2),
            )

    client = threading.Thread(target=give_up)
    client.start()
    assert wait_for(lambda: running() == 1, timeout=2)
    client.join()
    assert wait_for(lambda: running() == 0, timeout=3)


def test_services_survive_bad_input(http: httpx.Client, openai_client: openai.OpenAI) -> None:
    for junk in (b"\x00" * 100, b"{" * 5000, b'{"model": {"a": [' + b"[" * 3000 + b"]}"):
        assert http.post("/v1/chat/completions", content=junk).status_code == 400
    assert openai_client.chat.completions.create(model=MODEL, messages=MESSAGES).choices
