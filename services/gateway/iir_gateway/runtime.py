"""The composition root: the gateway's running parts, built once per process (gRPC channels, Redis
clients, caches, limiter, upstream pool, providers, the pipelines and the background work that runs
them), their start, stop and health.

Only `app.py` reads it; the routes get it as the narrow interface each declares, and everything else is
handed the one part it needs (import-linter forbids the rest to import this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from iir.v1 import auth_pb2_grpc, registry_pb2, registry_pb2_grpc
from iir_common import __version__
from iir_common.otlp_metrics import export_registry
from iir_common.secret_scrubber import SecretScrubber, secret_env_values
from iir_common.tracing import client_interceptors
from iir_gateway.accounting.alert_webhook import AlertWebhook
from iir_gateway.accounting.budget_alerts import BudgetAlerts
from iir_gateway.accounting.rate_limiter import RateLimiter
from iir_gateway.accounting.spend_history import SpendHistory
from iir_gateway.accounting.spend_journal import SpendJournal
from iir_gateway.accounting.spend_recorder import SpendRecorder
from iir_gateway.accounting.storage_quota import Limits, StorageQuota
from iir_gateway.admin.oidc import OIDCClient
from iir_gateway.admin.sessions import SessionStore
from iir_gateway.batches.files import FileStore
from iir_gateway.batches.runner import BatchRunner
from iir_gateway.batches.store import BatchStore
from iir_gateway.caching.response_cache import ResponseCache
from iir_gateway.cancelling import cancel_all
from iir_gateway.conversations.store import ResponseStore
from iir_gateway.datastore_probe import redis_write_status
from iir_gateway.jobs.store import JobStore
from iir_gateway.jobs.worker import JobWorker
from iir_gateway.keys.authenticator import Authenticator, counting_redis
from iir_gateway.keys.owners import Owners
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.networks import parse_networks
from iir_gateway.picking.base import PluginContext
from iir_gateway.picking.collector import EndpointStateCollector
from iir_gateway.picking.kv_index import KvIndex
from iir_gateway.picking.policies import Scheduler
from iir_gateway.picking.prompt_blocks import PromptBlocks
from iir_gateway.picking.queue import PriorityGate
from iir_gateway.picking.state import EndpointStates
from iir_gateway.pipelines import inference_pipeline, submission_pipeline
from iir_gateway.principal import Principal
from iir_gateway.providers.base import Provider
from iir_gateway.providers.config import load_providers
from iir_gateway.providers.directory import ModelDirectory
from iir_gateway.providers.local.catalogue import ModelCatalogue
from iir_gateway.providers.local.cold_start import ColdStarts
from iir_gateway.providers.local.demand_reporter import DemandReporter
from iir_gateway.providers.local.provider import LocalProvider
from iir_gateway.providers.registry import external_provider
from iir_gateway.routing.auto_router import AutoRouter, load_policies
from iir_gateway.scrubbing.policy import Scrubbing
from iir_gateway.server.metrics_server import MetricsServer
from iir_gateway.settings import GatewaySettings
from iir_gateway.upstream.client import UpstreamClient
from iir_gateway.upstream.target import Timeouts
from iir_gateway.workers import shared_dir

log = logging.getLogger(__name__)

# gRPC health service names checked by /health; `required` ones make the gateway unhealthy when down.
_DEPENDENCIES = {
    "auth": ("iir.v1.AuthService", True),
    "registry": ("iir.v1.RegistryService", True),
    "classifier": ("iir.v1.ClassifierService", False),
}


def _redis(url: str, timeout_s: float) -> aioredis.Redis:
    """A Redis client that tries once more on a fresh connection when a pooled one died (Redis restarted):
    such a command never ran, so it is safe to send again. Timeouts are not retried."""
    return aioredis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=timeout_s,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 1),
        retry_on_error=[RedisConnectionError],
    )


def _storage_quota(settings: GatewaySettings, redis: aioredis.Redis, storage: aioredis.Redis) -> StorageQuota:
    """The quotas the settings describe, counted in the Redis of the limits; the global budget sized
    against both Redis servers when not set."""
    limits = {
        "files": Limits(settings.quota_files_per_key, settings.quota_file_bytes_per_key),
        "responses": Limits(settings.quota_responses_per_key, settings.quota_response_bytes_per_key),
        "batches": Limits(settings.quota_batches_per_key, 0),
        "jobs": Limits(settings.quota_jobs_per_key, settings.quota_job_bytes_per_key),
    }
    return StorageQuota(
        redis, settings.redis_prefix, limits, settings.quota_team_factor, settings.storage_max_bytes, [redis, storage]
    )


class Runtime:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(settings.metrics_max_keys)
        self.trusted_networks = parse_networks(settings.trusted_networks, "IIR_TRUSTED_NETWORKS")
        self.scrubbing = Scrubbing(SecretScrubber(secret_env_values()), settings.scrub_mode, self.metrics)
        self.upstream = UpstreamClient(
            Timeouts(
                connect_s=settings.upstream_connect_timeout_s,
                first_token_s=settings.upstream_first_token_timeout_s,
                read_s=settings.upstream_read_timeout_s,
                total_s=settings.upstream_total_timeout_s,
            ),
            self.metrics,
        )
        opts = [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 1)]
        self.channels = {
            name: grpc.aio.insecure_channel(addr, options=opts, interceptors=client_interceptors())
            for name, addr in (
                ("auth", settings.auth_addr),
                ("registry", settings.registry_addr),
                ("classifier", settings.classifier_addr),
            )
        }
        self.redis = _redis(settings.redis_url, timeout_s=1)
        self.auth_redis = counting_redis(settings.redis_url)
        self.auth = Authenticator(
            self.channels["auth"],
            self.redis,
            self.metrics,
            timeout_s=settings.grpc_timeout_s,
            failure_limit=settings.auth_failure_limit,
            failure_window_s=settings.auth_failure_window_s,
            prefix=settings.redis_prefix,
            counters=self.auth_redis,
            stale_ttl_s=settings.key_stale_ttl_s,
            attempts_file=shared / "auth-failures" if (shared := shared_dir()) else None,
        )
        self.auth_stub = auth_pb2_grpc.AuthServiceStub(self.channels["auth"])
        # The current state of the keys that batches and queued jobs run for, dropped on key events.
        self.owners = Owners(self.channels["auth"], settings.grpc_timeout_s, lambda: self.auth.subscribed)
        self.auth.listeners.append(self.owners.invalidate)
        self.cache = (
            ResponseCache(
                self.redis,
                settings.redis_prefix,
                settings.cache_ttl_s,
                settings.cache_max_entry_bytes,
                settings.cache_per_key,
            )
            if settings.cache_enabled
            else None
        )
        # File bodies, stored responses and batches: their own Redis when IIR_STORAGE_REDIS_URL names one,
        # and within the global storage budget either way (docs/SECURITY.md).
        self.storage_redis = _redis(settings.storage_redis_url or settings.redis_url, timeout_s=5)
        self.storage_quota = _storage_quota(settings, self.redis, self.storage_redis)
        self.jobs = JobStore(self.redis, settings.redis_prefix, settings.job_result_ttl_s, self.storage_quota)
        self.responses = ResponseStore(
            self.storage_redis, settings.redis_prefix, settings.responses_ttl_s, self.storage_quota
        )
        self.files = FileStore(self.storage_redis, settings.redis_prefix, settings.files_ttl_s, self.storage_quota)
        self.batches = BatchStore(self.storage_redis, settings.redis_prefix, settings.files_ttl_s)
        self.sessions = SessionStore(self.redis, settings.redis_prefix, settings.oidc_session_ttl_s)
        self.oidc = (
            OIDCClient(
                settings.oidc_issuer,
                settings.oidc_client_id,
                settings.oidc_client_secret,
                settings.oidc_redirect_url,
                settings.oidc_scopes,
                settings.oidc_groups_claim,
                self.redis,
                settings.redis_prefix,
            )
            if settings.oidc_issuer
            else None
        )
        # Budget alerts, to the operator's webhook (none without IIR_BUDGET_ALERT_WEBHOOK_URL).
        webhook_url = settings.budget_alert_webhook_url.get_secret_value()
        self.alert_webhook = (
            AlertWebhook(
                webhook_url,
                self.metrics,
                settings.budget_alert_format,
                settings.budget_alert_timeout_s,
                settings.budget_alert_retries,
                settings.budget_alert_backoff_s,
            )
            if webhook_url
            else None
        )
        self.budget_alerts = (
            BudgetAlerts(self.redis, settings.redis_prefix, self.alert_webhook.send, self.metrics)
            if self.alert_webhook is not None
            else None
        )
        self.limiter = RateLimiter(
            self.redis,
            self.metrics,
            settings.redis_prefix,
            settings.rate_limit_burst,
            parallel_lease_s=settings.parallel_lease_s,
            max_hold_s=settings.upstream_total_timeout_s + settings.queue_timeout_s + 60,
            on_redis_error=settings.limits_on_redis_error,
            history=SpendHistory(self.channels["auth"], settings.grpc_timeout_s),
            alerts=self.budget_alerts,
        )
        self.spend = SpendRecorder(
            self.channels["auth"],
            settings.usage_flush_interval_s,
            SpendJournal(self.redis, settings.redis_prefix, os.urandom(8).hex()) if settings.spend_journal else None,
            settings.spend_checkpoint_s,
        )
        self.endpoints = EndpointStates()
        self.kv_index = KvIndex()  # the blocks each replica's KV cache holds, from the registry
        self.queue = PriorityGate(settings.queue_max, settings.queue_timeout_s)
        self.registry_stub = registry_pb2_grpc.RegistryServiceStub(self.channels["registry"])
        self.cold_starts = ColdStarts(
            settings.cold_start_max_held,
            settings.cold_start_timeout_s,
            observe=lambda model, s: self.metrics.cold_start.labels(model).observe(s),
        )
        self.demand = DemandReporter(self.registry_stub, [self.cold_starts.held, self.queue.held])
        self.cold_starts.on_demand = self.demand.kick
        self.catalogue = ModelCatalogue(
            self.channels["registry"],
            on_metrics=self._on_endpoint_metrics,
            on_change=self.cold_starts.changed,
            kv_index=self.kv_index,
        )
        self.metrics.queue_depth.set_function(lambda: self.queue.waiting)
        self.metrics.cold_start_held.set_function(lambda: self.cold_starts.total)
        self.metrics.registry.register(EndpointStateCollector(self.endpoints, self.kv_index))
        self.meter_provider: Any = None
        self.providers: dict[str, Provider] = {
            "local": LocalProvider(
                self.catalogue,
                Scheduler(
                    settings.endpoint_picker,
                    self.endpoints,
                    PluginContext(self.endpoints, self.kv_index, settings.picker_prefill_tokens_per_s),
                ),
                self.endpoints,
                self.queue,
                settings.endpoint_max_outstanding,
                settings.endpoint_max_waiting,
                settings.upstream_retries,
                self.cold_starts,
                PromptBlocks(settings.tokenizers_dir),
            ),
        }
        for name, config in load_providers(
            settings.providers_file, self.upstream.defaults, settings.upstream_retries, settings.provider_keys_dir
        ).items():
            self.providers[name] = external_provider(name, config, self.endpoints)
        self.directory = ModelDirectory(self.providers)
        self.auto = AutoRouter(
            self.channels["classifier"],
            load_policies(settings.routing_file, settings.auto_default_model),
            settings.classifier_timeout_s,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.pipeline = inference_pipeline(self)
        self.submission = submission_pipeline(self)  # a job's, up to the queue
        # Requests that run without a client waiting: queued jobs and batch lines (0: none in this process).
        self.job_worker = JobWorker(
            self.pipeline, self.jobs, self.owners, settings.job_workers, settings.job_claim_idle_s
        )
        self.batch_runner = BatchRunner(
            self.pipeline, self.batches, self.files, self.owners, settings.batch_concurrency, settings.batch_lease_s
        )
        self.metrics_server = MetricsServer(self.metrics.registry, settings.gateway_host, settings.metrics_port)

    async def start(self) -> None:
        await self.upstream.start()
        self.meter_provider = export_registry(self.metrics.registry, "gateway")
        self._tasks += [
            asyncio.create_task(self.catalogue.run(), name="registry-watch"),
            asyncio.create_task(self.auth.follow_revocations(), name="key-events"),
            asyncio.create_task(self.spend.run(), name="spend-flush"),
            asyncio.create_task(self.limiter.run_renewals(), name="parallel-leases"),
            asyncio.create_task(self.demand.run(), name="demand-report"),
        ]
        # Give the first snapshot a moment, so the first requests after start see the catalogue; connect
        # to the classifier now, so the first `auto` request is not spent on the handshake.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(self.catalogue.synced.wait(), self.channels["classifier"].channel_ready()), timeout=2
            )
        await self.metrics_server.start()
        if self.settings.job_workers > 0:
            await self.job_worker.start()
        if self.settings.batch_concurrency > 0:
            await self.batch_runner.start()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` after the response, keeping a reference so it is not collected mid-way."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        """Stops the work that uses the parts first, then the parts. A running job stays pending in Redis
        and a running batch's lease lapses: another process goes on with them."""
        await self.job_worker.stop()
        await self.batch_runner.stop()
        await self.metrics_server.stop()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.budget_alerts is not None and self.alert_webhook is not None:
            await self.budget_alerts.close()
            await self.alert_webhook.close()
        await cancel_all(self._tasks)
        await self.upstream.close()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        await self.redis.aclose()
        await self.auth_redis.aclose()
        await self.storage_redis.aclose()
        for channel in self.channels.values():
            await channel.close()

    def _on_endpoint_metrics(self, metrics: Sequence[registry_pb2.EndpointMetrics]) -> None:
        """The registry pushed fresh vLLM load figures; queued requests look again."""
        for m in metrics:
            adapters = (frozenset(m.running_adapters), frozenset(m.waiting_adapters), m.max_loras)
            self.endpoints.update_metrics(m.url, m.waiting, m.running, m.kv_cache_usage, adapters=adapters)
        self.queue.wake_all()

    def list_models(self, principal: Principal) -> list[dict[str, Any]]:
        """The model cards `principal` may use; `permission: []` as the seeds' API reference shows them."""
        cards = self.directory.model_cards() + self.auto.list_models()
        mine = ({**c, "permission": []} for c in cards if principal.may_use(c["id"]))
        return sorted(mine, key=lambda c: c["id"])

    async def _grpc_status(self, name: str) -> str:
        """A dependency's gRPC health: "ok", its serving status, or why it cannot be reached."""
        service, _ = _DEPENDENCIES[name]
        try:
            reply = await health_pb2_grpc.HealthStub(self.channels[name]).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.aio.AioRpcError as exc:
            return f"unavailable: {exc.code().name.lower()}"
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return "ok"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)).lower()

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve: keys can be checked (auth answers, or keys are cached) and a
        catalogue arrived once (a stale one will do). A dependency blip alone does not take it out."""
        keys = self.auth.cached_keys()
        auth_ok = keys > 0 or await self._grpc_status("auth") == "ok"
        catalogue_ok = self.catalogue.synced.is_set()
        report = {
            "auth": "ok" if auth_ok else "unavailable, no cached keys",
            "cached_keys": keys,
            "catalogue": ("live" if self.catalogue.connected else "stale") if catalogue_ok else "never loaded",
        }
        ready = auth_ok and catalogue_ok
        return ready, {"status": "ready" if ready else "not ready", **report}

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Checks every dependency concurrently; healthy when every required one answers."""

        async def grpc_check(name: str) -> dict[str, Any]:
            start = time.perf_counter()
            status = await self._grpc_status(name)
            return {"status": status, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

        async def redis_check() -> dict[str, Any]:
            start = time.perf_counter()
            probe = f"{self.settings.redis_prefix}health:probe"
            status = await redis_write_status(self.redis, probe)
            if status == "ok" and self.settings.storage_redis_url:
                storage = await redis_write_status(self.storage_redis, probe)
                status = "ok" if storage == "ok" else f"storage {storage}"
            return {"status": status, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

        names = list(_DEPENDENCIES)
        results = await asyncio.gather(*(grpc_check(n) for n in names), redis_check())
        deps = dict(zip([*names, "redis"], results, strict=True))
        deps["registry"]["watch"] = "connected" if self.catalogue.connected else "disconnected"
        deps["registry"]["models"] = len(self.catalogue.models)
        healthy = all(deps[n]["status"] == "ok" for n, (_, required) in _DEPENDENCIES.items() if required)
        degraded = any(d["status"] != "ok" for d in deps.values())
        return healthy, {
            "status": "ok" if not degraded else ("degraded" if healthy else "unavailable"),
            "version": __version__,
            "dependencies": deps,
        }
