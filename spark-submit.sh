#!/usr/bin/env bash
# Runs a Clover Spark job through spark-submit.
#   ./spark-submit.sh [spark-submit options] jobs/<job>.py [job arguments]
# Without --master it runs local[*]. Any --master (k8s://https://<api-server>, spark://...) and
# every other spark-submit option are passed through unchanged. The Kafka and Cassandra
# connector jars come from the stack cache (override with CLOVER_SPARK_JARS, e.g.
# local:///opt/clover/jars/... inside a cluster image); Clover's Python packages are shipped
# to the executors as a zip built on the fly.
#
# Spark on Kubernetes (--master k8s://https://<api-server>): the pods run the Spark image
# (CLOVER_SPARK_IMAGE, default opnfv/clover-spark:latest) in the namespace clover-system as its
# service account clover-spark (k8s/visibility/spark-rbac.yaml), with the pod templates of
# k8s/visibility and the jobs pointed at the Services kafka, cassandra and redis there (Redis's
# password from the Secret clover-redis); every default is a --conf that one given here
# overrides. With --deploy-mode cluster the driver runs the image's copy of the project and jars
# (jobs/<job>.py becomes local:///opt/clover/jobs/<job>.py; nothing is uploaded). The
# submission authenticates with a short-lived token of clover-spark made with kubectl and the
# current KUBECONFIG (CLOVER_SPARK_TOKEN_DURATION, default 1h), unless it names its own
# spark.kubernetes.authenticate.submission.* settings.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${CLOVER_VENV:-$ROOT/.venv}
CACHE=${CLOVER_STACK_CACHE:-$ROOT/stack/cache}
STATE=${CLOVER_STATE_DIR:-$ROOT/.clover}
IMAGE_HOME=/opt/clover  # the project in the Spark image
LOG_CONFIG=stack/conf/spark-log4j2.properties

