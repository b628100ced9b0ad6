"""Removing the cluster's iptables rules and chains, and nothing else.

kube-proxy and the kubelet make chains named ``KUBE-*``, the CNI plugins ``CNI-*``; the cluster
setup adds one FORWARD rule naming the pods' bridge. Rules in other chains that jump to those
chains or name the bridge are deleted, then those chains are flushed and deleted, in one
``iptables-restore --noflush`` per table."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-")
COMMANDS = ("iptables", "ip6tables")


def _ours(chain: str) -> bool:
    return chain.startswith(OUR_CHAIN_PREFIXES)


def forward_rule(bridge: str) -> list[str]:
    """Pods may talk to each other and to this machine, never route off it."""
    return ["FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "DROP"]


def add_forward_rule(bridge: str) -> None:
    rule = forward_rule(bridge)
    if subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode != 0:
        subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)


def cleanup_script(saved: str, bridge: str) -> dict[str, list[str]]:
    """The iptables-restore lines, per table, that remove our rules and chains from ``saved``
    (the output of iptables-save)."""
    script: dict[str, list[str]] = {}
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
            continue
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        chain = words[1]
        target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")), "")
        if not _ours(chain) and (_ours(target) or bridge in words):
            script.setdefault(table, []).append("-D" + line[2:])  # iptables-save's own quoting
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and _ours(line[1:].split()[0]):
            chain = line[1:].split()[0]
            script.setdefault(table, []).append(f"-F {chain}")
    for tbl, lines in list(script.items()):
        chains = [line.split()[1] for line in lines if line.startswith("-F ")]
        script[tbl] = lines + [f"-X {c}" for c in chains]
    return script


def remove(bridge: str) -> list[str]:
    """Remove our rules and chains from every table of IPv4 and IPv6; returns what was removed."""
    removed = []
    for cmd in COMMANDS:
        saved = subprocess.run([f"{cmd}-save"], capture_output=True, text=True)
        if saved.returncode != 0:
            continue
        for table, lines in cleanup_script(saved.stdout, bridge).items():
            text = f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"
            done = subprocess.run([f"{cmd}-restore", "--noflush"], input=text, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{cmd}-restore ({table}) failed: {done.stderr.strip()[-300:]}")
            removed.append(f"{cmd} {table}: {len(lines)} changes")
    return removed


def leftovers(bridge: str) -> list[str]:
    """What ``remove`` would still do: empty once our rules and chains are gone."""
    found = []
    for cmd in COMMANDS:
        saved = subprocess.run([f"{cmd}-save"], capture_output=True, text=True).stdout
        for table, lines in cleanup_script(saved, bridge).items():
            found += [f"{cmd} {table}: {line}" for line in lines]
    return found


# iptables-nft keeps each iptables table as an nftables table; the built-in ones it makes on first use.
IPTABLES_TABLES = {f"{family} {name}" for family in ("ip", "ip6") for name in ("filter", "nat", "mangle", "raw")}


def nft_tables() -> list[str]:
    """The nftables tables as ``family name`` (empty without the nft command)."""
    if shutil.which("nft") is None:
        return []
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return [line.split(None, 1)[1] for line in listed.splitlines() if line.startswith("table ")]


def remove_empty_tables(keep: list[str]) -> list[str]:
    """Delete the iptables tables that were not there before (``keep``) and hold no rule now."""
    removed = []
    for table in nft_tables():
        if table in keep or table not in IPTABLES_TABLES:
            continue
        listed = subprocess.run(["nft", "-j", "list", "table", *table.split()], capture_output=True, text=True)
        if listed.returncode != 0:
            continue
        kinds = {key for item in json.loads(listed.stdout).get("nftables", []) for key in item}
        if kinds <= {"metainfo", "table", "chain"}:
            subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
            removed.append(table)
    return removed
