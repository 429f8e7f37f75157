# Shared set-up of scripts/bench-serve.sh and scripts/soak-serve.sh (sourced, not run):
# checks wrk, the oracle venv ($py), the model ($model, made by make-oracle.sh if it is the
# oracle's), the release build, a work folder ($work, removed at exit with the server $pid),
# the request bodies ($work/single.jsonl, $work/batch32.jsonl), a free $port and wait_up.
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
py=$("$root/scripts/py-oracle.sh")
[ -d "$model" ] || bash scripts/make-oracle.sh >/dev/null
cargo build --release --locked --quiet
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$py" scripts/serve_bodies.py "$work"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
wait_up() { # until something listens on $port (2 minutes at most)
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "server did not start" >&2
  exit 1
}
