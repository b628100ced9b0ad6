"""Errors the API answers with: a status, a message for people and, where it applies, the field
of the request that caused it.

Every error reply is JSON: ``{"error": <message>, "field": <field or null>, "status": <code>}``
(plus ``problems`` when a body has several). Messages start with the original controller's text
("Invalid value in LB json/yaml", "Error connecting to IDS via gRPC", ...) so that people who
know the original recognise them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class Problem:
    """One thing wrong with a request: where (``services[0].name``) and what."""

    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message}


@dataclass
class ApiError(Exception):
    """A request the controller refuses or could not carry out."""

    status: int
    message: str
    field: str | None = None
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "field": self.field, "status": self.status}
        if self.problems:
            out["problems"] = [p.as_dict() for p in self.problems]
        return out


def bad_request(message: str, field: str | None = None, problems: list[Problem] | None = None) -> ApiError:
    return ApiError(400, message, field, problems or [])


def invalid(prefix: str, problems: list[Problem]) -> ApiError:
    """A 400 for a body with problems: the first problem is in the message and names the field."""
    first = problems[0]
    where = f"{first.field}: " if first.field else ""
    return ApiError(400, f"{prefix}: {where}{first.message}", first.field, problems)
