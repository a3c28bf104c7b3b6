"""The demo pages' static files: the right file with the right type, nothing outside devstack/web."""

from __future__ import annotations

import re

import pytest

from devstack.web_site import WEB_DIR, web_response


@pytest.mark.parametrize("path, file", [("/shop", "shop.html"), ("/marketing", "marketing.html"),
                                        ("/shop?customer=u-00002", "shop.html")])
def test_the_pages_are_served_as_html(path, file):
    response = web_response("GET", path)

    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.body == (WEB_DIR / file).read_bytes()


@pytest.mark.parametrize("file, content_type", [("app.css", "text/css; charset=utf-8"),
                                                ("api.js", "text/javascript; charset=utf-8"),
                                                ("shop.js", "text/javascript; charset=utf-8")])
def test_assets_are_served_with_their_content_type(file, content_type):
    response = web_response("GET", f"/web/{file}")

    assert (response.status, response.headers["content-type"]) == (200, content_type)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.body == (WEB_DIR / file).read_bytes()


def test_every_file_a_page_loads_is_served():
    """Each page's stylesheet and scripts, and the modules those scripts import."""
    for page in ("/shop", "/marketing"):
        wanted = re.findall(r'(?:src|href)="(/web/[^"]+)"', web_response("GET", page).body.decode())
        for script in [path for path in wanted if path.endswith(".js")]:
            wanted += [f"/web/{name}" for name in
                       re.findall(r'from "\./([^"]+)"', web_response("GET", script).body.decode())]
        assert len(wanted) >= 3
        assert all(web_response("GET", path).status == 200 for path in wanted), wanted


@pytest.mark.parametrize("path", [
    "/web/../web_site.py", "/web/..%2Fweb_site.py", "/web/%2e%2e/gateway.py", "/web//etc/passwd",
    "/web/sub/app.css", "/web/.hidden.css", "/web/missing.js", "/web/", "/web/shop.html.bak", "/web/README",
])
def test_paths_outside_the_web_folder_or_unknown_files_are_refused(path):
    response = web_response("GET", path)

    assert response.status == 404
    assert b"import" not in response.body  # no file content leaks into the answer


def test_a_file_of_an_unknown_type_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("devstack.web_site.WEB_DIR", tmp_path)
    (tmp_path / "notes.txt").write_text("secret")

    assert web_response("GET", "/web/notes.txt").status == 404


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/events"), ("GET", "/users/u-1"),
                                          ("GET", "/shopping"), ("GET", "/dev/trusted/segments"),
                                          ("POST", "/shop"), ("DELETE", "/web/app.css")])
def test_anything_else_is_left_to_the_api(method, path):
    assert web_response(method, path) is None


def test_head_is_answered_like_get():
    assert web_response("HEAD", "/marketing").status == 200
