"""The local "pod" registry: how services running on this machine find each other.

In a cluster, Kubernetes names pods and services. Locally, each sample-chain service runs as a
"pod": on its own loopback address, or (as root) in its own network namespace behind a veth
pair. Whoever starts a pod registers it here; the controller resolves service names through
it, and Clovisor discovers the veths to trace. One JSON file per pod under
``<state dir>/pods/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clover.config import Config


@dataclass(frozen=True)
class LocalPod:
    """A service instance running on this machine."""

    name: str
    service: str
    ip: str
    ports: dict[str, int]
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    netns: str | None = None
    host_veth: str | None = None
    pid: int | None = None


def registry_dir(cfg: Config) -> Path:
    return cfg.state_dir / "pods"


def register(cfg: Config, pod: LocalPod) -> None:
    """Add or replace a pod's entry (written atomically)."""
    directory = registry_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{pod.name}.json.tmp"
    tmp.write_text(json.dumps(asdict(pod), sort_keys=True))
    os.replace(tmp, directory / f"{pod.name}.json")


def unregister(cfg: Config, name: str) -> None:
    (registry_dir(cfg) / f"{name}.json").unlink(missing_ok=True)


def list_pods(cfg: Config) -> list[LocalPod]:
    """Every registered pod, by name."""
    pods = []
    for path in sorted(registry_dir(cfg).glob("*.json")):
        try:
            pods.append(LocalPod(**json.loads(path.read_text())))
        except (ValueError, TypeError, FileNotFoundError):
            continue  # a half-removed or foreign file is not a pod
    return pods


class UnknownService(LookupError):
    """No registered pod serves that name."""


def resolve(cfg: Config, name: str) -> str:
    """The address of a pod or service, Kubernetes style: ``http-lb-v2``, ``http-lb-v2.default``
    or ``http-lb-v2.default.svc.cluster.local`` all resolve to the pod's IP."""
    short, _, rest = name.partition(".")
    namespace = rest.split(".")[0] if rest else None
    for pod in list_pods(cfg):
        if namespace and pod.namespace != namespace:
            continue
        if short in (pod.name, pod.service):
            return pod.ip
    raise UnknownService(f"no local pod or service named {name!r} is registered in {registry_dir(cfg)}")
