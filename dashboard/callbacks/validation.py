"""The Validation tab: the latest load test's state, summary and latency plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from dash import Dash, Input, Output, State, ctx, html, no_update

from controller.errors import ApiError
from controller.services.validation import ValidationService
from dashboard import figures, views
from dashboard.callbacks.replies import failure


def register(app: Dash, validation: ValidationService) -> None:
    @app.callback(
        Output("val-status", "children"),
        Output("val-summary", "children"),
        Output("val-latency", "figure"),
        Output("val-seen", "data"),
        Input("tabs", "value"),
        Input("val-refresh", "n_clicks"),
        Input("tick", "n_intervals"),
        State("val-seen", "data"),
    )
    def validation_view(tab: str, _: Any, __: Any, seen: Any) -> tuple[Any, Any, Any, Any]:
        if tab != "validation":
            return no_update, no_update, no_update, no_update
        try:
            status = validation.test_status()
        except ApiError as exc:
            unreachable = figures.empty("Load test latency (ms)", "validation service unreachable")
            return failure(exc), no_update, unreachable, None
        mark = f"{status['run_id']}:{status['state']}:{status['samples']}"
        if ctx.triggered_id == "tick" and mark == seen:
            return no_update, no_update, no_update, no_update  # nothing new: do not re-read the results
        if status["state"] == "idle":
            return (
                "No load test has been run yet.",
                views.table(views.SUMMARY_HEADER, [], "summary-grid"),
                figures.empty("Load test latency (ms)", "no load test results yet"),
                mark,
            )
        line = (f"Run {status['run_id']} ({status['test_plan']}): {status['state']}, {status['samples']} samples, "
                f"{status['errors']} errors" + (f" — {status['detail']}" if status.get("detail") else ""))  # fmt: skip
        try:
            summary = [asdict(r) for r in validation.results("summary").summary]
            samples = json.loads(validation.results("detail", "json").content or "[]")
        except (ApiError, ValueError) as exc:
            return line, html.Div(str(exc), className="error"), no_update, None
        return (
            line,
            views.table(views.SUMMARY_HEADER, views.summary_rows(summary), "summary-grid"),
            figures.latency_timeline(samples),
            mark,
        )
