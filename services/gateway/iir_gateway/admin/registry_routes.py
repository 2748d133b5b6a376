"""The registry's view through the gateway: model states and GPU nodes; an admin re-list."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from fastapi import APIRouter, Request
from google.protobuf.json_format import MessageToDict
from starlette.responses import Response

from iir.v1 import registry_pb2, registry_pb2_grpc
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import Authenticator
from iir_gateway.picking.state import EndpointStates
from iir_gateway.principal import Principal
from iir_gateway.server.bodies import client_ip, json_response


class RegistryDeps(Protocol):
    """What the registry routes read of the runtime."""

    @property
    def auth(self) -> Authenticator: ...
    @property
    def registry_stub(self) -> registry_pb2_grpc.RegistryServiceStub: ...
    @property
    def endpoints(self) -> EndpointStates: ...


# What a key without admin rights sees of a model: no endpoint URLs, pods, namespaces or nodes.
_PUBLIC_FIELDS = ("name", "provider", "phase", "replicas", "ready_replicas")


def _as_dict(msg: Any) -> dict[str, Any]:
    data: dict[str, Any] = MessageToDict(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return data


def _render_public(reply: registry_pb2.StatusResponse, principal: Principal) -> Response:
    models = [{f: d[f] for f in _PUBLIC_FIELDS} for d in map(_as_dict, reply.models) if principal.may_use(d["name"])]
    return json_response({"models": models})


def _with_load(model: dict[str, Any], endpoints: EndpointStates) -> dict[str, Any]:
    """Each endpoint's live load as this gateway sees it: its own in-flight requests and vLLM's scraped
    waiting/running requests and KV-cache use."""
    for endpoint in model.get("endpoints") or []:
        state = endpoints.get(endpoint["url"])
        endpoint["load"] = {
            "in_flight": state.outstanding,
            "waiting": state.waiting,
            "running": state.running,
            "kv_cache_usage": state.kv_cache_usage,
            "lora_adapters_active": sorted(state.running_adapters | state.waiting_adapters),
        }
    return model


def _render(reply: registry_pb2.StatusResponse, endpoints: EndpointStates) -> Response:
    body = {
        "source": reply.source,
        "last_refresh": datetime.fromtimestamp(reply.last_refresh, UTC).isoformat() if reply.last_refresh else None,
        "models": [_with_load(_as_dict(m), endpoints) for m in reply.models],
        "nodes": [_as_dict(n) for n in reply.nodes],
        "error": reply.error or None,
    }
    return json_response(body)


async def _call(stub: registry_pb2_grpc.RegistryServiceStub, method: str) -> registry_pb2.StatusResponse:
    try:
        reply: registry_pb2.StatusResponse
        if method == "refresh":
            reply = await stub.Refresh(registry_pb2.RefreshRequest(), timeout=30)
        else:
            reply = await stub.Status(registry_pb2.StatusRequest(), timeout=10)
        return reply
    except grpc.aio.AioRpcError as exc:
        raise APIError(
            503, f"The model registry is unavailable: {exc.details() or exc.code().name}.", code="registry_unavailable"
        ) from None


# Keys without admin rights may ask for a re-list (the onboarding guide does), at most this often per
# gateway process; in between they get the current status.
PUBLIC_REFRESH_INTERVAL_S = 10.0


def router(deps: RegistryDeps) -> APIRouter:
    """The registry's status and a re-list."""
    routes = APIRouter(tags=["Registry"])
    public_refresh_at = -PUBLIC_REFRESH_INTERVAL_S  # when a key without admin rights last had a re-list

    @routes.get(
        "/v1/registry/status",
        summary="Models with state, source, replicas, endpoints; GPU nodes "
        "(admin keys; other keys see their models' names and states)",
    )
    async def registry_status(request: Request) -> Response:
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        reply = await _call(deps.registry_stub, "status")
        return _render(reply, deps.endpoints) if principal.admin else _render_public(reply, principal)

    @routes.post(
        "/v1/registry/refresh",
        summary="Re-list every model source now (admin keys; other keys at most every 10 s per gateway)",
    )
    async def registry_refresh(request: Request) -> Response:
        nonlocal public_refresh_at
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        if principal.admin:
            return _render(await _call(deps.registry_stub, "refresh"), deps.endpoints)
        now = time.monotonic()
        due = now - public_refresh_at >= PUBLIC_REFRESH_INTERVAL_S
        if due:
            public_refresh_at = now
        return _render_public(await _call(deps.registry_stub, "refresh" if due else "status"), principal)

    return routes
