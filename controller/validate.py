"""Checking a request body against its schema; every problem is named by its field."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from controller.errors import Problem, invalid
from controller.schemas import BODIES


@functools.cache
def _validator(title: str) -> Draft202012Validator:
    return Draft202012Validator(BODIES[title])


def field_name(path: Iterable[Any]) -> str:
    """``["services", 0, "name"]`` -> ``services[0].name``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {"string": "a string", "number": "a number", "integer": "a whole number", "array": "a list",
               "object": "a mapping of field names to values", "boolean": "true or false"}  # fmt: skip


def _problem(error: ValidationError) -> Problem:
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if kind == "required":
        missing = str(error.message).split("'")[1]
        owner_messages = schema.get("x-required-message", {})
        return Problem(field_name([*path, missing]), owner_messages.get(missing, "is required"))
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        name = extra[0] if extra else "?"
        return Problem(field_name([*path, name]), f"unknown field (expected one of {', '.join(allowed)})")
    if "x-message" in schema and kind in ("minItems", "type"):
        return Problem(field_name(path), str(schema["x-message"]))
    if "x-expect" in schema:
        return Problem(field_name(path), f"must be {schema['x-expect']}, not {_value(error.instance)}")
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        words = " or ".join(_TYPE_WORDS.get(str(w), str(w)) for w in wanted)
        return Problem(field_name(path), f"must be {words}, not {_kind(error.instance)}")
    if kind == "minItems":
        return Problem(field_name(path), f"must have at least {error.validator_value} item(s)")
    if kind == "minLength":
        return Problem(field_name(path), "must not be empty")
    if kind == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return Problem(field_name(path), f"must be one of {choices}, not {_value(error.instance)}")
    return Problem(field_name(path) or None, str(error.message))


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _extra_checks(schema: dict[str, Any], body: Any, path: list[Any]) -> list[Problem]:
    """What JSON Schema cannot say here: port ranges inside strings, positive numbers in strings."""
    problems: list[Problem] = []
    if not isinstance(body, dict):
        return problems
    for key, sub in schema.get("properties", {}).items():
        if key not in body:
            continue
        value = body[key]
        where = field_name([*path, key])
        if sub.get("x-port") and isinstance(value, str) and value.strip().isdigit() and not 0 < int(value) < 65536:
            problems.append(Problem(where, f"must be {sub['x-expect']}, not {_value(value)}"))
        if sub.get("x-positive") and isinstance(value, str):
            try:
                if float(value) <= 0:
                    problems.append(Problem(where, f"must be {sub['x-expect']}, not {_value(value)}"))
            except ValueError:
                pass
    return problems


def problems(schema: dict[str, Any], body: Any) -> list[Problem]:
    """Every problem of ``body`` against ``schema``, in field order."""
    validator = _validator(schema["title"]) if schema.get("title") in BODIES else Draft202012Validator(schema)
    errors: Sequence[ValidationError] = sorted(
        validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]
    )
    found = [_problem(e) for e in errors] + _extra_checks(schema, body, [])
    seen: set[tuple[str | None, str]] = set()
    unique = []
    for p in found:
        if (p.field, p.message) not in seen:
            seen.add((p.field, p.message))
            unique.append(p)
    return unique


def check(schema: dict[str, Any], body: Any, prefix: str) -> None:
    """Raise a 400 ApiError (message ``<prefix>: <field>: <problem>``) unless ``body`` fits."""
    if body is not None and not isinstance(body, dict):
        raise invalid(prefix, [Problem(None, f"the body must be a JSON object, not {_kind(body)}")])
    found = problems(schema, body if body is not None else {})
    if found:
        raise invalid(prefix, found)
