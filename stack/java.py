"""Finding a Java runtime for the JVM parts (Kafka, Cassandra, Spark)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

MIN_JAVA = 17
JVM_DIR = Path("/usr/lib/jvm")


class JavaNotFound(RuntimeError):
    """No usable Java runtime; the message says where it was looked for."""


def java_major(java: Path) -> int | None:
    """The major version printed by ``java -version``, or None when it cannot run."""
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else None


def find_java(java_home: str | None = None) -> Path:
    """The ``java`` binary to use: ``java_home`` (CLOVER_JAVA_HOME/JAVA_HOME), else PATH, else
    a JDK 17 under /usr/lib/jvm. Raises JavaNotFound naming what was tried."""
    home = java_home if java_home is not None else (os.environ.get("CLOVER_JAVA_HOME") or os.environ.get("JAVA_HOME"))
    tried: list[str] = []
    candidates: list[Path] = []
    if home:
        candidates.append(Path(home) / "bin" / "java")
    else:
        on_path = shutil.which("java")
        if on_path:
            candidates.append(Path(on_path))
        candidates += sorted(JVM_DIR.glob("*17*/bin/java"))
    for java in candidates:
        major = java_major(java)
        if major is not None and major >= MIN_JAVA:
            return java
        tried.append(f"{java} ({'not runnable' if major is None else f'Java {major}'})")
    where = ", ".join(tried) if tried else "no java on PATH or under /usr/lib/jvm"
    raise JavaNotFound(f"Java {MIN_JAVA}+ not found ({where}); install a JDK or set CLOVER_JAVA_HOME")


def java_home_of(java: Path) -> Path:
    """The JAVA_HOME directory of a ``.../bin/java`` binary (symlinks resolved)."""
    return java.resolve().parent.parent
