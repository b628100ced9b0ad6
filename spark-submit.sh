#!/usr/bin/env bash
# Runs a Clover Spark job through spark-submit.
#   ./spark-submit.sh [spark-submit options] jobs/<job>.py [job arguments]
# Without --master it runs local[*]. Any --master (k8s://https://<api-server>, spark://...) and
# every other spark-submit option are passed through unchanged. The Kafka and Cassandra
# connector jars come from the stack cache (override with CLOVER_SPARK_JARS, e.g.
# local:///opt/clover/jars/... inside a cluster image); Clover's Python packages are shipped
# to the executors as a zip built on the fly.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${CLOVER_VENV:-$ROOT/.venv}
CACHE=${CLOVER_STACK_CACHE:-$ROOT/stack/cache}
STATE=${CLOVER_STATE_DIR:-$ROOT/.clover}

if [ -n "${CLOVER_SPARK_JARS:-}" ]; then
  jars=$CLOVER_SPARK_JARS
else
  shopt -s nullglob
  found=("$CACHE"/spark/lib/*.jar)
  shopt -u nullglob
  if [ ${#found[@]} -eq 0 ]; then
    echo "spark-submit.sh: no connector jars in $CACHE/spark/lib; run 'make setup'" >&2
    exit 2
  fi
  jars=$(IFS=,; echo "${found[*]}")
fi

master=(--master "local[*]")
for arg in "$@"; do
  case "$arg" in
    --master | --master=*) master=(); break ;;
    *.py) break ;;  # the job file: what follows are the job's own arguments
  esac
done
if [ ${#master[@]} -gt 0 ]; then
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}  # local[*]: the driver listens on loopback only
fi

mkdir -p "$STATE/build"
pyzip=$STATE/build/clover-jobs.zip
(cd "$ROOT" && rm -f "$pyzip" && "$VENV/bin/python" -m zipfile -c "$pyzip" clover protos jobs >/dev/null)

export CLOVER_HOME=${CLOVER_HOME:-$ROOT}
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$VENV/bin/python}
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$VENV/bin/python}
local_memory=()
[ ${#master[@]} -gt 0 ] && local_memory=(--driver-memory "${CLOVER_SPARK_DRIVER_MEMORY:-2g}")
# The parallel (throughput) collector: the jobs are batch work, where G1's barriers cost more than
# its shorter pauses are worth (bench/README.md: +24% on the ingest, means of four alternating runs).
exec "$VENV/bin/spark-submit" "${master[@]}" "${local_memory[@]}" --jars "$jars" --py-files "$pyzip" \
  --conf spark.ui.showConsoleProgress=false \
  --conf spark.executor.extraJavaOptions=-XX:+UseParallelGC \
  --driver-java-options "-XX:+UseParallelGC -Dlog4j2.configurationFile=file:$ROOT/stack/conf/spark-log4j2.properties" "$@"
