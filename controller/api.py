"""The REST API: the original controller's routes (docs/compatibility.md §5a, §5b, §5d), plus a few new ones.

Routes are declared once, in ``ROUTES``; the Flask views, the token check and the OpenAPI
description (``/openapi.json``) all come from that table.

Replies keep the original's shapes: relays answer the service's text (``Modified nginx
config``), stats and config answer JSON. A client that sends ``Accept: application/json`` gets
the texts as ``{"message": ...}``. Errors are always JSON and name the field at fault.
Bodies may come as JSON (or yaml, with a yaml content type); on GET too, as the original's
clients sent them. What a request must pass first (its size, where it comes from, its body's
type, depth and yaml aliases) is ``controller.guard``.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from controller import guard, schemas
from controller.errors import ApiError, bad_request
from controller.services.chain import ChainService
from controller.services.compose import Services
from controller.services.logs import logs_page, search_logs
from controller.services.validation import ValidationService
from controller.services.visibility import VisibilityService
from controller.services.waf import WafService
from controller.validate import check

log = logging.getLogger(__name__)

TEXT, JSON, HTML = "text", "json", "html"


@dataclass(frozen=True)
class Route:
    """One REST route: what it does, what it takes, what it answers."""

    path: str
    methods: tuple[str, ...]
    summary: str
    view: Callable[..., Any]
    tag: str
    mutating: bool = False
    body: str | None = None  # title of the request body schema
    body_required: bool = False
    reply: str = TEXT
    reply_schema: str | None = None
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON Schema type, description)
    new: bool = False
    path_params: dict[str, str] = field(default_factory=dict)
    accepts: tuple[str, ...] = ("json", "yaml")  # body kinds (controller.guard.body_kind)


SERVICES_EXTENSION = "clover_services"


def services_of(app: Flask) -> Services:
    """The services ``install`` gave ``app`` (whoever made the app closes them)."""
    found: Services = app.extensions[SERVICES_EXTENSION]
    return found


def services() -> Services:
    return services_of(current_app)


def visibility() -> VisibilityService:
    return services().visibility


def chain() -> ChainService:
    return services().chain


def validation() -> ValidationService:
    return services().validation


def waf() -> WafService:
    return services().waf


def body() -> Any:
    """The request body: JSON, or yaml with a yaml content type; None when there is none."""
    return guard.parse_body(request)


def wants_json() -> bool:
    accept = request.accept_mimetypes
    return "application/json" in accept.values() and accept.best_match(["text/plain", "application/json"]) == (
        "application/json"
    )


def text_reply(message: str, **extra: Any) -> Response:
    if wants_json():
        return jsonify({"message": message, **extra})
    return Response(message, mimetype="text/plain")


def _int_arg(name: str, default: int | None, low: int = 0) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be a whole number, not {raw!r}", name) from None
    if value < low:
        raise bad_request(f"{name} must be {low} or more, not {value}", name)
    return value


def _flag(name: str) -> bool:
    raw = request.args.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise bad_request(f"{name} must be true or false, not {raw!r}", name)


def _test_page(what: str) -> str:
    return f"<h1 style='color:blue'>{what}</h1>"


# -- views ---------------------------------------------------------------------------------


def collector_init() -> Response:
    return text_reply(visibility().init_visibility())


def collector_truncate() -> Response:
    return text_reply(visibility().truncate())


def collector_start() -> Response:
    return text_reply(visibility().start_collector(body()))


def collector_stop() -> Response:
    return text_reply(visibility().stop_collector())


def collector_status() -> Response:
    return jsonify(visibility().collector_status())


def visibility_set() -> Response:
    return text_reply(visibility().set_visibility(body()))


def visibility_clear() -> Response:
    return text_reply(visibility().clear())


def visibility_stats(s_type: str) -> Response:
    payload = body()
    if payload is not None:
        check(schemas.STATS_REQUEST, payload, "Invalid value in json/yaml")
        s_type = payload.get("stat_type", s_type)
    s_type = request.args.get("stat_type", s_type)
    limit = _int_arg("limit", 51)
    return jsonify(visibility().stats(s_type, None if limit == 0 else limit, request.args.get("source")))


def visibility_config(c_type: str) -> Response:
    return jsonify(visibility().config(c_type))


def visibility_urls(service: str) -> Response:
    return jsonify(visibility().url_stats(service, _flag("window"), request.args.get("source")))


def visibility_graph() -> Response:
    return jsonify(services().graph.graph(_flag("window"), request.args.get("source")))


def visibility_metrics() -> Response:
    cells = []
    for name, value in visibility().metric_values():
        cells.append(
            '    <div class="large-3 cell">&nbsp;</div>\n'
            f'    <div class="large-5 medium-3 cell">\n        {html.escape(name)}\n    </div>\n'
            f'    <div class="large-3 medium-3 cell">\n        {html.escape(value or "")}\n    </div>\n'
            '    <div class="large-1 cell">&nbsp;</div>\n'
        )
    return Response("".join(cells), mimetype="text/html")


def nginx_lb() -> Response:
    return text_reply(chain().modify_lb(body()))


def nginx_server() -> Response:
    return text_reply(chain().modify_server(body()))


def nginx_proxy() -> Response:
    return text_reply(chain().modify_proxy(body()))


def nginx_config(name: str) -> Response:
    return jsonify(chain().chain_config(name))


def snort_addrule() -> Response:
    return text_reply(chain().add_rule(body()))


def snort_start() -> Response:
    return text_reply(chain().start_ids())


def snort_stop() -> Response:
    return text_reply(chain().stop_ids())


def snort_get_events() -> Response:
    """One field of an alert: from the query (``?event_key=snort_event:1&field=msg``) or, as the
    original's clients did, from a JSON body on the GET."""
    payload = body()
    if payload is not None and not isinstance(payload, dict):
        check(schemas.SNORT_EVENT_QUERY, payload, "Invalid IDS event query")  # refuses a non-object
    query = {k: request.args[k] for k in ("event_key", "field") if k in request.args}
    merged = {**(payload or {}), **query}
    check(schemas.SNORT_EVENT_QUERY, merged, "Invalid IDS event query")
    value = chain().event_field(str(merged["event_key"]), str(merged["field"]))
    if value is None:
        raise ApiError(404, f"no field {merged['field']!r} in {merged['event_key']!r}", "event_key")
    if wants_json():
        return jsonify({"event_key": merged["event_key"], "field": merged["field"], "value": value.decode("latin-1")})
    return Response(value, mimetype="application/octet-stream")


