"""The API token in the dashboard: when ``CLOVER_API_TOKEN`` is set, every control that changes
something asks for it first (kept in the browser tab's session storage), as the REST API does."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dash import Dash, Input, Output, html, no_update

from dashboard.callbacks.replies import attempt


@dataclass(frozen=True)
class TokenGate:
    token: str | None

    def allows(self, given: Any) -> bool:
        return not self.token or (isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode()))

    def change(self, given: Any, action: Callable[[], html.Div]) -> html.Div:
        """What ``action`` shows when ``given`` is the token (or none is needed); else a refusal."""
        return attempt(action) if self.allows(given) else refused()


def refused() -> html.Div:
    return html.Div("Enter the API token (top right) to change anything.", className="error")


def register(app: Dash, gate: TokenGate) -> None:
    if not gate.token:
        return

    @app.callback(Output("token", "data"), Output("token-state", "children"), Input("token-input", "value"))
    def save_token(value: str | None) -> tuple[Any, str]:
        if not value:
            return no_update, "not logged in"
        return value, "token accepted" if gate.allows(value) else "wrong token"
