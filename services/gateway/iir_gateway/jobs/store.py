"""Jobs in Redis: a hash per job (owner, request, status, result, timings) and one stream per priority
band that workers read through a consumer group (at-least-once: an entry stays pending until acked)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from iir_gateway.accounting.storage_quota import StorageQuota, scopes_of
from iir_gateway.principal import Principal

BANDS = ("high", "normal", "low")
GROUP = "iir-workers"
FINAL = ("completed", "failed", "cancelled")


def band(priority: int) -> str:
    """Key priority 0–100 → stream: ≥ 50 high, ≥ 10 normal, else low."""
    return "high" if priority >= 50 else "normal" if priority >= 10 else "low"


@dataclasses.dataclass
class Job:
    id: str
    owner: str
    kind: str  # "chat" (OpenAI chat completion) or "generate" (the task API)
    path: str
    status: str
    request: dict[str, Any]
    principal: dict[str, Any]
    created_at: float
    started_at: float = 0.0
    finished_at: float = 0.0
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def caller(self) -> Principal:
        return Principal.from_dict(self.principal)

    def public(self) -> dict[str, Any]:
        """What the owner sees of the job."""
        out: dict[str, Any] = {
            "job_id": self.id,
            "status": self.status,
            "kind": self.kind,
            "model": self.request.get("model"),
            "created_at": int(self.created_at),
        }
        if self.started_at:
            out["started_at"] = int(self.started_at)
        if self.finished_at:
            out["finished_at"] = int(self.finished_at)
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out

    def metrics(self) -> dict[str, Any]:
        """Timings and tokens, under the task API's names and (for older clients) IIR's first ones."""
        usage = (self.result or {}).get("usage") or {}
        queue = (self.started_at or time.time()) - self.created_at
        processing = (self.finished_at - self.started_at) if self.finished_at and self.started_at else 0.0
        completion = int(usage.get("completion_tokens") or 0)
        rate = round(completion / processing, 2) if processing > 0 else 0.0
        timings = {
            "queue_wait": round(queue, 3),
            "processing": round(processing, 3),
            "total": round(queue + processing, 3),
        }
        return {
            **{f"{name}_time": value for name, value in timings.items()},
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": completion,
            "tokens_per_second": rate,
            **{f"{name}_s": value for name, value in timings.items()},
            "tokens_per_s": rate,
        }


_JSON_FIELDS = ("request", "principal", "result", "error")

# A job becomes final once: the first of completion, failure or cancellation wins, and frees its slot in
# the owner's queued count.
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == false or status == 'completed' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if redis.call('DECR', KEYS[3]) < 0 then redis.call('SET', KEYS[3], 0) end
return 1
"""
_RESERVE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
return 1
"""


_QUOTA_MARGIN_S = 3600  # a job is kept from its submission until its result expires: queueing included
_MAX_EVENTS = 100_000  # entries of a job's event stream (the oldest are trimmed)
_EVENT_OVERHEAD = 32  # about what Redis keeps per stream entry beside its fields


class JobStore:
    def __init__(
        self, redis: aioredis.Redis, prefix: str, result_ttl_s: int, quota: StorageQuota | None = None
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.result_ttl_s = result_ttl_s
        self.quota = quota
        self._event_bytes: dict[str, int] = {}  # job → bytes of events this process added to its stream

    def stream(self, name: str) -> str:
        return f"{self.prefix}jobs:{name}"

    def key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    async def ensure_groups(self) -> None:
        """Creates the consumer group of every band (again after Redis lost them)."""
        for name in BANDS:
            try:
                await self.redis.xgroup_create(self.stream(name), GROUP, id="0", mkstream=True)
            except aioredis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def queued(self, owner: str) -> str:
        return f"{self.prefix}jobs:queued:{owner}"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}jobs:owned:{owner}"

    async def submit(
        self, principal: Principal, kind: str, path: str, request: dict[str, Any], max_queued: int = 0
    ) -> Job | None:
        """Stores and queues a job; None when its owner has `max_queued` unfinished ones (0: no bound)."""
        job = Job(
            id=f"job_{uuid.uuid4().hex}",
            owner=principal.key_id,
            kind=kind,
            path=path,
            status="pending",
            request=request,
            principal=principal.to_dict(),
            created_at=time.time(),
        )
        scopes = scopes_of(principal)
        if self.quota is not None:  # jobs kept (finished ones until their results expire): 429 when full
            size = len(orjson.dumps(request))
            await self.quota.reserve("jobs", scopes, job.id, size, self.result_ttl_s + _QUOTA_MARGIN_S)
        if max_queued > 0 and not await self.redis.eval(
            _RESERVE, 1, self.queued(job.owner), max_queued, self.result_ttl_s
        ):
            if self.quota is not None:
                await self.quota.release("jobs", scopes, job.id)
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(job.id), mapping=self._fields(job))
            pipe.xadd(self.stream(band(principal.priority)), {"job": job.id})
            pipe.zadd(self._owned(job.owner), {job.id: job.created_at})
            pipe.expire(self._owned(job.owner), self.result_ttl_s)
            await pipe.execute()
        return job

    async def of_owner(self, owner: str, limit: int = 100) -> list[Job]:
        """The key's jobs still kept (results expire after the result TTL), newest first."""
        ids: Any = await self.redis.zrevrange(self._owned(owner), 0, limit - 1)
        jobs = [await self.get(i.decode()) for i in ids]
        return [j for j in jobs if j is not None]

    async def get(self, job_id: str) -> Job | None:
        raw: Any = await self.redis.hgetall(self.key(job_id))
        if not raw:
            return None
        data: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        for name in _JSON_FIELDS:
            data[name] = orjson.loads(data[name]) if data.get(name) else None
        for name in ("created_at", "started_at", "finished_at"):
            data[name] = float(data.get(name) or 0)
        data["attempts"] = int(data.get("attempts") or 0)
        return Job(**data)

    async def owned(self, job_id: str, principal: Principal) -> Job | None:
        """The job if it exists and belongs to `principal`, or `principal` is an admin (another key sees
        nothing)."""
        job = await self.get(job_id)
        return job if job is not None and (job.owner == principal.key_id or principal.admin) else None

    async def update(self, job_id: str, **fields: Any) -> None:
        mapping: Any = {k: orjson.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        await self.redis.hset(self.key(job_id), mapping=mapping)
        if fields.get("status") in FINAL:
            await self.redis.expire(self.key(job_id), self.result_ttl_s)
            await self.redis.expire(self.events(job_id), self.result_ttl_s)

    async def finish(self, job: Job, status: str, **fields: Any) -> bool:
        """Makes the job final with `status` unless it already is; False when it was. The job is counted in
        its key's storage at its size with its result (later submissions are refused while it is over)."""
        mapping = {
            "status": status,
            "finished_at": time.time(),
            **{k: orjson.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()},
        }
        args: list[Any] = [self.result_ttl_s]
        for name, value in mapping.items():
            args += [name, value]
        events = self._event_bytes.pop(job.id, 0)
        if not await self.redis.eval(_FINISH, 3, self.key(job.id), self.events(job.id), self.queued(job.owner), *args):
            return False
        if self.quota is not None:  # its result and events count too: kept, never refused (they are paid for)
            size = len(orjson.dumps(job.request)) + sum(len(v) for v in mapping.values() if isinstance(v, bytes))
            size += events
            ttl = self.result_ttl_s + 60
            await self.quota.reserve("jobs", scopes_of(job.caller()), job.id, size, ttl, enforce=False)
        return True

    async def add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        raw = orjson.dumps(data)
        if len(self._event_bytes) > 10_000:  # jobs another process ended (a cancel) are never finished here
            self._event_bytes.clear()
        # What the job's event stream holds, counted in its storage when it ends (an entry's own cost too).
        self._event_bytes[job_id] = self._event_bytes.get(job_id, 0) + len(raw) + len(kind) + _EVENT_OVERHEAD
        await self.redis.xadd(self.events(job_id), {"kind": kind, "data": raw}, maxlen=_MAX_EVENTS)

    def _fields(self, job: Job) -> Any:
        out: dict[str, Any] = {}
        for name, value in dataclasses.asdict(job).items():
            if name in _JSON_FIELDS:
                if value is not None:
                    out[name] = orjson.dumps(value)
            else:
                out[name] = value
        return out
