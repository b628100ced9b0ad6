"""The Sample chain tab: the load balancers' server lists, IDS start and stop, adding a rule,
and the IDS status, local rules and newest alerts."""

from __future__ import annotations

from typing import Any

import redis
import yaml
from dash import Dash, Input, Output, State, ctx, html, no_update

from controller.errors import ApiError
from controller.services.chain import ChainService
from dashboard import views
from dashboard.callbacks.replies import failure, ok, relayed
from dashboard.callbacks.token import TokenGate
from dashboard.layout import LBS, SERVERS


def _apply(chain: ChainService, lb: str, servers: list[str]) -> html.Div:
    """Set ``lb``'s server list, keeping its port, group and path."""
    current = chain.chain_config(lb).get("lb", {})
    body = {
        "lb_name": f"{lb}.default",
        "server_name": lb,
        "server_port": current.get("server_port") or "9180",
        "lb_group": current.get("slb_group") or "cloverlb",
        "lb_path": current.get("lb_path") or "/",
        "lb_list": [{"url": url} for url in servers],
    }
    return ok(f"{lb}: {chain.modify_lb(body)} ({', '.join(servers)})")


def _add_rule(chain: ChainService, text: str) -> html.Div:
    try:
        rule = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        return failure(ApiError(400, f"the rule is not valid yaml: {exc}"))
    return ok(chain.add_rule(rule))


def register(app: Dash, chain: ChainService, gate: TokenGate) -> None:
    @app.callback(
        [Output(f"{lb}-servers", "options") for lb in LBS] + [Output(f"{lb}-servers", "value") for lb in LBS],
        Input("tabs", "value"),
        Input("chain-refresh", "n_clicks"),
        Input("lb-result", "children"),
    )
    def lb_state(tab: str, _: Any, __: Any) -> list[Any]:
        if tab != "chain":
            return [no_update] * (2 * len(LBS))
        options, values = [], []
        for lb in LBS:
            try:
                current = list(chain.chain_config(lb).get("lb", {}).get("slb_list", []))
            except ApiError:
                current = []
            choices = list(SERVERS) + [s for s in current if s not in SERVERS]
            options.append([{"label": s, "value": s} for s in choices])
            values.append(current)
        return options + values

    @app.callback(
        Output("lb-result", "children"),
        [Input(f"{lb}-apply", "n_clicks") for lb in LBS],
        [State(f"{lb}-servers", "value") for lb in LBS],
        State("token", "data"),
        prevent_initial_call=True,
    )
    def lb_apply(*args: Any) -> Any:
        given = args[-1]
        chosen = dict(zip(LBS, args[len(LBS) : 2 * len(LBS)], strict=True))
        lb = str(ctx.triggered_id).removesuffix("-apply")
        if lb not in chosen:
            return no_update
        return gate.change(given, lambda: _apply(chain, lb, chosen[lb] or []))

    @app.callback(
        Output("ids-result", "children"),
        Input("ids-start", "n_clicks"),
        Input("ids-stop", "n_clicks"),
        State("token", "data"),
        prevent_initial_call=True,
    )
    def ids_control(_: Any, __: Any, given: Any) -> Any:
        return gate.change(
            given, lambda: relayed(chain.start_ids() if ctx.triggered_id == "ids-start" else chain.stop_ids())
        )

    @app.callback(
        Output("rule-result", "children"),
        Input("rule-add", "n_clicks"),
        State("rule-text", "value"),
        State("token", "data"),
        prevent_initial_call=True,
    )
    def rule_add(_: Any, text: str, given: Any) -> Any:
        return gate.change(given, lambda: _add_rule(chain, text))

    @app.callback(
        Output("ids-status", "children"),
        Output("rules-table", "children"),
        Output("alerts-count", "children"),
        Output("alerts-table", "children"),
        Input("tabs", "value"),
        Input("tick", "n_intervals"),
        Input("chain-refresh", "n_clicks"),
        Input("ids-result", "children"),
        Input("rule-result", "children"),
    )
    def ids_state(tab: str, *_: Any) -> tuple[Any, Any, Any, Any]:
        if tab != "chain":
            return no_update, no_update, no_update, no_update
        try:
            status: Any = views.ids_status_line(chain.ids_status())
            rules = chain.ids_rules()
            rule_rows = [[r["sid"], r.get("rev", ""), r.get("msg", ""), "yes" if r.get("loaded") else "no"]
                         for r in rules]  # fmt: skip
            rules_table: Any = views.table(["sid", "rev", "msg", "loaded"], rule_rows, "rules-grid", "no local rules")
        except ApiError as exc:
            status, rules_table = failure(exc), no_update
        try:
            found = chain.alerts(20)
        except redis.RedisError as exc:
            return status, rules_table, failure(ApiError(503, f"Redis unavailable: {exc}")), no_update
        return (
            status,
            rules_table,
            f"{found['total']} alert(s) in Redis; the newest {len(found['alerts'])}:",
            views.table(views.ALERT_HEADER, views.alert_rows(found["alerts"]), "alerts-grid", "no alerts"),
        )
