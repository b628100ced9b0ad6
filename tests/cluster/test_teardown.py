"""``down`` leaves this machine as ``up`` found it (runs last: it takes the cluster down)."""

from __future__ import annotations

import time

from stack.cluster import netfilter
from stack.cluster.layout import BRIDGE, ClusterPaths
from stack.cluster.parts import GROUP
from stack.launcher import Launcher
from tests.cluster.conftest import Timings
from tests.cluster.machine import Snapshot, snapshot


def test_down_leaves_nothing_behind(cluster: Launcher, cluster_paths: ClusterPaths, before_up: Snapshot,
                                    timings: Timings) -> None:  # fmt: skip
    during = snapshot(cluster_paths.root)
    assert during.mounts and during.processes and BRIDGE in during.our_links  # there was something to remove
    started = time.monotonic()
    cluster.down([GROUP], progress=lambda m: print(f"[cluster] {m}"))
    timings["down"] = time.monotonic() - started
    after = snapshot(cluster_paths.root)
    assert after.processes == before_up.processes
    assert after.mounts == before_up.mounts
    assert after.our_links == before_up.our_links
    assert after.lo_addresses == before_up.lo_addresses
    assert netfilter.leftovers(BRIDGE) == []
    assert after.iptables == before_up.iptables
    assert after.nft_tables == before_up.nft_tables
    assert after.sysctls == before_up.sysctls
    assert after.outside_dirs == before_up.outside_dirs
    assert after.kubepods_cgroups == before_up.kubepods_cgroups
    assert not cluster_paths.host_record.exists()
    assert cluster.running() == [] or all(p.name not in cluster.groups[GROUP] for p in cluster.running())
