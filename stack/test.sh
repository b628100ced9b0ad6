#!/usr/bin/env bash
# `make test`: lint, types, the suite against the local stack, then the cluster tests against the
# real local Kubernetes. The cluster (about 15 minutes of compiling, cold) and the images it runs
# are built in the background at the lowest priority while the first part runs, on the CPU the
# local stack's tests leave idle; their log is <state>/logs/cluster-prepare.log.
# PYTEST_ARGS: extra pytest arguments for both pytest runs. CLOVER_CLUSTER_TESTS=0 leaves the
# cluster part out (it needs root); the cluster fault tests are `make cluster-test` only.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
STATE=${CLOVER_STATE_DIR:-$ROOT/.clover}
read -r -a TYPED <<<"${TYPED:?TYPED: the packages mypy checks (the Makefile passes them)}"
read -r -a EXTRA <<<"${PYTEST_ARGS:-}"

cluster=1
if [ "${CLOVER_CLUSTER_TESTS:-1}" = 0 ]; then
  cluster=0
  why="CLOVER_CLUSTER_TESTS=0"
elif [ "$(id -u)" != 0 ]; then
  cluster=0
  why="the local cluster needs root"
fi

prepare_pid=""
stop_prepare() {
  if [ -n "$prepare_pid" ] && kill -0 "$prepare_pid" 2>/dev/null; then
    kill -TERM -- "-$prepare_pid" 2>/dev/null || kill -TERM "$prepare_pid" 2>/dev/null
    wait "$prepare_pid" 2>/dev/null
  fi
}
trap 'stop_prepare; exit 143' TERM INT

if [ "$cluster" = 1 ]; then
  mkdir -p "$STATE/logs"
  prepare_log=$STATE/logs/cluster-prepare.log
  echo "== building the local cluster and the images in the background (log: $prepare_log) =="
  # setsid: its own process group, so an interrupted `make test` stops the whole build.
  setsid nice -n 19 bash -c "'$VENV/bin/python' -m stack.cluster.build && '$VENV/bin/python' -m stack.images.build" \
    >"$prepare_log" 2>&1 &
  prepare_pid=$!
fi

failed=()
echo "== ruff (lint, format check) =="
"$VENV/bin/ruff" check --output-format concise . && "$VENV/bin/ruff" format --check . || failed+=(lint)
echo "== mypy ${TYPED[*]} =="
"$VENV/bin/mypy" "${TYPED[@]}" || failed+=(typecheck)
echo "== pytest (unit, integration, e2e) =="
"$VENV/bin/pytest" --durations=25 "${EXTRA[@]}" || failed+=(pytest)

if [ "$cluster" = 1 ]; then
  echo "== waiting for the cluster and image build =="
  if wait "$prepare_pid"; then
    prepare_pid=""
    grep -E "^(Built in|Building)" "$prepare_log"
    echo "== pytest -m 'cluster and not cluster_faults' (the real local Kubernetes) =="
    "$VENV/bin/pytest" -m "cluster and not cluster_faults" --durations=25 tests/cluster "${EXTRA[@]}" || failed+=(cluster)
  else
    prepare_pid=""
    tail -30 "$prepare_log"
    echo "building the cluster or the images failed (log: $prepare_log)"
    failed+=(cluster-build)
  fi
else
  echo "== cluster tests skipped: $why =="
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "make test FAILED: ${failed[*]}"
  exit 1
fi
echo "make test passed"
