"""Where one request goes: an upstream server, the model name it knows, its format and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field


class Timeouts(BaseModel):
    """Per provider: connect; first token (streams) or whole answer wait (non-streaming); between chunks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    connect_s: float = Field(5.0, gt=0)
    first_token_s: float = Field(60.0, gt=0)
    read_s: float = Field(120.0, gt=0)
    total_s: float = Field(600.0, gt=0)


class CredentialsError(Exception):
    """The gateway's own credentials for a provider could not be had (a token endpoint refusing or
    unreachable, a key file unreadable). The message names no secret; `retryable` when trying again may
    help (the token endpoint was unreachable or failing)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class RequestAuth(Protocol):
    """Credentials computed per request, once its bytes are known: an OAuth access token (cached until
    it expires), an AWS SigV4 signature."""

    async def authorize(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """The headers to add to the request (`headers` are those it has so far); raises CredentialsError."""
        ...


@dataclass(frozen=True, slots=True)
class Upstream:
    """An OpenAI-compatible server and the model name it knows."""

    base_url: str  # up to and including the API version, e.g. "http://10.0.0.7:8000/v1"
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    target: str = ""  # which replica, for logs
    endpoint: str = ""  # its key in the endpoint states (health, load)
    public_model: str = ""
    metric_model: str = "other"  # public_model when the catalogue or configuration knows it (bounded labels)
    wire: str = "openai"  # the kind of its codec in `wire.registry`
    timeouts: Timeouts | None = None  # None: the gateway's defaults
    retries: int = 2
    query: str = ""  # added to every request's URL (Azure's `api-version=…`)
    auth: RequestAuth | None = None  # credentials made per request, after the headers
