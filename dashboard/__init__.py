"""The dashboard (Dash + Plotly), mounted in the controller's Flask app.

Three views: **Visibility** (the original's dashboard, docs/compatibility.md §5e, with percentiles and error
rates), **Sample chain** (the load balancers' server lists, IDS rules, IDS start/stop, the
newest IDS alerts) and **Validation** (the last load test's summary and latency plot).

Callbacks call the controller's services directly (same process, no HTTP round trip).
"""
