"""The admin web UI at `/ui/`: static files from the package (nothing from a CDN, so it works in an
air-gapped cluster), calling the admin API with the admin key the user logs in with."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
_HEADERS = {
    # Only this gateway's own scripts, styles and API; a CSV download is a blob: URL.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
        " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "cache-control": "no-cache",
}


def router() -> APIRouter:
    """`/ui/` and its files."""
    routes = APIRouter(include_in_schema=False)
    files = {name: (UI_DIR / name).read_bytes() for name in _TYPES}  # read once; a fixed set, no paths from URLs

    @routes.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/")

    @routes.get("/ui/")
    async def ui_index() -> Response:
        return Response(files["index.html"], media_type=_TYPES["index.html"], headers=_HEADERS)

    @routes.get("/ui/{name}")
    async def ui_file(name: str) -> Response:
        if name not in files:
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        return Response(files[name], media_type=_TYPES[name], headers=_HEADERS)

    return routes
