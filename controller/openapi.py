"""The OpenAPI 3.1 description of the REST API, built from the route table and the schemas."""

from __future__ import annotations

import copy
import html
import re
from typing import Any

from controller import schemas
from controller.api import HTML, JSON, ROUTES, TEXT, Route

TOKEN_NOTE = "Needs the API token (Authorization: Bearer <token>) when CLOVER_API_TOKEN is set."
SITE_NOTE = "Refused (403) when a browser sends it from another site's page (Origin, Referer, Sec-Fetch-Site)."


def _path(route: Route) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.path)


def _ref(title: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{title}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _operation(route: Route, method: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": method.lower() + "_" + re.sub(r"[^A-Za-z0-9]+", "_", _path(route)).strip("_"),
    }
    description = []
    if route.new:
        description.append("New in this implementation (not in the original controller).")
    if route.mutating:
        description += [TOKEN_NOTE, SITE_NOTE]
        op["security"] = [{"bearer": []}, {}]
    if description:
        op["description"] = " ".join(description)
    params = [
        {"name": name, "in": "path", "required": True, "description": text, "schema": {"type": "string"}}
        for name, text in route.path_params.items()
    ]
    params += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": kind}}
        for name, kind, text in route.query
    ]
    if params:
        op["parameters"] = params
    if route.body:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": _ref(route.body)},
                        "application/yaml": {"schema": _ref(route.body)}},
        }  # fmt: skip
    if route.path == "/upload":
        op["requestBody"] = {
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
            }
        }
    ok: dict[str, Any]
    if route.reply == JSON:
        ok = {"description": "OK", "content": {"application/json": {"schema": _ref(route.reply_schema or "Object")}}}
    elif route.reply == HTML:
        ok = {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}
    elif route.reply == TEXT:
        ok = {
            "description": "The service's reply text (JSON with Accept: application/json)",
            "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": _ref("Message")}},
        }
    else:
        ok = {"description": "OK", "content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    responses: dict[str, Any] = {"200": ok}
    if route.reply != HTML:
        responses["400"] = _error("Bad input; `field` names the field")
    if route.mutating:
        responses["401"] = _error("No API token given (a token is configured)")
        responses["403"] = _error("Wrong API token, or a request from another site's page (Origin, Referer or "
                                  "Sec-Fetch-Site; `field` names the header)")  # fmt: skip
    if route.mutating or route.body:
        responses["413"] = _error("The body is larger than CLOVER_API_MAX_BODY_BYTES (yaml: 64 KiB)")
        responses["415"] = _error("A body that is not JSON or yaml (/upload: not a form)")
    if route.reply != HTML:
        responses["404"] = _error("Nothing there (no run yet, no such alert field, ...)")
        responses["409"] = _error("The service is in the wrong state (e.g. stopping a stopped collector)")
        responses["500"] = _error("The service failed")
        responses["503"] = _error("A service (Redis, the collector, a pod, the validation service) cannot be reached")
    op["responses"] = responses
    return op


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without our internal markers that are not OpenAPI extensions."""
    return copy.deepcopy(schema)


def document(server_url: str | None = None) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in ROUTES:
        item = paths.setdefault(_path(route), {})
        for method in route.methods:
            item[method.lower()] = _operation(route, method)
    paths["/openapi.json"] = {"get": {"summary": "This description", "tags": ["misc"], "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}}  # fmt: skip
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "clover-controller",
            "version": "1.0",
            "description": "Visibility, the sample chain and validation of Clover (a re-implementation of OPNFV "
            "Clover Hunter's clover-controller). Routes and bodies are the original's; errors are JSON naming the "
            "field. The dashboard is at /dashboard/.",
        },
        "paths": paths,
        "components": {
            "schemas": {title: _clean(s) for title, s in {**schemas.BODIES, **schemas.REPLIES}.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": TOKEN_NOTE}},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def docs_page(doc: dict[str, Any]) -> str:
    """A plain HTML index of the routes (no scripts: it works offline)."""
    rows = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            lock = " &#128274;" if "security" in op else ""
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}{lock}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>clover-controller API</title></head><body>"
        "<h1>clover-controller API</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> "
        "(OpenAPI 3.1). &#128274; = needs the API token when one is configured. Dashboard: "
        "<a href='/dashboard/'>/dashboard/</a>.</p><table border='1' cellpadding='4'>"
        "<tr><th>method</th><th>path</th><th>what</th></tr>" + "".join(rows) + "</table></body></html>"
    )
