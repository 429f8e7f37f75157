#!/usr/bin/env bash
# Create (or reuse) the Python environment of the Spark job: pyspark 4.3.0 (which ships the
# Spark runtime) with pyarrow and pandas 2 (PySpark 4.3 warns on pandas 3), in a venv outside
# the repository (~/.cache/catbert/spark-venv; CATBERT_SPARK_VENV overrides). Spark needs Java 17: when no
# `java` is on PATH, OpenJDK 17 is installed from Debian's packages (apt-get, as root).
# Idempotent (a stamp records the package list). Progress on stderr; the venv's python path
# is the only thing on stdout: py=$(scripts/spark-env.sh)
set -euo pipefail

venv=${CATBERT_SPARK_VENV:-$HOME/.cache/catbert/spark-venv}
packages=(pyspark==4.3.0 pyarrow==25.0.1 pandas==2.3.3 numpy==2.4.6)
stamp="$venv/.catbert-spark-stamp"
want="${packages[*]}"
py="$venv/bin/python"

if ! command -v java >/dev/null 2>&1; then
  echo "installing OpenJDK 17 (Debian package) for Spark" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && apt-get install -y -qq openjdk-17-jre-headless >&2
  else
    echo "error: Spark needs Java 17: apt-get install openjdk-17-jre-headless (as root)" >&2
    exit 1
  fi
fi

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$py"
  exit 0
fi
base_py=$(command -v python3.11 || command -v python3 || true)
if [ -z "$base_py" ]; then
  echo "error: python3 not found on PATH" >&2
  exit 1
fi
if [ -d "$venv" ] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"
fi
if [ ! -x "$py" ]; then
  echo "creating the Spark venv at $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$base_py" -m venv "$venv"
fi
echo "installing ${packages[*]} into $venv" >&2
"$py" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
printf '%s' "$want" >"$stamp"
echo "$py"