def snort_events() -> Response:
    return jsonify(chain().alerts(_int_arg("limit", 20) or 0))


def snort_status() -> Response:
    return jsonify(chain().ids_status())


def snort_rules() -> Response:
    return jsonify({"rules": chain().ids_rules(request.args.get("scope", "local"), request.args.getlist("sid"))})


def snort_delrule() -> Response:
    return text_reply(chain().delete_rules(body()))


def waf_events() -> Response:
    return jsonify(waf().alerts(_int_arg("limit", 20) or 0))


def waf_audit() -> Response:
    return jsonify(waf().audit_log(_int_arg("limit", 20) or 0))


def waf_status() -> Response:
    return jsonify(waf().status())


def logs() -> Response:
    args = request.args
    limit = _int_arg("limit", 100, 1) or 100
    found = search_logs(args.get("trace"), args.get("service"), args.get("since"), limit)
    if args.get("format") == "html":
        what = f"trace {args['trace']}" if args.get("trace") else f"service {args.get('service') or 'all'}"
        return Response(logs_page(found, f"Logs of {what}"), mimetype="text/html")
    return jsonify(found)


def jmeter_gen() -> Response:
    return text_reply(validation().gen_test(body(), request.args.get("name")))


def jmeter_start() -> Response:
    started = validation().start_test(body())
    return text_reply(started.message, pid=started.pid, run_id=started.run_id)


def jmeter_results(r_type: str) -> Response:
    results = validation().results(r_type, request.args.get("format", "").lower())
    if wants_json():
        head = results.message[: -len(results.content)] if results.content else results.message
        return jsonify(
            {
                "message": head.strip(),
                "content": results.content,
                "run_id": results.run_id,
                "summary": [asdict(row) for row in results.summary],
            }
        )
    return Response(results.message, mimetype="text/plain")


def jmeter_status() -> Response:
    return jsonify(validation().test_status())


def jmeter_stop() -> Response:
    return text_reply(validation().stop_test(_flag("now")))


def upload() -> Response:
    fields = {k: v for k, v in request.form.items() if isinstance(k, str)}  # a multipart part may have no name
    return text_reply(chain().record_upload(fields))


def upload_get() -> Response:
    return jsonify(chain().uploads())


def health() -> Response:
    ok = services().redis.reachable()
    return Response(
        json.dumps({"status": "ok" if ok else "degraded", "redis": "ok" if ok else "unreachable"}),
        status=200 if ok else 503,
        mimetype="application/json",
    )


