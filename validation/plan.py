"""The test-plan yaml: parsing and checking.

The original guide's syntax::

    load_spec:
      num_threads: 5      # users (JMeter threads), at least 1
      loops: 2            # iterations per user; 0 = forever (then a duration is required)
      ramp_time: 60       # seconds to start all users
      duration: 80        # seconds; a hard cut-off (0 or absent: none)
    url_list:
      - name: url1        # the label in the results
        url: http://proxy-access-control.default:9180
        method: GET
        user-agent: chrome

plus what the original dropped: ``https://`` urls (or ``protocol: https``), query strings,
``headers:`` (a mapping of header name to value) and ``body:`` (for POST, PUT, PATCH, DELETE).
A url may be written as the guide has it, ``<domain or IP>:<port>``, without a scheme.

Every problem is reported with the field it is in (``url_list[1].user-agent``); nothing is
accepted unless the whole plan is valid.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEFAULT_PLAN_NAME = "test.jmx"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
MAX_INT = 2**31 - 1

LOAD_FIELDS = ("num_threads", "loops", "ramp_time", "duration")
URL_FIELDS = ("name", "url", "method", "user-agent", "headers", "body", "protocol")
TOP_FIELDS = ("load_spec", "url_list")

_URL_CHAR = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class PlanError(ValueError):
    """A test plan was refused; ``problems`` lists (field, what is wrong), in plan order."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))


@dataclass(frozen=True)
class LoadSpec:
    num_threads: int
    loops: int = 1
    ramp_time: int = 0
    duration: int = 0

    @property
    def forever(self) -> bool:
        return self.loops == 0


@dataclass(frozen=True)
class Request:
    """One entry of ``url_list``, its url split the way JMeter's HTTP sampler wants it."""

    name: str
    url: str
    protocol: str
    host: str
    port: int
    path: str
    method: str = "GET"
    user_agent: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None

    @property
    def full_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class TestPlan:
    load: LoadSpec
    requests: tuple[Request, ...]
    name: str = DEFAULT_PLAN_NAME

    __test__ = False  # not a pytest test class

    @property
    def samples_expected(self) -> int | None:
        """Samples one JMeter engine produces when loops bound the run (None when unbounded)."""
        if self.load.forever:
            return None
        return self.load.num_threads * self.load.loops * len(self.requests)


def plan_name(raw: object, field: str = "test_plan") -> str:
    """A plan's file name: ``[A-Za-z0-9._-]``, ``.jmx`` added when missing; empty -> test.jmx."""
    if raw is None or raw == "":
        return DEFAULT_PLAN_NAME
    if not isinstance(raw, str) or not _PLAN_NAME.match(raw) or ".." in raw:
        raise PlanError([(field, f"{raw!r} is not a plan name (letters, digits, '.', '_', '-'; up to 96)")])
    return raw if raw.endswith(".jmx") else raw + ".jmx"


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, field: str, message: str) -> None:
        self.problems.append((field, message))

    def integer(self, data: Mapping[str, Any], key: str, field: str, low: int, default: int | None) -> int | None:
        if key not in data or data[key] is None:
            if default is None:
                self.fail(field, "is required")
            return default
        raw = data[key]
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            self.fail(field, f"must be a whole number, not {_kind(raw)}")
            return None
        if isinstance(raw, str):
            if not re.fullmatch(r"\s*-?\d+\s*", raw):
                self.fail(field, f"must be a whole number, not {raw!r}")
                return None
            raw = int(raw)
        if raw < low:
            self.fail(field, f"must be at least {low}, not {raw}")
            return None
        if raw > MAX_INT:
            self.fail(field, f"must be at most {MAX_INT}, not {raw}")
            return None
        return raw

    def text(self, data: Mapping[str, Any], key: str, field: str, required: bool) -> str | None:
        """A scalar as text (yaml may read ``user-agent: 5`` as a number); None when absent."""
        if key not in data or data[key] is None:
            if required:
                self.fail(field, "is required")
            return None
        raw = data[key]
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            self.fail(field, f"must be a string, not {_kind(raw)}")
            return None
        value = str(raw)
        if any(c in value for c in "\r\n\0"):
            self.fail(field, "must not contain line breaks or NUL")
            return None
        return value

    def unknown(self, data: Mapping[str, Any], known: tuple[str, ...], field: str) -> None:
        for key in data:
            if key not in known:
                where = f"{field}.{key}" if field else str(key)
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]}? " if close else ""
                self.fail(where, f"unknown field ({hint}known: {', '.join(known)})")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, float):
        return f"a decimal number ({value})"
    return f"{type(value).__name__} {value!r}"


