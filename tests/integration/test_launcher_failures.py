"""The launcher refuses to half-start: each failure names its cause and leaves nothing running."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from clover.config import Config, with_password
from stack.launcher import Launcher, StackError
from stack.parts import infrastructure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def isolated(tmp_path: Path, cfg: Config) -> Iterator[Config]:
    """A configuration with its own state directory and free ports for redis and kafka."""
    own = dataclasses.replace(
        cfg,
        state_dir=tmp_path / "state",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
    )
    yield own
    Launcher(own, infrastructure(own)).down()


def launcher_for(cfg: Config, *names: str) -> Launcher:
    parts = {name: part for name, part in infrastructure(cfg).items() if name in names}
    return Launcher(cfg, parts)


def running_pids(launcher: Launcher) -> list[int]:
    return [p.pid for name in launcher.parts if (p := launcher.process(name)) is not None]


def test_a_busy_port_is_named_with_its_owner_and_nothing_starts(isolated: Config) -> None:
    launcher = launcher_for(isolated, "redis", "kafka")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", isolated.kafka_port))
        squatter.listen()
        with pytest.raises(StackError) as err:
            launcher.up()
    message = str(err.value)
    assert f"port {isolated.kafka_port} (kafka broker) is already in use by pid {psutil.Process().pid}" in message
    assert running_pids(launcher) == []


def test_a_missing_java_is_reported_before_anything_starts(isolated: Config, tmp_path: Path) -> None:
    no_java = dataclasses.replace(isolated, java_home=str(tmp_path / "no-such-jdk"))
    launcher = launcher_for(no_java, "redis", "kafka")
    with pytest.raises(StackError) as err:
        launcher.up()
    assert str(err.value).startswith("cannot start kafka: Java 17+ not found")
    assert str(tmp_path / "no-such-jdk" / "bin" / "java") in str(err.value)
    assert running_pids(launcher) == []


def test_a_part_that_dies_while_starting_stops_the_others(isolated: Config) -> None:
    launcher = launcher_for(isolated, "redis", "kafka")
    data = launcher.dirs("kafka").data
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\ncluster.id=not-a-valid-id\nnode.id=7\n")
    with pytest.raises(StackError) as err:
        launcher.up()
    assert str(err.value).startswith("kafka exited while starting; last lines of")
    assert running_pids(launcher) == []
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(isolated.redis_url, socket_connect_timeout=1).ping()


def test_data_survives_down_and_up_and_fresh_starts_empty(isolated: Config) -> None:
    launcher = launcher_for(isolated, "redis")
    launcher.up()
    redis.Redis.from_url(isolated.redis_url).set("kept", "yes")
    launcher.down()
    assert running_pids(launcher) == []
    launcher.up()
    assert redis.Redis.from_url(isolated.redis_url).get("kept") == b"yes"
    launcher.up(fresh=True)
    assert redis.Redis.from_url(isolated.redis_url).get("kept") is None


def test_a_redis_still_running_without_the_password_is_reported(isolated: Config) -> None:
    """A Redis an older Clover started (no password) still lets anyone in: status says so."""
    launcher_for(isolated, "redis").up()
    guarded = dataclasses.replace(isolated, redis_url=with_password(isolated.redis_url, "s3cret"))
    (row,) = launcher_for(guarded, "redis").status()
    assert (row.health, row.detail) == ("unhealthy", (
        f"Redis on port {isolated.redis_port} answers clients without the password (it was started without one); "
        "restart it: cloverctl local down redis && cloverctl local up redis"))  # fmt: skip


def test_an_unknown_part_is_refused(isolated: Config) -> None:
    with pytest.raises(StackError, match="unknown part 'kafak'; parts and groups are: redis, kafka"):
        launcher_for(isolated, "redis", "kafka").up(["kafak"])
