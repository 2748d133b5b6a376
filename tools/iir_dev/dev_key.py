"""The admin key `make dev` prints: one key, kept in the work folder and reused while auth still accepts
it as an admin key, so restarts do not pile up never-expiring admin keys."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from iir_dev.stack import Stack

FILE_NAME = "admin-key"


def _still_admin(stack: Stack, key: str) -> bool:
    from iir.v1 import auth_pb2, auth_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.auth}") as channel:
        reply = auth_pb2_grpc.AuthServiceStub(channel).ValidateKey(
            auth_pb2.ValidateKeyRequest(key=key, client_ip="127.0.0.1"), timeout=10
        )
    return bool(reply.valid and reply.key.admin and not reply.key.blocked)


def admin_key(stack: Stack, workdir: Path) -> str:
    """The stored admin key when it is still valid (not revoked, blocked, expired or lost with the
    database); else a new one, stored readable by this user only."""
    path = workdir / FILE_NAME
    if path.is_file():
        kept = path.read_text().strip()
        if kept and _still_admin(stack, kept):
            return kept
    key = stack.create_key("dev", admin=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    path.chmod(0o600)
    return key
