"""The AuthService gRPC servicer."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime

import grpc
import orjson
import redis.asyncio as aioredis

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_auth.audit import Audited
from iir_auth.org_api import OrgRpcs, scope_of_team, scope_of_user, unix
from iir_auth.settings import AuthSettings
from iir_auth.spend_api import SpendRpcs
from iir_auth.storage.audit_store import AuditStore
from iir_auth.storage.key_store import KeyRecord, KeySettings, KeyStore, UsageRow
from iir_auth.storage.org_store import OrgStore
from iir_auth.storage.spend_store import SpendStore
from iir_auth.validation import (
    CONTROL,
    alert_threshold_problems,
    alert_thresholds,
    json_object_problem,
    limit_problems,
    refuse_unstorable,
)
from iir_common.api_keys import generate_key, hash_key, same_secret
from iir_common.key_events import KNOWN_SECRET_TTL_S, KeyEvent, channel, known_secret

log = logging.getLogger(__name__)

MASTER_KEY_ID = "master"
BUDGET_PERIODS = ("day", "month")
SCRUB_MODES = ("", "redact", "block", "off")
CACHE_MODES = ("", "on", "off")
_MAX_GRACE_S = 30 * 86400


def key_info(rec: KeyRecord) -> auth_pb2.KeyInfo:
    return auth_pb2.KeyInfo(
        id=rec.id,
        name=rec.name,
        prefix=rec.prefix,
        admin=rec.admin,
        priority=rec.priority,
        allowed_models=rec.allowed_models,
        rpm_limit=rec.rpm_limit,
        tpm_limit=rec.tpm_limit,
        owner=rec.owner,
        description=rec.description,
        budget_tokens=rec.budget_tokens,
        budget_period=rec.budget_period,
        expires_at=unix(rec.expires_at),
        created_at=unix(rec.created_at),
        last_used_at=unix(rec.last_used_at),
        revoked_at=unix(rec.revoked_at),
        scrub_mode=rec.scrub_mode,
        cache_mode=rec.cache_mode,
        team_id=rec.team_id or "",
        user_id=rec.user_id or "",
        max_budget=rec.max_budget,
        budget_duration=rec.budget_duration,
        max_parallel_requests=rec.max_parallel_requests,
        blocked=rec.blocked,
        metadata_json=orjson.dumps(rec.metadata).decode(),
        previous_valid_until=unix(rec.previous_valid_until) if rec.previous_key_hash else 0,
        budget_alert_thresholds=rec.budget_alert_thresholds,
        log_bodies=rec.log_bodies,
    )


def key_state(rec: KeyRecord) -> dict[str, object]:
    """A key as the audit log keeps it (never its hash)."""
    return {
        n: getattr(rec, n)
        for n in (*KeySettings.__dataclass_fields__, "id", "prefix", "revoked_at", "previous_valid_until")
    }


def _day(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


@refuse_unstorable
class AuthServicer(OrgRpcs, SpendRpcs, auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        store: KeyStore,
        settings: AuthSettings,
        redis: aioredis.Redis,
        orgs: OrgStore,
        spend: SpendStore,
        audit: AuditStore,
    ) -> None:
        self.store = store
        self.orgs = orgs
        self.spend = spend
        self.audit = Audited(audit)
        self.settings = settings
        self.redis = redis
        self.master_key = settings.master_key.get_secret_value() if settings.master_key else None
        self.static_keys = settings.static_keys()

    async def ValidateKey(
        self, request: auth_pb2.ValidateKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ValidateKeyResponse:
        ttl = self.settings.key_cache_ttl_s
        key = request.key
        if self.master_key and same_secret(key, self.master_key):
            info = auth_pb2.KeyInfo(id=MASTER_KEY_ID, name="master", prefix=key[:4] + "…", admin=True, priority=100)
            return auth_pb2.ValidateKeyResponse(valid=True, key=info, cache_ttl_seconds=ttl)
        for index, static in enumerate(self.static_keys):
            if same_secret(key, static):
                info = auth_pb2.KeyInfo(id=f"static-{index}", name=f"static key {index}", prefix=key[:4] + "…")
                return auth_pb2.ValidateKeyResponse(valid=True, key=info, cache_ttl_seconds=ttl)
        rec = await self.store.find(key)
        if rec is None:
            return auth_pb2.ValidateKeyResponse(valid=False, reason="unknown")
        # The secret before a regeneration is valid until its grace period ends.
        grace = rec.previous_valid_until if rec.key_hash != hash_key(key) else None
        reply = await self._state(rec, ttl, grace)
        if not reply.valid:
            reply.cache_ttl_seconds = 0
        return reply

    async def KeyState(
        self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ValidateKeyResponse:
        ttl = self.settings.key_cache_ttl_s
        rec = await self.store.get(request.id)
        if rec is None:
            return auth_pb2.ValidateKeyResponse(valid=False, reason="unknown", cache_ttl_seconds=ttl)
        return await self._state(rec, ttl, None)

    async def _state(self, rec: KeyRecord, ttl: int, grace: datetime | None) -> auth_pb2.ValidateKeyResponse:
        """A stored key as it is now: refused (revoked, blocked, expired) or valid with its user's and
        team's limits, cached for at most `ttl` seconds and never past its expiry (or `grace`)."""
        for refused, reason in ((rec.revoked_at is not None, "revoked"), (rec.blocked, "blocked")):
            if refused:
                return auth_pb2.ValidateKeyResponse(valid=False, reason=reason, cache_ttl_seconds=ttl)
        for end in (rec.expires_at, grace):
            if end is not None:
                left = end.timestamp() - time.time()
                if left <= 0:
                    return auth_pb2.ValidateKeyResponse(valid=False, reason="expired", cache_ttl_seconds=ttl)
                ttl = max(0, min(ttl, int(left)))
        info = key_info(rec)
        if rec.user_id and (user := await self.orgs.user(rec.user_id)) is not None:
            info.scopes.append(scope_of_user(user))
        if rec.team_id and (team := await self.orgs.team(rec.team_id)) is not None:
            info.scopes.append(scope_of_team(team))
        return auth_pb2.ValidateKeyResponse(valid=True, key=info, cache_ttl_seconds=ttl)

    @staticmethod
    def _problems(request: auth_pb2.CreateKeyRequest) -> list[str]:
        """What is wrong with a key's settings (a new key's, or a key's after an update)."""
        problems = []
        if not request.name.strip():
            problems.append("a key needs a name")
        if request.budget_period and request.budget_period not in BUDGET_PERIODS:
            problems.append(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
        problems += limit_problems(request)
        problems += alert_threshold_problems(request.budget_alert_thresholds)
        if min(request.budget_tokens, request.max_parallel_requests) < 0:
            problems.append("limits and budgets must not be negative")
        if problem := json_object_problem(request.metadata_json):
            problems.append(problem)
        texts = [request.name, request.owner, request.description, request.user_id, *request.allowed_models]
        if any(CONTROL.search(t) for t in texts):
            problems.append("names, owners, descriptions and model patterns must not hold control characters")
        if request.expires_at and request.expires_at <= time.time():
            problems.append("expires_at is in the past")
        if request.scrub_mode not in SCRUB_MODES:
            problems.append(f"scrub_mode must be one of {', '.join(m or '(empty)' for m in SCRUB_MODES)}")
        if request.cache_mode not in CACHE_MODES:
            problems.append(f"cache_mode must be one of {', '.join(m or '(empty)' for m in CACHE_MODES)}")
        return problems

    @staticmethod
    def _settings(request: auth_pb2.CreateKeyRequest) -> KeySettings:
        return KeySettings(
            name=request.name.strip(),
            owner=request.owner,
            description=request.description,
            admin=request.admin,
            priority=request.priority,
            allowed_models=list(request.allowed_models),
            rpm_limit=request.rpm_limit,
            tpm_limit=request.tpm_limit,
            budget_tokens=request.budget_tokens,
            budget_period=request.budget_period or "month",
            expires_at=datetime.fromtimestamp(request.expires_at, UTC) if request.expires_at else None,
            scrub_mode=request.scrub_mode,
            cache_mode=request.cache_mode,
            team_id=request.team_id or None,
            user_id=request.user_id or None,
            max_budget=request.max_budget,
            budget_duration=request.budget_duration,
            max_parallel_requests=request.max_parallel_requests,
            metadata=orjson.loads(request.metadata_json) if request.metadata_json else {},
            budget_alert_thresholds=alert_thresholds(request.budget_alert_thresholds),
            log_bodies=request.log_bodies,
        )

    async def _owner_problems(self, request: auth_pb2.CreateKeyRequest) -> list[str]:
        problems = []
        if request.team_id and await self.orgs.team(request.team_id) is None:
            problems.append(f"no team with id {request.team_id!r}")
        if request.user_id and await self.orgs.user(request.user_id) is None:
            problems.append(f"no user with id {request.user_id!r}")
        return problems

    async def CreateKey(
        self, request: auth_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateKeyResponse:
        problems = self._problems(request) or await self._owner_problems(request)
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        settings = self._settings(request)
        key = generate_key()
        rec = await self.store.create(key, settings)
        await self._mark_issued(key)
        await self.audit.record(context, "key.create", f"key:{rec.id}", None, key_state(rec))
        log.info("api key created", extra={"key_id": rec.id, "key_prefix": rec.prefix})
        return auth_pb2.CreateKeyResponse(key=key, info=key_info(rec))

    async def ListKeys(
        self, request: auth_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListKeysResponse:
        return auth_pb2.ListKeysResponse(keys=[key_info(r) for r in await self.store.list(request.include_revoked)])

    async def _existing(self, key_id: str, context: grpc.aio.ServicerContext) -> KeyRecord:
        rec = await self.store.get(key_id)
        if rec is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no API key with id {key_id!r}")
        assert rec is not None
        return rec

    async def GetKey(self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext) -> auth_pb2.KeyInfo:
        return key_info(await self._existing(request.id, context))

    async def _announce_revoked(self, rec: KeyRecord) -> None:
        await self._announce(rec, "revoked")

    async def _announce(self, rec: KeyRecord, kind: str) -> None:
        event = KeyEvent(kind, rec.id, rec.key_hash.hex())
        try:
            await self.redis.publish(channel(self.settings.redis_prefix), event.encode())
        except Exception as exc:  # gateways still drop it when their cache entry expires
            log.error("cannot announce a key change", extra={"key_id": rec.id, "kind": kind, "error": repr(exc)})

    async def _mark_issued(self, key: str) -> None:
        """Marks a new secret as issued, so gateways validate it even from an address locked out for failed
        authentications (an emergency rotation during a guessing attack must work); only its digest."""
        try:
            await self.redis.set(
                known_secret(self.settings.redis_prefix, hash_key(key).hex()), 1, ex=KNOWN_SECRET_TTL_S
            )
        except Exception as exc:  # the secret works anyway, except from a locked-out address
            log.error("cannot mark a new secret as issued", extra={"error": repr(exc)[:200]})

    async def RevokeKey(self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext) -> auth_pb2.KeyInfo:
        await self._existing(request.id, context)
        before = await self._existing(request.id, context)
        rec = await self.store.revoke(request.id)
        assert rec is not None
        await self._announce_revoked(rec)
        await self.audit.record(context, "key.revoke", f"key:{rec.id}", key_state(before), key_state(rec))
        log.info("api key revoked", extra={"key_id": rec.id, "key_prefix": rec.prefix})
        return key_info(rec)

    async def UpdateKey(
        self, request: auth_pb2.UpdateKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.KeyInfo:
        current = await self._existing(request.id, context)
        if current.revoked_at is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a revoked key cannot be changed")
        merged = auth_pb2.CreateKeyRequest(
            name=current.name,
            owner=current.owner,
            description=current.description,
            admin=current.admin,
            priority=current.priority,
            allowed_models=current.allowed_models,
            rpm_limit=current.rpm_limit,
            tpm_limit=current.tpm_limit,
            budget_tokens=current.budget_tokens,
            budget_period=current.budget_period,
            expires_at=unix(current.expires_at),
            scrub_mode=current.scrub_mode,
            cache_mode=current.cache_mode,
            team_id=current.team_id or "",
            user_id=current.user_id or "",
            max_budget=current.max_budget,
            budget_duration=current.budget_duration,
            max_parallel_requests=current.max_parallel_requests,
            metadata_json=orjson.dumps(current.metadata).decode(),
            budget_alert_thresholds=current.budget_alert_thresholds,
            log_bodies=current.log_bodies,
        )
        flags = ("id", "set_allowed_models", "blocked", "set_budget_alert_thresholds")
        changed = [f.name for f, _ in request.ListFields() if f.name not in flags]
        for name in changed:
            if name not in ("allowed_models", "budget_alert_thresholds"):
                setattr(merged, name, getattr(request, name))
        if request.set_allowed_models:
            del merged.allowed_models[:]
            merged.allowed_models.extend(request.allowed_models)
            changed.append("allowed_models")
        if request.set_budget_alert_thresholds:
            del merged.budget_alert_thresholds[:]
            merged.budget_alert_thresholds.extend(request.budget_alert_thresholds)
            changed.append("budget_alert_thresholds")
        problems = self._problems(merged) or await self._owner_problems(merged)
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        settings = self._settings(merged)
        changes = {n.removesuffix("_json"): getattr(settings, n.removesuffix("_json")) for n in set(changed)}
        if request.HasField("blocked"):
            changes["blocked"] = request.blocked
            changed.append("blocked")
        rec = await self.store.update(request.id, changes)
        if rec is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no API key with id {request.id!r}")
        assert rec is not None
        await self._announce(rec, "updated")  # every gateway drops its cached copy and asks again
        action = "key.update" if set(changed) != {"blocked"} else ("key.block" if rec.blocked else "key.unblock")
        await self.audit.record(context, action, f"key:{rec.id}", key_state(current), key_state(rec))
        log.info("api key updated", extra={"key_id": rec.id, "fields": sorted(set(changed))})
        return key_info(rec)

    async def RotateKey(
        self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateKeyResponse:
        current = await self._existing(request.id, context)
        if current.revoked_at is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a revoked key cannot be rotated")
        key = generate_key()
        rotated = await self.store.rotate(request.id, key)
        assert rotated is not None
        old, new = rotated
        await self._mark_issued(key)
        await self._announce_revoked(old)
        await self.audit.record(context, "key.rotate", f"key:{old.id}", key_state(current), key_state(new))
        log.info("api key rotated", extra={"key_id": old.id, "new_key_id": new.id, "key_prefix": new.prefix})
        return auth_pb2.CreateKeyResponse(key=key, info=key_info(new))

    async def RegenerateKey(
        self, request: auth_pb2.RegenerateKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateKeyResponse:
        current = await self._existing(request.id, context)
        if current.revoked_at is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a revoked key cannot be regenerated")
        if not 0 <= request.grace_period_s <= _MAX_GRACE_S:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"grace_period_s must be between 0 and {_MAX_GRACE_S}"
            )
        key = generate_key()
        rec = await self.store.regenerate(request.id, key, request.grace_period_s)
        if rec is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a revoked key cannot be regenerated")
        assert rec is not None
        await self._mark_issued(key)
        # Gateways drop the old secret's cached answer: without a grace period it stops at once; with one,
        # it is validated again and cached no longer than its grace lasts.
        await self._announce(current, "updated")
        await self.audit.record(context, "key.regenerate", f"key:{rec.id}", key_state(current), key_state(rec))
        log.info("api key regenerated", extra={"key_id": rec.id, "grace_period_s": request.grace_period_s})
        return auth_pb2.CreateKeyResponse(key=key, info=key_info(rec))

    async def announce_keys_of(self, team_id: str | None = None, user_id: str | None = None) -> None:
        """Every gateway drops the cached keys of a team or user whose limits changed."""
        for rec in await self.store.by_owner(team_id, user_id):
            await self._announce(rec, "updated")

    async def RecordUsage(
        self, request: auth_pb2.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RecordUsageResponse:
        rows = []
        for r in request.records:
            if r.key_id == MASTER_KEY_ID or r.key_id.startswith("static-"):
                continue  # keys without a row: nothing to attach usage to
            try:
                rows.append(
                    UsageRow(
                        r.key_id, r.model, date.fromisoformat(r.day), r.requests, r.prompt_tokens, r.completion_tokens
                    )
                )
            except ValueError:
                log.warning("dropping a malformed usage record", extra={"key_id": r.key_id, "day": r.day})
        await self.store.record_usage(rows)
        return auth_pb2.RecordUsageResponse()

    async def GetUsage(
        self, request: auth_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetUsageResponse:
        await self._existing(request.key_id, context)
        try:
            since, until = _day(request.since), _day(request.until)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since and until are days, YYYY-MM-DD")
            raise
        rows = await self.store.usage(request.key_id, since, until)
        return auth_pb2.GetUsageResponse(
            records=[
                auth_pb2.UsageRecord(
                    key_id=r.key_id,
                    model=r.model,
                    day=r.day.isoformat(),
                    requests=r.requests,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                )
                for r in rows
            ]
        )
