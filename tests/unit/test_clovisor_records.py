"""Records from the ring buffer, spans built from them, Jaeger Thrift, plugins, manifests."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import click
import pytest

from clovisor import _spanwire, records, thrift
from clovisor.datapath import DROP_STATS, STAT_NAMES, check_layout
from clovisor.plugins import PluginSet
from clovisor.spans import Clock, PodInfo, SpanEncoder, to_span, trace_context
from protos import records_pb2
from tests.unit.exchange_records import exchange_record

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def make_record(**strings: str) -> bytes:
    return exchange_record(
        strings={name: value.encode() for name, value in strings.items()},
        method=2, versions=(11, 11), status=201, times=(1_000_000, 1_200_000, 1_500_000, 2_000_000), whole=True,
    )  # fmt: skip


def test_an_exchange_record_decodes_to_its_fields() -> None:
    raw = make_record(url="/orders?id=7", user_agent="curl/8", host="api", reason="Created")
    ex = records.decode_exchange(memoryview(raw))
    assert (ex.method, ex.url, ex.status, ex.reason, ex.user_agent, ex.host) == (
        "POST",
        "/orders?id=7",
        201,
        "Created",
        "curl/8",
        "api",
    )
    assert (ex.client_ip, ex.server_ip, ex.client_port, ex.server_port) == ("10.0.0.1", "10.0.0.2", 40000, 8080)
    assert (ex.req_packets, ex.resp_packets, ex.req_bytes, ex.resp_bytes) == (2, 3, 180, 400)
    assert (ex.req_size, ex.resp_size, ex.seq) == (120, 250, 4)
    assert ex.session_key == "0a000001:0a000002:6:40000:8080"


def test_a_payload_record_decodes_to_its_connection_and_bytes() -> None:
    head = struct.pack("<BBHII4s4sHH", records.REC_PAYLOAD, 1, 5, 9, 7, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
                       40000, 8080)  # fmt: skip
    payload = records.decode_payload(memoryview(head + b"hello"))
    assert payload == records.Payload(False, 9, (7, "10.0.0.1", "10.0.0.2", 40000, 8080), b"hello")


def bcc_exchange(places: dict[str, tuple[int, int]]) -> type[ctypes.Structure]:
    """struct exchange as BCC gives its ctypes type, with the fields at these (offset, size)."""
    fields: list[tuple[str, type[ctypes.Array[ctypes.c_char]]]] = []
    at = 0
    for name, (offset, size) in sorted(places.items(), key=lambda item: item[1]):
        fields += [(f"pad{offset}", ctypes.c_char * (offset - at))] if offset > at else []
        fields.append((name, ctypes.c_char * size))
        at = offset + size
    fields.append(("end", ctypes.c_char * (records.EXCHANGE_SIZE - at)))
    return type("exchange", (ctypes.Structure,), {"_fields_": fields})


def test_the_datapath_refuses_a_program_whose_records_or_counters_differ_from_the_extensions() -> None:
    places = dict(_spanwire.EXCHANGE_FIELDS) | {s.name: (s.offset, s.capacity) for s in records.STRING_SLOTS}
    check_layout(bcc_exchange(places), len(STAT_NAMES))
    swapped = places | {"b3_span_id": places["b3_parent_span_id"], "b3_parent_span_id": places["b3_span_id"]}
    with pytest.raises(RuntimeError, match=r"fields \['b3_span_id', 'b3_parent_span_id'\], 952 bytes, 17 counters"):
        check_layout(bcc_exchange(swapped), len(STAT_NAMES))
    with pytest.raises(RuntimeError, match=r"fields \[\], 952 bytes, 18 counters"):
        check_layout(bcc_exchange(places), len(STAT_NAMES) + 1)
    assert set(DROP_STATS) <= set(STAT_NAMES)


def test_a_span_carries_http_fields_sizes_and_the_original_tags() -> None:
    ex = records.decode_exchange(memoryview(make_record(url="/orders?id=7", user_agent="curl/8", reason="Created")))
    clock = Clock()
    clock.offset_ns = 1_700_000_000_000_000_000
    span = to_span(ex, PodInfo("api-7f", "default", "api", "node-1"), clock)
    assert (span.service, span.operation_name, span.http_method, span.http_url) == (
        "api",
        "POST /orders",
        "POST",
        "/orders?id=7",
    )
    assert (span.http_status_code, span.request_size, span.response_size) == (201, 120, 250)
    assert (span.start_time_us, span.duration_us) == (1_700_000_000_001_000, 1000)
    assert span.tags["duration"] == "1000 usec" and span.tags["server.latency_us"] == "300"
    assert (
        span.tags["reqpakcount"] == "2" and span.tags["respbytecount"] == "400" and span.tags["respstatus"] == "Created"
    )
    assert len(span.trace_id) == 32 and len(span.span_id) == 16 and span.parent_span_id == ""


@pytest.mark.parametrize("kind", [records.REC_EXCHANGE, records.REC_INCOMPLETE, records.REC_TCP])
def test_the_encoder_gives_the_bytes_of_to_span_with_a_connections_part_cached(kind: int) -> None:
    raw = bytearray(make_record(url="/a?b=c", user_agent="curl/8", host="api", trace_context=TRACEPARENT))
    raw[0] = kind
    rec = memoryview(bytes(raw))
    ex = records.decode_exchange(rec)
    pod, clock = PodInfo("api-7f", "default", "api", "node-1"), Clock()
    encoder = SpanEncoder(clock, connections=1)
    extra = {"tenant": "acme", "podname": "renamed-by-a-plugin"}
    for _ in range(2):  # the second time from the cache
        key, value = encoder.encode(rec, pod, extra)
        span, expected = records_pb2.Span.FromString(value), to_span(ex, pod, clock, extra)
        assert span.span_id != expected.span_id  # random: compared apart
        span.span_id = expected.span_id
        assert span == expected and key == expected.trace_id.encode() == TRACEPARENT.split("-")[1].encode()
        assert span.tags["podname"] == "renamed-by-a-plugin" and span.tags["namespace"] == "default"
    encoder.encode(memoryview(make_record(url="/x")), PodInfo("web-1", "default", "web", "node-1"))  # evicts it
    assert records_pb2.Span.FromString(encoder.encode(rec, pod)[1]).tags["podname"] == "api-7f"


@pytest.mark.parametrize(
    ("strings", "flags", "expected"),
    [
        ({"trace_context": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, 0,
         ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        ({"trace_context": "80f198ee56343ba8-e457b5a2e4d86bd1-1"}, records.XF_TP_IS_B3,
         ("000000000000000080f198ee56343ba8", "e457b5a2e4d86bd1")),
        ({"b3_trace_id": "463ac35c9f6413ad48485a3953bb6124", "b3_span_id": "0020000000000001"}, 0,
         ("463ac35c9f6413ad48485a3953bb6124", "0020000000000001")),
        ({"trace_context": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, 0, (None, None)),
        ({"b3_trace_id": "not-hex"}, 0, (None, None)),
    ],
)  # fmt: skip
def test_trace_context_from_w3c_and_b3_headers(strings: dict[str, str], flags: int, expected: tuple[Any, Any]) -> None:
    ex = records.decode_exchange(memoryview(make_record(**strings)))
    ex.flags = flags
    assert trace_context(ex) == expected


def test_jaeger_binary_batch_layout() -> None:
    span = thrift.JaegerSpan((1 << 64) | 2, 3, 0, "GET /", 10, 5, {"k": "v"})
    body = thrift.encode_batch_binary("svc", [span], {})
    # Batch.process (struct 1) -> Process.serviceName (string 1) = "svc"
    assert body.startswith(b"\x0c\x00\x01" + b"\x0b\x00\x01" + struct.pack(">i", 3) + b"svc")
    assert struct.pack(">bhq", thrift.I64, 1, 2) + struct.pack(">bhq", thrift.I64, 2, 1) in body
    assert body.endswith(b"\x00\x00")  # end of Batch and of the span list's last struct... and Batch


def test_jaeger_compact_emit_batch_header_and_zigzag() -> None:
    out = thrift.encode_emit_batch_compact("svc", [], {}, seqid=1)
    assert out[:3] == b"\x82\x81\x01" and out[3:13] == b"\x09emitBatch"
    buf = bytearray()
    thrift.compact_value(thrift.I64, -1, buf)
    assert bytes(buf) == b"\x01"
    buf = bytearray()
    thrift.compact_value(thrift.I32, 300, buf)
    assert bytes(buf) == b"\xd8\x04"


PLUGIN = """
class Parser:
    def parse(self, session_key, is_req, data):
        if b"\\n" not in data:
            return data, None  # wait for a full line
        line, _, rest = data.partition(b"\\n")
        return rest, {"first": line.decode(), "dir": "req" if is_req else "resp", "key": session_key}