def _html(text: str) -> Callable[[], Response]:
    def view() -> Response:
        return Response(text, mimetype="text/html")

    return view


COLLECTOR, VISIBILITY, SAMPLE_CHAIN, VALIDATION, MISC = "collector", "visibility", "sample chain", "validation", "misc"
GET_OR_POST = ("GET", "POST")
SOURCE_Q = (
    "source",
    "string",
    "figures as one source measured them: jaeger, zipkin or clovisor (default: each "
    "service's source that saw the most of its requests)",
)
STAT_Q = (("limit", "integer", "how many of each *_count list (highest counts first; 0 = all; default 51)"),
          ("stat_type", "string", "overrides the path's type"), SOURCE_Q)  # fmt: skip

ROUTES: tuple[Route, ...] = (
    Route("/collector/init", ("GET",), "Create the visibility keyspace and tables (InitVisibility)",
          collector_init, COLLECTOR, mutating=True),
    Route("/collector/truncate", ("GET",), "Truncate the visibility tables (TruncateVisibility)",
          collector_truncate, COLLECTOR, mutating=True),
    Route("/collector/start", GET_OR_POST,
          "Start collecting (StartCollector); missing fields take the configured defaults",
          collector_start, COLLECTOR, mutating=True, body="CollectorStart"),
    Route("/collector/stop", ("GET",), "Stop collecting (StopCollector)", collector_stop, COLLECTOR, mutating=True),
    Route("/collector/set", GET_OR_POST, "Set what visibility tracks (as /visibility/set)", visibility_set,
          COLLECTOR, mutating=True,
          body="VisibilityConfig", body_required=True),
    Route("/collector/status", ("GET",), "The collector's state and counters", collector_status, COLLECTOR, reply=JSON,
          reply_schema="Object", new=True),
    Route("/collector/test", ("GET",), "Test page", _html(_test_page("Collector API Test Response")), COLLECTOR,
          reply=HTML),
    Route("/visibility/clear", ("GET",), "Truncate the tables and reset every derived Redis key",
          visibility_clear, VISIBILITY, mutating=True),
    Route("/visibility/get/stats/<s_type>", GET_OR_POST, "Analysed results: system, metrics, tracing or all",
          visibility_stats, VISIBILITY, body="StatsRequest", reply=JSON, reply_schema="Stats", query=STAT_Q,
          path_params={"s_type": "system, metrics, tracing or all"}),
    Route("/visibility/get/urls/<service>", ("GET",), "Per-URL figures of one tracked service", visibility_urls,
          VISIBILITY, reply=JSON, reply_schema="UrlStats", new=True,
          query=(("window", "boolean", "the sliding window's figures instead of the whole retention"), SOURCE_Q),
          path_params={"service": "service name (- or _)"}),
    Route("/visibility/get/graph", ("GET",), "The mesh as a graph: caller -> callee edges with their figures",
          visibility_graph, VISIBILITY, reply=JSON, reply_schema="Graph", new=True,
          query=(("window", "boolean", "the sliding window's edges instead of the whole retention"),
                 ("source", "string", "edges as one source measured them: jaeger, zipkin or clovisor (default: each "
                  "edge's source that saw the most of its requests)"))),
    Route("/visibility/get/<c_type>", GET_OR_POST, "What visibility tracks: services, metrics or all",
          visibility_config, VISIBILITY, reply=JSON, reply_schema="VisibilityConfigReply",
          path_params={"c_type": "services, metrics or all"}),
    Route("/visibility/set", GET_OR_POST, "Set what visibility tracks", visibility_set, VISIBILITY, mutating=True,
          body="VisibilityConfig", body_required=True),
    Route("/visibility/metrics", ("GET",), "HTML rows: each tracked Prometheus name and its latest value",
          visibility_metrics, VISIBILITY, reply=HTML),
    Route("/nginx/lb", GET_OR_POST, "Change a load balancer's server list (ModifyLB)", nginx_lb, SAMPLE_CHAIN,
          mutating=True,
          body="LoadBalancer", body_required=True),
    Route("/nginx/server", GET_OR_POST, "Change a server's site, locations and files (ModifyServer)", nginx_server,
          SAMPLE_CHAIN,
          mutating=True, body="Server", body_required=True),
    Route("/nginx/proxy", GET_OR_POST, "Change the proxy's upstream, mirror or block time (ModifyProxy)",
          nginx_proxy, SAMPLE_CHAIN,
          mutating=True, body="Proxy", new=True),
    Route("/nginx/config/<name>", ("GET",), "The running configuration of a proxy, lb or server pod",
          nginx_config, SAMPLE_CHAIN, reply=JSON, reply_schema="Object", new=True,
          path_params={"name": "pod name, e.g. http-lb-v2"}),
    Route("/nginx/test", ("GET",), "Test page", _html(_test_page("Nginx API Test Response")), SAMPLE_CHAIN, reply=HTML),
    Route("/snort/addrule", GET_OR_POST, "Add a rule to snort-ids' local rules (AddRules)", snort_addrule, SAMPLE_CHAIN,
          mutating=True, body="IdsRule", body_required=True),
    Route("/snort/start", ("GET",), "Start the IDS engine (StartSnort)", snort_start, SAMPLE_CHAIN, mutating=True),
    Route("/snort/stop", ("GET",), "Stop the IDS engine and clear its logs (StopSnort)", snort_stop, SAMPLE_CHAIN,
          mutating=True),
    Route("/snort/get_events", ("GET",), "One field of an IDS alert hash, raw", snort_get_events, SAMPLE_CHAIN,
          body="SnortEventQuery", reply="bytes",
          query=(("event_key", "string", "e.g. snort_event:1"), ("field", "string", "e.g. msg"))),
    Route("/snort/events", ("GET",), "The newest IDS alerts", snort_events, SAMPLE_CHAIN, reply=JSON,
          reply_schema="Object",
          new=True, query=(("limit", "integer", "how many (default 20)"),)),
    Route("/snort/status", ("GET",), "The IDS engine's state and counts", snort_status, SAMPLE_CHAIN, reply=JSON,
          reply_schema="Object", new=True),
    Route("/snort/rules", ("GET",), "snort-ids' rules", snort_rules, SAMPLE_CHAIN, reply=JSON, reply_schema="Object",
          new=True,
          query=(("scope", "string", "local (default) or all"), ("sid", "string", "only this sid (repeatable)"))),
    Route("/snort/delrule", ("POST",), "Delete rules from snort-ids' local rules (DeleteRules)", snort_delrule,
          SAMPLE_CHAIN,
          mutating=True, new=True, body="IdsRuleDelete", body_required=True),
    Route("/snort/test", ("GET",), "Test page", _html(_test_page("Snort API Test Response")), SAMPLE_CHAIN, reply=HTML),
    Route("/waf/events", ("GET",), "The newest WAF alerts (modsecurity-crs)", waf_events, SAMPLE_CHAIN, reply=JSON,
          reply_schema="Object", new=True, query=(("limit", "integer", "how many (default 20)"),)),
    Route("/waf/audit", ("GET",), "The newest entries of the WAF's audit log (ModSecurity JSON)", waf_audit,
          SAMPLE_CHAIN, reply=JSON, reply_schema="Object", new=True,
          query=(("limit", "integer", "how many (default 20)"),)),
    Route("/waf/status", ("GET",), "The WAF's CRS mode and counts, and the proxy's check settings and counts",
          waf_status, SAMPLE_CHAIN, reply=JSON, reply_schema="Object", new=True),
    Route("/logs", ("GET",), "The sample chain's access-log entries (log store): of a trace, of a service, since",
          logs, VISIBILITY, reply=JSON, reply_schema="Object", new=True,
          query=(("trace", "string", "trace id (32 hex digits)"), ("service", "string", "service or pod name"),
                 ("since", "string", "e.g. 30s, 10m, 2h, 7d"), ("limit", "integer", "how many, newest (default 100)"),
                 ("format", "string", "json (default) or html (a page, what the dashboard links open)"))),
    Route("/jmeter/gen", GET_OR_POST, "Generate the JMeter plan from a test-plan body (GenTest)", jmeter_gen,
          VALIDATION,
          mutating=True, body="TestPlan", body_required=True,
          query=(("name", "string", "plan name on the master (default test.jmx)"),)),
    Route("/jmeter/create", GET_OR_POST, "Same as /jmeter/gen", jmeter_gen, VALIDATION, mutating=True, body="TestPlan",
          body_required=True, query=(("name", "string", "plan name on the master (default test.jmx)"),)),
    Route("/jmeter/start", GET_OR_POST, "Start the plan (StartTest)", jmeter_start, VALIDATION, mutating=True,
          body="TestStart"),
    Route("/jmeter/results/<r_type>", ("GET",), "The last run's log, detail (JTL) or summary", jmeter_results,
          VALIDATION, query=(("format", "string", "detail: csv|json; summary: text|csv|json"),),
          path_params={"r_type": "log, detail (or results), summary"}),
    Route("/jmeter/status", ("GET",), "The state of the current or last run", jmeter_status, VALIDATION, reply=JSON,
          reply_schema="Object", new=True),
    Route("/jmeter/stop", GET_OR_POST, "Stop the running test", jmeter_stop, VALIDATION, mutating=True, new=True,
          query=(("now", "boolean", "abort requests in flight"),)),
    Route("/jmeter/test", ("GET",), "Test page", _html(_test_page("Jmeter API Test Response")), VALIDATION, reply=HTML),
    Route("/upload", GET_OR_POST, "Record uploaded files (form fields <field>.name/.path/.server)", upload, MISC,
          mutating=True, accepts=("form",)),
    Route("/upload/get", GET_OR_POST, "The recorded uploads (name:path:server)", upload_get, MISC, reply=JSON,
          reply_schema="Object"),
    Route("/test", ("GET",), "Test page", _html(_test_page("clover-controller up")), MISC, reply=HTML),
    Route("/health", ("GET",), "The controller and its Redis", health, MISC, reply=JSON, reply_schema="Object",
          new=True),
)  # fmt: skip


