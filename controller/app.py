"""The controller's WSGI application: the REST API and the dashboard in one Flask app."""

from __future__ import annotations

from flask import Flask, Response, jsonify, redirect
from flask.typing import ResponseReturnValue

from clover.config import Config
from controller import api, openapi
from controller.services.compose import Services

DASHBOARD_PATH = "/dashboard/"


def create_app(cfg: Config, *, dashboard: bool = True) -> Flask:
    """The Flask app with every route; the Dash dashboard mounted at /dashboard/ (and reached
    from / and /visibility, the original's dashboard paths)."""
    app = Flask("clover-controller")
    app.config["CLOVER_API_TOKEN"] = cfg.api_token
    app.json.sort_keys = False  # type: ignore[attr-defined]  # the default provider (DefaultJSONProvider) has it
    services = Services.open(cfg)
    api.install(app, services)
    doc = openapi.document()

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(doc)

    @app.get("/api")
    @app.get("/api/docs")
    def api_docs() -> Response:
        return Response(openapi.docs_page(doc), mimetype="text/html")

    if dashboard:
        from dashboard.app import create_dashboard

        create_dashboard(app, services, DASHBOARD_PATH)

        @app.get("/")
        @app.get("/visibility")
        def dashboard_page() -> ResponseReturnValue:
            return redirect(DASHBOARD_PATH)

    return app
