"""Clovisor: the eBPF per-session HTTP tracer (tc programs on pods' host-side veths)."""
