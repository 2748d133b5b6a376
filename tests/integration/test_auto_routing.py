"""`model: "auto"` through the real gateway and the real classifier (model built by make)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from iir_dev import datastores
from iir_dev.stack import Stack
from tests.conftest import SERVED, STATIC_KEY

HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}
ROUTING = f"""
policies:
  auto:
    default: local/{SERVED}
    rules:
      - {{category: [code], model: local/ghost}}
      - {{category: [math], complexity: hard, model: local/slow}}
  auto/cheap:
    default: local/{SERVED}
"""


def ask(url: str, text: str, model: str = "auto", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 2, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=20)


def route(resp: httpx.Response) -> dict[str, str]:
    return dict(part.split("=", 1) for part in resp.headers["x-iir-route"].split("; "))


@pytest.fixture(scope="module")
def routing_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("routing") / "routing.yaml"
    path.write_text(ROUTING)
    return path


@pytest.fixture(scope="module")
def gateway(stack: Stack, routing_file: Path) -> str:
    return stack.start_gateway_replica(
        "gateway-auto", env={"IIR_ROUTING_FILE": str(routing_file), "IIR_CLASSIFIER_TIMEOUT_S": "2"}
    )


def test_auto_picks_the_model_by_category_and_says_why(gateway: str) -> None:
    math = ask(gateway, "Prove that the square root of 2 is irrational, with a rigorous argument.")
    assert math.status_code == 200 and math.headers["x-iir-model"] == "local/slow"
    decided = route(math)
    assert decided["category"] == "math" and decided["complexity"] == "hard" and decided["reason"] == "rule 2"
    chat = ask(gateway, "Hi! How are you doing today?")
    assert chat.headers["x-iir-model"] == f"local/{SERVED}" and route(chat)["reason"] == "default"
    cheap = ask(gateway, "Prove that the square root of 2 is irrational.", model="auto/cheap")
    assert cheap.headers["x-iir-model"] == f"local/{SERVED}" and route(cheap)["policy"] == "auto/cheap"


def test_the_route_header_comes_with_errors_too(gateway: str) -> None:
    code = ask(gateway, "Write a Python function that merges two sorted lists.")  # routed to a broken model
    assert code.status_code == 404 and route(code)["model"] == "local/ghost"


def test_streams_and_models_list(gateway: str) -> None:
    resp = ask(gateway, "Hello there", stream=True)
    assert resp.status_code == 200 and resp.text.rstrip().endswith("data: [DONE]") and route(resp)["category"]
    ids = [m["id"] for m in httpx.get(f"{gateway}/v1/models", headers=HEADERS).json()["data"]]
    assert "auto" in ids and "auto/cheap" in ids


def test_auto_chooses_only_models_the_key_may_use(stack: Stack, gateway: str) -> None:
    """A key limited to some models: a rule routing elsewhere is passed over, a default it may not use gives
    way to one it may; a key that may use none of the policy's models gets 403 saying so."""
    hard_math = "Prove that the square root of 2 is irrational, with a rigorous argument."
    limited = {"Authorization": f"Bearer {stack.create_key('auto-limited', allowed_models=[f'local/{SERVED}'])}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": hard_math}], "max_tokens": 2}
    math = httpx.post(f"{gateway}/v1/chat/completions", json=body, headers=limited, timeout=20)
    assert math.status_code == 200 and math.headers["x-iir-model"] == f"local/{SERVED}"  # not local/slow
    assert route(math)["reason"] == "default"
    slow_only = {"Authorization": f"Bearer {stack.create_key('auto-slow', allowed_models=['local/slow'])}"}
    chat = httpx.post(
        f"{gateway}/v1/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "Hi! How are you doing today?"}]},
        headers=slow_only,
        timeout=20,
    )
    assert chat.status_code == 200 and chat.headers["x-iir-model"] == "local/slow"
    assert route(chat)["reason"] == "default not allowed for this key"
    nothing = {"Authorization": f"Bearer {stack.create_key('auto-none', allowed_models=['openai/*'])}"}
    refused = httpx.post(f"{gateway}/v1/chat/completions", json=body, headers=nothing, timeout=20)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_unknown_policy_is_404(gateway: str) -> None:
    resp = ask(gateway, "x", model="auto/fancy")
    assert resp.status_code == 404 and "auto/cheap" in resp.json()["error"]["message"]


def _silent_server() -> str:
    """An address that accepts connections and never says a word: a classifier that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: listener.accept()[0], None)), daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"IIR_CLASSIFIER_ADDR": f"127.0.0.1:{datastores.free_port()}"}, "classifier unavailable"),
        ({"IIR_CLASSIFIER_ADDR": _silent_server()}, "classifier deadline exceeded"),
    ],
)
def test_without_a_classifier_answer_the_default_model_answers(
    stack: Stack, routing_file: Path, env: dict[str, Any], reason: str
) -> None:
    replica = stack.start_gateway_replica(
        f"gateway-auto-{reason.split()[-1]}", env={"IIR_ROUTING_FILE": str(routing_file), **env}
    )
    resp = ask(replica, "Prove that the square root of 2 is irrational.")
    assert resp.status_code == 200 and resp.headers["x-iir-model"] == f"local/{SERVED}"
    assert route(resp)["reason"] == reason
    log = stack.processes[f"gateway-auto-{reason.split()[-1]}"].log_path.read_text()
    assert "auto routing fell back to the default model" in log
