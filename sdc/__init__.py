"""The sample service chain (the original's SDC sample, docs/compatibility.md §6), as real asyncio services.

proxy-access-control -> http-lb (v1, v2) -> clover-server1..5, every request mirrored to
snort-ids. Each service runs as a local "pod" (``sdc.pod``): its own loopback address, or as
root its own network namespace behind a veth pair. ``sdc.local.parts`` hands the pods to the
stack launcher; ``sdc.grpc_client`` holds the gRPC client functions that cloverctl and the
controller use.
"""
