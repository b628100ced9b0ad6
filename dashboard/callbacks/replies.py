"""How a callback shows the outcome of what it asked a service to do."""

from __future__ import annotations

from collections.abc import Callable

from dash import html

from controller.errors import ApiError


def failure(exc: ApiError) -> html.Div:
    return html.Div(f"{exc.message}", className="error")


def ok(text: str) -> html.Div:
    return html.Div(text, className="ok")


def relayed(text: str) -> html.Div:
    """A relayed reply: the original's replies say "Failed ..." when nothing was done."""
    return html.Div(text, className="error" if text.startswith("Failed") else "ok")


def attempt(action: Callable[[], html.Div]) -> html.Div:
    """What ``action`` shows, or the ApiError it raised."""
    try:
        return action()
    except ApiError as exc:
        return failure(exc)
