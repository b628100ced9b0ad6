"""BCC compiles a tc program and it sees traffic on a veth into a namespace the test creates."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs and making namespaces needs root"),
]

COUNT_IPV4 = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
BPF_ARRAY(packets, u64, 1);
int count_ipv4(struct __sk_buff *skb) {
    if (skb->protocol == htons(ETH_P_IP)) {
        int zero = 0;
        u64 *n = packets.lookup(&zero);
        if (n) __sync_fetch_and_add(n, 1);
    }
    return TC_ACT_OK;
}
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth_into_namespace() -> Iterator[tuple[str, str]]:
    """A namespace with 10.231.0.2 behind a host veth with 10.231.0.1; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if = f"clover-t{tag}", f"cvt{tag}"
    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("addr", "add", "10.231.0.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", "10.231.0.2/30", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_tc_program_counts_pings_through_a_veth(veth_into_namespace: tuple[str, str]) -> None:
    from bcc import BPF
    from pyroute2 import IPRoute

    _, host_if = veth_into_namespace
    bpf = BPF(text=COUNT_IPV4)
    fn = bpf.load_func("count_ipv4", BPF.SCHED_CLS)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=host_if)[0]
        ipr.tc("add", "clsact", index)
        ipr.tc(
            "add-filter", "bpf", index, ":1", fd=fn.fd, name=fn.name, parent="ffff:fff2", classid=1, direct_action=True
        )
        subprocess.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.231.0.2"], check=True, capture_output=True)
        ipr.tc("del", "clsact", index)
    packets = bpf["packets"][0].value
    # tc ingress of the host veth sees what leaves the namespace: the 3 echo replies (+ ARP is not IPv4).
    assert packets == 3
