"""The image build's pieces that need neither root nor Debian: layers, archives, apt sources,
requirements, the Spark entry point and the backing services' container entry."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from clover.config import Config
from stack.images import catalogue, debian, layers, oci, python, sparkentry
from stack.images.entry import prepare
from stack.parts import LOCAL, PartDirs, redis_part


def _members(store: Path, layer: layers.Layer) -> dict[str, tarfile.TarInfo]:
    with gzip.open(layer.blob(store)) as gz, tarfile.open(fileobj=io.BytesIO(gz.read())) as tar:
        return {m.name: m for m in tar.getmembers()}


def _tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/kept").write_text("same\n")
    (root / "etc/changed").write_text("before\n")
    (root / "etc/gone").write_text("x\n")
    (root / "var/cache/old").mkdir(parents=True)
    (root / "var/cache/old/file").write_text("x\n")
    (root / "dev").mkdir()
    (root / "dev/null-ish").write_text("the runtime mounts /dev\n")
    (root / "bin").symlink_to("usr/bin")
    return root


def test_a_tree_packs_to_the_same_digest_whatever_the_file_times(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    first = layers.write(tmp_path / "store", "one", layers.tree(root))
    os.utime(root / "etc/kept", (1, 1))
    second = layers.write(tmp_path / "store", "two", layers.tree(root))
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    members = _members(tmp_path / "store", first)
    assert sorted(members) == ["bin", "dev", "etc", "etc/changed", "etc/gone", "etc/kept", "var", "var/cache",
                               "var/cache/old", "var/cache/old/file"]  # fmt: skip
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert {m.mtime for m in members.values()} == {layers.EPOCH}
    assert layers.load(tmp_path / "store", "one") == first


def test_a_diff_carries_new_and_changed_paths_and_whiteouts_for_the_gone(tmp_path: Path) -> None:
    lower = _tree(tmp_path / "lower")
    upper = _tree(tmp_path / "upper")
    (upper / "etc/changed").write_text("after\n")
    (upper / "etc/gone").unlink()
    (upper / "var/cache/old/file").unlink()
    (upper / "var/cache/old").rmdir()
    (upper / "opt/new").mkdir(parents=True)
    (upper / "opt/new/file").write_text("new\n")
    layer = layers.write(tmp_path / "store", "diff", layers.diff(lower, upper))
    members = _members(tmp_path / "store", layer)
    assert sorted(members) == ["etc", "etc/.wh.gone", "etc/changed", "opt", "opt/new", "opt/new/file", "var",
                               "var/cache", "var/cache/.wh.old"]  # fmt: skip


def test_with_parents_adds_the_directories_above_and_their_owners(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    found = {m.path: m for m in layers.with_parents([layers.Member("opt/a/f", tmp_path / "f")], {"opt/a": (7, 8)})}
    assert sorted(found) == ["opt", "opt/a", "opt/a/f"]
    assert (found["opt/a"].uid, found["opt/a"].gid, found["opt"].uid) == (7, 8, None)


def test_an_archive_names_the_image_for_ctr_and_skopeo(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root/hello").write_text("hi\n")
    store = tmp_path / "store"
    layer = layers.write(store, "hello", layers.tree(tmp_path / "root"))
    run = oci.RunConfig(["python3"], ["-V"], {"A": "1"}, "10001", "/", ["8000", "6831/udp"])
    archive = tmp_path / "hello.oci.tar"
    manifest_digest = oci.write_archive(archive, "opnfv/clover-hello:0.1", [layer, layer], store, run)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest[7:]}"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))  # type: ignore[arg-type]
    assert names.count(f"blobs/sha256/{layer.digest[7:]}") == 1
    assert index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "docker.io/opnfv/clover-hello:0.1",
        "org.opencontainers.image.ref.name": "0.1",
    }
    assert [entry["mediaType"] for entry in manifest["layers"]] == [layers.MEDIA_TYPE] * 2
    assert config["rootfs"]["diff_ids"] == [layer.diff_id] * 2
    assert config["config"]["ExposedPorts"] == {"8000/tcp": {}, "6831/udp": {}}
    run_config = config["config"]
    assert (run_config["Entrypoint"], run_config["Cmd"], run_config["User"]) == (["python3"], ["-V"], "10001")


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("opnfv/clover-controller:latest", "docker.io/opnfv/clover-controller:latest"),
        ("redis:7", "docker.io/library/redis:7"),
        ("localhost:5000/a/b:1", "localhost:5000/a/b:1"),
        ("registry.example/x", "registry.example/x:latest"),
        ("clover.local/pause:v1.34.4", "clover.local/pause:v1.34.4"),
    ],
)
def test_references_are_spelled_as_the_kubelet_looks_them_up(given: str, full: str) -> None:
    assert oci.normalized(given) == full


def test_the_images_use_apts_own_mirrors(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://mirror.example/debian/ bookworm main\n")
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-updates\nComponents: main\n"
    )
    (tmp_path / "sources.list.d/other.list").write_text("deb https://packages.example/apt cloud-sdk main\n")
    sources = debian.host_sources(tmp_path)
    assert sources == [
        debian.Source("http://mirror.example/debian", ("bookworm", "bookworm-updates")),
        debian.Source("http://security.example/debian-security", ("bookworm-security",)),
    ]
    assert debian.main_mirror(sources) == "http://mirror.example/debian"


def test_without_a_bookworm_source_the_build_says_so(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://mirror.example/debian trixie main\n")
    with pytest.raises(debian.BuildError, match="no 'bookworm' source"):
        debian.host_sources(tmp_path)


def test_the_runtime_requirements_end_at_the_development_ones(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("# Runtime\nredis==8.1.0\nPyYAML==6.0.4\n# Development\npytest==9.2.0\n")
    assert python.requirements(path) == {"redis": "8.1.0", "pyyaml": "6.0.4"}


def test_the_python_layers_hold_no_test_tools_and_no_spark_beside_spark() -> None:
    pins = python.requirements(Path(__file__).resolve().parents[2] / "requirements.txt")
    roots = [n for n in pins if n not in catalogue.NOT_IN_IMAGES]
    dists, fetched = python.closure(roots, pins, catalogue.EXTRA_PINS)
    names = {d.metadata["Name"].lower() for d in dists}
    assert fetched == {"async-timeout": "5.0.1"}  # redis needs it below Python 3.11.3
    assert {"redis", "grpcio", "dash", "kubernetes"} <= names
    assert not names & {"pyspark", "selenium", "pytest", "grpcio-tools", "pyarrow"}


def test_every_image_is_made_of_known_layers_and_starts_with_the_shared_ones() -> None:
    for image in catalogue.images():
        assert image.layers[:3] == catalogue.BASE, image.name
        assert set(image.layers) <= set(catalogue.LAYERS), image.name
    assert catalogue.by_name()["clover-controller"].reference("opnfv", "1.0") == "opnfv/clover-controller:1.0"


SPARK_ENV = {"SPARK_HOME": "/spark", "JAVA_HOME": "/java", "SPARK_CONF_DIR": "/opt/spark/conf"}


def test_the_spark_driver_submits_in_client_mode_on_the_pods_address() -> None:
    env = {**SPARK_ENV, "SPARK_DRIVER_BIND_ADDRESS": "10.244.0.7"}
    args = ["driver", "--properties-file", "/opt/spark/conf/spark.properties", "local:///opt/clover/jobs/ingest.py"]
    assert sparkentry.command(args, env) == [
        "/spark/bin/spark-submit", "--conf", "spark.driver.bindAddress=10.244.0.7", "--deploy-mode", "client",
        "--properties-file", "/opt/spark/conf/spark.properties", "local:///opt/clover/jobs/ingest.py",
    ]  # fmt: skip


def test_a_spark_executor_runs_the_kubernetes_backend_with_the_pods_settings() -> None:
    env = {
        **SPARK_ENV, "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@d:7078", "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-1", "SPARK_EXECUTOR_POD_IP": "10.244.0.9",
        "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "ingest-exec-3", "SPARK_EXECUTOR_MEMORY": "1g",
        "SPARK_JAVA_OPT_10": "-Dten", "SPARK_JAVA_OPT_2": "-Dtwo", "SPARK_EXTRA_CLASSPATH": "/extra/*",
    }  # fmt: skip
    argv = sparkentry.command(["executor"], env)
    assert argv[:6] == ["/java/bin/java", "-Dtwo", "-Dten", "-Xms1g", "-Xmx1g", "-cp"]
    assert argv[6] == "/opt/spark/conf:/spark/jars/*:/extra/*"
    assert argv[7] == sparkentry.EXECUTOR_BACKEND
    assert argv[8:] == ["--driver-url", "spark://CoarseGrainedScheduler@d:7078", "--executor-id", "3", "--cores", "1",
                        "--app-id", "spark-1", "--hostname", "10.244.0.9", "--resourceProfileId", "0",
                        "--podName", "ingest-exec-3"]  # fmt: skip


def test_a_spark_executor_without_its_settings_is_refused_by_name() -> None:
    with pytest.raises(sparkentry.EntryError, match=r"SPARK_DRIVER_URL.*SPARK_EXECUTOR_MEMORY"):
        sparkentry.command(["executor"], SPARK_ENV)
    assert sparkentry.command(["java", "-version"], SPARK_ENV) == ["java", "-version"]


def test_a_backing_service_in_a_container_listens_everywhere_and_names_the_pod(tmp_path: Path) -> None:
    env = {"CLOVER_STATE_DIR": str(tmp_path), "CLOVER_POD_IP": "10.244.0.5", "CLOVER_REDIS_PASSWORD": "pw"}
    launch = prepare("redis", env)
    conf = (tmp_path / "redis" / "redis.conf").read_text()
    assert launch.argv[1:] == [str(tmp_path / "redis" / "redis.conf")]
    assert "bind 0.0.0.0\n" in conf and "protected-mode no\n" in conf and 'requirepass "pw"' in conf
    with pytest.raises(KeyError, match="unknown part 'mysql'"):
        prepare("mysql", env)


def test_the_local_stack_still_listens_on_loopback_only(tmp_path: Path) -> None:
    cfg = Config.from_env({"CLOVER_STATE_DIR": str(tmp_path)})
    redis_part(cfg, LOCAL).prepare(PartDirs(tmp_path / "redis"))
    conf = (tmp_path / "redis" / "redis.conf").read_text()
    assert "bind 127.0.0.1\n" in conf and "protected-mode yes\n" in conf
