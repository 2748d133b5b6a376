"""`/docs` (Swagger UI 5, which reads the OpenAPI 3.1 document FastAPI generates) and `/openapi.json`, with
every asset served from the `fastapi-swagger` package and a Content-Security-Policy that lets the page load
nothing from elsewhere, so it works in an air-gapped cluster; a bearer `securitySchemes` for the Authorize
button. On when IIR_DOCS_ENABLED."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import HTMLResponse, Response

ASSETS = "/docs/assets"
# The Swagger UI files the page loads: a fixed set, read once, no paths from URLs.
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}

# The errors every admin operation may answer, in OpenAI's shape.
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request body or parameter", **_ERROR},
    401: {"description": "No key, or an unknown, revoked, blocked or expired key", **_ERROR},
    403: {"description": "Not an admin key", **_ERROR},
    404: {"description": "No such key, team or user", **_ERROR},
    409: {"description": "Conflict: a name taken, or a revoked key changed", **_ERROR},
    503: {"description": "The auth service is unavailable", **_ERROR},
}


def body_of(schema: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body that a route reads itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema.model_json_schema(ref_template="#/components/schemas/{model}")}
            },
        }
    }


def _policy(page: str) -> str:
    """Only this gateway's files and API; the page's one inline script by its hash."""
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def install_docs(app: FastAPI) -> None:
    """Serves Swagger UI from `fastapi-swagger` and an OpenAPI document with bearer authentication."""
    bundled = resources.files("fastapi_swagger.resources")
    assets = {name: (bundled / name).read_bytes() for name in _ASSET_TYPES}
    page = bytes(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # No validator badge: it would send the document's URL to swagger.io.
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        ).body
    )
    headers = {"content-security-policy": _policy(page.decode())}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = spec.setdefault("components", {})
            components.setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "An IIR API key (admin for /api/v1/apikeys, teams, users, spend, audit).",
            }
            components.setdefault("schemas", {})["Error"] = {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": {"type": "string", "nullable": True},
                            "code": {"type": "string", "nullable": True},
                        },
                    }
                },
            }
            spec["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> Response:
        return HTMLResponse(page, headers=headers)

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def swagger_asset(name: str) -> Response:
        if name not in assets:
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        return Response(assets[name], media_type=_ASSET_TYPES[name], headers=headers)
