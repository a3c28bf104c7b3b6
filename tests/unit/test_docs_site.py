"""The local stack's Swagger UI: the page, the committed document, swagger-ui-dist's files."""

from __future__ import annotations

import json
import re

import pytest

from devstack import docs_site, openapi


@pytest.mark.parametrize("path", ["/docs", "/docs/", "/docs?tab=1"])
def test_the_page_loads_swagger_ui_and_the_document_from_docs(path: str) -> None:
    page = docs_site.docs_response(path)
    assert page is not None and page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    assert 'url: "/docs/openapi.json"' in html
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    for asset in assets:
        response = docs_site.docs_response(asset)
        assert response is not None and response.status == 200, asset
        assert response.body


@pytest.mark.parametrize(("name", "content_type"), [
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    ("swagger-ui.css", "text/css; charset=utf-8"),
    ("favicon-32x32.png", "image/png"),
])
def test_assets_come_from_swagger_ui_dist_with_their_content_type(name: str, content_type: str) -> None:
    response = docs_site.docs_response(f"/docs/assets/{name}")
    assert response is not None and response.status == 200
    assert response.headers["content-type"] == content_type
    assert response.body == (docs_site.ASSETS_DIR / name).read_bytes()


def test_the_document_is_the_committed_one() -> None:
    assert docs_site.DOCUMENT_PATH == openapi.DOCUMENT_PATH
    response = docs_site.docs_response("/docs/openapi.json")
    assert response is not None and response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == json.loads(openapi.DOCUMENT_PATH.read_text())


@pytest.mark.parametrize("name", [
    "../package.json", "..%2fpackage.json", "../../pyproject.toml", "%2e%2e/package.json",
    "/etc/passwd", "sub/../swagger-ui.css", "package.json", "index.html", "", "..", ".",
])
def test_only_swagger_ui_files_are_served(name: str) -> None:
    response = docs_site.docs_response(f"/docs/assets/{name}")
    assert response is not None and response.status == 404


@pytest.mark.parametrize("path", ["/", "/doc", "/docsx", "/docs/other", "/items/docs", "/openapi.json"])
def test_other_paths_are_not_the_docs_sites(path: str) -> None:
    assert docs_site.docs_response(path) is None


def test_a_missing_swagger_ui_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(docs_site, "ASSETS_DIR", tmp_path)
    response = docs_site.docs_response("/docs")
    assert response is not None and response.status == 503
    assert b"./dev setup" in response.body