def _authorized(token: str) -> bool:
    given = request.headers.get("X-Clover-Token", "")
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _guard(route: Route) -> Callable[..., Any]:
    """The route's view behind its checks: (the body size, before any view: ``install``), then
    for a route that changes something where the request comes from (controller.guard) and the
    token; then the body's type, for a route that reads a body or changes something."""

    def view(**kwargs: Any) -> Any:
        token = current_app.config.get("CLOVER_API_TOKEN")
        if route.mutating:
            guard.check_same_site(request)
        if route.mutating and token and not _authorized(token):
            given = request.headers.get("Authorization") or request.headers.get("X-Clover-Token")
            raise ApiError(
                403 if given else 401,
                "the API token is wrong"
                if given
                else "this route changes state and needs the API token: send Authorization: Bearer <CLOVER_API_TOKEN>",
            )
        if route.mutating or route.body:
            guard.check_type(request, route.accepts)
        return route.view(**kwargs)

    view.__name__ = (
        route.view.__name__ + "_" + route.path.strip("/").replace("/", "_").replace("<", "").replace(">", "")
    )
    return view


def error_reply(exc: ApiError) -> Response:
    reply = jsonify(exc.body())
    reply.status_code = exc.status
    if exc.status == 401:
        reply.headers["WWW-Authenticate"] = "Bearer"
    return reply


