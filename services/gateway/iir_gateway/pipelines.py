"""The pipelines the runtime runs, each assembled from the runtime's parts: the steps of every inference
request (docs/ARCHITECTURE.md, "One request"), and those of a job's submission."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from iir_gateway.accounting.rate_limiter import RateLimiter
from iir_gateway.accounting.spend_recorder import SpendRecorder
from iir_gateway.caching.response_cache import ResponseCache
from iir_gateway.keys.authenticator import Authenticator
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.access import Access
from iir_gateway.pipeline.steps.account import Account
from iir_gateway.pipeline.steps.admit import Admit
from iir_gateway.pipeline.steps.authenticate import Authenticate
from iir_gateway.pipeline.steps.auto_route import AutoRoute
from iir_gateway.pipeline.steps.cache import Cache
from iir_gateway.pipeline.steps.dispatch import Dispatch
from iir_gateway.pipeline.steps.enqueue import Enqueue, JobQueue
from iir_gateway.pipeline.steps.job_size import JobSize
from iir_gateway.pipeline.steps.scrub import Scrub
from iir_gateway.pipeline.steps.validate import Validate
from iir_gateway.providers.directory import ModelDirectory
from iir_gateway.routing.auto_router import AutoRouter
from iir_gateway.scrubbing.policy import Scrubbing
from iir_gateway.upstream.client import UpstreamClient


class InferenceSettings(Protocol):
    """The settings the inference steps read."""

    @property
    def default_model(self) -> str: ...
    @property
    def completion_token_reserve(self) -> int: ...
    @property
    def budget_max_tokens(self) -> int: ...
    @property
    def request_log_body_max_chars(self) -> int: ...


class InferenceParts(Protocol):
    """The parts the inference steps are built from."""

    @property
    def settings(self) -> InferenceSettings: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def scrubbing(self) -> Scrubbing: ...
    @property
    def auto(self) -> AutoRouter: ...
    @property
    def directory(self) -> ModelDirectory: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def spend(self) -> SpendRecorder: ...
    @property
    def metrics(self) -> GatewayMetrics: ...
    @property
    def cache(self) -> ResponseCache | None: ...
    @property
    def upstream(self) -> UpstreamClient: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


def inference_pipeline(parts: InferenceParts) -> Pipeline:
    """The steps of every inference request, in order."""
    settings = parts.settings
    return Pipeline(
        [
            Authenticate(parts.auth),
            Validate(settings.default_model),
            Scrub(parts.scrubbing),
            AutoRoute(parts.auto),
            Access(parts.directory),
            Admit(
                parts.limiter,
                parts.directory,
                settings.completion_token_reserve,
                parts.spawn,
                settings.budget_max_tokens,
            ),
            Account(parts.spend, parts.directory, parts.metrics, settings.request_log_body_max_chars),
            Cache(parts.cache, parts.metrics, parts.spawn),
            Dispatch(parts.directory, parts.upstream),
        ]
    )


class SubmissionSettings(Protocol):
    """The settings a job's submission reads."""

    @property
    def default_model(self) -> str: ...
    @property
    def job_max_bytes(self) -> int: ...
    @property
    def job_max_queued_per_key(self) -> int: ...


class SubmissionParts(Protocol):
    """The parts a job's submission is built from."""

    @property
    def settings(self) -> SubmissionSettings: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def scrubbing(self) -> Scrubbing: ...
    @property
    def directory(self) -> ModelDirectory: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def jobs(self) -> JobQueue: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


def submission_pipeline(parts: SubmissionParts) -> Pipeline:
    """The steps of a job's submission, in order: a request's own steps up to the queue, where the job is
    stored (scrubbed: the prompt waits in Redis, and a secret must not wait with it) for a worker to run
    through the inference pipeline. An `auto` model is chosen then."""
    settings = parts.settings
    return Pipeline(
        [
            Authenticate(parts.auth),
            Validate(settings.default_model),
            Access(parts.directory),
            JobSize(settings.job_max_bytes),
            Scrub(parts.scrubbing),
            Admit(parts.limiter, parts.directory, 0, parts.spawn, request_only=True),
            Enqueue(parts.jobs, settings.job_max_queued_per_key),
        ]
    )
