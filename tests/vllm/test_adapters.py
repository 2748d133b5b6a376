"""A LoRA adapter made offline for the tiny model (peft, random weights) is loaded into a real vLLM at
run time by the operator's own client, listed by the registry as `local/<adapter>` and answered through
the gateway, differently from the base model; then unloaded. The vLLM runs as the operator runs a model
with spec.lora (LoRA on, runtime updating)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml

from iir_dev import datastores, real_vllm
from iir_dev.stack import Stack
from iir_operator.adapters.vllm_api import AdapterCallError, VllmAdapters
from iir_registry.metrics_scraper import parse_vllm_metrics
from tests.conftest import inference_model, write_models
from tests.waiting import eventually

BASE = "smollm2-lora-base"
ADAPTER = "smol-lora"


@pytest.fixture(scope="module")
def lora_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = datastores.free_port()
    proc = real_vllm.serve(port, tmp_path_factory.mktemp("vllm-lora") / "vllm.log", served=BASE, lora=True)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(30)


def adapter_doc(loaded_on: list[str]) -> dict[str, object]:
    """The InferenceAdapter as the operator leaves it once loaded (the file source reads status as given)."""
    return {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceAdapter",
        "metadata": {"name": ADAPTER, "namespace": "test"},
        "spec": {"baseModel": BASE, "source": {"path": str(real_vllm.build_adapter())}},
        "status": {"phase": "Ready", "loadedOn": loaded_on},
    }


async def ask(client: openai.AsyncOpenAI, model: str) -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0
    )
    return reply.choices[0].message.content or ""


async def test_an_adapter_is_loaded_at_run_time_and_served_through_the_gateway(
    lora_vllm: str, vllm_stack: Stack, key: str
) -> None:
    api = VllmAdapters()
    path = str(real_vllm.build_adapter())
    await api.load(lora_vllm, ADAPTER, path)
    assert await api.loaded(lora_vllm) == {ADAPTER}
    with pytest.raises(AdapterCallError, match="already been loaded"):  # vLLM's own message, kept
        await api.load(lora_vllm, ADAPTER, path)
    with pytest.raises(AdapterCallError, match="No adapter found"):
        await api.load(lora_vllm, "nowhere", "/no/such/adapter")

    models_file = vllm_stack.models_file
    before = models_file.read_text()
    docs = [d for d in yaml.safe_load_all(before) if d]
    write_models(models_file, [*docs, inference_model(BASE, lora_vllm), adapter_doc([BASE])])
    client = openai.AsyncOpenAI(base_url=f"{vllm_stack.gateway_url}/v1", api_key=key, max_retries=0)
    try:
        await eventually(lambda: _listed(client, f"local/{ADAPTER}"), timeout=10)
        tuned, plain = await ask(client, f"local/{ADAPTER}"), await ask(client, f"local/{BASE}")
        assert tuned and plain and tuned != plain, "the adapter's weights should change the answer"

        async with httpx.AsyncClient() as http:
            metrics = parse_vllm_metrics(lora_vllm, (await http.get(f"{lora_vllm}/metrics")).text)
        assert metrics.max_loras == 2  # vllm:lora_requests_info, as the registry reads it

        await api.unload(lora_vllm, ADAPTER)
        assert await api.loaded(lora_vllm) == set()
        with pytest.raises(AdapterCallError, match="cannot be found"):
            await api.unload(lora_vllm, ADAPTER)
    finally:
        models_file.write_text(before)
        await client.close()
        await api.close()


async def _listed(client: openai.AsyncOpenAI, model: str) -> bool:
    return model in [m.id async for m in client.models.list()]
