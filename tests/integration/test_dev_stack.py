"""`make dev`'s models file: copied from deploy/dev once and then the user's, kept across restarts; a
model added to it is served at once, whatever its name (the simulated vLLM serves any)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from iir_dev.stack import Stack
from tests.conftest import inference_model
from tests.waiting import wait_for


def _stack(workdir: Path, database_url: str, redis_url: str) -> Stack:
    # As `iir_dev up` configures the simulator.
    env = {"IIR_SIM_MODELS": "*", "IIR_MODELS_FILE_POLL_S": "0.2", "IIR_REDIS_PREFIX": "iir-dev-test:"}
    return Stack(workdir=workdir, database_url=database_url, redis_url=redis_url, env=env)


def test_a_model_added_to_the_dev_models_file_is_served_and_kept(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    stack = _stack(tmp_path, database_url, redis_url)
    stack.start()
    try:
        key = stack.create_key("dev")
        docs = list(yaml.safe_load_all(stack.models_file.read_text()))
        docs.append(inference_model("my-own-model", stack.sim_url))
        stack.models_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        headers = {"authorization": f"Bearer {key}"}

        def listed() -> bool:
            models = httpx.get(f"{stack.gateway_url}/v1/models", headers=headers).json()["data"]
            return "local/my-own-model" in [m["id"] for m in models]

        assert wait_for(listed, timeout=10, what="the new model to be listed")
        answer = httpx.post(
            f"{stack.gateway_url}/v1/chat/completions",
            headers=headers,
            json={"model": "local/my-own-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.status_code == 200, answer.text
    finally:
        stack.stop()
    again = _stack(tmp_path, database_url, redis_url)
    again.start()
    try:
        assert "my-own-model" in again.models_file.read_text()  # the user's edit survived the restart
    finally:
        again.stop()
