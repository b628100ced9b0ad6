"""Every image built, imported into a real containerd and run: the controller serves /health
with its settings from the environment (beside the Redis image, as in a pod), Spark runs a
driver through the image's Kubernetes entry point with the connector jars loaded, the backing
services start from their images and answer their own probes, Clovisor compiles a BPF program
with the host's kernel headers, and the archives copy with skopeo as to a registry."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clover.config import Config
from stack.images import build, catalogue
from tests.images.conftest import ref
from tests.images.runtime import Containerd, Netns

PASSWORD = "image-test-password"
GET = """
import sys, urllib.request, urllib.error
try:
    answer = urllib.request.urlopen(sys.argv[1], timeout=5)
    print(answer.status, answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""
PROBE = "import sys; from stack import probes; {call}"


def wait_for(what: str, attempt: Callable[[], subprocess.CompletedProcess[str]], log: Callable[[], str],
             timeout: float = 240) -> str:  # fmt: skip
    """Repeat ``attempt`` (a command in a container) until it succeeds; its output."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = attempt()
        if last.returncode == 0:
            return last.stdout
        time.sleep(2)
    detail = (last.stdout + last.stderr)[-1500:] if last else ""
    raise AssertionError(f"{what} did not answer in {timeout:.0f}s: {detail}\n--- log ---\n{log()[-3000:]}")


def test_every_archive_imports_under_its_name(containerd: Containerd, built: dict[str, build.Built]) -> None:
    assert set(built) == {ref(image.name) for image in catalogue.images()}
    assert set(built) <= containerd.images()


def test_the_controller_answers_health_with_its_settings_from_the_environment(containerd: Containerd) -> None:
    with Netns("clover-img-ctl") as pod:
        redis_env = {"CLOVER_REDIS_PASSWORD": PASSWORD, "CLOVER_POD_IP": "127.0.0.1"}
        containerd.start_detached(ref("clover-redis"), "redis", env=redis_env, netns=pod.path, read_only=True,
                                  mounts=containerd.empty_dirs("redis"))  # fmt: skip
        env = {"CLOVER_REDIS_URL": "redis://127.0.0.1:6379/0", "CLOVER_REDIS_PASSWORD": PASSWORD}
        containerd.start_detached(ref("clover-controller"), "controller", env=env, netns=pod.path, read_only=True,
                                  mounts=containerd.empty_dirs("controller"))  # fmt: skip
        wrong = {**env, "CLOVER_REDIS_PASSWORD": "not-the-password"}
        containerd.start_detached(ref("clover-controller"), "controller-wrong",
                                  ["python", "-m", "controller.server", "--listen", "0.0.0.0:8001"], env=wrong,
                                  netns=pod.path, read_only=True,
                                  mounts=containerd.empty_dirs("controller-wrong"))  # fmt: skip
        try:
            answer = wait_for("the controller's /health",
                              lambda: containerd.exec("controller", ["python", "-c", GET, "http://127.0.0.1:8000/health"]),
                              lambda: containerd.log("controller") + containerd.log("redis"))  # fmt: skip
            assert answer.split(" ", 1)[0] == "200"
            assert json.loads(answer.split(" ", 1)[1]) == {"status": "ok", "redis": "ok"}
            degraded = wait_for("the second controller's /health",
                                lambda: containerd.exec("controller-wrong",
                                                        ["python", "-c", GET, "http://127.0.0.1:8001/health"]),
                                lambda: containerd.log("controller-wrong"))  # fmt: skip
            assert degraded.split(" ", 1)[0] == "503"
            assert json.loads(degraded.split(" ", 1)[1]) == {"status": "degraded", "redis": "unreachable"}
            version = containerd.exec("redis", ["redis-server", "--version"])
            assert version.returncode == 0 and version.stdout.startswith("Redis server v=7.0.15")
        finally:
            for name in ("controller-wrong", "controller", "redis"):
                containerd.remove(name)


SPARK_CHECK = """
from pyspark.sql import SparkSession
import clover, jobs.ingest, jobs.visibility
spark = SparkSession.builder.appName("clover-image-check").getOrCreate()
jvm = spark.sparkContext._jvm
for name in ("org.apache.spark.sql.kafka010.KafkaSourceProvider",
             "com.datastax.spark.connector.CassandraSparkExtensions",
             "org.apache.spark.sql.protobuf.functions"):
    jvm.java.lang.Class.forName(name)
total = spark.range(1000).selectExpr("sum(id)").first()[0]
print("RESULT", total, spark.version, jobs.ingest.DESCRIPTOR.exists())
spark.stop()
"""
SPARK_ENTRY = ["/usr/bin/tini", "-s", "--", "python3", "-m", "stack.images.sparkentry"]


def test_the_spark_image_has_java_pyspark_and_the_project(containerd: Containerd) -> None:
    script = "import pyspark, clover, jobs; print(pyspark.__version__)"
    imports = containerd.run(ref("clover-spark"), "spark-imports", [*SPARK_ENTRY, "python3", "-c", script])
    assert (imports.returncode, imports.stdout.strip()) == (0, "3.5.7"), imports.stderr
    java = containerd.run(ref("clover-spark"), "spark-java", ["java", "-version"])
    assert java.returncode == 0 and 'openjdk version "17.' in java.stderr, java.stderr


def test_a_spark_driver_runs_through_the_kubernetes_entry_point(containerd: Containerd, tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(SPARK_CHECK)
    tmp_path.chmod(0o755)
    (tmp_path / "check.py").chmod(0o644)
    args = [*SPARK_ENTRY, "driver", "--master", "local[1]", "--conf", "spark.ui.enabled=false",
            "local:///check/check.py"]  # fmt: skip
    # As a driver pod is told its address (spark.driver.host / SPARK_LOCAL_IP).
    env = {"SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1", "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "localhost"}
    done = containerd.run(ref("clover-spark"), "spark-driver", args, env=env,
                          mounts=[f"type=bind,src={tmp_path},dst=/check,options=rbind:ro"])  # fmt: skip
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert result == ["RESULT 499500 3.5.7 True"], done.stdout[-2000:] + done.stderr[-3000:]


BACKING = {
    "kafka": "probes.kafka_metadata('127.0.0.1:9092')",
    "cassandra": "probes.cql_query(('127.0.0.1',), 9042)",
    "prometheus": "probes.http_ok('http://127.0.0.1:9090/-/ready')",
    "jaeger": "probes.http_ok('http://127.0.0.1:16686/api/services')",
}


@pytest.fixture(scope="module")
def backing(containerd: Containerd) -> Iterator[Containerd]:
    """Kafka, Cassandra, Prometheus and Jaeger from their images, in one network namespace."""
    with Netns("clover-img-svc") as pod:
        try:
            for name in BACKING:
                containerd.start_detached(ref(f"clover-{name}"), name, env={"CLOVER_POD_IP": "127.0.0.1"},
                                          netns=pod.path, read_only=True,
                                          mounts=containerd.empty_dirs(name))  # fmt: skip
            yield containerd
        finally:
            for name in BACKING:
                containerd.remove(name)


@pytest.mark.parametrize("name", list(BACKING))
def test_a_backing_service_starts_from_its_image(backing: Containerd, name: str) -> None:
    probe = PROBE.format(call=BACKING[name])
    wait_for(f"{name}'s probe", lambda: backing.exec(name, ["python", "-c", probe]), lambda: backing.log(name))
    rendered = backing.exec(name, ["ls", f"/var/lib/clover/{name}"])
    assert rendered.returncode == 0 and "data" in rendered.stdout.split()


def test_clovisor_compiles_bpf_with_the_hosts_kernel_headers(containerd: Containerd) -> None:
    check = ("import bcc, clovisor._spanwire, clovisor.agent; "
             "b = bcc.BPF(text='int probe(void *ctx) { return 0; }'); print('BPF', bcc.__file__)")  # fmt: skip
    mounts = ["type=bind,src=/lib/modules,dst=/lib/modules,options=rbind:ro",
              "type=bind,src=/usr/src,dst=/usr/src,options=rbind:ro"]  # fmt: skip
    done = containerd.ctr("run", "--runc-root", str(containerd.runc_root), "--privileged", "--rm",
                          *(f"--mount={m}" for m in mounts), ref("clover-clovisor"), "clovisor-bpf",
                          "python3", "-c", check, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "BPF /usr/lib/python3/dist-packages/bcc/__init__.py"
    usage = containerd.run(ref("clover-clovisor"), "clovisor-help", ["clovisor", "--help"])
    assert usage.returncode == 0 and "run" in usage.stdout


def test_the_validation_images_carry_jmeter(containerd: Containerd) -> None:
    done = containerd.run(ref("clover-jmeter-slave"), "jmeter-version",
                          ["java", "-jar", "/opt/jmeter/bin/ApacheJMeter.jar", "--version"])  # fmt: skip
    assert done.returncode == 0 and "5.6.3" in done.stdout, done.stdout[-1500:] + done.stderr[-1500:]


def test_the_archives_copy_with_skopeo_as_to_a_registry(built: dict[str, build.Built], tmp_path: Path) -> None:
    image = built[ref("clover-controller")]
    source = f"oci-archive:{image.archive}"
    inspected = json.loads(subprocess.run(["skopeo", "inspect", source], capture_output=True, text=True,
                                          check=True).stdout)  # fmt: skip
    assert inspected["Layers"] == [layer.digest for layer in image.layers]
    for target in (f"oci:{tmp_path / 'layout'}:latest", f"dir:{tmp_path / 'dir'}"):
        subprocess.run(["skopeo", "copy", "--quiet", source, target], capture_output=True, text=True, check=True)
    copied = json.loads((tmp_path / "dir" / "manifest.json").read_text())
    assert [entry["digest"] for entry in copied["layers"]] == [layer.digest for layer in image.layers]


def test_a_second_build_only_checks(built: dict[str, build.Built]) -> None:
    lines: list[str] = []
    again = build.build(Config.from_env(), lines.append)
    assert {b.reference for b in again} == set(built)
    assert [line for line in lines if "up to date" not in line] == []
