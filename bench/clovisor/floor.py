"""Where Clovisor's BPF time goes: the datapath with parts of its work taken out, beside the whole.

Each variant is session_tracking.c with a few lines changed (below) and runs as the real agent
(`clovisor run`, spans to the bench's Kafka) on the setup of bench.clovisor.run: nginx in a pod,
wrk from the root namespace. Rounds alternate the variants; per variant it prints the BPF time
per request (kernel.bpf_stats_enabled) at saturation and at a fixed offered rate, and the CPU
the agent and the bench's Kafka broker take per second at saturation (what the spans cost in
user space). The variants other than the whole one do not trace correctly: measurements only.

    sudo .venv/bin/python -m bench.clovisor.floor [--seconds 5] [--rounds 3] [--rate 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.clovisor.run import Bench, fixed_rate_load, nginx_pod, require_root
from clovisor.datapath import SOURCE, Limits

# (anchor in session_tracking.c, what replaces it). A condition that is false at run time (a
# packet always has a length) keeps the code it skips compiled; the ring buffer output, in a
# function without the packet, is compiled out.
NO_RING_OUTPUT = ("if (events.ringbuf_output(rec, bytes, 0) < 0) {", "if (0) {")
NO_HTTP = (
    "    if (plen > 0) {\n        if (!ds->synced) {",
    "    if (plen > 0 && !skb->len) {\n        if (!ds->synced) {",
)
NO_CLOCK = ("    u64 now = bpf_ktime_get_ns();", "    u64 now = c && skb->len ? c->last_ns : bpf_ktime_get_ns();")
LOOKUP_ONLY = ("    count(S_PACKETS);\n", "    count(S_PACKETS);\n    if (c && skb->len)\n        return TC_ACT_OK;\n")
HANDLE = "static __always_inline int handle(struct __sk_buff *skb, int to_pod) {\n"
EMPTY = (HANDLE, HANDLE + "    if (skb->len)\n        return TC_ACT_OK;\n")
VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "whole datapath": (),
    "no ring buffer output": (NO_RING_OUTPUT,),
    "tracking only (no HTTP)": (NO_HTTP,),
    "tracking only, no clock read": (NO_HTTP, NO_CLOCK),
    "connection lookup only": (LOOKUP_ONLY,),
    "empty program": (EMPTY,),
}


def write_variant(name: str, patches: tuple[tuple[str, str], ...], path: Path) -> Path:
    text = SOURCE.read_text()
    for anchor, replacement in patches:
        if text.count(anchor) != 1:
            sys.exit(f"variant {name!r}: {anchor!r} is not in {SOURCE.name} exactly once; update {__file__}")
        text = text.replace(anchor, replacement)
    path.write_text(text)
    return path


# Runs the agent with another source for its programs (the variant's), the rest unchanged.
AGENT = (
    "import sys; from pathlib import Path; import clovisor.datapath as d; d.SOURCE = Path(sys.argv.pop(1)); "
    "from clovisor.cli import main; sys.argv[0] = 'clovisor'; main()"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rate", type=int, default=5000, help="the fixed offered rate (req/s)")
    args = parser.parse_args()
    require_root()
    directory = Path(tempfile.mkdtemp(prefix="clovisor-floor-"))
    sources = {
        name: write_variant(name, patches, directory / f"{i}.c") for i, (name, patches) in enumerate(VARIANTS.items())
    }
    delay, conns = fixed_rate_load(args.rate)
    saturated: dict[str, list[float]] = {name: [] for name in VARIANTS}
    fixed: dict[str, list[float]] = {name: [] for name in VARIANTS}
    agent_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    broker_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}

    with nginx_pod() as setup:
        for round_ in range(args.rounds):
            for name, source in sources.items():
                agent = (sys.executable, "-c", AGENT, str(source))
                bench = Bench(setup, args.seconds, "normal", Limits.spans_per_second, agent)
                try:
                    bench.trace(True)
                    sat = bench.attached(args.connections)
                    at_rate = bench.attached(conns, delay)
                finally:
                    bench.close()
                saturated[name].append(sat.bpf_ns / sat.served)
                fixed[name].append(at_rate.bpf_ns / at_rate.served)
                agent_cpu[name].append(1e3 * sat.clovisor_cpu_s / sat.side.seconds)
                broker_cpu[name].append(1e3 * sat.kafka_cpu_s / sat.side.seconds)
                print(f"round {round_ + 1}: {name:30} BPF {saturated[name][-1]:6.0f} ns/req at saturation, "
                      f"{fixed[name][-1]:6.0f} at {args.rate:,} req/s; agent {agent_cpu[name][-1]:4.0f} ms/s, "
                      f"Kafka broker {broker_cpu[name][-1]:4.0f} ms/s", flush=True)  # fmt: skip

    print()
    print(
        f"BPF time per request, medians of {args.rounds} alternating rounds ({args.seconds}s runs, 2 packets/request)"
    )
    print(f"{'':32}{'saturation':>12}{f'{args.rate:,} req/s':>14}   CPU ms/s at saturation: agent, broker")
    for name in VARIANTS:
        print(f"{name:32}{statistics.median(saturated[name]):>12.0f}{statistics.median(fixed[name]):>14.0f}"
              f"{statistics.median(agent_cpu[name]):>12.0f}{statistics.median(broker_cpu[name]):>8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
