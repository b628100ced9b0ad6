#!/usr/bin/env bash
# Installs everything Clover needs on this machine, idempotently: a second run only checks.
# Steps: Debian packages, kernel headers for BCC, the virtualenv, generated protobuf modules,
# the pinned JVM artifacts (Maven), the trace backend (Jaeger) and the log store and shipper
# (VictoriaLogs, an OpenTelemetry Collector), built with the Go toolchain.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CLOVER_STACK_CACHE:-$ROOT/stack/cache}
VENV=$ROOT/.venv
PYTHON=${CLOVER_PYTHON:-python3}
STEPS=9
step_no=0
step_start=0

step() {
  step_no=$((step_no + 1))
  step_start=$(date +%s.%N)
  printf '[%d/%d] %-44s ' "$step_no" "$STEPS" "$1"
}

done_step() {
  local took
  took=$(awk -v a="$step_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%s (%ss)\n' "${1:-done}" "$took"
}

fail() {
  printf 'FAILED\n  %s\n' "$1" >&2
  exit 1
}

# A stamp file holds the hash of the inputs a step was last run with.
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

APT_PACKAGES=(redis-server prometheus python3-bpfcc bpfcc-tools linux-headers-amd64 iproute2
  iputils-ping chromium chromium-driver nginx-light wrk apache2 libapache2-mod-security2 modsecurity-crs)

step "Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  done_step "present"
else
  [ "$(id -u)" = 0 ] || fail "installing ${missing[*]} needs root (run make setup as root)"
  log=$(mktemp)
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "apt-get could not install: ${missing[*]}"
  fi
  # Debian enables and starts these services; Clover runs its own instances on its own ports.
  for svc in redis-server prometheus prometheus-node-exporter nginx apache2; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
  done_step "installed ${missing[*]}"
fi

step "Kernel headers for BCC"
KBUILD=/lib/modules/$(uname -r)/build
if [ -e "$KBUILD/include" ]; then
  done_step "present"
else
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [ -n "$hdr" ] || fail "no /usr/src/linux-headers-*-amd64 tree (package linux-headers-amd64)"
  mkdir -p "/lib/modules/$(uname -r)"
  ln -sfn "$hdr" "$KBUILD"
  ln -sfn "$common" "/lib/modules/$(uname -r)/source"
  done_step "linked $KBUILD -> $hdr"
fi

step "Python virtualenv and dependencies"
want=$(hash_of "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/clovisor/spanwire.c" "$ROOT/clovisor/bpf/exchange.h")
if [ -x "$VENV/bin/python" ] && stamp_ok "$VENV/.clover-requirements" "$want" &&
  compgen -G "$ROOT/clovisor/_spanwire.*.so" >/dev/null; then
  done_step "up to date"
else
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  log=$(mktemp)
  if ! { "$VENV/bin/pip" install -q --upgrade pip wheel setuptools &&
    "$VENV/bin/pip" install -q -r "$ROOT/requirements.txt" &&
    "$VENV/bin/pip" install -q --no-deps -e "$ROOT"; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "pip install failed (log above)"
  fi
  # BCC's Python module is Debian's (pure Python over libbcc.so); expose only that package.
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$VENV/debian-bcc"
  ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/debian-bcc/bcc"
  echo "$VENV/debian-bcc" >"$site/clover-debian-bcc.pth"
  echo "$want" >"$VENV/.clover-requirements"
  done_step "installed"
fi

step "Protobuf modules from protos/"
want=$(hash_of "$ROOT"/protos/*.proto)
if stamp_ok "$ROOT/protos/.generated" "$want"; then
  done_step "up to date"
else
  (cd "$ROOT" && "$VENV/bin/python" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
    --grpc_python_out=. --descriptor_set_out=protos/clover.desc --include_imports protos/*.proto) ||
    fail "protoc failed"
  echo "$want" >"$ROOT/protos/.generated"
  done_step "generated"
fi

step "JVM artifacts (Kafka, Cassandra, Spark, Zipkin)"
command -v mvn >/dev/null || fail "Maven (mvn) is not installed"
resolved=()
for part in kafka cassandra spark zipkin; do
  pom=$ROOT/stack/maven/$part/pom.xml
  want=$(hash_of "$pom")
  dest=$CACHE/$part/lib
  stamp_ok "$CACHE/$part/.resolved" "$want" && continue
  rm -rf "$dest"
  log=$(mktemp)
  if ! (cd "$(dirname "$pom")" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$dest") >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "Maven could not resolve $pom"
  fi
  echo "$want" >"$CACHE/$part/.resolved"
  resolved+=("$part")
done
# Spark already ships many of the connectors' dependencies: keep only what pyspark lacks.
"$VENV/bin/python" "$ROOT/stack/prune_spark_jars.py" "$CACHE/spark/lib"
if [ ${#resolved[@]} -eq 0 ]; then done_step "up to date"; else done_step "resolved ${resolved[*]}"; fi

step "Apache JMeter 5.6.3 (Maven Central)"
# Debian's jmeter is 2.13; JMeter 5.6.3 comes from Maven Central, laid out as a JMeter home.
pom=$ROOT/stack/maven/jmeter/pom.xml
want=$(hash_of "$pom" "$ROOT/validation/jmeter.py")
if [ -f "$CACHE/jmeter/home/bin/ApacheJMeter.jar" ] && stamp_ok "$CACHE/jmeter/.resolved" "$want"; then
  done_step "up to date"
else
  rm -rf "$CACHE/jmeter/lib"
  log=$(mktemp)
  if ! (cd "$(dirname "$pom")" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$CACHE/jmeter/lib") >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "Maven could not resolve $pom"
  fi
  (cd "$ROOT" && "$VENV/bin/python" -m validation.jmeter "$CACHE/jmeter/lib" "$CACHE/jmeter/home") >"$log" 2>&1 ||
    { tail -20 "$log" >&2; fail "laying out the JMeter home failed"; }
  echo "$want" >"$CACHE/jmeter/.resolved"
  done_step "installed $CACHE/jmeter/home"
fi

step "Trace backend (Jaeger all-in-one)"
JAEGER=$CACHE/jaeger/jaeger
want=$(hash_of "$ROOT/stack/jaeger/go.mod" "$ROOT/stack/jaeger/go.sum")
if [ -x "$JAEGER" ] && stamp_ok "$CACHE/jaeger/.built" "$want"; then
  done_step "up to date"
else
  command -v go >/dev/null || fail "Go is not installed"
  mkdir -p "$CACHE/jaeger"
  log=$(mktemp)
  if ! (cd "$ROOT/stack/jaeger" && go build -o "$JAEGER" github.com/jaegertracing/jaeger/cmd/jaeger) >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "go build of Jaeger failed"
  fi
  echo "$want" >"$CACHE/jaeger/.built"
  done_step "built $JAEGER"
fi

step "Go tools (VictoriaLogs, otelcol, vegeta)"
built=()
for part in victorialogs:victoria-logs:github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs otelcol:otelcol:. vegeta:vegeta:github.com/tsenart/vegeta/v12; do
  IFS=: read -r dir binary package <<<"$part"
  src=$ROOT/stack/$dir
  want=$(hash_of "$src"/go.mod "$src"/go.sum $(ls "$src"/*.go 2>/dev/null))
  [ -x "$CACHE/$dir/$binary" ] && stamp_ok "$CACHE/$dir/.built" "$want" && continue
  command -v go >/dev/null || fail "Go is not installed"
  mkdir -p "$CACHE/$dir"
  log=$(mktemp)
  if ! (cd "$src" && go build -o "$CACHE/$dir/$binary" "$package") >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "go build of $dir failed"
  fi
  echo "$want" >"$CACHE/$dir/.built"
  built+=("$dir")
done
if [ ${#built[@]} -eq 0 ]; then done_step "up to date"; else done_step "built ${built[*]}"; fi

step "Java"
if "$VENV/bin/python" -c 'from stack.java import find_java; print(find_java())' >/dev/null 2>&1; then
  done_step "$("$VENV/bin/python" -c 'from stack.java import find_java; print(find_java())')"
else
  fail "no Java 17 or newer found: install a JDK or set CLOVER_JAVA_HOME"
fi
