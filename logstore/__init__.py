"""Logs, the third signal: the chain's per-request entries in a log store, joined to traces.

The store is VictoriaLogs and the shipper an OpenTelemetry Collector (file-log receiver), both
built from the Go module proxy by ``make setup`` and run as the local stack's ``logging`` group.
"""
