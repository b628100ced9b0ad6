"""Build steps with stamps, in the style of ``stack/setup.sh``: a step whose inputs hash to the
value in its stamp file (and whose outputs exist) is skipped; each step reports its time."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stack.hostsetup import Progress


class BuildError(RuntimeError):
    """A build step failed; the message names the step and ends with its output's last lines."""


@dataclass(frozen=True)
class Step:
    """One cached build step: ``run`` makes ``outputs`` from inputs summarised by ``inputs``."""

    name: str
    inputs: str
    outputs: tuple[Path, ...]
    run: Callable[[], str]


def digest(*parts: str | Path) -> str:
    """The hash of strings and of files' contents (a missing file hashes as its name)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.read_bytes() if part.exists() else f"missing {part}".encode())
        else:
            h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def run_steps(steps: Iterable[Step], stamps: Path, progress: Progress) -> list[str]:
    """Run each step whose stamp does not match; returns the names of the steps that ran."""
    steps = list(steps)
    stamps.mkdir(parents=True, exist_ok=True)
    ran = []
    for number, step in enumerate(steps, 1):
        started = time.monotonic()
        stamp = stamps / step.name
        if stamp.exists() and stamp.read_text() == step.inputs and all(p.exists() for p in step.outputs):
            progress(f"[{number}/{len(steps)}] {step.name:<28} up to date ({time.monotonic() - started:.1f}s)")
            continue
        progress(f"[{number}/{len(steps)}] {step.name:<28} building ...")
        stamp.unlink(missing_ok=True)
        outcome = step.run()
        missing = [str(p) for p in step.outputs if not p.exists()]
        if missing:
            raise BuildError(f"{step.name}: made no {missing[0]}")
        stamp.write_text(step.inputs)
        ran.append(step.name)
        progress(f"[{number}/{len(steps)}] {step.name:<28} {outcome} ({time.monotonic() - started:.1f}s)")
    return ran


def command(step: str, argv: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None,
            nice: bool = False) -> str:  # fmt: skip
    """Run ``argv``; on failure raise BuildError with the last lines of its output."""
    full = ["nice", "-n", "19", *argv] if nice else argv
    done = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise BuildError(f"{step}: `{' '.join(argv[:4])} ...` failed (exit {done.returncode}):\n{tail}")
    return done.stdout
