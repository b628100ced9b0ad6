"""The KRaft cluster id: Kafka's StorageTool accepts every id the stack makes, and a state
directory that kept a refused one (an id starting with "-", made by an older Clover) starts."""

from __future__ import annotations

import dataclasses
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clover.config import Config
from stack.java import find_java
from stack.launcher import Launcher
from stack.parts import CONF_DIR, classpath, formatted_cluster_id, infrastructure, new_cluster_id
from tests.integration.test_launcher_failures import free_port, running_pids
from tests.unit.test_launcher import BAD_ID, seed_of_a_dash_id


@pytest.fixture
def kafka_only(tmp_path: Path, cfg: Config) -> Iterator[Launcher]:
    own = dataclasses.replace(
        cfg, state_dir=tmp_path / "state", kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port()
    )
    launcher = Launcher(own, {"kafka": infrastructure(own)["kafka"]})
    yield launcher
    launcher.down()


def storage_tool_format(cfg: Config, cluster_id: str, config: Path) -> subprocess.CompletedProcess[str]:
    """Kafka's StorageTool as the stack ran it before: the id as an argument of its own."""
    return subprocess.run(
        [str(find_java(cfg.java_home)), f"-Dlog4j2.configurationFile={CONF_DIR / 'kafka-log4j2.properties'}",
         "-cp", classpath(cfg.stack_cache / "kafka" / "lib"), "kafka.tools.StorageTool", "format",
         "--cluster-id", cluster_id, "--config", str(config), "--ignore-formatted"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_storage_tool_accepts_the_id_made_where_the_old_one_started_with_a_dash(kafka_only: Launcher) -> None:
    made = new_cluster_id(random.Random(seed_of_a_dash_id()).randbytes)
    dirs = kafka_only.dirs("kafka")
    dirs.root.mkdir(parents=True)
    (dirs.root / "cluster-id").write_text(made)
    kafka_only.parts["kafka"].prepare(dirs)  # renders server.properties and formats the log directory
    assert formatted_cluster_id(dirs) == made
    config = dirs.root / "server.properties"
    refused = storage_tool_format(kafka_only.cfg, BAD_ID, config)
    assert refused.returncode != 0 and "argument --cluster-id/-t: expected one argument" in refused.stderr
    accepted = storage_tool_format(kafka_only.cfg, made, config)
    assert accepted.returncode == 0, accepted.stderr[-500:]


def test_a_state_directory_that_kept_a_refused_id_starts(kafka_only: Launcher) -> None:
    dirs = kafka_only.dirs("kafka")
    dirs.root.mkdir(parents=True)
    (dirs.root / "cluster-id").write_text(BAD_ID + "\n")
    kafka_only.up()
    assert len(running_pids(kafka_only)) == 1
    replaced = (dirs.root / "cluster-id").read_text()
    assert replaced != BAD_ID and not replaced.startswith("-")
    assert formatted_cluster_id(dirs) == replaced
