"""The playground: a static page at `/`, shipped in the package.

The page is plain HTML/CSS/JS from server/static (no build step, nothing from a
CDN). It talks to the public API like any client, with the key typed into it
(its grid preview is routes/tiling.py); only the page's own files are public
(server/admission.py).
"""

from __future__ import annotations

import re
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from ..errors import APIError

router = APIRouter(tags=["playground"])

PAGE = "index.html"
ASSETS_PREFIX = "/playground/"
# Only plain names: no path ever leaves the static directory.
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$")
_MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
# The page is small and changes with the package: always revalidate.
_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _static_file(name: str) -> Response:
    path = resources.files("server") / "static" / name
    if not path.is_file():
        raise _not_found(name)
    extension = name.rsplit(".", 1)[-1]
    return Response(path.read_bytes(), media_type=_MEDIA_TYPES[extension], headers=_CACHE)


@router.get("/", include_in_schema=False)
async def playground_page() -> Response:
    return _static_file(PAGE)


@router.get(ASSETS_PREFIX + "{name}", include_in_schema=False)
async def playground_asset(name: str) -> Response:
    if not _ASSET_NAME.match(name):
        raise _not_found(name)
    return _static_file(name)


def _not_found(name: str) -> APIError:
    return APIError(f"no playground file {name!r}", status=404, code="not_found")
