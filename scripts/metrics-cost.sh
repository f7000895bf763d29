#!/usr/bin/env bash
# What metrics cost the server: echo_server with and without --metrics, alternating,
# REPEATS times, under rpc-bench (TTHeader, 16 connections x 32 in flight, 128 B; server
# on CPU 0, client on CPU 1). Prints the medians and their ratio.
# Usage: scripts/metrics-cost.sh   (env: REPEATS=5 DURATION=3s)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-5}
DURATION=${DURATION:-3s}
cargo build --release -q -p examples --bin echo_server -p benches --bin rpc-bench
PORT=$((20000 + RANDOM % 20000))
run() {
  taskset -c 0 target/release/echo_server --addr 127.0.0.1:$PORT --cores 1 "$@" >/dev/null &
  local server=$!
  sleep 0.4
  taskset -c 1 target/release/rpc-bench --addr 127.0.0.1:$PORT --protocol ttheader \
    --connections 16 --inflight 32 --duration "$DURATION" --json |
    python3 -c 'import sys,json; print(json.load(sys.stdin)["qps"])'
  kill $server; wait $server 2>/dev/null || true
}
off=(); on=()
for _ in $(seq "$REPEATS"); do
  off+=("$(run)")
  on+=("$(run --metrics 127.0.0.1:$((PORT + 1)))")
done
python3 - "${off[*]}" "${on[*]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
a, b = statistics.median(off), statistics.median(on)
print(f"without metrics: {a:,.0f} calls/s (runs: {', '.join(f'{x:,.0f}' for x in off)})")
print(f"with metrics:    {b:,.0f} calls/s (runs: {', '.join(f'{x:,.0f}' for x in on)})")
print(f"ratio: {b / a:.3f}")
PY