"""


def test_plugins_load_buffer_partial_data_and_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.py"
    path.write_text(PLUGIN)
    plugins = PluginSet(plugin_dir=tmp_path)
    assert plugins.sync({"foo": str(path)}) == ["foo"]
    assert plugins.feed("foo", "s1", "k1", True, b"HEL") == {}
    assert plugins.feed("foo", "s1", "k1", True, b"LO\nrest") == {"first": "HELLO", "dir": "req", "key": "k1"}
    path.write_text(PLUGIN.replace('"first"', '"line"'))
    assert plugins.sync({"foo": str(path)}) == []  # unchanged configuration: no reload
    assert plugins.sync({"foo": str(path)}, force=frozenset({"foo"})) == ["foo"]
    assert plugins.feed("foo", "s2", "k2", False, b"A\n") == {"line": "A", "dir": "resp", "key": "k2"}
    assert plugins.sync({}) == [] and plugins.protocols == frozenset()


def test_a_broken_plugin_is_reported_not_fatal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')")
    (tmp_path / "none.py").write_text("x = 1")
    plugins = PluginSet(plugin_dir=tmp_path)
    nope = tmp_path / "nope.py"
    assert plugins.sync({"a": str(tmp_path / "bad.py"), "b": str(tmp_path / "none.py"), "c": str(nope)}) == []
    assert "importing" in plugins.errors["a"] and "defines no class Parser" in plugins.errors["b"]
    assert f"{nope} is not a file" in plugins.errors["c"]
    assert plugins.refused == 0


def plugin_dir(tmp_path: Path) -> Path:
    """A plugin directory only root (the user the tests run as) can write, holding PLUGIN."""
    allowed = tmp_path / "plugins"
    allowed.mkdir(mode=0o755)
    (allowed / "ok.py").write_text(PLUGIN)
    (allowed / "ok.py").chmod(0o644)
    return allowed


def test_only_root_only_files_in_the_plugin_directory_are_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    allowed = plugin_dir(tmp_path)
    ran = tmp_path / "ran"
    evil = f"open({str(ran)!r}, 'w').write('ran')\n" + PLUGIN
    outside = tmp_path / "outside.py"
    outside.write_text(evil)
    (allowed / "escape.py").symlink_to(outside)
    (allowed / "inside-link.py").symlink_to(allowed / "ok.py")
    (allowed / "open.py").write_text(evil)
    (allowed / "open.py").chmod(0o666)  # what ran as uid 0 before: anyone may write it
    (allowed / "group.py").write_text(evil)
    (allowed / "group.py").chmod(0o664)
    plugins = PluginSet(plugin_dir=allowed)
    configured = {name: str(allowed / f"{name}.py") for name in ("ok", "escape", "inside-link", "open", "group")}
    configured |= {"outside": str(outside), "relative": "plugins/ok.py", "dotdot": f"{allowed}/../outside.py"}
    with caplog.at_level(logging.ERROR, "clovisor.plugins"):
        assert sorted(plugins.sync(configured)) == ["inside-link", "ok"]
    assert not ran.exists()
    assert plugins.refused == 6
    assert plugins.errors == {
        "escape": f"plugin for 'escape' refused: {allowed}/escape.py: outside the plugin directory {allowed} "
        f"(a symlink to {outside})",
        "open": f"plugin for 'open' refused: {allowed}/open.py: {allowed}/open.py is group- and world-writable "
        "(mode 0666)",
        "group": f"plugin for 'group' refused: {allowed}/group.py: {allowed}/group.py is group-writable (mode 0664)",
        "outside": f"plugin for 'outside' refused: {outside}: outside the plugin directory {allowed}",
        "relative": "plugin for 'relative' refused: plugins/ok.py: not an absolute path",
        "dotdot": f"plugin for 'dotdot' refused: {allowed}/../outside.py: outside the plugin directory {allowed}",
    }
    assert sorted(r.getMessage() for r in caplog.records) == sorted(plugins.errors.values())
    assert plugins.sync(configured) == [] and plugins.refused == 6  # an unchanged configuration is not retried


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to nobody needs root")
def test_a_plugin_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    allowed = plugin_dir(tmp_path)
    os.chown(allowed / "ok.py", 65534, 65534)  # nobody: 0644 but not root's
    plugins = PluginSet(plugin_dir=allowed)
    assert plugins.sync({"http": str(allowed / "ok.py")}) == []
    assert (
        plugins.errors["http"]
        == f"plugin for 'http' refused: {allowed}/ok.py: {allowed}/ok.py is owned by uid 65534, not root"
    )
    os.chown(allowed / "ok.py", 0, 0)
    os.chown(allowed, 65534, 65534)
    assert plugins.sync({"http": str(allowed / "ok.py")}, force=frozenset({"http"})) == []
    assert plugins.errors["http"].endswith(
        f"the plugin directory is not safe: {allowed} is owned by uid 65534, not root"
    )
    assert plugins.refused == 2


def test_a_plugin_directory_others_may_write_refuses_everything(tmp_path: Path) -> None:
    allowed = plugin_dir(tmp_path)
    allowed.chmod(0o777)
    plugins = PluginSet(plugin_dir=allowed)
    assert plugins.sync({"http": str(allowed / "ok.py")}) == []
    assert plugins.errors["http"].endswith(
        f"the plugin directory is not safe: {allowed} is group- and world-writable (mode 0777)"
    )
    allowed.chmod(0o755)
    missing = PluginSet(plugin_dir=tmp_path / "none")
    assert missing.sync({"http": str(tmp_path / "none" / "ok.py")}) == [] and missing.refused == 1
    assert missing.errors["http"].endswith(f"the plugin directory {tmp_path / 'none'} does not exist "
                                           "(CLOVER_CLOVISOR_PLUGIN_DIR)")  # fmt: skip


def test_manifests_validate_against_the_kubernetes_schema() -> None:
    import kubernetes_validate

    from cloverctl.clovisor import load_manifests

    docs = load_manifests(image="registry.local/clovisor:1", env={"CLOVER_REDIS_URL": "redis://r:6379/0"})
    assert [d["kind"] for d in docs] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list", "watch"]}]
    container = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/clovisor:1"
    assert {"name": "CLOVER_REDIS_URL", "value": "redis://r:6379/0"} in container["env"]


def test_the_daemonset_runs_with_least_privilege() -> None:
    from cloverctl.clovisor import load_manifests

    pod = load_manifests()[-1]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsUser": 0,
        "capabilities": {"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {
        "cpu", "memory", "ephemeral-storage"}  # fmt: skip
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["CLOVER_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "clover-redis", "key": "password"}}
    assert "@" not in env["CLOVER_REDIS_URL"]  # no secret in the manifest
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["CLOVER_CLOVISOR_METRICS_HOST"] == "$(POD_IP)"  # not 0.0.0.0
    writable = {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"state", "tmp"}
    assert all("emptyDir" in v for v in pod["volumes"] if v["name"] in writable)


def test_a_redis_url_with_a_password_is_refused_for_the_cluster() -> None:
    from click.testing import CliRunner

    from cloverctl.main import cli

    result = CliRunner().invoke(cli, ["create", "system", "clovisor", "--redis-url", "redis://:pw@r:6379/0"])
    assert result.exit_code == 2
    assert "--redis-url must not carry the password: put it in the Secret clover-redis" in result.output


class FakeApi:
    """Records calls; answers 409 to creating what exists and 404 to deleting what does not."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        def call(*args: Any, **kwargs: Any) -> None:
            name = args[-1]["metadata"]["name"] if args and isinstance(args[-1], dict) else args[0]
            self.calls.append((method, tuple(a if not isinstance(a, dict) else a["kind"] for a in args)))
            if method.startswith("create") and name in self.existing:
                raise ApiException(status=409, reason="Conflict")
            if method.startswith("delete") and name not in self.existing:
                raise ApiException(status=404, reason="Not Found")

        return call


