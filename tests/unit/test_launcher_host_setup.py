"""The launcher's host setups (set up before the first part, undone after the last) and
``ready_before_next`` (later parts start only once it is ready)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from clover.config import Config
from stack.hostsetup import Progress
from stack.launcher import Launcher, StackError
from stack.parts import Launch, Part, PartDirs
from stack.probes import ProbeFailed


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def setup(self, progress: Progress) -> None:
        self.calls.append("setup")

    def teardown(self, progress: Progress) -> None:
        self.calls.append("teardown")


def sleeper(name: str, host: Recorder, events: list[str], ready_after: float = 0.0, **extra: object) -> Part:
    started: list[float] = []

    def prepare(dirs: PartDirs) -> Launch:
        events.append(f"start {name}")
        started.append(time.monotonic())
        return Launch(["sleep", "60"])

    def probe() -> None:
        if time.monotonic() - started[-1] < ready_after:
            raise ProbeFailed("not yet")
        if f"ready {name}" not in events:
            events.append(f"ready {name}")

    return Part(name=name, ports={}, health="sleeps", probe=probe, prepare=prepare, home=f"group/{name}",
                host_setup=host, stop_timeout=5, **extra)  # type: ignore[arg-type]  # fmt: skip


def test_a_host_setup_wraps_its_parts_and_a_ready_part_comes_before_the_next(tmp_path: Path) -> None:
    host, events = Recorder(), []
    first = sleeper("first", host, events, ready_after=0.6, ready_before_next=True)
    second = sleeper("second", host, events)
    launcher = Launcher(replace(Config(), state_dir=tmp_path), {"first": first, "second": second},
                        groups={"g": ["first", "second"]})  # fmt: skip
    launcher.up(["g"])
    assert host.calls == ["setup"]
    assert events == ["start first", "ready first", "start second", "ready second"]
    assert (tmp_path / "group" / "first" / "process.json").exists()
    launcher.down(["second"])
    assert host.calls == ["setup"]  # "first" still uses it
    launcher.up(["g"])
    assert host.calls == ["setup", "setup"]  # set up again before "second" starts again
    launcher.down()
    assert host.calls == ["setup", "setup", "teardown"]
    assert launcher.running() == []


def never_ready() -> None:
    raise ProbeFailed("never")


def test_a_part_that_fails_to_start_undoes_the_host_setup(tmp_path: Path) -> None:
    host, events = Recorder(), []
    broken = replace(sleeper("broken", host, events), startup_timeout=0.5, probe=never_ready)
    launcher = Launcher(replace(Config(), state_dir=tmp_path), {"broken": broken})
    with pytest.raises(StackError, match="not ready"):
        launcher.up()
    assert host.calls == ["setup", "teardown"]
    assert launcher.running() == []
