"""Schemathesis over the controller's own /openapi.json: every operation, valid and invalid
requests (at most 25 each, from a fixed seed), against the controller
in process (WSGI) with every backing service on a closed port. Whatever a client sends, the
answer is a 4xx or a 2xx, or 503 saying which service could not be reached; never a 500. With
CLOVER_API_TOKEN set, no route that changes something answers 2xx without the token.

The same selection of tests sends the same requests on every run (Hypothesis also draws on literal constants
of the project modules that are loaded, so running this file alone sends other requests than
``make test`` does; each is repeatable). Coverage-phase cases are left out: with them the run took
about three minutes (they passed too)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from flask import Flask
from schemathesis.config import SchemathesisConfig

from controller import openapi
from controller.api import ROUTES, services_of
from tests.unit.offline_controller import offline_app

TOKEN = "fuzz-s3cret"
SEED = 20260518
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": 25, "deterministic": True, "database": "none"},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "suppress-health-check": ["all"],
    }
)
SCHEMA = schemathesis.openapi.from_dict(openapi.document(), config=CONFIG)
MUTATING = {(method, openapi._path(r)) for r in ROUTES if r.mutating for method in r.methods}


@dataclass
class Controllers:
    open: Flask
    guarded: Flask


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controllers]:
    state = tmp_path_factory.mktemp("fuzz-state")
    both = Controllers(offline_app(state), offline_app(state, api_token=TOKEN))
    yield both
    for app in (both.open, both.guarded):
        services_of(app).close()


def _no_server_error(reply: Any, what: str) -> None:
    """A 5xx only as 503 naming the service that is not there (the /health probe says degraded)."""
    status = reply.status_code
    if status < 500:
        return
    try:
        payload = json.loads(reply.content)
    except ValueError:
        payload = None
    payload = payload if isinstance(payload, dict) else {}
    unreachable = str(payload.get("error", "")).startswith("Error connecting to") or payload.get("redis") == (
        "unreachable"
    )
    assert status == 503 and unreachable, f"{what}: {status} {reply.content[:300]!r}"


@SCHEMA.parametrize()
def test_no_request_gets_a_server_error_and_no_change_passes_without_the_token(
    case: Any, controllers: Controllers
) -> None:
    _no_server_error(case.call(app=controllers.open), "without a token configured")
    reply = case.call(app=controllers.guarded)
    _no_server_error(reply, "with a token configured")
    if (case.method.upper(), case.path) in MUTATING and 200 <= reply.status_code < 300:
        sent = reply.request.headers.get("Authorization")
        assert sent == f"Bearer {TOKEN}", f"{case.method} {case.path} changed something without the token"
    authorized = case.call(app=controllers.guarded, headers={"Authorization": f"Bearer {TOKEN}"})
    _no_server_error(authorized, "with the token")
