"""Who is calling: an API key's identity, what it may do, and the user and team it belongs to."""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any

from iir.v1 import auth_pb2

# Ids of keys from the configuration (IIR_MASTER_KEY, IIR_ALLOWED_KEYS), which have no database row.
CONFIG_KEY_IDS = ("master", "static-")


@dataclass(frozen=True, slots=True)
class Scope:
    """Limits of the key itself, its user or its team; a key is bounded by all of its scopes."""

    kind: str  # "key", "user", "team"
    id: str
    name: str
    rpm_limit: int = 0
    tpm_limit: int = 0
    max_budget: float = 0.0  # USD per budget_duration
    budget_duration: str = ""
    allowed_models: tuple[str, ...] = ()
    created_at: int = 0  # Unix seconds: budget windows are counted from it (0: from the epoch)
    budget_alert_thresholds: tuple[float, ...] = ()  # percentages of max_budget the alert webhook is told of
    log_bodies: bool = False  # a team's: its keys' requests are logged with their bodies

    @property
    def limited(self) -> bool:
        return self.rpm_limit > 0 or self.tpm_limit > 0 or self.max_budget > 0


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
    max_budget: float = 0.0
    budget_duration: str = ""
    max_parallel_requests: int = 0
    user_id: str = ""
    team_id: str = ""
    team_name: str = ""
    owners: tuple[Scope, ...] = ()  # the key's user and team
    created_at: int = 0  # Unix seconds: the key's budget windows are counted from it
    budget_alert_thresholds: tuple[float, ...] = ()
    log_bodies: bool = False  # its requests are logged with their bodies

    def logs_bodies(self) -> bool:
        """Whether this key's requests are logged with their bodies: the key's setting, or its team's."""
        return self.log_bodies or any(s.log_bodies for s in self.owners if s.kind == "team")

    def may_use(self, model: str) -> bool:
        """The key's patterns and its team's both allow the model (empty: every model)."""
        for patterns in (self.allowed_models, *(s.allowed_models for s in self.owners)):
            if patterns and not any(fnmatch.fnmatchcase(model, p) for p in patterns):
                return False
        return True

    @property
    def scopes(self) -> tuple[Scope, ...]:
        """The key's own limits first, then its user's and team's."""
        own = Scope(
            "key",
            self.key_id,
            self.name,
            self.rpm_limit,
            self.tpm_limit,
            self.max_budget,
            self.budget_duration,
            created_at=self.created_at,
            budget_alert_thresholds=self.budget_alert_thresholds,
        )
        return (own, *self.owners)

    @property
    def configured(self) -> bool:
        """A key from the configuration: nothing about it is in the database."""
        return self.key_id.startswith(CONFIG_KEY_IDS)

    @property
    def limited(self) -> bool:
        return (
            self.rpm_limit > 0
            or self.tpm_limit > 0
            or self.budget_tokens > 0
            or self.max_budget > 0
            or self.max_parallel_requests > 0
            or any(s.limited for s in self.owners)
        )

    @property
    def spends_money(self) -> bool:
        """Some scope has a budget in money: admission needs the request's estimated cost."""
        return self.max_budget > 0 or any(s.max_budget > 0 for s in self.owners)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy, for a job or batch that runs later on this key's behalf."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **changes: Any) -> Principal:
        """The principal `to_dict` stored (fields it does not know are ignored: stored by an older version)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("allowed_models", "budget_alert_thresholds"):
            values[name] = tuple(values.get(name) or ())
        values["owners"] = tuple(_scope(s) for s in values.get("owners") or ())
        return cls(**{**values, **changes})

    @classmethod
    def from_key_info(cls, k: auth_pb2.KeyInfo) -> Principal:
        owners = tuple(
            Scope(
                s.kind,
                s.id,
                s.name,
                s.rpm_limit,
                s.tpm_limit,
                s.max_budget,
                s.budget_duration,
                tuple(s.allowed_models),
                s.created_at,
                tuple(s.budget_alert_thresholds),
                s.log_bodies,
            )
            for s in k.scopes
        )
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
            k.max_budget,
            k.budget_duration,
            k.max_parallel_requests,
            k.user_id,
            k.team_id,
            next((s.name for s in owners if s.kind == "team"), ""),
            owners,
            k.created_at,
            tuple(k.budget_alert_thresholds),
            k.log_bodies,
        )


def _scope(data: dict[str, Any]) -> Scope:
    """A scope `Principal.to_dict` stored (fields this version does not know are ignored)."""
    known = {f.name for f in dataclasses.fields(Scope)}
    values = {k: v for k, v in data.items() if k in known}
    for name in ("allowed_models", "budget_alert_thresholds"):
        values[name] = tuple(values.get(name) or ())
    return Scope(**values)