def test_apply_creates_or_updates_and_delete_tolerates_missing_objects() -> None:
    from cloverctl.clovisor import load_manifests
    from cloverctl.system import apply, delete

    api = FakeApi({"clovisor"})  # the namespace and the DaemonSet exist already
    apis = {"core": api, "rbac": api, "apps": api}
    docs = load_manifests()
    assert apply(apis, docs) == [
        "Namespace/clovisor configured",
        "ServiceAccount/clovisor configured",
        "ClusterRole/clovisor-read-pods-services created",
        "ClusterRoleBinding/clovisor-read-pods-services created",
        "DaemonSet/clovisor configured",
    ]
    assert ("replace_namespaced_daemon_set", ("clovisor", "clovisor", "DaemonSet")) in api.calls
    assert delete(apis, docs)[0] == "DaemonSet/clovisor deleted"
    assert "ClusterRole/clovisor-read-pods-services not found" in delete(apis, docs)
    with pytest.raises(click.ClickException, match="kind 'Secret' is not one cloverctl can apply"):
        apply(apis, [{"kind": "Secret", "metadata": {"name": "x"}}])


def test_the_status_file_and_metrics_show_the_agents_status() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from clovisor.datapath import Limits
    from clovisor.export import ExportStats
    from clovisor.metrics import _Collector
    from clovisor.status import AgentStatus, Counters, JaegerStatus, PluginStatus, PodStatus, ProgramRunTime

    status = AgentStatus(
        node="node-1",
        pods={"default/web": PodStatus("veth-web", "10.0.0.2", "web", {8080: "http"})},
        kernel={"packets": 10, "over_budget": 2},
        drops={"over_budget": 2},
        maps={"connections": 1, "exchanges": 0},
        ring_pending_bytes=0,
        limits=Limits(),
        counters=Counters(spans=4, evicted_exchanges=1),
        span_encoder="c",
        kafka=ExportStats(produced=5, delivered=3, dropped=1),
        jaeger=JaegerStatus(ExportStats(produced=4, delivered=4), "agent a:6831"),
        plugins=PluginStatus(["redis"], {}, 0, 1, "/plugins"),
        settings_errors=[],
        bpf_programs={"cv_to_pod": ProgramRunTime(100, 2)},
    )
    shown = json.loads(json.dumps(status.to_json()))
    assert shown["pods"] == {"default/web": {"veth": "veth-web", "ip": "10.0.0.2", "service": "web",
                                             "ports": {"8080": "http"}}}  # fmt: skip
    assert shown["kafka"] == {"produced": 5, "delivered": 3, "dropped": 1, "errors": 0, "pending": 2}
    assert shown["jaeger"] == {"produced": 4, "delivered": 4, "dropped": 0, "errors": 0, "target": "agent a:6831"}
    assert shown["plugins"] == {"loaded": ["redis"], "errors": {}, "failures": 0, "refused": 1, "directory": "/plugins"}
    assert shown["bpf_programs"] == {"cv_to_pod": {"run_time_ns": 100, "run_cnt": 2}}
    assert (shown["counters"]["spans"], shown["limits"]["connections"]) == (4, 16384)
    assert (shown["kernel"], shown["drops"], shown["ring_pending_bytes"]) == (status.kernel, status.drops, 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(lambda: status))
    lines = generate_latest(registry).decode().splitlines()
    for line in ('clovisor_drops_total{reason="kafka_buffer_full"} 1.0', 'clovisor_spans_total{exporter="jaeger"} 4.0',
                 'clovisor_drops_total{reason="evicted_exchanges"} 1.0', "clovisor_pods 1.0",
                 "clovisor_kafka_pending 2.0", 'clovisor_kernel_total{counter="over_budget"} 2.0'):  # fmt: skip
        assert line in lines
