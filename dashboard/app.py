"""The Dash app: the layout (``dashboard.layout``), each tab's callbacks (``dashboard.callbacks``)
and the stylesheet (``assets/``), mounted on the controller's Flask app."""

from __future__ import annotations

from pathlib import Path

from dash import Dash
from flask import Flask

from controller.services.compose import Services
from dashboard.callbacks import chain, graph, token, validation, visibility, waf
from dashboard.layout import layout

ASSETS = Path(__file__).parent / "assets"


def create_dashboard(server: Flask, services: Services, path: str = "/dashboard/") -> Dash:
    """Mount the dashboard on ``server`` at ``path``."""
    app = Dash(
        "clover-dashboard",
        server=server,  # type: ignore[arg-type]  # Dash annotates a bool or a factory; it takes a Flask app too
        url_base_pathname=path,
        title="Clover",
        update_title=None,  # type: ignore[arg-type]  # Dash annotates a str; None leaves the title alone
        serve_locally=True,
        assets_folder=str(ASSETS),
    )
    gate = token.TokenGate(services.cfg.api_token)
    app.layout = lambda: layout(bool(gate.token))
    token.register(app, gate)
    visibility.register(app, services.visibility, gate)
    chain.register(app, services.chain, gate)
    validation.register(app, services.validation)
    waf.register(app, services.waf)
    graph.register(app, services.graph)
    return app
