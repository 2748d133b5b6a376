"""Starts and stops the autoscaler beside kopf's handlers: a gRPC channel to the registry, the signals
that follow it, and the loop that reads the models from kopf's index."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from iir_common.kube import Kube
from iir_operator.autoscaling.scaler import Autoscaler
from iir_operator.autoscaling.signals import RegistrySignals
from iir_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass
class Autoscaling:
    channel: grpc.aio.Channel
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.channel.close()


def start_autoscaler(
    settings: OperatorSettings, kube: Kube, models_index: Mapping[Any, Iterable[dict[str, Any]]]
) -> Autoscaling | None:
    """The running autoscaler, or None (with a warning) when no registry address is set."""
    if not settings.registry_addr:
        log.warning("IIR_REGISTRY_ADDR is not set: models with spec.autoscaling keep their replicas")
        return None
    channel = grpc.aio.insecure_channel(settings.registry_addr, options=[("grpc.keepalive_time_ms", 30_000)])
    signals = RegistrySignals(channel)
    scaler = Autoscaler(
        kube,
        signals,
        lambda: [im for store in models_index.values() for im in store],
        settings.autoscale_interval_s,
    )
    tasks = [
        asyncio.create_task(signals.run(), name="registry-signals"),
        asyncio.create_task(scaler.run(), name="autoscaler"),
    ]
    return Autoscaling(channel, tasks)
