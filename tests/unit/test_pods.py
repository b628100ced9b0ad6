"""The local pod registry resolves service names the way Kubernetes DNS would."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clover.config import Config
from clover.pods import LocalPod, UnknownService, list_pods, register, resolve, unregister


def test_register_resolve_and_unregister(tmp_path: Path) -> None:
    cfg = dataclasses.replace(Config.from_env({}), state_dir=tmp_path)
    register(cfg, LocalPod("http-lb-v2", "http-lb", "127.0.1.12", {"http": 9180, "grpc": 50054}))
    register(cfg, LocalPod("clover-server1", "clover-server1", "127.0.1.21", {"http": 9180}, namespace="sdc"))
    assert [p.name for p in list_pods(cfg)] == ["clover-server1", "http-lb-v2"]
    assert resolve(cfg, "http-lb-v2.default") == "127.0.1.12"
    assert resolve(cfg, "http-lb") == "127.0.1.12"
    assert resolve(cfg, "clover-server1.sdc.svc.cluster.local") == "127.0.1.21"
    with pytest.raises(UnknownService, match=r"no local pod or service named 'clover-server1\.default'"):
        resolve(cfg, "clover-server1.default")
    unregister(cfg, "http-lb-v2")
    assert [p.name for p in list_pods(cfg)] == ["clover-server1"]