def blueprint() -> Blueprint:
    bp = Blueprint("api", __name__)
    for route in ROUTES:
        bp.add_url_rule(route.path, view_func=_guard(route), methods=list(route.methods))
    return bp


def install(app: Flask, services_: Services) -> None:
    """Register the routes and the error handlers on ``app``."""
    app.extensions[SERVICES_EXTENSION] = services_
    limit = services_.cfg.api_max_body_bytes
    app.config["MAX_CONTENT_LENGTH"] = limit  # a body without Content-Length stops being read there
    app.register_blueprint(blueprint())

    @app.before_request
    def _size() -> None:
        guard.check_size(request, limit)

    @app.errorhandler(413)
    def _too_large(exc: Exception) -> Response:
        return error_reply(guard.too_large(limit))

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return error_reply(exc)

    @app.errorhandler(redis.RedisError)
    def _redis_error(exc: redis.RedisError) -> Response:
        url = services_.cfg.redis_address
        log.warning("Redis at %s: %s", url, exc)
        return error_reply(ApiError(503, f"Error connecting to Redis at {url}: {exc}"))

    @app.errorhandler(404)
    def _not_found(exc: Exception) -> Response:
        return error_reply(ApiError(404, f"no route {request.path} (see /openapi.json)"))

    @app.errorhandler(405)
    def _bad_method(exc: Exception) -> Response:
        return error_reply(ApiError(405, f"{request.method} is not allowed on {request.path}"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if hasattr(exc, "code") and hasattr(exc, "description"):  # another werkzeug HTTPException
            return error_reply(ApiError(int(exc.code), str(exc.description)))
        log.exception("%s %s failed", request.method, request.path)
        return error_reply(ApiError(500, f"internal error: {type(exc).__name__}: {exc}"))
