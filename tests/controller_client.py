"""Calls to the test stack's controller, with its API token.

The test stack runs as a default install does: ``cloverctl local up`` made an API token
(``<state dir>/secrets/api-token``) and the controller needs it on every route that changes
something. Tests call the controller through here; a URL of another controller (a test's own,
with a token of its own) gets no token unless the call gives one."""

from __future__ import annotations

from typing import Any

import requests

from clover.config import Config


def token_headers(url: str) -> dict[str, str]:
    """``Authorization`` for a URL on the test stack's controller (its token), else nothing."""
    cfg = Config.from_env()
    on_stack = url == cfg.controller_url or url.startswith(cfg.controller_url + "/")
    return {"Authorization": f"Bearer {cfg.api_token}"} if cfg.api_token and on_stack else {}


def request(method: str, url: str, **kwargs: Any) -> requests.Response:
    """``requests.request`` with the token added (headers the call gives win)."""
    headers = {**token_headers(url), **(kwargs.pop("headers", None) or {})}
    return requests.request(method, url, headers=headers, **kwargs)


def get(url: str, **kwargs: Any) -> requests.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> requests.Response:
    return request("POST", url, **kwargs)
