"""What a request must pass before a route's work starts: its size, where it comes from, the
type of its body, and a body parser that refuses what would keep a worker busy.

Cross-site rule (routes that change something): a browser page of another origin must not be
able to trigger a change, while cloverctl, curl and scripts (which send no ``Origin``) keep
working, GET forms included. A request is refused with 403 when

* ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site`` (a browser says the page that sent it
  is not this controller's; ``same-origin`` and ``none``, an address typed by the user, pass);
* ``Origin`` is there and is not this controller (``null`` included), compared by host and port
  with the ``Host`` header (or ``X-Forwarded-Host``, set by a proxy in front);
* there is no ``Origin`` but a ``Referer`` that is not this controller.

Browsers send ``Origin`` on every cross-site POST and on every fetch, and ``Sec-Fetch-Site`` on
every request (navigations and images included); a page cannot set any of these headers, nor
``Authorization``, without a CORS preflight, which the controller never grants. The token, when
one is configured, is checked after this.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import yaml
from flask import Request

from controller.errors import ApiError, bad_request

MAX_DEPTH = 32  # containers inside containers, in a JSON or yaml body
YAML_MAX_BYTES = 64 * 1024  # yaml is parsed in Python: bodies are config files, a few KiB
JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
BROWSER_SITES = ("cross-site", "same-site")

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


# -- size ---------------------------------------------------------------------------------------


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes (CLOVER_API_MAX_BODY_BYTES)")


def check_size(request: Request, limit: int) -> None:
    """413 for a declared body over ``limit``, before anything reads it."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)


# -- origin -------------------------------------------------------------------------------------


def _authority(url: str, default_scheme: str = "http") -> tuple[str, int] | None:
    """(host, port) of an origin or URL; None when it is not an http(s) one (``null``, garbage)."""
    try:
        parts = urlsplit(url if "//" in url else "//" + url)
        scheme = parts.scheme or default_scheme
        if scheme not in ("http", "https") or not parts.hostname:
            return None
        return parts.hostname.lower(), parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None


def _own(request: Request) -> set[tuple[str, int]]:
    names = [request.headers.get("Host", ""), request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()]
    found = {_authority(name, request.scheme) for name in names if name}
    return {a for a in found if a is not None}


def check_same_site(request: Request) -> None:
    """403 naming the header when the request comes from another site's page (see the module)."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    host = request.headers.get("Host", "?")
    if site in BROWSER_SITES:
        raise _cross_site("Sec-Fetch-Site", f"Sec-Fetch-Site is {site}", host)
    own = _own(request)
    origin = request.headers.get("Origin")
    if origin is not None:
        if _authority(origin) not in own:
            raise _cross_site("Origin", f"Origin {origin!r} is not this controller", host)
        return
    referer = request.headers.get("Referer")
    if referer and _authority(referer) not in own:
        raise _cross_site("Referer", f"Referer {referer[:200]!r} is not this controller", host)


def _cross_site(header: str, what: str, host: str) -> ApiError:
    return ApiError(
        403,
        f"cross-site request refused: {what} ({host}); a change is accepted only from this controller's own "
        "pages or from a client that sends no Origin (cloverctl, curl)",
        header,
    )


# -- body type ----------------------------------------------------------------------------------


def body_kind(mimetype: str) -> str | None:
    """json, yaml or form, from a Content-Type's media type; None for anything else."""
    mimetype = mimetype.lower()
    if mimetype in JSON_TYPES or (mimetype.startswith("application/") and mimetype.endswith("+json")):
        return "json"
    if mimetype in YAML_TYPES:
        return "yaml"
    return "form" if mimetype in FORM_TYPES else None


def check_type(request: Request, accepted: tuple[str, ...]) -> None:
    """415 for a body whose Content-Type is not one of ``accepted`` kinds (an empty body passes)."""
    if not request.get_data(cache=True).strip():
        return
    if body_kind(request.mimetype) in accepted:
        return
    wanted = {
        "json": "JSON (Content-Type: application/json)",
        "yaml": "yaml (application/yaml)",
        "form": "a form (multipart/form-data or application/x-www-form-urlencoded)",
    }
    raise ApiError(
        415,
        f"a body on {request.path} must be {' or '.join(wanted[k] for k in accepted)}, not "
        f"{request.mimetype or 'without a Content-Type'}",
        "Content-Type",
    )


# -- parsing ------------------------------------------------------------------------------------


def _too_deep() -> ApiError:
    return bad_request(f"the body nests deeper than {MAX_DEPTH} levels")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise bad_request(f"the body has a character that is not Unicode text: {exc.reason}") from None


def _check_tree(value: Any) -> None:
    """Depth at most MAX_DEPTH, string keys only (yaml allows others), text that can be encoded
    (JSON's \\ud800 escapes can name lone surrogates); each node seen once."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if isinstance(item, dict):
            if any(not isinstance(k, str) for k in item):
                raise bad_request("the body's field names must be strings")
            for key in item:
                _check_text(key)
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > MAX_DEPTH:
            raise _too_deep()
        pending.extend((child, depth + 1) for child in children)


def parse_json(data: bytes) -> Any:
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    _check_tree(value)
    return value


def parse_yaml(data: bytes) -> Any:
    """A yaml body: at most YAML_MAX_BYTES, no aliases (``*name``: a few hundred bytes of them
    expand to millions of nodes), at most MAX_DEPTH levels; checked on the parser's events
    before anything is built."""
    if len(data) > YAML_MAX_BYTES:
        raise ApiError(413, f"a yaml body is limited to {YAML_MAX_BYTES} bytes; send larger bodies as JSON")
    try:
        depth = 0
        for event in yaml.parse(data, Loader=_YAML_LOADER):
            if isinstance(event, yaml.AliasEvent):
                raise bad_request(f"the body's yaml uses an alias (*{event.anchor}); aliases are not accepted")
            if isinstance(event, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep()
            elif isinstance(event, _CLOSE):
                depth -= 1
        value = yaml.load(data, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        if "exceeded maximum nesting depth" in str(exc):  # libyaml's own limit (1000), met scanning ahead
            raise _too_deep() from None
        raise bad_request(f"the body is not valid yaml: {exc}") from None
    _check_tree(value)
    return value


def parse_body(request: Request) -> Any:
    """The request body as data: JSON, or yaml with a yaml content type; None when there is none.
    Any other Content-Type is refused (415)."""
    data = request.get_data(cache=True)
    if not data.strip():
        return None
    kind = body_kind(request.mimetype)
    if kind == "yaml":
        return parse_yaml(data)
    if kind != "json":
        check_type(request, ("json", "yaml"))
    return parse_json(data)
