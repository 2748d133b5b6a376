"""The gateway learns of added and removed models from the registry's Watch, with no restart."""

from __future__ import annotations

import httpx
import openai
import yaml

from iir_dev.stack import Stack
from tests.conftest import inference_model
from tests.waiting import wait_for

REJECTED = "cannot read models file; keeping the last good one"


def test_added_model_is_served_and_removed_model_is_404(stack: Stack, openai_client: openai.OpenAI) -> None:
    original = stack.models_file.read_text()
    docs = list(yaml.safe_load_all(original))
    docs.append(inference_model("added-later", stack.sim_url))
    try:
        stack.models_file.write_text(yaml.safe_dump_all(docs))
        assert wait_for(lambda: "local/added-later" in [m.id for m in openai_client.models.list()])
        stack.models_file.write_text(yaml.safe_dump_all([d for d in docs if d["metadata"]["name"] != "slow"]))
        assert wait_for(lambda: "local/slow" not in [m.id for m in openai_client.models.list()])
        try:
            openai_client.chat.completions.create(model="local/slow", messages=[{"role": "user", "content": "x"}])
            raise AssertionError("a removed model must answer 404")
        except openai.NotFoundError:
            pass
        # A broken file keeps the last good catalogue.
        registry_log = stack.processes["registry"].log_path
        rejected = registry_log.read_text().count(REJECTED)
        stack.models_file.write_text("kind: [unclosed")
        wait_for(lambda: registry_log.read_text().count(REJECTED) > rejected, what="the registry to reject the file")
        assert "local/llama-3-8b-instruct" in [m.id for m in openai_client.models.list()]
    finally:
        stack.models_file.write_text(original)
        assert wait_for(lambda: "local/slow" in [m.id for m in openai_client.models.list()])


def test_a_replica_that_leaves_takes_its_state_and_metric_series_along(stack: Stack) -> None:
    original = stack.models_file.read_text()
    replica = f"{stack.sim_url}/"  # the simulated backend under a replica URL no other model has
    series = f'iir_gateway_endpoint_waiting{{endpoint="{replica}"}}'
    docs = [*yaml.safe_load_all(original), inference_model("leaving", replica)]
    try:
        stack.models_file.write_text(yaml.safe_dump_all(docs))
        # The registry scrapes the new replica's load and pushes it: the gateway keeps a state for it.
        wait_for(lambda: series in httpx.get(stack.metrics_url).text, timeout=10, what="the replica's series")
        stack.models_file.write_text(original)
        wait_for(lambda: series not in httpx.get(stack.metrics_url).text, what="the series to go with the replica")
    finally:
        stack.models_file.write_text(original)
