"""The WAF in the cluster without a cluster: ``cloverctl create|delete system gateway`` (k8s/gateway)
and ``create system sdc --waf`` (proxy-access-control's CLOVER_WAF settings), their manifests and
the commands against a fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from clover.config import Config
from cloverctl import clover_system, gateway_system, sdc_system
from cloverctl.main import cli
from sdc.names import HostPort
from sdc.waf.check import waf_address


def _by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _env(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _plain(env: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in env.items() if isinstance(v, str)}


def test_the_gateway_is_the_namespace_the_waf_deployment_and_its_service() -> None:
    docs = gateway_system.load()
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Namespace", "clover-gateway"), ("Deployment", "modsecurity-crs"), ("Service", "modsecurity-crs")]  # fmt: skip
    waf = _by_name(docs, "Deployment")["modsecurity-crs"]
    assert _env(waf)["CLOVER_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "clover-redis", "key": "password"}}
    assert (_env(waf)["CLOVER_WAF_CRS_MODE"], _env(waf)["CLOVER_WAF_PARANOIA_LEVEL"]) == ("anomaly", "1")
    assert gateway_system.COPIED_SECRETS == ("clover-redis",)


def test_crs_mode_paranoia_level_tag_and_repository_change_only_the_waf_pod() -> None:
    docs = gateway_system.load(tag="1.0", repo="reg:5000/clover", crs_mode="self-contained", paranoia_level=3)
    waf = _by_name(docs, "Deployment")["modsecurity-crs"]
    assert waf["spec"]["template"]["spec"]["containers"][0]["image"] == "reg:5000/clover/clover-modsecurity-crs:1.0"
    env = _env(waf)
    assert (env["CLOVER_WAF_CRS_MODE"], env["CLOVER_WAF_PARANOIA_LEVEL"]) == ("self-contained", "3")
    cfg = Config.from_env(_plain(env))
    assert (cfg.waf_crs_mode, cfg.waf_paranoia_level) == ("self-contained", 3)
    assert gateway_system.waf_env() == {"modsecurity-crs": {}}


def test_the_proxys_waf_address_is_the_gateways_service() -> None:
    docs = gateway_system.load()
    service = _by_name(docs, "Service")["modsecurity-crs"]
    (port,) = service["spec"]["ports"]
    named = f"{service['metadata']['name']}.{service['metadata']['namespace']}:{port['port']}"
    assert named == gateway_system.WAF_ADDRESS == "modsecurity-crs.clover-gateway:80"
    proxy = _by_name(sdc_system.load_manifests(waf=True), "Deployment")["proxy-access-control"]
    assert waf_address(Config.from_env(_plain(_env(proxy)))) == HostPort("modsecurity-crs.clover-gateway", 80)


def test_the_chains_waf_check_is_off_by_default_and_on_with_waf() -> None:
    waf_keys = ("CLOVER_WAF", "CLOVER_WAF_ADDRESS", "CLOVER_WAF_FAILURE_MODE")
    as_applied = {}
    for waf, mode in ((False, "closed"), (True, "closed"), (True, "open")):
        docs = sdc_system.load_manifests(waf=waf, waf_failure_mode=mode)
        env = _env(_by_name(docs, "Deployment")["proxy-access-control"])
        as_applied[(waf, mode)] = {k: env[k] for k in waf_keys}
        cfg = Config.from_env(_plain(env))
        assert (cfg.waf_check, cfg.waf_failure_mode) == (waf, mode)
        # Every other pod of the chain is as before.
        others = [d for d in _by_name(sdc_system.load_manifests(waf=waf), "Deployment").values()
                  if d["metadata"]["name"] != "proxy-access-control"]  # fmt: skip
        assert not any(k in _env(d) for d in others for k in waf_keys)
    assert as_applied == {
        (False, "closed"): {"CLOVER_WAF": "off", "CLOVER_WAF_ADDRESS": "modsecurity-crs.clover-gateway:80",
                            "CLOVER_WAF_FAILURE_MODE": "closed"},
        (True, "closed"): {"CLOVER_WAF": "on", "CLOVER_WAF_ADDRESS": "modsecurity-crs.clover-gateway:80",
                           "CLOVER_WAF_FAILURE_MODE": "closed"},
        (True, "open"): {"CLOVER_WAF": "on", "CLOVER_WAF_ADDRESS": "modsecurity-crs.clover-gateway:80",
                         "CLOVER_WAF_FAILURE_MODE": "open"},
    }  # fmt: skip
    # The manifest alone (kubectl apply -k k8s/sdc) says the same as create system sdc without --waf.
    raw = _by_name(clover_system.load(sdc_system.SYSTEM), "Deployment")["proxy-access-control"]
    assert {k: _env(raw)[k] for k in waf_keys} == as_applied[(False, "closed")]


def test_the_manifests_are_valid_kubernetes_objects() -> None:
    import kubernetes_validate  # type: ignore[import-untyped]  # no type information

    for doc in gateway_system.load(crs_mode="self-contained", paranoia_level=2):
        kubernetes_validate.validate(doc, "1.31", strict=True)
    for doc in sdc_system.load_manifests(waf=True, waf_failure_mode="open"):
        kubernetes_validate.validate(doc, "1.31", strict=True)


class _Model(SimpleNamespace):
    """A typed client object: an unset field is None."""

    def __getattr__(self, name: str) -> None:
        return None


def _objects(value: Any) -> Any:
    """A stored body as the typed client returns it (attributes; a Secret's data stays a dict)."""
    if isinstance(value, dict):
        return _Model(**{k: v if k == "data" else _objects(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_objects(v) for v in value]
    return value


class FakeApiServer:
    """Every API group at once, keeping the bodies: create answers 409 for an object that
    exists, read, replace, patch and delete 404 for one that does not."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def __getattr__(self, method: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        verb, _, noun = method.partition("_")
        namespaced = noun.startswith("namespaced_")
        noun = noun.removeprefix("namespaced_")

        def call(*args: Any, **kwargs: Any) -> Any:
            body = args[-1] if args and isinstance(args[-1], dict) else None
            if verb == "create":
                name, namespace = body["metadata"]["name"], args[0] if namespaced else ""  # type: ignore[index]
            else:
                name, namespace = args[0], args[1] if namespaced else ""
            key = (noun, namespace, name)
            if verb == "create":
                if key in self.objects:
                    raise ApiException(status=409, reason="Conflict")
                if not kwargs.get("dry_run"):
                    self.objects[key] = body  # type: ignore[assignment]
                return None
            if key not in self.objects:
                raise ApiException(status=404, reason="Not Found")
            if verb == "delete":
                del self.objects[key]
            elif verb in ("replace", "patch") and not kwargs.get("dry_run"):
                self.objects[key] = body  # type: ignore[assignment]
            elif verb == "read":
                return _objects(self.objects[key])
            return None

        return call

    def names(self, namespace: str) -> set[str]:
        return {f"{noun}/{name}" for noun, ns, name in self.objects if ns == namespace}

    def add(self, noun: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.objects[(noun, namespace, name)] = body


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    apis = {"core": fake, "apps": fake, "rbac": fake}
    monkeypatch.setattr(clover_system, "connect", lambda kubeconfig, context: apis)
    monkeypatch.setattr(clover_system, "_has_ready_endpoint", lambda core, service: True)
    yield fake


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli, list(args))
    return done.exit_code, done.output


def with_datastore(api: FakeApiServer) -> None:
    api.add("service", "clover-system", "redis", {"metadata": {"name": "redis"}})
    api.add("secret", "clover-system", "clover-redis",
            {"type": "Opaque", "data": {"password": "c2VjcmV0"}, "metadata": {"name": "clover-redis"}})  # fmt: skip


def test_create_gateway_names_the_missing_datastore_and_creates_nothing(api: FakeApiServer) -> None:
    code, output = run("create", "system", "gateway")
    assert code == 1
    assert output == (
        "Error: the WAF (gateway) needs, in clover-system: Service/redis (cloverctl create system datastore); "
        "Secret/clover-redis (Redis's password: cloverctl create system datastore)\n"
    )
    assert api.objects == {}


def test_create_and_delete_gateway_copy_and_remove_the_secret_and_keep_the_namespace(api: FakeApiServer) -> None:
    with_datastore(api)
    code, output = run("create", "system", "gateway", "--no-wait", "--paranoia-level", "2")
    assert code == 0, output
    assert output.splitlines() == [
        "Namespace/clover-system created",
        "Namespace/clover-gateway created",
        "Secret/clover-redis copied from clover-system into clover-gateway",
        "Deployment/modsecurity-crs created",
        "Service/modsecurity-crs created",
        "note: proxy-access-control does not ask the WAF yet: cloverctl create system sdc --waf",
    ]
    assert api.names("clover-gateway") == {"secret/clover-redis", "deployment/modsecurity-crs",
                                           "service/modsecurity-crs"}  # fmt: skip
    assert api.objects[("secret", "clover-gateway", "clover-redis")]["data"] == {"password": "c2VjcmV0"}
    assert _env(api.objects[("deployment", "clover-gateway", "modsecurity-crs")])["CLOVER_WAF_PARANOIA_LEVEL"] == "2"
    code, output = run("delete", "system", "gateway", "--no-wait")
    assert code == 0, output
    assert output.splitlines() == [
        "Service/modsecurity-crs deleted",
        "Deployment/modsecurity-crs deleted",
        "Secret/clover-redis in clover-gateway deleted",
    ]
    assert api.names("clover-gateway") == set()
    assert ("namespace", "", "clover-gateway") in api.objects


def test_sdc_with_waf_needs_the_gateway_then_turns_the_check_on_and_off(api: FakeApiServer) -> None:
    with_datastore(api)
    code, output = run("create", "system", "sdc", "--waf", "--no-wait")
    assert code == 1
    assert output == "Error: --waf needs Service/modsecurity-crs in clover-gateway (cloverctl create system gateway)\n"
    assert api.names("default") == set()

    assert run("create", "system", "gateway", "--no-wait")[0] == 0
    code, output = run("create", "system", "sdc", "--waf", "--no-wait")
    assert code == 0, output
    assert output.splitlines()[-1] == ("proxy-access-control asks the WAF at modsecurity-crs.clover-gateway:80 about "
                                       "each request (CLOVER_WAF=on, failure mode closed)")  # fmt: skip

    def proxy_waf() -> tuple[str, str]:
        env = _env(api.objects[("deployment", "default", "proxy-access-control")])
        return env["CLOVER_WAF"], env["CLOVER_WAF_FAILURE_MODE"]

    assert proxy_waf() == ("on", "closed")
    code, output = run("create", "system", "gateway", "--no-wait")
    assert code == 0 and "does not ask the WAF" not in output
    code, output = run("delete", "system", "gateway", "--no-wait")
    assert code == 0, output
    assert output.splitlines()[-1] == (
        "note: proxy-access-control still asks the WAF (CLOVER_WAF=on, failure mode closed) and now refuses every "
        "request (403): cloverctl create system sdc turns the check off")  # fmt: skip

    assert run("create", "system", "sdc", "--waf", "--waf-failure-mode", "open", "--no-wait", "--dry-run")[0] == 0
    assert proxy_waf() == ("on", "closed")  # a dry run changes nothing (and needs no gateway)
    assert run("create", "system", "sdc", "--no-wait")[0] == 0
    assert proxy_waf() == ("off", "closed")
    code, output = run("delete", "system", "gateway", "--no-wait")
    assert code == 0 and "still asks the WAF" not in output
