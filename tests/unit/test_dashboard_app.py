"""The dashboard mounted on the controller: the page links its stylesheet, which Dash serves
from the package's assets/ folder."""

from __future__ import annotations

from pathlib import Path

from controller.api import services_of
from controller.app import create_app
from tests.unit.offline_controller import offline_config


def test_the_page_links_the_stylesheet_that_assets_serves(tmp_path: Path) -> None:
    app = create_app(offline_config(tmp_path))
    try:
        client = app.test_client()
        page = client.get("/dashboard/").text
        assert '<link rel="stylesheet" href="/dashboard/assets/clover.css?m=' in page
        css = client.get("/dashboard/assets/clover.css")
        assert (css.status_code, css.mimetype) == (200, "text/css")
        assert ".topbar { background: #1f3a5f;" in css.text
    finally:
        services_of(app).close()
