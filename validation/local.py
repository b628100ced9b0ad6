"""The validation service as a part of the local stack (``cloverctl local up validation``)."""

from __future__ import annotations

import sys

from clover.config import Config
from stack.parts import Launch, Part, PartDirs
from stack.probes import ProbeFailed

GROUP = "validation"


def grpc_port(cfg: Config) -> int:
    return int(cfg.validation_grpc.rpartition(":")[2])


def validation_part(cfg: Config) -> Part:
    """The gRPC service (the JMeter master); it starts JMeter runs and local JMeter servers itself."""

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        # The service reads Config.from_env(): hand it this configuration, not the caller's environment.
        env = {
            "CLOVER_VALIDATION_GRPC": cfg.validation_grpc,
            "CLOVER_STATE_DIR": str(cfg.state_dir),
            "CLOVER_STACK_CACHE": str(cfg.stack_cache),
            "CLOVER_JMETER_HOME": str(cfg.jmeter_dir),
            "CLOVER_JMETER_SLAVES": ",".join(cfg.jmeter_slaves),
            "CLOVER_JMETER_RMI_PORT": str(cfg.jmeter_rmi_port),
            **({"CLOVER_JAVA_HOME": cfg.java_home} if cfg.java_home else {}),
        }
        argv = [
            sys.executable,
            "-m",
            "validation.server",
            "--listen",
            cfg.validation_grpc,
            "--work-dir",
            f"{dirs.data}",
        ]
        return Launch(argv, env)

    def probe() -> None:
        from validation.client import ValidationError, get_status

        try:
            get_status(cfg.validation_grpc, timeout=3)
        except ValidationError as exc:
            raise ProbeFailed(f"GetStatus failed: {exc}") from None

    return Part(
        name="validation",
        ports={"grpc": grpc_port(cfg)},
        health="gRPC GetStatus",
        probe=probe,
        prepare=prepare,
        uses_java=True,
        startup_timeout=30,
        stop_timeout=40,
        installed=(cfg.jmeter_dir / "bin" / "ApacheJMeter.jar",),
    )


def local_parts(cfg: Config) -> list[Part]:
    """The parts `cloverctl local up validation` starts."""
    return [validation_part(cfg)]
