"""`model: "auto"` and `auto/<policy>`: the classifier says what kind of work a prompt is, a routing
table in configuration says which model does it.

    policies:                       # IIR_ROUTING_FILE (YAML)
      auto:
        default: local/llama-3-8b-instruct
        rules:                      # the first rule that matches wins
          - {category: [code, math], complexity: hard, model: anthropic/claude-sonnet-4-5}
          - {category: [translation], model: local/llama-3-8b-instruct}
      auto/cheap:
        default: local/llama-3-8b-instruct

If the classifier is down or misses its deadline, the policy's default model answers; the request
never fails for it. Only models the key may use are chosen: a rule whose model the key may not use is
passed over, and so is a default it may not use (then the first of the policy's models it may use
answers). The choice and its reason go back in the `x-iir-route` header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iir.v1 import classifier_pb2, classifier_pb2_grpc
from iir_gateway.errors import APIError

log = logging.getLogger(__name__)

MAX_TURN_CHARS = 8000


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: list[str] = Field(default_factory=list)  # empty: any
    complexity: str = ""  # "simple", "hard", or "": any
    language: list[str] = Field(default_factory=list)
    min_confidence: float = 0.0
    model: str

    def matches(self, reply: classifier_pb2.ClassifyResponse) -> bool:
        return (
            (not self.category or reply.category in self.category)
            and (not self.complexity or reply.complexity == self.complexity)
            and (not self.language or reply.language in self.language)
            and reply.category_confidence >= self.min_confidence
        )


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str
    rules: list[Rule] = Field(default_factory=list)


class RoutingFileError(ValueError):
    pass


def load_policies(path: str, default_model: str) -> dict[str, Policy]:
    """The policies of `path`, or one `auto` policy sending everything to `default_model`."""
    if not path:
        return {"auto": Policy(default=default_model)}
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        policies = {name: Policy.model_validate(p) for name, p in (doc.get("policies") or {}).items()}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise RoutingFileError(f"cannot read IIR_ROUTING_FILE {path}: {exc}") from None
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise RoutingFileError(f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    bad = [n for n in policies if n != "auto" and not n.startswith("auto/")]
    if bad:
        raise RoutingFileError(f"{path}: policy names are `auto` or `auto/<name>`, not {', '.join(bad)}")
    return policies


def is_auto(model: str) -> bool:
    return model == "auto" or model.startswith("auto/")


@dataclass(frozen=True)
class Route:
    model: str
    header: str


def _turns(body: dict[str, Any]) -> list[classifier_pb2.Turn]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        prompt = body.get("prompt")
        return [classifier_pb2.Turn(role="user", content=prompt[:MAX_TURN_CHARS])] if isinstance(prompt, str) else []
    turns = []
    for m in messages[-8:]:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(content, str) and content:
            turns.append(classifier_pb2.Turn(role=str(m.get("role", "")), content=content[-MAX_TURN_CHARS:]))
    return turns


def _default(name: str, policy: Policy, may_use: Callable[[str], bool]) -> str:
    """The policy's default model, or, where the key may not use it, the first of its models it may."""
    for model in (policy.default, *(rule.model for rule in policy.rules)):
        if may_use(model):
            return model
    raise APIError(
        403,
        f"This API key may use none of the models the `{name}` policy routes to.",
        code="model_not_allowed",
        param="model",
    )


class AutoRouter:
    def __init__(self, channel: grpc.aio.Channel, policies: dict[str, Policy], timeout_s: float) -> None:
        self._stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        self.policies = policies
        self.timeout_s = timeout_s

    async def choose(self, name: str, body: dict[str, Any], may_use: Callable[[str], bool] = lambda _: True) -> Route:
        """The model policy `name` chooses for `body`, among those `may_use` allows (403 when none)."""
        policy = self.policies.get(name)
        if policy is None:
            raise APIError(
                404,
                f"Unknown routing policy `{name}`; known: {', '.join(sorted(self.policies))}.",
                code="model_not_found",
                param="model",
            )
        fallback = _default(name, policy, may_use)
        start = time.perf_counter()
        try:
            reply = await self._stub.Classify(
                classifier_pb2.ClassifyRequest(messages=_turns(body)), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            reason = (
                "classifier deadline exceeded"
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else f"classifier {exc.code().name.lower()}"
            )
            log.warning(
                "auto routing fell back to the default model",
                extra={"policy": name, "model": fallback, "reason": reason},
            )
            return Route(fallback, f"policy={name}; model={fallback}; reason={reason}")
        chosen, reason = fallback, "default" if fallback == policy.default else "default not allowed for this key"
        for i, rule in enumerate(policy.rules):
            if rule.matches(reply) and may_use(rule.model):
                chosen, reason = rule.model, f"rule {i + 1}"
                break
        took = (time.perf_counter() - start) * 1000
        return Route(
            chosen,
            f"policy={name}; category={reply.category}; confidence={reply.category_confidence:.2f}; "
            f"complexity={reply.complexity}; language={reply.language}; model={chosen}; "
            f"reason={reason}; classify_ms={took:.1f}",
        )

    def list_models(self) -> list[dict[str, Any]]:
        return [{"id": name, "object": "model", "created": 0, "owned_by": "iir"} for name in self.policies]
