"""A JMeter server in the foreground, the process of a slave pod: ``python -m validation.slave``.

It listens on CLOVER_JMETER_RMI_PORT (registry and engine on the one port, RMI without TLS, as
the local servers in validation/runner.py) and names CLOVER_JMETER_RMI_HOST (the pod IP) in the
stubs it hands the master. Logs go to ``<state dir>/jmeter-server/``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from clover.config import Config, ConfigError
from stack.java import JavaNotFound
from validation.jmeter import JMeter, JMeterMissing


def server_argv(cfg: Config) -> list[str]:
    """The JMeter server's command line; its work directory is created."""
    jmeter = JMeter.find(cfg.jmeter_dir, cfg.java_home)
    work = cfg.state_dir / "jmeter-server"
    work.mkdir(parents=True, exist_ok=True)
    return jmeter.server_command(cfg.jmeter_rmi_port, work / "jmeter-server.log", work, bind=cfg.jmeter_rmi_host)


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv):
        print("usage: python -m validation.slave (settings from CLOVER_* variables)", file=sys.stderr)
        return 2
    try:
        command = server_argv(Config.from_env())
    except (ConfigError, JMeterMissing, JavaNotFound) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
