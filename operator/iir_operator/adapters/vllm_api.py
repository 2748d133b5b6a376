"""vLLM's adapter endpoints (with VLLM_ALLOW_RUNTIME_LORA_UPDATING): which adapters a replica holds
(`/v1/models`, the cards with a `parent`), and `/v1/load_lora_adapter` / `/v1/unload_lora_adapter`."""

from __future__ import annotations

import json

import aiohttp


class AdapterCallError(Exception):
    """A replica refused or did not answer; the message is vLLM's own when it gave one."""


class VllmAdapters:
    def __init__(self, timeout_s: float = 30.0) -> None:
        # Loading fetches the adapter (from Hugging Face, maybe) before vLLM answers: a generous deadline.
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def loaded(self, url: str) -> set[str]:
        """The adapters the replica at `url` holds."""
        try:
            async with self._http().get(f"{url}/v1/models") as resp:
                if resp.status != 200:
                    raise AdapterCallError(f"GET /v1/models answered {resp.status}")
                cards = (await resp.json(content_type=None)).get("data") or []
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
            raise AdapterCallError(f"cannot list the replica's models: {type(exc).__name__}") from exc
        return {str(c["id"]) for c in cards if isinstance(c, dict) and c.get("parent")}

    async def load(self, url: str, name: str, path: str) -> None:
        await self._post(url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload(self, url: str, name: str) -> None:
        await self._post(url, "/v1/unload_lora_adapter", {"lora_name": name})

    async def _post(self, url: str, route: str, body: dict[str, str]) -> None:
        try:
            async with self._http().post(f"{url}{route}", json=body) as resp:
                if resp.status == 200:
                    return
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdapterCallError(f"{route} failed: {type(exc).__name__}") from exc
        raise AdapterCallError(_message(text) or f"{route} answered {resp.status}")


def _message(text: str) -> str:
    """vLLM's error message (`{"error": {"message": …}}`), or the start of the body."""
    try:
        return str(json.loads(text)["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return text[:200]
