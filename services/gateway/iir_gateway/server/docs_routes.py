"""`/docs` (Swagger UI) and `/openapi.json` with every asset served from the package, so the page works in
an air-gapped cluster; a bearer `securitySchemes` for the Authorize button. On when IIR_DOCS_ENABLED."""

from __future__ import annotations

from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"

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


def install_docs(app: FastAPI) -> None:
    """Serves Swagger UI from `swagger-ui-bundle` and an OpenAPI document with bearer authentication."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-assets")

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
    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )
