"""A gateway killed in the middle of a batch: another takes the batch over once its lease lapses, and
the output holds every line exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import openai
import pytest

from tests.conftest import make_stack
from tests.integration.test_batches import finished, jsonl
from tests.waiting import wait_for

RUNNER = {"IIR_BATCH_CONCURRENCY": "2", "IIR_BATCH_LEASE_S": "2"}


def test_a_batch_survives_the_gateway_running_it(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, slow_sim: str
) -> None:
    stack = make_stack(
        Path(tmp_path_factory.mktemp("batch-takeover")), database_url, redis_url, slow_sim, IIR_BATCH_CONCURRENCY="0"
    )
    try:
        stack.start_gateway_replica("gateway-runner", env=RUNNER)
        client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.create_key("batch"), max_retries=0)
        body = {"model": "local/slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
        lines = [
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body} for i in range(12)
        ]
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress", timeout=10)
        first = stack.processes["gateway-runner"].popen

        def progress() -> int:
            counts = client.batches.retrieve(batch.id).request_counts
            return counts.completed if counts is not None else 0

        wait_for(lambda: progress() >= 3, timeout=20, what="a few lines to finish (counted as they finish)")
        os.kill(first.pid, signal.SIGKILL)  # mid-batch, lines in flight
        first.wait(10)
        stack.start_gateway_replica("gateway-runner-2", env=RUNNER)
        done = finished(client, batch.id, timeout=60)
        assert done.status == "completed" and done.request_counts.completed == 12  # type: ignore[union-attr]
        output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]  # type: ignore[arg-type]
        assert [o["custom_id"] for o in output] == [f"r{i}" for i in range(12)]  # none lost, none twice
    finally:
        stack.stop()
