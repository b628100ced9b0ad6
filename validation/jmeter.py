"""The Apache JMeter install: laying out a JMeter home from Maven artifacts, and the command
lines of a non-GUI run (the master) and of a JMeter server (a slave).

``make setup`` resolves JMeter 5.6.3 from Maven Central into ``<stack cache>/jmeter/lib`` and
calls ``python -m validation.jmeter <lib> <home>``, which lays the artifacts out the way the
binary distribution does: ``bin/`` (ApacheJMeter.jar, the launcher, plus the property files
of ApacheJMeter_config), ``lib/ext/`` (JMeter's own components, where it looks for plugins)
and ``lib/`` (everything else).
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clover.config import LOOPBACK
from stack.java import find_java

LAUNCHER = "ApacheJMeter.jar"

# JMeter properties every run uses. The JTL is CSV with the original guide's columns:
# timeStamp, elapsed, label, responseCode, responseMessage, threadName, dataType, success,
# failureMessage, bytes, sentBytes, grpThreads, allThreads, Latency, IdleTime, Connect.
RESULT_PROPERTIES: Mapping[str, str] = {
    "jmeter.save.saveservice.output_format": "csv",
    "jmeter.save.saveservice.print_field_names": "true",
    "jmeter.save.saveservice.timestamp_format": "ms",
    "jmeter.save.saveservice.default_delimiter": ",",
    "jmeter.save.saveservice.time": "true",
    "jmeter.save.saveservice.label": "true",
    "jmeter.save.saveservice.response_code": "true",
    "jmeter.save.saveservice.response_message": "true",
    "jmeter.save.saveservice.thread_name": "true",
    "jmeter.save.saveservice.data_type": "true",
    "jmeter.save.saveservice.successful": "true",
    "jmeter.save.saveservice.assertion_results_failure_message": "true",
    "jmeter.save.saveservice.bytes": "true",
    "jmeter.save.saveservice.sent_bytes": "true",
    "jmeter.save.saveservice.thread_counts": "true",
    "jmeter.save.saveservice.url": "false",
    "jmeter.save.saveservice.latency": "true",
    "jmeter.save.saveservice.idle_time": "true",
    "jmeter.save.saveservice.connect_time": "true",
    "jmeter.save.saveservice.hostname": "false",
    "jmeter.save.saveservice.sample_count": "false",
    "jmeter.save.saveservice.filename": "false",
    "jmeter.save.saveservice.encoding": "false",
    "jmeter.save.saveservice.subresults": "false",
    "jmeter.save.saveservice.autoflush": "true",
    # The summariser writes "summary + N in hh:mm:ss = R/s Avg: .. Min: .. Max: .. Err: .." lines.
    "summariser.name": "summary",
    "summariser.log": "true",
    "summariser.out": "true",
    # Master <-> server RMI without TLS (loopback, or a cluster network the operator trusts).
    "server.rmi.ssl.disable": "true",
    # Samples come back from the servers in batches; the master writes them to one JTL.
    "mode": "StrippedBatch",
}

JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8")


class JMeterMissing(RuntimeError):
    """The JMeter home is not laid out; the message says what to run."""


def _properties(props: Mapping[str, str]) -> list[str]:
    return [f"-J{k}={v}" for k, v in props.items()]


@dataclass(frozen=True)
class JMeter:
    """A JMeter home and the Java that runs it."""

    home: Path
    java: Path
    jvm_options: tuple[str, ...] = JVM_OPTIONS
    extra_properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def find(cls, home: Path, java_home: str | None = None) -> JMeter:
        """The install at ``home``; raises JMeterMissing or stack.java.JavaNotFound."""
        home = home.resolve()
        if not (home / "bin" / LAUNCHER).exists() or not (home / "bin" / "jmeter.properties").exists():
            raise JMeterMissing(f"Apache JMeter is not installed in {home}; run `make setup`")
        return cls(home, find_java(java_home))

    def _base(self, work_dir: Path, rmi_host: str = LOOPBACK) -> list[str]:
        return [
            str(self.java),
            *self.jvm_options,
            f"-Djava.util.prefs.userRoot={work_dir / '.java-prefs'}",
            f"-Djava.rmi.server.hostname={rmi_host}",
            "-jar",
            str(self.home / "bin" / LAUNCHER),
        ]

    def run_command(
        self,
        jmx: Path,
        jtl: Path,
        log: Path,
        work_dir: Path,
        remote_hosts: Sequence[str] = (),
        shutdown_port: int | None = None,
        exit_servers: bool = False,
        rmi_host: str = LOOPBACK,
    ) -> list[str]:
        """A non-GUI run of ``jmx``: samples to ``jtl``, the log (with the summariser lines) to
        ``log``. With ``remote_hosts`` the servers send the traffic and the master aggregates;
        ``exit_servers`` tells them to exit when the test ends; ``rmi_host`` is the address
        they send the samples back to."""
        props = {**RESULT_PROPERTIES, **self.extra_properties}
        if shutdown_port is not None:
            props["jmeterengine.nongui.port"] = str(shutdown_port)
            props["jmeterengine.nongui.maxport"] = str(shutdown_port)
        base = self._base(work_dir, rmi_host)
        argv = [*base, "-n", "-t", str(jmx), "-l", str(jtl), "-j", str(log), *_properties(props)]
        if remote_hosts:
            # Servers started with this run (exit_servers) need a few seconds to come up: retry
            # for up to a minute; servers that should already be running get three tries.
            tries = "60" if exit_servers else "3"
            argv += [f"-Jclient.tries={tries}", "-Jclient.retries_delay=1000", "-R", ",".join(remote_hosts)]
            argv += ["-X"] if exit_servers else []
        return argv

    def server_command(self, port: int, log: Path, work_dir: Path, bind: str = LOOPBACK) -> list[str]:
        """A JMeter server (a slave) with its RMI registry and engine on ``port``."""
        base = self._base(work_dir, rmi_host=bind)
        props = {
            **RESULT_PROPERTIES,
            **self.extra_properties,
            "server_port": str(port),
            "server.rmi.localport": str(port),
        }
        return [*base, "-s", "-j", str(log), f"-Dserver_port={port}", *_properties(props)]


def lay_out_home(lib: Path, home: Path) -> Path:
    """Build a JMeter home from the resolved Maven artifacts in ``lib`` (links, not copies)."""
    jars = sorted(lib.glob("*.jar"))
    config = [j for j in jars if j.name.startswith("ApacheJMeter_config-")]
    launcher = [j for j in jars if j.name.startswith("ApacheJMeter-")]
    if not config or not launcher:
        raise JMeterMissing(f"{lib} lacks ApacheJMeter_config or the ApacheJMeter launcher jar")
    staging = home.with_name(home.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "lib" / "ext").mkdir(parents=True)
    (staging / "lib" / "junit").mkdir()
    with zipfile.ZipFile(config[0]) as z:
        for member in z.namelist():
            if member.startswith("bin/") and ".." not in member:
                z.extract(member, staging)
    shutil.copy2(launcher[0], staging / "bin" / LAUNCHER)
    for jar in jars:
        if jar in config or jar in launcher:
            continue
        target = staging / "lib" / ("ext" if jar.name.startswith("ApacheJMeter_") else "") / jar.name
        target.symlink_to(jar.resolve())
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    return home


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m validation.jmeter <maven lib dir> <jmeter home>", file=sys.stderr)
        return 2
    home = lay_out_home(Path(args[0]), Path(args[1]))
    print(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