master=(--master "local[*]")
k8s=false
cluster_mode=false
namespace=clover-system
own_auth=false
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  arg=${args[i]}
  next=${args[i + 1]:-}
  case "$arg" in
    --master) master=(); [[ $next == k8s://* ]] && k8s=true ;;
    --master=*) master=(); [[ $arg == --master=k8s://* ]] && k8s=true ;;
    --deploy-mode) [ "$next" = cluster ] && cluster_mode=true ;;
    --deploy-mode=cluster) cluster_mode=true ;;
    --conf | -c)
      case "$next" in
        spark.kubernetes.namespace=*) namespace=${next#*=} ;;
        spark.kubernetes.authenticate.submission.*) own_auth=true ;;
      esac
      i=$((i + 1)) ;;
    *.py)  # the job file: what follows are the job's own arguments
      if $k8s && $cluster_mode; then
        case "$arg" in
          jobs/*.py) args[i]=local://$IMAGE_HOME/$arg ;;
          "$ROOT"/jobs/*.py) args[i]=local://$IMAGE_HOME/${arg#"$ROOT"/} ;;
        esac
      fi
      break ;;
  esac
done
if [ ${#master[@]} -gt 0 ]; then
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}  # local[*]: the driver listens on loopback only
fi

jars=${CLOVER_SPARK_JARS:-}
pyfiles=()
if ! { $k8s && $cluster_mode; }; then  # the driver runs here: the cached jars and the project as a zip
  if [ -z "$jars" ]; then
    shopt -s nullglob
    found=("$CACHE"/spark/lib/*.jar)
    shopt -u nullglob
    if [ ${#found[@]} -eq 0 ]; then
      echo "spark-submit.sh: no connector jars in $CACHE/spark/lib; run 'make setup'" >&2
      exit 2
    fi
    jars=$(IFS=,; echo "${found[*]}")
  fi
  mkdir -p "$STATE/build"
  pyzip=$STATE/build/clover-jobs.zip
  (cd "$ROOT" && rm -f "$pyzip" && "$VENV/bin/python" -m zipfile -c "$pyzip" clover protos jobs >/dev/null)
  pyfiles=(--py-files "$pyzip")
fi
shipped=()
[ -n "$jars" ] && shipped=(--jars "$jars")
shipped+=("${pyfiles[@]}")

export CLOVER_HOME=${CLOVER_HOME:-$ROOT}
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$VENV/bin/python}
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$VENV/bin/python}
local_memory=()
[ ${#master[@]} -gt 0 ] && local_memory=(--driver-memory "${CLOVER_SPARK_DRIVER_MEMORY:-2g}")
log_config=$ROOT/$LOG_CONFIG
$k8s && $cluster_mode && log_config=$IMAGE_HOME/$LOG_CONFIG
# The parallel (throughput) collector: the jobs are batch work, where G1's barriers cost more than
# its shorter pauses are worth (bench/README.md: +24% on the ingest, means of four alternating runs).
submit=("$VENV/bin/spark-submit" "${master[@]}" "${local_memory[@]}" "${shipped[@]}"
  --conf spark.ui.showConsoleProgress=false
  --conf spark.executor.extraJavaOptions=-XX:+UseParallelGC
  --driver-java-options "-XX:+UseParallelGC -Dlog4j2.configurationFile=file:$log_config")

if ! $k8s; then
  exec "${submit[@]}" "${args[@]}"
fi

templates=$ROOT/k8s/visibility
submit+=(
  --conf "spark.kubernetes.namespace=$namespace"
  --conf "spark.kubernetes.container.image=${CLOVER_SPARK_IMAGE:-opnfv/clover-spark:latest}"
  --conf spark.kubernetes.container.image.pullPolicy=IfNotPresent
  --conf spark.kubernetes.authenticate.driver.serviceAccountName=clover-spark
  --conf "spark.kubernetes.driver.podTemplateFile=$templates/driver-template.yaml"
  --conf "spark.kubernetes.executor.podTemplateFile=$templates/executor-template.yaml"
  --conf spark.kubernetes.driver.podTemplateContainerName=spark
  --conf spark.kubernetes.executor.podTemplateContainerName=spark
  --conf spark.kubernetes.driver.request.cores=100m
  --conf spark.kubernetes.executor.request.cores=100m
  --conf spark.driver.memory=768m
  --conf spark.executor.memory=768m
  --conf "spark.kubernetes.driverEnv.CLOVER_KAFKA_BOOTSTRAP=kafka.$namespace:9092"
  --conf "spark.kubernetes.driverEnv.CLOVER_CASSANDRA_HOSTS=cassandra.$namespace"
  --conf "spark.kubernetes.driverEnv.CLOVER_REDIS_URL=redis://redis.$namespace:6379/0"
  --conf spark.kubernetes.driver.secretKeyRef.CLOVER_REDIS_PASSWORD=clover-redis:password
  --conf spark.ui.enabled=false
)
# The driver pod runs the image's Python (Spark would pass it this machine's PYSPARK_PYTHON).
$cluster_mode && submit+=(--conf spark.pyspark.python=python3 --conf spark.pyspark.driver.python=python3)
if $own_auth; then
  exec "${submit[@]}" "${args[@]}"
fi

# Submit as clover-spark with a token: its Role is all a submission needs, and Spark's Kubernetes
# client (fabric8) cannot read every kubeconfig's credentials (the local cluster's ECDSA client
# keys need BouncyCastle, which Spark does not ship).
kubectl=${CLOVER_KUBECTL:-}
if [ -z "$kubectl" ]; then
  if [ -x "$STATE/cluster/bin/kubectl" ]; then kubectl=$STATE/cluster/bin/kubectl; else kubectl=$(command -v kubectl || true); fi
fi
if [ -z "$kubectl" ]; then
  echo "spark-submit.sh: submitting to Kubernetes needs kubectl (CLOVER_KUBECTL) to make a token of clover-spark," >&2
  echo "  or spark.kubernetes.authenticate.submission.* settings of your own" >&2
  exit 2
fi
auth=$(mktemp -d "${TMPDIR:-/tmp}/clover-spark-submit.XXXXXX")
trap 'rm -rf "$auth"' EXIT
if ! "$kubectl" -n "$namespace" create token clover-spark --duration="${CLOVER_SPARK_TOKEN_DURATION:-1h}" \
    >"$auth/token" 2>"$auth/error"; then
  echo "spark-submit.sh: no token for the service account clover-spark in $namespace: $(cat "$auth/error")" >&2
  echo "  (cloverctl create system visibility, or kubectl apply -f k8s/visibility/spark-rbac.yaml, makes it)" >&2
  exit 2
fi
submit+=(--conf "spark.kubernetes.authenticate.submission.oauthTokenFile=$auth/token")
ca=$("$kubectl" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')
if [ -n "$ca" ]; then
  base64 -d <<<"$ca" >"$auth/ca.crt"
else
  ca=$("$kubectl" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority}')
  [ -n "$ca" ] && cp "$ca" "$auth/ca.crt"
fi
[ -s "$auth/ca.crt" ] && submit+=(--conf "spark.kubernetes.authenticate.submission.caCertFile=$auth/ca.crt")
export KUBECONFIG=$auth/none  # the token alone: the client must not load the kubeconfig's own credentials

"${submit[@]}" "${args[@]}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # a signal interrupted the wait: wait for spark-submit itself
  status=0
  wait "$child" || status=$?
done
exit "$status"
