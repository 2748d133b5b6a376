"""Real vLLM still answers as recorded under `tests/data/vllm/` (the simulator is held to the same
recordings in `make test`). `IIR_VLLM_RECORD=1 make test-vllm` rewrites them."""

from __future__ import annotations

import json
import os

import httpx
import jsonschema
import pytest

from tests.vllm.recording import (
    CASES,
    GREETING,
    RECORDINGS,
    STRUCTURED,
    VLLM_VERSION,
    Case,
    answer_shape,
    load,
    parse_stream,
)

RECORD = os.environ.get("IIR_VLLM_RECORD") == "1"


def call(base: str, case: Case) -> tuple[int, object, str]:
    resp = httpx.request(case.method, f"{base}{case.path}", json=case.body, timeout=120)
    if case.stream and resp.status_code == 200:
        return resp.status_code, parse_stream(resp.text), resp.text
    return resp.status_code, resp.json(), resp.text


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_real_vllm_answers_as_recorded(vllm_url: str, case: Case) -> None:
    status, body, _ = call(vllm_url, case)
    path = RECORDINGS / f"{case.name}.json"
    if RECORD or not path.exists():
        recording = {"vllm": VLLM_VERSION, "request": case.body, "path": case.path, "status": status, "body": body}
        path.write_text(json.dumps(recording, indent=1, ensure_ascii=False) + "\n")
    recorded = load(case.name)
    assert answer_shape(status, body) == answer_shape(recorded["status"], recorded["body"])
    if case.name in STRUCTURED:  # guided decoding: the answer is a value of the schema
        jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), GREETING)  # type: ignore[index]


def test_metrics_names_are_as_recorded(vllm_url: str) -> None:
    text = httpx.get(f"{vllm_url}/metrics").text
    path = RECORDINGS / "metrics.txt"
    if RECORD or not path.exists():
        path.write_text(f"# vLLM {VLLM_VERSION}, /metrics after the recorded requests\n" + text)
    names = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE vllm:")}
    recorded = {line.split(" ")[2] for line in path.read_text().splitlines() if line.startswith("# TYPE vllm:")}
    assert names == recorded
