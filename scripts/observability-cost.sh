#!/usr/bin/env bash
# What metrics and tracing cost the server: echo_server with neither, with --metrics,
# with --metrics and tracing sampled at 0%, and with tracing sampled at 100%, in turn,
# REPEATS times, under rpc-bench (TTHeader, 16 connections x 32 in flight, 128 B; server
# on CPU 0, client on CPU 1). Spans go over OTLP/HTTP to a receiver that answers without
# decoding (examples/tests/otlp_receiver.py --discard, on CPU 1 with the client). Prints
# each variant's median and its ratio to "neither".
# Usage: scripts/observability-cost.sh   (env: REPEATS=5 DURATION=3s)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-5}
DURATION=${DURATION:-3s}
cargo build --release -q -p examples --bin echo_server -p benches --bin rpc-bench
PORT=$((20000 + RANDOM % 20000))
taskset -c 1 python3 examples/tests/otlp_receiver.py --discard > /tmp/otlp-sink.$$ &
SINK=$!
trap 'kill $SINK 2>/dev/null || true; rm -f /tmp/otlp-sink.$$' EXIT
for _ in $(seq 50); do grep -q listening /tmp/otlp-sink.$$ && break; sleep 0.1; done
OTLP="http://$(sed 's/listening on //' /tmp/otlp-sink.$$)"
run() {
  taskset -c 0 target/release/echo_server --addr 127.0.0.1:$PORT --cores 1 "$@" >/dev/null 2>&1 &
  local server=$!
  sleep 0.4
  taskset -c 1 target/release/rpc-bench --addr 127.0.0.1:$PORT --protocol ttheader \
    --connections 16 --inflight 32 --duration "$DURATION" --json |
    python3 -c 'import sys,json; print(json.load(sys.stdin)["qps"])'
  kill $server; wait $server 2>/dev/null || true
}
none=(); metrics=(); otel0=(); otel100=()
for _ in $(seq "$REPEATS"); do
  none+=("$(run)")
  metrics+=("$(run --metrics 127.0.0.1:$((PORT + 1)))")
  otel0+=("$(run --metrics 127.0.0.1:$((PORT + 1)) --otlp "$OTLP" --otlp-sample 0)")
  otel100+=("$(run --metrics 127.0.0.1:$((PORT + 1)) --otlp "$OTLP" --otlp-sample 1)")
done
python3 - "${none[*]}" "${metrics[*]}" "${otel0[*]}" "${otel100[*]}" <<'PY'
import statistics, sys
names = ["neither", "metrics", "metrics + tracing 0%", "metrics + tracing 100%"]
runs = [[float(x) for x in a.split()] for a in sys.argv[1:]]
base = statistics.median(runs[0])
for name, r in zip(names, runs):
    m = statistics.median(r)
    print(f"{name:24} {m:>12,.0f} calls/s  ratio {m / base:.3f}  (runs: {', '.join(f'{x:,.0f}' for x in r)})")
PY
