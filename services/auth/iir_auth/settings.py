"""Auth service settings (`IIR_` environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from iir_common.settings import IIRSettings


class AuthSettings(IIRSettings):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/iir"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "iir:"
    auth_host: str = "127.0.0.1"
    auth_port: int = 50051
    # Bootstrap admin key, accepted without a database row.
    master_key: SecretStr | None = None
    # Static keys for small setups (comma separated): no limits, not admin.
    allowed_keys: SecretStr | None = None
    # How long a gateway may cache a positive validation (revocations are pushed sooner).
    key_cache_ttl_s: int = 30
    # Spend records older than this are dropped (a month's partition at a time).
    spend_retention_days: int = 400
    # The request log's bodies (of keys and teams that log them) are deleted after this.
    request_body_retention_days: int = Field(default=7, ge=1)

    def static_keys(self) -> list[str]:
        raw = self.allowed_keys.get_secret_value() if self.allowed_keys else ""
        return [k.strip() for k in raw.split(",") if k.strip()]
