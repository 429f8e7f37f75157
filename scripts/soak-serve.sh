#!/usr/bin/env bash
# Soak test of catbert serve: mixed load for a while (default 10 minutes) — single-text
# requests at concurrency 16 and 32-text requests at concurrency 4 through wrk, plus a
# /v1/feedback, /info and /metrics request every second — then reports failed requests
# (must be 0) and RSS growth between the end of the first minute and the end (must be under
# 5 %). Exits 1 when either fails.
# Usage: scripts/soak-serve.sh [SECONDS, default 600] [MODEL, default target/oracle/minilm-cls]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-600}
model=${2:-target/oracle/minilm-cls}
. scripts/serve-common.sh
CATBERT_HOME=$work/home ./target/release/catbert serve --model "$model" --port "$port" \
  --threads 2 --log-level warn 2>"$work/serve.log" &
pid=$!
wait_up
url=http://127.0.0.1:$port
label=$(curl -sf "$url/info" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["model_type"]["classifier"]["id2label"]["0"])')
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }

wrk -t1 -c16 -d"${secs}s" --timeout 30s -s scripts/serve_bench.lua "$url" -- "$work/single.jsonl" \
  >"$work/wrk-single.txt" &
w1=$!
wrk -t1 -c4 -d"${secs}s" --timeout 30s -s scripts/serve_bench.lua "$url" -- "$work/batch32.jsonl" \
  >"$work/wrk-batch.txt" &
w2=$!
other_failed=0
start=$(date +%s)
rss_minute=
while [ $(( $(date +%s) - start )) -lt "$secs" ]; do
  sleep 1
  body=$("$py" -c 'import json,sys; print(json.dumps({"items":[{"text":"soak test item","label":sys.argv[1]}]}))' "$label")
  curl -sf -o /dev/null -H 'Content-Type: application/json' -d "$body" "$url/v1/feedback" || other_failed=$((other_failed + 1))
  curl -sf -o /dev/null "$url/info" || other_failed=$((other_failed + 1))
  curl -sf -o /dev/null "$url/metrics" || other_failed=$((other_failed + 1))
  if [ -z "$rss_minute" ] && [ $(( $(date +%s) - start )) -ge $(( secs < 120 ? secs / 2 : 60 )) ]; then
    rss_minute=$(rss)
  fi
done
wait "$w1" "$w2"
rss_end=$(rss)
grep '^RESULT' "$work/wrk-single.txt" "$work/wrk-batch.txt"
"$py" - "$work" "$other_failed" "$rss_minute" "$rss_end" <<'EOF'
import re, sys
work, other, rss_a, rss_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
requests = failed = 0
for name in ("wrk-single.txt", "wrk-batch.txt"):
    kv = dict(re.findall(r"(\w+)=([\d.]+)", open(f"{work}/{name}").read()))
    requests += int(kv["requests"])
    failed += int(kv["errors"]) + int(kv["non2xx"])
growth = (rss_b - rss_a) / rss_a * 100
print(f"requests {requests} (+ feedback/info/metrics), failed {failed + other}; "
      f"RSS {rss_a / 1024:.0f} MiB after warm-up, {rss_b / 1024:.0f} MiB at the end ({growth:+.1f} %)")
sys.exit(0 if failed + other == 0 and growth < 5 else 1)
EOF
