"""Whether a Redis server takes writes: a PING answers even when Redis refuses every write (out of memory
under `noeviction`, a read-only replica), so health writes a short-lived probe key instead."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

PROBE_TTL_MS = 10_000


async def redis_write_status(redis: aioredis.Redis, probe_key: str) -> str:
    """ "ok", "refusing writes: …" or "unavailable: …"."""
    try:
        await redis.set(probe_key, b"1", px=PROBE_TTL_MS)
    except OutOfMemoryError:
        return "refusing writes: out of memory (maxmemory reached)"
    except ReadOnlyError:
        return "refusing writes: read-only replica"
    except ResponseError as exc:
        return f"refusing writes: {str(exc)[:80]}"
    except Exception as exc:  # any other Redis failure is reported, not raised
        return f"unavailable: {type(exc).__name__}"
    return "ok"
