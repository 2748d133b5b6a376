"""A small dict-based Kubernetes client over kubernetes_asyncio, shared by the operator and the registry.

It speaks to the API by resource path, so objects stay plain dicts (no typed models to keep in step
with the server) and watch streams are read line by line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient, ApiException, Configuration
from kubernetes_asyncio.config import ConfigException

log = logging.getLogger(__name__)

GROUP = "iir.dev"
VERSION = "v1alpha1"
PLURAL = "inferencemodels"
KIND = "InferenceModel"
ADAPTER_PLURAL = "inferenceadapters"
ADAPTER_KIND = "InferenceAdapter"
MODEL_LABEL = "iir.dev/model"
MANAGED_BY = "iir-operator"
GPU_RESOURCE = "nvidia.com/gpu"

_API_PREFIX = {
    PLURAL: f"/apis/{GROUP}/{VERSION}",
    ADAPTER_PLURAL: f"/apis/{GROUP}/{VERSION}",
    "deployments": "/apis/apps/v1",
    "endpointslices": "/apis/discovery.k8s.io/v1",
    "leases": "/apis/coordination.k8s.io/v1",
    "services": "/api/v1",
    "pods": "/api/v1",
    "events": "/api/v1",
    "nodes": "/api/v1",
}
_CLUSTER_SCOPED = {"nodes"}

Obj = dict[str, Any]


def service_name(model_name: str) -> str:
    """The Service (and Deployment) the operator creates for an InferenceModel."""
    return f"iir-{model_name}"


def endpoint_url(address: str, port: int | str) -> str:
    """The base URL of a pod's server at `address` (IPv4, or IPv6 in brackets) and `port`."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


class Kube:
    """CRUD, list and watch of the few resources IIR touches, as dicts."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls, server: str | None = None) -> Kube:
        """`server` (tests, dev) without TLS checks; else in-cluster config; else the kubeconfig."""
        cfg = Configuration()
        if server:
            cfg.host = server
            cfg.verify_ssl = False
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                await config.load_kube_config(client_configuration=cfg)
        return cls(ApiClient(cfg))

    async def close(self) -> None:
        await self.api.close()

    @staticmethod
    def path(plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        parts = [_API_PREFIX[plural]]
        if namespace and plural not in _CLUSTER_SCOPED:
            parts.append(f"namespaces/{namespace}")
        parts.append(plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        request_timeout: float | None = 30,
    ) -> Any:
        """The raw response of a 2xx answer; ApiException (with the server's message) otherwise."""
        resp = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=request_timeout,
        )
        if resp.status >= 400:
            text = await resp.text()
            resp.release()
            try:
                reason = json.loads(text).get("message") or text
            except ValueError:
                reason = text
            raise ApiException(status=resp.status, reason=f"{method} {path}: {str(reason)[:300]}")
        return resp

    async def _json(self, method: str, path: str, **kwargs: Any) -> Obj:
        resp = await self._call(method, path, **kwargs)
        try:
            return dict(await resp.json(content_type=None))
        finally:
            resp.release()

    async def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self._json("GET", self.path(plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, plural: str, namespace: str | None = None, label_selector: str = "") -> tuple[list[Obj], str]:
        """Items (those matching `label_selector`, when given) and the list's resourceVersion (to watch from)."""
        query = [("labelSelector", label_selector)] if label_selector else None
        data = await self._json("GET", self.path(plural, namespace), query=query)
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def create(self, plural: str, namespace: str | None, body: Obj) -> Obj:
        return await self._json("POST", self.path(plural, namespace), body=body)

    async def merge_patch(
        self, plural: str, namespace: str | None, name: str, patch: Obj, subresource: str | None = None
    ) -> Obj:
        return await self._json(
            "PATCH",
            self.path(plural, namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, plural: str, namespace: str | None, name: str) -> None:
        try:
            await self._json("DELETE", self.path(plural, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def watch(
        self,
        plural: str,
        namespace: str | None = None,
        resource_version: str = "",
        timeout_s: int = 300,
        label_selector: str = "",
    ) -> AsyncIterator[Obj]:
        """Watch events (`{"type", "object"}`) until the server ends the stream."""
        query = [("watch", "true"), ("timeoutSeconds", str(timeout_s)), ("allowWatchBookmarks", "true")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if resource_version and resource_version != "...":
            query.append(("resourceVersion", resource_version))
        resp = await self._call("GET", self.path(plural, namespace), query=query, request_timeout=timeout_s + 30)
        try:
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release()


__all__ = [
    "ADAPTER_KIND",
    "ADAPTER_PLURAL",
    "GPU_RESOURCE",
    "GROUP",
    "KIND",
    "MANAGED_BY",
    "MODEL_LABEL",
    "PLURAL",
    "VERSION",
    "ApiException",
    "Kube",
    "Obj",
    "client",
    "endpoint_url",
    "service_name",
]
