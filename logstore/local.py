"""The log store and the log shipper as parts of the local stack (``cloverctl local up logging``).

Both binaries are built by ``make setup`` from the Go module proxy into the stack cache:
VictoriaLogs (``stack/victorialogs``) and an OpenTelemetry Collector with the file-log receiver
(``stack/otelcol``).
"""

from __future__ import annotations

import os

from clover.config import LOOPBACK, Config
from logstore.query import LogStore
from logstore.settings import LogSettings
from stack import probes
from stack.parts import Launch, Part, PartDirs, render

GROUP = "logging"
STORE = "log-store"
SHIPPER = "log-shipper"
# The file-log receiver saves a line's offset only once the line was handed on (without the gate
# a batch read but not yet sent is lost to a SIGKILL); the entries' entryId takes care of lines
# sent again.
SYNCHRONOUS_EMITTER = "stanza.synchronousLogEmitter"


def store_part(cfg: Config, settings: LogSettings, bind: str = LOOPBACK) -> Part:
    """VictoriaLogs: entries on disk under the part's data directory, kept ``retention_days``."""
    binary = cfg.stack_cache / "victorialogs" / "victoria-logs"

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        return Launch(
            [str(binary), f"-storageDataPath={dirs.data}", f"-httpListenAddr={bind}:{settings.store_port}",
             f"-retentionPeriod={settings.retention_days}d", "-loggerLevel=WARN"]
        )  # fmt: skip

    return Part(
        name=STORE,
        ports={"http": settings.store_port},
        health="a LogsQL query",
        probe=lambda: LogStore(settings.store_url).probe(),
        prepare=prepare,
        startup_timeout=30,
        installed=(binary,),
        ready_before_next=True,
    )


def shipper_part(cfg: Config, settings: LogSettings, bind: str = LOOPBACK) -> Part:
    """The OpenTelemetry Collector: every pod's access log to the store."""
    binary = cfg.stack_cache / "otelcol" / "otelcol"

    def prepare(dirs: PartDirs) -> Launch:
        settings.access_log_dir.mkdir(parents=True, exist_ok=True)
        conf = render(
            "log-shipper.yaml",
            dirs.root / "log-shipper.yaml",
            storage_dir=dirs.data / "storage",
            access_log_dir=settings.access_log_dir,
            state_dir=cfg.state_dir,
            stream=settings.stream,
            store_url=settings.store_url,
            bind_host=bind,
            metrics_port=settings.shipper_metrics_port,
        )
        return Launch([str(binary), f"--config=file:{conf}", f"--feature-gates={SYNCHRONOUS_EMITTER}"])

    return Part(
        name=SHIPPER,
        ports={"metrics": settings.shipper_metrics_port},
        health="/metrics",
        probe=lambda: probes.http_ok(f"http://{LOOPBACK}:{settings.shipper_metrics_port}/metrics"),
        prepare=prepare,
        startup_timeout=30,
        installed=(binary,),
    )


def local_parts(cfg: Config) -> list[Part]:
    settings = LogSettings.from_env(os.environ)
    return [store_part(cfg, settings), shipper_part(cfg, settings)]
