"""The demo pages of the local stack: a storefront (/shop) and a marketer's view (/marketing).

Plain static files from devstack/web/, read on each request so an edited page shows on reload.
The pages call the API from the browser as a shop's website and tools would: through the web kit
(clients/js/shop-recs.js, served read-only at /clients/js/shop-recs.js) as a visitor or a
signed-in customer, the shop's backend routes through the stack's /dev/trusted/.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from devstack.http_response import HttpResponse

WEB_DIR = Path(__file__).parent / "web"
PAGES = {"/shop": "shop.html", "/marketing": "marketing.html"}
# The web kit, as a shop's website would load it; the one file served from outside WEB_DIR.
KIT_PATH = "/clients/js/shop-recs.js"
KIT_FILE = Path(__file__).parent.parent / "clients" / "js" / "shop-recs.js"
ASSET_PREFIX = "/web/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# One plain file name in WEB_DIR: no folders, no dots but the extension's, nothing encoded.
ASSET_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[a-z]+)$")


def web_response(method: str, path: str) -> HttpResponse | None:
    """A page or asset for GET (or HEAD) /shop, /marketing, /web/<file> and the web kit; None for anything else."""
    path = urlsplit(path).path
    if method in ("GET", "HEAD") and path == KIT_PATH:
        return _file(KIT_FILE, CONTENT_TYPES[".js"])
    if method not in ("GET", "HEAD") or not (path in PAGES or path.startswith(ASSET_PREFIX)):
        return None
    name = PAGES.get(path) or path.removeprefix(ASSET_PREFIX)
    found = ASSET_NAME.match(name)
    if not found or found.group(1) not in CONTENT_TYPES or not (WEB_DIR / name).is_file():
        return _not_found(path)
    return _file(WEB_DIR / name, CONTENT_TYPES[found.group(1)])


def _file(path: Path, content_type: str) -> HttpResponse:
    return HttpResponse(200, {"content-type": content_type, "cache-control": "no-cache",
                              "x-content-type-options": "nosniff"}, path.read_bytes())


def _not_found(path: str) -> HttpResponse:
    return HttpResponse(404, {"content-type": "text/plain; charset=utf-8"}, f"no such file: {path}\n".encode())
