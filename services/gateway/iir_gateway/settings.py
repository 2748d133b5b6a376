"""Gateway settings (`IIR_` environment variables)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from iir_common.settings import IIRSettings
from iir_gateway.networks import parse_networks


class GatewaySettings(IIRSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # How long an idle client connection is kept open for its next request. Longer than the clients' and
    # load balancers' own idle timeouts (60 s on most), so they never reuse one the gateway is closing.
    keepalive_timeout_s: float = 75.0
    # Worker processes serving the gateway port; they share nothing but Redis. 0: one per CPU the process
    # may use (its affinity, bounded by the cgroup's CPU quota), at most one per 128 MiB of memory limit.
    gateway_workers: int = Field(default=1, ge=0)
    auth_addr: str = "127.0.0.1:50051"
    registry_addr: str = "127.0.0.1:50052"
    classifier_addr: str = "127.0.0.1:50053"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Largest request body accepted; more is answered 413.
    max_body_bytes: int = 4 * 1024 * 1024
    # Deadline of a gRPC call to auth, registry or classifier.
    grpc_timeout_s: float = 2.0
    upstream_connect_timeout_s: float = 5.0
    # Longest wait for the next bytes of an upstream response (first token included).
    upstream_read_timeout_s: float = 120.0
    # Longest a non-streaming upstream call may take in all.
    upstream_total_timeout_s: float = 600.0
    # Longest wait for a stream's first bytes (the prompt's prefill included).
    upstream_first_token_timeout_s: float = 60.0
    # Further attempts after a connection error, 429 or 5xx (with backoff), before the fallbacks.
    upstream_retries: int = 2
    # `model: "auto"` routing: policies (YAML, see README); without a file, `auto` means this model.
    routing_file: str = ""
    auto_default_model: str = "local/llama-3-8b-instruct"
    # Batch API: the largest input file and its number of requests, lines run at once per batch (0: this
    # process runs no batch), how long a dead process's batch waits before another takes it over, and
    # how long files and batches are kept.
    batch_max_file_bytes: int = 20 * 1024 * 1024
    batch_max_lines: int = 50_000
    batch_concurrency: int = 4
    batch_lease_s: float = 30.0
    files_ttl_s: int = 30 * 86400
    # How long a stored Response (`store: true`) is kept for GET and `previous_response_id`.
    responses_ttl_s: int = 30 * 86400
    # Where file bodies, stored responses and batches are kept ("": IIR_REDIS_URL). Another Redis keeps
    # them from ever taking the memory that limits, budgets and jobs need.
    storage_redis_url: str = ""
    # Storage quotas per key (0: unlimited): files and their bytes, stored responses and their bytes,
    # unfinished batches, and jobs kept (until their results expire) and their request bytes. A team
    # holds `quota_team_factor` times a key's (0: no team quota). Over a quota: 429 insufficient_quota.
    quota_files_per_key: int = Field(default=100, ge=0)
    quota_file_bytes_per_key: int = Field(default=100 * 1024 * 1024, ge=0)
    quota_responses_per_key: int = Field(default=1000, ge=0)
    quota_response_bytes_per_key: int = Field(default=50 * 1024 * 1024, ge=0)
    quota_batches_per_key: int = Field(default=10, ge=0)
    quota_jobs_per_key: int = Field(default=1000, ge=0)
    quota_job_bytes_per_key: int = Field(default=50 * 1024 * 1024, ge=0)
    quota_team_factor: float = Field(default=5.0, ge=0)
    # Bytes of files, stored responses and job requests of all keys together; 0: half the smaller
    # `maxmemory` of the two Redis servers, or 1 GiB when neither sets one.
    storage_max_bytes: int = Field(default=0, ge=0)
    # The model of a chat or completions request that names none ("": such a request is a 400).
    default_model: str = "auto"
    # Deadline of the classifier call; past it the policy's default model answers.
    classifier_timeout_s: float = 0.05
    # External providers (YAML): base URLs, key sources, models and fallbacks, timeouts; see README.
    providers_file: str = ""
    # A folder of files named like providers' key variables (OPENAI_API_KEY, ...): a mounted Secret.
    provider_keys_dir: str = ""
    # Endpoint picking policy among a local model's ready replicas: precise_prefix, round_robin,
    # least_outstanding, load_aware, load_aware_prefix.
    endpoint_picker: str = "precise_prefix"
    # The engines' prefill speed in tokens/s (precise_prefix predicts time to first token with it).
    picker_prefill_tokens_per_s: float = 10_000.0
    # Where the models' tokenizers are (an InferenceModel's spec.tokenizer names a folder under it).
    tokenizers_dir: str = "/var/lib/iir/tokenizers"
    # A replica is saturated when this gateway has this many requests in flight there, or vLLM reports
    # this many waiting; when all are, requests queue (highest key priority first).
    endpoint_max_outstanding: int = 256
    endpoint_max_waiting: int = 128
    queue_max: int = 1000
    queue_timeout_s: float = 30.0
    # Requests held (over all models) while a model scaled to zero starts, and how long each may wait
    # before a 503 model_cold_start_timeout.
    cold_start_max_held: int = Field(default=1000, ge=0)
    cold_start_timeout_s: float = Field(default=180.0, gt=0)
    access_log: bool = True
    # Response cache (Redis): on/off, entry lifetime and size, and whether keys share entries.
    cache_enabled: bool = True
    cache_ttl_s: int = 3600
    cache_max_entry_bytes: int = 1_000_000
    cache_per_key: bool = True
    # Async jobs: concurrent jobs per gateway process (0: this process runs none), how long a dead worker's
    # job waits before another worker takes it, and how long results are kept.
    job_workers: int = 4
    job_claim_idle_s: float = 30.0
    job_result_ttl_s: int = 86400
    # Unfinished jobs a key may have at once, and the largest job request (bytes).
    job_max_queued_per_key: int = Field(default=100, ge=0)
    job_max_bytes: int = Field(default=262144, ge=1024)
    # Secret scrubbing when the key says nothing: redact, block (400), or off.
    scrub_mode: Literal["redact", "block", "off"] = "redact"
    # Prefix of every Redis key and channel IIR uses (shared by auth and gateway).
    redis_prefix: str = "iir:"
    # Bucket size as a multiple of the per-minute limit (1.0: at most one minute's worth at once).
    rate_limit_burst: float = 1.0
    # Tokens reserved for the completion when a request gives no max_tokens (TPM limits).
    completion_token_reserve: int = 256
    # For a key with a budget (money or tokens), a request without max_tokens reserves this many completion
    # tokens (fewer when the budget has less left) and is sent upstream with that max_tokens.
    budget_max_tokens: int = Field(default=4096, ge=1)
    # When Redis fails, keys with limits or budgets get 503 (`closed`) or are counted per gateway process
    # at their own RPM/TPM/parallel limits, budgets refused (`local`). Keys without limits keep working.
    limits_on_redis_error: Literal["closed", "local"] = "closed"
    # A running request's parallel slot lease: renewed by its gateway every third of it, so a dead
    # gateway's slots free within about one lease.
    parallel_lease_s: float = Field(default=30.0, ge=1.0)
    # Attempts with unknown keys per client address (IPv6: per /64) and window before that address gets
    # 429s for them (secrets auth issued and keys that validated before keep working).
    auth_failure_limit: int = 20
    auth_failure_window_s: int = 60
    # While the auth service (or its database) cannot answer, a key validated within this many seconds, and
    # not revoked, blocked or changed since, is still served from the cache; 0: never (503 instead).
    key_stale_ttl_s: float = Field(default=300.0, ge=0)
    # How often spend records are sent to the auth service.
    usage_flush_interval_s: float = 1.0
    # For keys and teams that log request bodies: each of the request and its answer is cut to this many
    # characters in the request log.
    request_log_body_max_chars: int = Field(default=16384, ge=256, le=1 << 20)
    # Unsent spend records kept in Redis too, so another gateway sends them when this one dies; a running
    # stream's record is kept there every `spend_checkpoint_s` with what it relayed so far.
    spend_journal: bool = True
    spend_checkpoint_s: float = Field(default=5.0, gt=0)
    # Budget alerts: where they are POSTed (http or https; empty: none are sent), as `json` or a Slack
    # message (`slack`: `{"text": ...}`); each try's deadline, the tries after a failed one, and the wait
    # before the first of them (doubled each time, at most a minute). Set by the operator only.
    budget_alert_webhook_url: SecretStr = SecretStr("")
    budget_alert_format: Literal["json", "slack"] = "json"
    budget_alert_timeout_s: float = Field(default=5.0, gt=0)
    budget_alert_retries: int = Field(default=5, ge=0, le=20)
    budget_alert_backoff_s: float = Field(default=1.0, gt=0)
    # Networks whose clients may manage keys without a key (comma-separated CIDRs): a dev convenience,
    # empty (off) by default. Decided on the TCP peer, never for a request with forwarding headers.
    trusted_networks: str = ""
    # Proxies (comma-separated addresses or CIDRs, never "*") whose X-Forwarded-For entries are believed;
    # the client is the right-most address not in this list. Empty: the TCP peer is the client.
    trusted_proxies: str = ""
    # Prometheus /metrics on a port of its own (not the public one); 0: not served.
    metrics_port: int = 9464
    # Distinct key ids labelled in per-key metrics; later keys share the label `other`.
    metrics_max_keys: int = Field(default=1000, ge=0)
    # /docs (Swagger UI, assets from the package) and /openapi.json.
    docs_enabled: bool = False
    # The admin web UI at /ui/ (static files; every action still needs an admin key).
    ui_enabled: bool = True
    # Single sign-on for the admin UI (OpenID Connect, authorization code with PKCE): the provider's
    # issuer URL (its /.well-known/openid-configuration is read), this gateway's client id and secret
    # (empty: a public client), and the callback URL registered with the provider (<gateway>/ui/sso/callback).
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_redirect_url: str = ""
    oidc_scopes: str = "openid email profile groups"
    # The ID token claim holding the person's groups, and which groups make which role: an admin, a
    # viewer (reads every admin page, changes nothing), or a team admin (`<prefix><team name>`: that team's
    # keys, spend and request log). Anyone else signed in is refused.
    oidc_groups_claim: str = "groups"
    oidc_admin_groups: str = "iir-admins"
    oidc_viewer_groups: str = "iir-viewers"
    oidc_team_admin_prefix: str = "iir-team-admin:"
    # How long a signed-in session lasts.
    oidc_session_ttl_s: int = Field(default=8 * 3600, ge=60)
    # A client must send its request headers within this time, and its body within the next; else 408.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    # Open connections per client address (trusted proxies excepted); more are closed at once.
    max_connections_per_client: int = Field(default=100, ge=1)

    @field_validator("budget_alert_webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        parts = urlsplit(url)
        if url and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError("IIR_BUDGET_ALERT_WEBHOOK_URL must be an http or https URL")
        return SecretStr(url)

    @field_validator("trusted_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: str, info: object) -> str:
        parse_networks(value, f"IIR_{getattr(info, 'field_name', '').upper()}")
        return value
