"""`python -m iir_simbackend [--replicas N] [--base-port P] [--kv-events-base-port Q]`: runs the simulated
vLLM server, or N independent ones (each its own engine, metrics and ports) in one event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from aiohttp import web

from iir_common.logging import setup_logging
from iir_simbackend.app import create_app
from iir_simbackend.settings import SimSettings

log = logging.getLogger("iir_simbackend")


def _offset(endpoint: str, by: int) -> str:
    """The endpoint with its TCP port moved by `by` (a port 0 stays 0: the system picks)."""
    base, _, port = endpoint.rpartition(":")
    if not by or not port.isdigit() or int(port) == 0:
        return endpoint
    return f"{base}:{int(port) + by}"


def replica_settings(settings: SimSettings, index: int) -> SimSettings:
    """Replica `index` listens on port + index and publishes KV events on the endpoints' ports + 2 x index
    (so a replay endpoint one above the PUB endpoint never meets the next replica's)."""
    update: dict[str, Any] = {"port": settings.port + index if settings.port else 0}
    for name in ("kv_events_endpoint", "kv_events_replay_endpoint"):
        value = getattr(settings, name)
        if value:
            update[name] = _offset(value, 2 * index)
    return settings.model_copy(update=update)


async def start_replicas(settings: SimSettings) -> list[web.AppRunner]:
    runners = []
    for index in range(max(1, settings.replicas)):
        replica = replica_settings(settings, index)
        # Like vLLM, stop generating when the client goes away.
        runner = web.AppRunner(create_app(replica), access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, replica.host, replica.port, backlog=2048).start()
        runners.append(runner)
        log.info(
            "simulated vLLM listening",
            extra={"port": replica.port, "models": replica.model_names, "kv_events": replica.kv_events_endpoint},
        )
    return runners


async def serve(settings: SimSettings) -> None:
    runners = await start_replicas(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def _arguments(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m iir_simbackend", description=__doc__)
    parser.add_argument("--replicas", type=int, help="servers in this process (IIR_SIM_REPLICAS)")
    parser.add_argument("--base-port", type=int, help="HTTP port of the first; replica i gets port + i")
    parser.add_argument(
        "--kv-events-base-port",
        type=int,
        help="KV events of replica i: PUB on tcp://*:Q+2i, replay on tcp://*:Q+2i+1",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.replicas is not None:
        overrides["replicas"] = args.replicas
    if args.base_port is not None:
        overrides["port"] = args.base_port
    if args.kv_events_base_port is not None:
        overrides["kv_events_endpoint"] = f"tcp://*:{args.kv_events_base_port}"
        overrides["kv_events_replay_endpoint"] = f"tcp://*:{args.kv_events_base_port + 1}"
    return overrides


def main(argv: list[str] | None = None) -> None:
    settings = SimSettings(**_arguments(argv))
    setup_logging("simbackend")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
