"""The AuthService gRPC servicer."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_auth.keys import generate_key, same_secret
from iir_auth.settings import AuthSettings
from iir_auth.storage.key_store import KeyRecord, KeyStore

log = logging.getLogger(__name__)

MASTER_KEY_ID = "master"


def _key_info(rec: KeyRecord) -> auth_pb2.KeyInfo:
    return auth_pb2.KeyInfo(
        id=rec.id, name=rec.name, prefix=rec.prefix, admin=rec.admin, priority=rec.priority,
        allowed_models=rec.allowed_models, rpm_limit=rec.rpm_limit, tpm_limit=rec.tpm_limit, owner=rec.owner,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, store: KeyStore, settings: AuthSettings) -> None:
        self.store = store
        self.settings = settings
        self.master_key = settings.master_key.get_secret_value() if settings.master_key else None

    async def ValidateKey(self, request: auth_pb2.ValidateKeyRequest,
                          context: grpc.aio.ServicerContext) -> auth_pb2.ValidateKeyResponse:
        ttl = self.settings.key_cache_ttl_s
        if self.master_key and same_secret(request.key, self.master_key):
            info = auth_pb2.KeyInfo(id=MASTER_KEY_ID, name="master", prefix=request.key[:4] + "…",
                                    admin=True, priority=100)
            return auth_pb2.ValidateKeyResponse(valid=True, key=info, cache_ttl_seconds=ttl)
        rec = await self.store.find(request.key)
        if rec is None:
            return auth_pb2.ValidateKeyResponse(valid=False, reason="unknown")
        if rec.revoked_at is not None:
            return auth_pb2.ValidateKeyResponse(valid=False, reason="revoked")
        if rec.expires_at is not None and rec.expires_at <= datetime.now(UTC):
            return auth_pb2.ValidateKeyResponse(valid=False, reason="expired")
        return auth_pb2.ValidateKeyResponse(valid=True, key=_key_info(rec), cache_ttl_seconds=ttl)

    async def CreateKey(self, request: auth_pb2.CreateKeyRequest,
                        context: grpc.aio.ServicerContext) -> auth_pb2.CreateKeyResponse:
        if not request.name.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a key needs a name")
        key = generate_key()
        rec = await self.store.create(key, name=request.name, owner=request.owner, admin=request.admin,
                                      priority=request.priority, allowed_models=list(request.allowed_models))
        log.info("api key created", extra={"key_id": rec.id, "key_prefix": rec.prefix})
        return auth_pb2.CreateKeyResponse(key=key, info=_key_info(rec))
