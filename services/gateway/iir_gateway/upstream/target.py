"""Where one request goes: an upstream server, the model name it knows, its format and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Timeouts(BaseModel):
    """Per provider: connect; first token (streams) or whole answer wait (non-streaming); between chunks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    connect_s: float = Field(5.0, gt=0)
    first_token_s: float = Field(60.0, gt=0)
    read_s: float = Field(120.0, gt=0)
    total_s: float = Field(600.0, gt=0)


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
    wire: Literal["openai", "anthropic"] = "openai"
    timeouts: Timeouts | None = None  # None: the gateway's defaults
    retries: int = 2
