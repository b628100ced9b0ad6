"""Launcher helpers that need no running service."""

from __future__ import annotations

import base64
import random
import socket
from pathlib import Path

import psutil

from stack.launcher import port_is_free, port_owner
from stack.parts import PartDirs, jvm_options_file, kafka_cluster_id, new_cluster_id, usable_cluster_id

BAD_ID = "-n2XKr8hTTeYyT1dl_AfEg"  # what the old generator made for 1 state directory in 64


def seed_of_a_dash_id() -> int:
    """A seed whose 16 random bytes, encoded as they were before, start with "-" (1 in 64)."""
    return next(s for s in range(5000) if base64.urlsafe_b64encode(random.Random(s).randbytes(16)).startswith(b"-"))


def test_a_listening_port_is_busy_and_its_owner_is_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        assert port_owner(port).startswith(f"pid {psutil.Process().pid} (")
    assert port_is_free(port)


def test_jvm_options_become_single_arguments() -> None:
    options = jvm_options_file("cassandra-jvm17.options")
    assert "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED" in options
    assert all(" " not in o for o in options)
    assert not any(o.startswith("#") for o in options)


def test_a_new_cluster_id_never_starts_with_a_dash() -> None:
    seed = seed_of_a_dash_id()
    made = new_cluster_id(random.Random(seed).randbytes)
    assert not made.startswith("-") and usable_cluster_id(made)
    assert len(base64.urlsafe_b64decode(made + "==")) == 16
    assert not usable_cluster_id(BAD_ID) and usable_cluster_id("A" + BAD_ID[1:])


def test_a_kept_bad_cluster_id_is_replaced_before_formatting(tmp_path: Path) -> None:
    dirs = PartDirs(tmp_path / "kafka")
    dirs.data.mkdir(parents=True)
    (dirs.root / "cluster-id").write_text(BAD_ID + "\n")
    made = kafka_cluster_id(dirs, random.Random(seed_of_a_dash_id()).randbytes)
    assert usable_cluster_id(made) and made != BAD_ID
    assert (dirs.root / "cluster-id").read_text() == made
    assert kafka_cluster_id(dirs) == made  # kept from now on


def test_a_formatted_log_directory_keeps_its_own_cluster_id(tmp_path: Path) -> None:
    dirs = PartDirs(tmp_path / "kafka")
    dirs.data.mkdir(parents=True)
    (dirs.root / "cluster-id").write_text(BAD_ID)
    (dirs.data / "meta.properties").write_text(f"#\nnode.id=1\nversion=1\ncluster.id={BAD_ID}\n")
    assert kafka_cluster_id(dirs) == BAD_ID  # Kafka starts from meta.properties; replacing would orphan the data
    (dirs.root / "cluster-id").write_text("AAAAAAAAAAAAAAAAAAAAAQ")
    assert kafka_cluster_id(dirs) == BAD_ID and (dirs.root / "cluster-id").read_text() == BAD_ID
