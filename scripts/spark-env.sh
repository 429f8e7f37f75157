#!/usr/bin/env bash
# Create (or reuse) the Python environment of the Spark job: pyspark 4.3.0 (which ships the
# Spark runtime) with pyarrow and pandas 2 (PySpark 4.3 warns on pandas 3), in a venv outside
# the repository (~/.cache/catbert/spark-venv; CATBERT_SPARK_VENV overrides). Spark needs Java 17: when no
# `java` is on PATH, OpenJDK 17 is installed from Debian's packages (apt-get, as root).
# Idempotent (a stamp records the package list). Once per Java and package set it also writes
# a class-data archive of Spark's JVM classes (AppCDS, by a small job: scripts/spark_cds.py) that
# scripts/spark-infer.sh uses to halve Spark's start-up; CATBERT_SPARK_CDS=0 skips it.
# Progress on stderr; the venv's python path is the only thing on stdout: py=$(scripts/spark-env.sh)
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

# The class-data archive: keyed by the JVM build and the package set (a stale one is never
# used); its path is recorded in $venv/.catbert-spark-cds for scripts/spark-infer.sh.
cds_archive() {
  [ "${CATBERT_SPARK_CDS:-1}" = 0 ] && return 0
  local key jsa tmp work
  key=$( (java -version 2>&1; readlink -f "$(command -v java)"; echo "$want") | sha256sum | cut -c1-16)
  jsa="$venv/spark-cds-$key.jsa"
  if [ ! -s "$jsa" ] && [ ! -e "$jsa.failed" ]; then
    echo "writing Spark's class-data archive (once, ~40 s): $jsa" >&2
    rm -f "$venv"/spark-cds-* "$venv"/.spark-cds-*.tmp
    tmp="$venv/.spark-cds-$key.tmp"
    work=$(mktemp -d)
    if ! PYSPARK_PYTHON="$py" PYSPARK_DRIVER_PYTHON="$py" "$venv/bin/spark-submit" \
        --master 'local[2]' --conf spark.ui.enabled=false \
        --driver-java-options "-XX:ArchiveClassesAtExit=$tmp -Xlog:cds=off -Xlog:cds+dynamic=off" \
        "$(dirname "$0")/spark_cds.py" "$work" >"$work/log" 2>&1 || [ ! -s "$tmp" ]; then
      echo "warning: no class-data archive (Spark starts without it): $(tail -1 "$work/log")" >&2
      rm -rf "$work" "$tmp"
      touch "$jsa.failed"
      rm -f "$venv/.catbert-spark-cds"
      return 0
    fi
    rm -rf "$work"
    mv "$tmp" "$jsa"
  fi
  [ -s "$jsa" ] && printf '%s' "$jsa" >"$venv/.catbert-spark-cds"
  return 0
}

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  cds_archive
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
cds_archive
echo "$py"
