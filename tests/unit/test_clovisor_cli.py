"""`clovisor status` prints the running agent's status and refuses one no agent is keeping fresh."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from clovisor.cli import STALE_STATUS_SECONDS, main

pytestmark = pytest.mark.unit


def _status_file(state_dir: Path, age_seconds: float) -> Path:
    path = state_dir / "clovisor" / "status.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pods": ["a"], "spans": 3}))
    written = time.time() - age_seconds
    os.utime(path, (written, written))
    return path


def test_a_fresh_status_is_printed(tmp_path: Path) -> None:
    _status_file(tmp_path, 1.0)
    result = CliRunner().invoke(main, ["status"], env={"CLOVER_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0
    assert json.loads(result.output) == {"pods": ["a"], "spans": 3}


def test_a_status_nobody_rewrites_is_refused(tmp_path: Path) -> None:
    path = _status_file(tmp_path, STALE_STATUS_SECONDS + 50)
    result = CliRunner().invoke(main, ["status"], env={"CLOVER_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert f"the status at {path} was written 60 s ago" in result.output
    assert "clovisor is not running" in result.output


def test_no_status_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status"], env={"CLOVER_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert f"no status at {tmp_path / 'clovisor' / 'status.json'}: is clovisor running?" in result.output
