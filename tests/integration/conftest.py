"""Fixtures the Clovisor modules share (defined in clovisor_support.py): ``redis_client``,
``agent`` (tracing the module's ``lab``) and ``spans``."""

from tests.integration.clovisor_support import agent, redis_client, spans

__all__ = ["agent", "redis_client", "spans"]
