#!/usr/bin/env bash
# The governance issue's performance check: rpc-bench's raw client and the framework's own
# governed client (static resolver, p2c, retry policy and breakers on, no retries
# triggered), one after the other, REPEATS times, against the minimal io_uring responder
# answering Framed binary Thrift `Echo.echo` (server on CPU 0, client on CPU 1).
# Usage: scripts/governed-bench.sh   (env: REPEATS=3 DURATION=3s CONNECTIONS=16 INFLIGHT=32)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-16}
INFLIGHT=${INFLIGHT:-32}
cargo build --release -q -p benches --bin minimal-responder --bin rpc-bench
PORT=$((20000 + RANDOM % 20000))
taskset -c 0 target/release/minimal-responder 127.0.0.1:$PORT 0 thrift >/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
sleep 0.5
qps() { python3 -c 'import sys,json; d=json.load(sys.stdin); assert d["errors"]==0, d; print(d["qps"])'; }
# CPU time the hypervisor took from this VM during the runs (steal), which makes runs
# drift: printed so that a noisy run is seen as one.
steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
steal0=$(steal)
raw=(); gov=()
for _ in $(seq "$REPEATS"); do
  raw+=("$(taskset -c 1 target/release/rpc-bench --addr 127.0.0.1:$PORT --protocol framed \
    --connections "$CONNECTIONS" --inflight "$INFLIGHT" --duration "$DURATION" --json | qps)")
  gov+=("$(taskset -c 1 target/release/rpc-bench --resolver static://127.0.0.1:$PORT \
    --protocol framed --connections "$CONNECTIONS" --inflight "$INFLIGHT" \
    --duration "$DURATION" --retry 2 --json | qps)")
done
python3 - "${raw[*]}" "${gov[*]}" "$steal0" "$(steal)" <<'PY'
import statistics, sys
raw = [float(x) for x in sys.argv[1].split()]
gov = [float(x) for x in sys.argv[2].split()]
(s0, t0), (s1, t1) = (map(int, a.split()) for a in sys.argv[3:5])
print(f"steal: {100 * (s1 - s0) / max(1, t1 - t0):.1f}% of CPU time during the runs")
r, g = statistics.median(raw), statistics.median(gov)
print(f"raw client:      {r:,.0f} calls/s (runs: {', '.join(f'{x:,.0f}' for x in raw)})")
print(f"governed client: {g:,.0f} calls/s (runs: {', '.join(f'{x:,.0f}' for x in gov)})")
print(f"ratio: {g / r:.3f}")
PY