def _parse_url(check: _Checker, raw: str, protocol: str | None, field: str) -> tuple[str, str, int, str] | None:
    text = raw.strip()
    if not text:
        check.fail(field, "is empty")
        return None
    bad = sorted(set(_URL_CHAR.sub("", text)))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        check.fail(field, f"{raw!r} contains {shown}, which a url cannot carry: percent-encode (space is %20)")
        return None
    has_scheme = "://" in text
    try:
        parts = urlsplit(text if has_scheme else f"{protocol or 'http'}://{text}")
        port = parts.port
    except ValueError as exc:
        check.fail(field, f"{raw!r} is not a url ({exc})")
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        check.fail(field, f"{raw!r}: the scheme must be http or https, not {parts.scheme!r}")
        return None
    if has_scheme and protocol and protocol != scheme:
        check.fail(field, f"{raw!r} says {scheme} but protocol says {protocol}")
        return None
    if parts.username is not None or parts.password is not None:
        check.fail(field, f"{raw!r}: credentials in the url are not supported (use an Authorization header)")
        return None
    if not parts.hostname:
        check.fail(field, f"{raw!r} has no host")
        return None
    if port == 0:
        check.fail(field, f"{raw!r}: port 0 is not a port")
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


def _headers(check: _Checker, raw: object, field: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        check.fail(field, f"must be a mapping of header name to value, not {_kind(raw)}")
        return ()
    headers: list[tuple[str, str]] = []
    for name in raw:
        where = f"{field}.{name}"
        if not isinstance(name, str) or not _TOKEN.match(name):
            check.fail(where, "is not a valid header name")
            continue
        text = check.text(raw, name, where, required=True)
        if text is not None:
            headers.append((name, text))
    return tuple(headers)


def _request(check: _Checker, raw: object, index: int) -> Request | None:
    field = f"url_list[{index}]"
    if not isinstance(raw, Mapping):
        check.fail(field, f"must be a mapping with name, url, method, user-agent; not {_kind(raw)}")
        return None
    before = len(check.problems)
    check.unknown(raw, URL_FIELDS, field)
    name = check.text(raw, "name", f"{field}.name", required=True)
    if name is not None and not name.strip():
        check.fail(f"{field}.name", "is empty")
    url = check.text(raw, "url", f"{field}.url", required=True)
    protocol = check.text(raw, "protocol", f"{field}.protocol", required=False)
    if protocol is not None:
        protocol = protocol.lower()
        if protocol not in ("http", "https"):
            check.fail(f"{field}.protocol", f"must be http or https, not {protocol!r}")
            protocol = None
    method = (check.text(raw, "method", f"{field}.method", required=False) or "GET").upper()
    if method not in METHODS:
        check.fail(f"{field}.method", f"must be one of {', '.join(METHODS)}, not {raw.get('method')!r}")
    agent = check.text(raw, "user-agent", f"{field}.user-agent", required=False)
    headers = _headers(check, raw.get("headers"), f"{field}.headers")
    if agent is not None and any(h.lower() == "user-agent" for h, _ in headers):
        check.fail(f"{field}.headers.User-Agent", f"repeats {field}.user-agent; give it once")
    body = check.text(raw, "body", f"{field}.body", required=False) if "body" in raw else None
    if body is not None and method in METHODS and method not in BODY_METHODS:
        check.fail(f"{field}.body", f"a {method} request has no body (body needs one of {', '.join(BODY_METHODS)})")
    parsed = _parse_url(check, url, protocol, f"{field}.url") if url is not None else None
    if len(check.problems) > before or parsed is None or name is None or url is None:
        return None
    scheme, host, port, path = parsed
    return Request(name, url, scheme, host, port, path, method, agent, headers, body)


def parse_plan(data: object, name: object = None) -> TestPlan:
    """Check a test plan (the yaml's content as Python data); raise PlanError listing every problem."""
    check = _Checker()
    try:
        plan_file = plan_name(name)
    except PlanError as exc:
        check.problems += exc.problems
        plan_file = DEFAULT_PLAN_NAME
    if not isinstance(data, Mapping):
        check.fail("", f"a test plan is a mapping with load_spec and url_list, not {_kind(data)}")
        raise PlanError(check.problems)
    check.unknown(data, TOP_FIELDS, "")
    load = None
    spec = data.get("load_spec")
    if spec is None:
        check.fail("load_spec", "is required")
    elif not isinstance(spec, Mapping):
        check.fail("load_spec", f"must be a mapping with {', '.join(LOAD_FIELDS)}; not {_kind(spec)}")
    else:
        check.unknown(spec, LOAD_FIELDS, "load_spec")
        threads = check.integer(spec, "num_threads", "load_spec.num_threads", 1, None)
        loops = check.integer(spec, "loops", "load_spec.loops", 0, 1)
        ramp = check.integer(spec, "ramp_time", "load_spec.ramp_time", 0, 0)
        duration = check.integer(spec, "duration", "load_spec.duration", 0, 0)
        if loops == 0 and duration == 0:
            check.fail("load_spec.duration", "loops 0 runs forever: give a duration (seconds) to stop it")
        if threads is not None and loops is not None and ramp is not None and duration is not None:
            load = LoadSpec(threads, loops, ramp, duration)
    requests: list[Request] = []
    urls = data.get("url_list")
    if urls is None:
        check.fail("url_list", "is required")
    elif not isinstance(urls, list):
        check.fail("url_list", f"must be a list of requests, not {_kind(urls)}")
    elif not urls:
        check.fail("url_list", "is empty: give at least one request")
    else:
        first_use: dict[str, int] = {}
        for i, entry in enumerate(urls):
            request = _request(check, entry, i)
            if request is None:
                continue
            if request.name in first_use:
                check.fail(
                    f"url_list[{i}].name",
                    f"{request.name!r} is already the name of url_list[{first_use[request.name]}]",
                )
                continue
            first_use[request.name] = i
            requests.append(request)
    if check.problems or load is None:
        raise PlanError(check.problems)
    return TestPlan(load, tuple(requests), plan_file)


def load_plan_text(text: str, source: str = "test plan", name: object = None) -> TestPlan:
    """Parse yaml text; a yaml syntax error is a PlanError naming the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError([("", f"{source} is not valid yaml: {where}{problem}")]) from None
    if data is None:
        raise PlanError([("", f"{source} is empty")])
    return parse_plan(data, name)


def load_plan_file(path: str | Path, name: object = None) -> TestPlan:
    """Read and check a test-plan yaml file."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError([("", f"cannot read {p}: {exc}")]) from None
    return load_plan_text(text, p.name, name)


def plan_to_data(plan: TestPlan) -> dict[str, Any]:
    """The plan as yaml-shaped data (what parse_plan reads back to the same plan)."""
    urls: list[dict[str, Any]] = []
    for r in plan.requests:
        entry: dict[str, Any] = {"name": r.name, "url": r.full_url, "method": r.method}
        if r.user_agent is not None:
            entry["user-agent"] = r.user_agent
        if r.headers:
            entry["headers"] = dict(r.headers)
        if r.body is not None:
            entry["body"] = r.body
        urls.append(entry)
    load = plan.load
    spec = {
        "num_threads": load.num_threads,
        "loops": load.loops,
        "ramp_time": load.ramp_time,
        "duration": load.duration,
    }
    return {"load_spec": spec, "url_list": urls}
