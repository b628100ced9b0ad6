"""Remove connector dependencies that pyspark already ships, so Spark sees one copy of each.

A jar is dropped when pyspark's own ``jars/`` holds the same artifact in any version.
Usage: python prune_spark_jars.py <dir of connector jars>
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pyspark

VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")


def artifact_of(jar: Path) -> str:
    match = VERSIONED_JAR.match(jar.name)
    return match.group("artifact") if match else jar.stem


def prune(connector_dir: Path) -> list[Path]:
    shipped = {artifact_of(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    removed = [j for j in sorted(connector_dir.glob("*.jar")) if artifact_of(j) in shipped]
    for jar in removed:
        jar.unlink()
    return removed


if __name__ == "__main__":
    prune(Path(sys.argv[1]))
