"""clsact qdiscs and Clovisor's direct-action filters on host-side veths (pyroute2, netlink).

Clovisor owns the filters it names ``clovisor:*``. It adds a clsact qdisc only where none
exists and records that; on detach it removes its filters, and the qdisc when it added it or
when nothing but its own filters was left on it. At start, ``clean_stale`` removes what an
earlier Clovisor (killed, say, with SIGKILL) left behind, without touching other tools' filters.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

FILTER_PREFIX = "clovisor:"
INGRESS = "ffff:fff2"  # tc ingress of the host veth: packets leaving the pod
EGRESS = "ffff:fff3"  # tc egress of the host veth: packets delivered into the pod
_PARENTS = {INGRESS: 0xFFFFFFF2, EGRESS: 0xFFFFFFF3}
_PRIO = 49152 - 7  # a priority of our own, so our filters never replace another tool's
_HANDLE = 0xC10


@dataclass(frozen=True)
class Attachment:
    """Where Clovisor's programs are attached, and whether it created the qdisc."""

    ifindex: int
    ifname: str
    created_qdisc: bool


def _has_clsact(ipr: IPRoute, ifindex: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


def _filter_names(ipr: IPRoute, ifindex: int, parent: str) -> list[tuple[int, str]]:
    """(priority, BPF filter name) of every filter on one clsact hook."""
    out: list[tuple[int, str]] = []
    try:
        filters = ipr.get_filters(index=ifindex, parent=_PARENTS[parent])
    except NetlinkError:
        return out
    for f in filters:
        if f.get_attr("TCA_KIND") != "bpf":
            continue
        options = f.get_attr("TCA_OPTIONS")
        name = options.get_attr("TCA_BPF_NAME") if options is not None else None
        if name:
            out.append(((f["info"] >> 16) & 0xFFFF, name))
    return out


def attach(ipr: IPRoute, ifindex: int, to_pod_fd: int, from_pod_fd: int) -> Attachment:
    """Attach the two programs to a host veth: ``to_pod`` on egress, ``from_pod`` on ingress."""
    ifname = ipr.get_links(ifindex)[0].get_attr("IFLA_IFNAME")
    created = False
    if not _has_clsact(ipr, ifindex):
        try:
            ipr.tc("add", "clsact", ifindex)
            created = True
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    _remove_own_filters(ipr, ifindex)
    for parent, fd, name in ((EGRESS, to_pod_fd, "to_pod"), (INGRESS, from_pod_fd, "from_pod")):
        ipr.tc(
            "add-filter", "bpf", ifindex, handle=_HANDLE, fd=fd, name=FILTER_PREFIX + name,
            parent=parent, prio=_PRIO, classid=1, direct_action=True,
        )  # fmt: skip
    return Attachment(ifindex, ifname, created)


def _remove_own_filters(ipr: IPRoute, ifindex: int) -> int:
    removed = 0
    for parent in (INGRESS, EGRESS):
        for prio, name in _filter_names(ipr, ifindex, parent):
            if name.startswith(FILTER_PREFIX):
                try:
                    ipr.tc("del-filter", "bpf", ifindex, parent=parent, prio=prio)
                    removed += 1
                except NetlinkError as exc:
                    if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                        raise
    return removed


def _others_remain(ipr: IPRoute, ifindex: int) -> bool:
    return any(
        not name.startswith(FILTER_PREFIX)
        for parent in (INGRESS, EGRESS)
        for _, name in _filter_names(ipr, ifindex, parent)
    )


def detach(ipr: IPRoute, attachment: Attachment) -> None:
    """Remove Clovisor's filters, and the clsact qdisc when Clovisor added it or nothing else uses it."""
    try:
        _remove_own_filters(ipr, attachment.ifindex)
        if _has_clsact(ipr, attachment.ifindex) and (
            attachment.created_qdisc or not _others_remain(ipr, attachment.ifindex)
        ):
            ipr.tc("del", "clsact", attachment.ifindex)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            raise  # the veth is gone with its pod: nothing left to remove


def clean_stale(ipr: IPRoute, ifindexes: Iterable[int] | None = None) -> list[str]:
    """Remove what an earlier Clovisor left: its filters and the clsact qdiscs holding only them.

    Returns the names of the interfaces cleaned."""
    cleaned = []
    links = ipr.get_links() if ifindexes is None else [ln for i in ifindexes for ln in ipr.get_links(i)]
    for link in links:
        index = link["index"]
        try:
            if not _has_clsact(ipr, index):
                continue
            if _remove_own_filters(ipr, index) == 0:
                continue
            if not _others_remain(ipr, index):
                ipr.tc("del", "clsact", index)
            cleaned.append(link.get_attr("IFLA_IFNAME"))
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
    if cleaned:
        log.info("removed stale Clovisor filters from %s", ", ".join(cleaned))
    return cleaned


def qdiscs_with_clsact(ipr: IPRoute) -> list[str]:
    """Names of the interfaces that carry a clsact qdisc (for tests and `clovisor status`)."""
    names = []
    for link in ipr.get_links():
        if _has_clsact(ipr, link["index"]):
            names.append(link.get_attr("IFLA_IFNAME"))
    return names
