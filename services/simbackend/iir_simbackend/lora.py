"""LoRA adapters as vLLM 0.32 serves them with `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING:
`/v1/load_lora_adapter` and `/v1/unload_lora_adapter` with its exact answers (a plain-text success, its
error shapes), adapters listed in `/v1/models` under their base model, served by name, and the
`vllm:lora_requests_info` gauge (a series per label set, its value the time of the update)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from iir_simbackend.vllm_errors import error, json_object


class LoraState:
    def __init__(self, base: str, max_loras: int, registry: CollectorRegistry) -> None:
        self.base = base
        self.max_loras = max_loras
        self.adapters: dict[str, str] = {}  # name → path
        self.running: Counter[str] = Counter()
        self._info = Gauge(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
            registry=registry,
        )
        self._publish()

    def _publish(self) -> None:
        running = ",".join(name for name, n in self.running.items() if n > 0)
        self._info.labels(str(self.max_loras), "", running).set_to_current_time()

    def started(self, name: str) -> None:
        if name in self.adapters:
            self.running[name] += 1
            self._publish()

    def finished(self, name: str) -> None:
        if self.running.get(name):
            self.running[name] -= 1
            self._publish()

    async def load(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name == self.base:
            return error(400, f"The lora adapter '{name}' conflicts with a served base model.", "InvalidUserInput")
        if name in self.adapters and not body.get("load_inplace"):
            return error(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, "
                "set 'load_inplace' to True.",
                "InvalidUserInput",
            )
        # A folder must hold an adapter; anything else is taken for a Hugging Face id (vLLM would download it).
        if str(path).startswith("/") and not await asyncio.to_thread(_holds_adapter, str(path)):
            return error(404, f"Loading lora {name} failed: No adapter found for <path>", "NotFoundError")
        self.adapters[str(name)] = str(path)
        return web.Response(status=200, text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("lora_name")
        if not name:
            return error(400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput")
        if name not in self.adapters:
            return error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.adapters[name]
        return web.Response(status=200, text=f"Success: LoRA adapter '{name}' removed successfully.")


def _holds_adapter(folder: str) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()
