#!/usr/bin/env bash
# Idempotent set-up: virtual environment, Python packages, Delta's JAR in the local Maven repository
# (so Spark resolves it offline), and the Prometheus Pushgateway used by the tests.
# Fast when already set up: every step is skipped when its marker is current.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
DELTA_ARTIFACT=io.delta:delta-spark_4.2_2.13:4.4.0
# Maven resolves "nearest wins", Spark's Ivy resolver "latest wins": the versions Ivy picks among Delta's
# dependencies (slf4j-api through the kernel modules, snappy-java through parquet) must be fetched as well,
# or a fresh machine fails at session start with "download failed".
EXTRA_ARTIFACTS="org.slf4j:slf4j-api:2.0.13 org.xerial.snappy:snappy-java:1.1.10.7"
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi

stamp="$VENV/.lakemon-installed"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python packages (first time takes ~2 minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi

m2="${MAVEN_REPO:-$HOME/.m2/repository}"
delta_jar="$m2/io/delta/delta-spark_4.2_2.13/4.4.0/delta-spark_4.2_2.13-4.4.0.jar"
slf4j_jar="$m2/org/slf4j/slf4j-api/2.0.13/slf4j-api-2.0.13.jar"
snappy_jar="$m2/org/xerial/snappy/snappy-java/1.1.10.7/snappy-java-1.1.10.7.jar"
if [ ! -f "$delta_jar" ] || [ ! -f "$slf4j_jar" ] || [ ! -f "$snappy_jar" ]; then
  command -v mvn >/dev/null 2>&1 || { echo "[setup] Maven (mvn) is required to fetch Delta's JAR" >&2; exit 1; }
  echo "[setup] fetching $DELTA_ARTIFACT into the local Maven repository"
  mvn -q -B "$DEP_PLUGIN:get" -Dartifact="$DELTA_ARTIFACT" -Dtransitive=true
  for a in $EXTRA_ARTIFACTS; do mvn -q -B "$DEP_PLUGIN:get" -Dartifact="$a" -Dtransitive=false; done
fi

if [ "${LAKEMON_SKIP_PUSHGATEWAY:-0}" != "1" ] && ! command -v prometheus-pushgateway >/dev/null 2>&1 \
   && [ ! -x /usr/bin/prometheus-pushgateway ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing prometheus-pushgateway (Debian package) for the alert-delivery tests"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-pushgateway >/dev/null
    # The package starts a system service on :9091; the tests start their own on a free loopback port.
    (service prometheus-pushgateway stop >/dev/null 2>&1 || true)
  else
    echo "[setup] note: prometheus-pushgateway is not installed; the Prometheus tests need it" >&2
  fi
fi
