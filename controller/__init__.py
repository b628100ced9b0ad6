"""clover-controller: the REST API (the original's routes, docs/compatibility.md §5) and the dashboard, in one
process. ``python -m controller.server`` runs it; ``controller.local.controller_part`` is its
part of the local stack."""
