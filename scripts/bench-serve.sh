#!/usr/bin/env bash
# catbert serve against the stack it replaces — FastAPI + uvicorn + a transformers
# text-classification pipeline (scripts/fastapi_serve.py, from the oracle venv) — on the same
# checkpoint, the same 2 CPU threads, the 4,688 product queries as request bodies (TEI's
# /predict contract, which both speak), driven by wrk (Debian package) with
# scripts/serve_bench.lua. Cases: single-text requests at concurrency 1, 8 and 64; 32-text
# requests at concurrency 8. Prints rows/s, p50/p90/p99 latency (ms), errors and peak RSS for
# both, and the ratios.
# Usage: scripts/bench-serve.sh [SECONDS per case, default 20] [MODEL, default the oracle's
#        MiniLM classifier target/oracle/minilm-cls]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-20}
model=${2:-target/oracle/minilm-cls}
. scripts/serve-common.sh
peak_rss_mb() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

run_cases() { # $1 = name; the server is up on $port as $pid
  local name=$1 c bodies rows line
  # Warm up (not measured).
  wrk -t1 -c1 -d2s -s scripts/serve_bench.lua "http://127.0.0.1:$port" -- "$work/single.jsonl" >/dev/null
  for c in "single 1" "single 8" "single 64" "batch32 8"; do
    set -- $c
    bodies=$1
    rows=1
    [ "$bodies" = batch32 ] && rows=32
    line=$(wrk -t"$([ "$2" -lt 2 ] && echo 1 || echo 2)" -c"$2" -d"${secs}s" --timeout 30s \
      -s scripts/serve_bench.lua "http://127.0.0.1:$port" -- "$work/$bodies.jsonl" | grep '^RESULT')
    echo "$name $bodies $2 $rows $line" >>"$work/results"
  done
  echo "$name rss $(peak_rss_mb "$pid")" >>"$work/results"
}

# catbert: 2 math threads, 1 HTTP worker (the same two cores).
./target/release/catbert serve --model "$model" --port "$port" --threads 2 --http-workers 1 \
  --log-level warn 2>"$work/catbert.log" &
pid=$!
wait_up
run_cases catbert
kill -TERM "$pid"
wait "$pid" || true

# FastAPI + uvicorn + transformers pipeline: torch on 2 threads, one uvicorn worker.
"$py" scripts/fastapi_serve.py "$model" "$port" 2 2>"$work/fastapi.log" &
pid=$!
wait_up
run_cases fastapi
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=

"$py" - "$work/results" "$secs" <<'EOF'
import re, sys
rows = {}
rss = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[1] == "rss":
        rss[parts[0]] = float(parts[2])
        continue
    name, bodies, conc, per = parts[0], parts[1], int(parts[2]), int(parts[3])
    kv = dict(re.findall(r"(\w+)=([\d.]+)", line))
    rows[(name, bodies, conc)] = {
        "rows/s": float(kv["requests"]) * per / float(kv["seconds"]),
        "p50": float(kv["p50"]), "p90": float(kv["p90"]), "p99": float(kv["p99"]),
        "errors": int(kv["errors"]) + int(kv["non2xx"]),
    }
print(f"| case | catbert rows/s | FastAPI rows/s | ratio | catbert p50 / p90 / p99 ms | FastAPI p50 / p90 / p99 ms | errors (catbert, FastAPI) |")
print("| --- | ---: | ---: | ---: | --- | --- | --- |")
for (name, bodies, conc) in [k for k in rows if k[0] == "catbert"]:
    c, f = rows[("catbert", bodies, conc)], rows[("fastapi", bodies, conc)]
    what = f"{'1 text' if bodies == 'single' else '32 texts'}/request, concurrency {conc}"
    print(f"| {what} | {c['rows/s']:.0f} | {f['rows/s']:.0f} | {c['rows/s'] / f['rows/s']:.1f}× | "
          f"{c['p50']:.1f} / {c['p90']:.1f} / {c['p99']:.1f} | {f['p50']:.1f} / {f['p90']:.1f} / {f['p99']:.1f} | "
          f"{c['errors']}, {f['errors']} |")
print(f"| peak RSS | {rss['catbert']:.0f} MiB | {rss['fastapi']:.0f} MiB | {rss['catbert'] / rss['fastapi']:.2f}× | | | |")
print(f"({sys.argv[2]} s per case)")
EOF
