"""Swagger UI on the local stack: /docs, its document at /docs/openapi.json, its files at /docs/assets/.

The page shows the committed docs/openapi.json (python -m devstack.openapi writes it), the one CI
checks against the code. Swagger UI's files come from npm's swagger-ui-dist (package.json), which
./dev setup installs into node_modules.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from devstack.http_response import HttpResponse
from devstack.template import PROJECT_ROOT


DOCUMENT_PATH = PROJECT_ROOT / "docs" / "openapi.json"
ASSETS_DIR = PROJECT_ROOT / "node_modules" / "swagger-ui-dist"
ASSETS_PREFIX = "/docs/assets/"
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".png": "image/png",
}
PAGE_ASSETS = ("swagger-ui.css", "favicon-32x32.png", "swagger-ui-bundle.js")

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>shop-recs API</title>
  <link rel="stylesheet" href="{ASSETS_PREFIX}swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS_PREFIX}favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_PREFIX}swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/docs/openapi.json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: true,
    }});
  </script>
</body>
</html>
"""


def _response(status: int, content_type: str, body: bytes) -> HttpResponse:
    return HttpResponse(status, {"content-type": content_type, "cache-control": "no-cache",
                                 "x-content-type-options": "nosniff"}, body)


def _not_found(message: str) -> HttpResponse:
    return _response(404, "text/plain; charset=utf-8", f"{message}\n".encode())


def _asset(name: str) -> HttpResponse:
    """A file directly in swagger-ui-dist, of a known type; any other name, ../ included, is 404.

    The name is looked up among the folder's files, never joined to a path before that.
    """
    files = {path.name: path for path in ASSETS_DIR.glob("*") if path.suffix in CONTENT_TYPES and path.is_file()}
    if name not in files:
        return _not_found(f"no Swagger UI file {name!r}")
    return _response(200, CONTENT_TYPES[files[name].suffix], files[name].read_bytes())


def docs_response(path: str) -> HttpResponse | None:
    """The answer to GET `path` if it is the docs site's (/docs, /docs/...), else None."""
    path = urlsplit(path).path
    if path in ("/docs", "/docs/"):
        if not all((ASSETS_DIR / name).is_file() for name in PAGE_ASSETS):
            return _response(503, "text/plain; charset=utf-8",
                             b"Swagger UI is not installed: run ./dev setup (npm ci installs swagger-ui-dist)\n")
        return _response(200, "text/html; charset=utf-8", PAGE.encode())
    if path == "/docs/openapi.json":
        if not DOCUMENT_PATH.is_file():
            return _not_found("docs/openapi.json does not exist: generate it with python -m devstack.openapi")
        return _response(200, "application/json", DOCUMENT_PATH.read_bytes())
    if path.startswith(ASSETS_PREFIX):
        return _asset(path.removeprefix(ASSETS_PREFIX))
    return None

