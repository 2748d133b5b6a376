"""Who is calling: an API key's identity and what it may do."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from iir.v1 import auth_pb2

# Ids of keys from the configuration (IIR_MASTER_KEY, IIR_ALLOWED_KEYS), which have no database row.
CONFIG_KEY_IDS = ("master", "static-")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's identity and what it may do."""

    key_id: str
    name: str
    admin: bool
    priority: int
    allowed_models: tuple[str, ...]
    rpm_limit: int = 0
    tpm_limit: int = 0
    budget_tokens: int = 0
    budget_period: str = "month"
    scrub_mode: str = ""
    cache_mode: str = ""

    def may_use(self, model: str) -> bool:
        return not self.allowed_models or any(fnmatch.fnmatchcase(model, p) for p in self.allowed_models)

    @property
    def configured(self) -> bool:
        """A key from the configuration: nothing about it is in the database."""
        return self.key_id.startswith(CONFIG_KEY_IDS)

    @property
    def limited(self) -> bool:
        return self.rpm_limit > 0 or self.tpm_limit > 0 or self.budget_tokens > 0

    @classmethod
    def from_key_info(cls, k: auth_pb2.KeyInfo) -> Principal:
        return cls(
            k.id,
            k.name,
            k.admin,
            k.priority,
            tuple(k.allowed_models),
            k.rpm_limit,
            k.tpm_limit,
            k.budget_tokens,
            k.budget_period or "month",
            k.scrub_mode,
            k.cache_mode,
        )
