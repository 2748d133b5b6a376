"""Auth service settings (`IIR_` environment variables)."""

from __future__ import annotations

from pydantic import SecretStr

from iir_common.settings import IIRSettings


class AuthSettings(IIRSettings):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/iir"
    auth_host: str = "127.0.0.1"
    auth_port: int = 50051
    # Bootstrap admin key, accepted without a database row.
    master_key: SecretStr | None = None
    # How long a gateway may cache a positive validation.
    key_cache_ttl_s: int = 30
