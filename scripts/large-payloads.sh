#!/usr/bin/env bash
# Large payloads, same run: echo_server against the minimal io_uring responder (no
# framework), both answering Framed binary Thrift `Echo.echo`, both running at once on
# CPU 0; rpc-bench on CPU 1 alternates between them, REPEATS times per row, and the
# medians of bytes per second are compared. Rows: 16 KiB at 16x32 and 1 MiB at 4x4 (the
# performance issue's), plus 128 B at 16x32 for scale.
#
#   scripts/large-payloads.sh   (env: REPEATS=5 DURATION=3s ROWS="16384:16:32 1048576:4:4")
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-5}
DURATION=${DURATION:-3s}
ROWS=${ROWS:-"128:16:32 16384:16:32 1048576:4:4"}
cargo build --release -q -p benches --bin minimal-responder --bin rpc-bench
cargo build --release -q -p examples --bin echo_server
R=target/release
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
OURS=$(port)
THEIRS=$(port)
taskset -c 0 $R/echo_server --addr 127.0.0.1:$OURS --cores 1 --cpus 0 >/dev/null &
P1=$!
taskset -c 0 $R/minimal-responder 127.0.0.1:$THEIRS 0 thrift >/dev/null &
P2=$!
trap 'kill $P1 $P2 2>/dev/null' EXIT
sleep 0.5
run() { # port payload conns inflight -> "bytes_per_sec p99_us"
  taskset -c 1 $R/rpc-bench --addr "127.0.0.1:$1" --protocol framed --payload "$2" \
    --connections "$3" --inflight "$4" --duration "$DURATION" --warmup 1s --json |
    python3 -c 'import sys,json; d=json.load(sys.stdin); assert d["errors"]==0, d; print(d["bytes_per_sec"], d["p99_us"])'
}
echo "| payload | conns x in flight | echo_server MB/s | responder MB/s | ratio | echo_server p99 µs | responder p99 µs |"
echo "|---|---|---|---|---|---|---|"
for row in $ROWS; do
  IFS=: read -r payload conns inflight <<<"$row"
  ours=(); theirs=()
  for _ in $(seq "$REPEATS"); do
    ours+=("$(run "$OURS" "$payload" "$conns" "$inflight")")
    theirs+=("$(run "$THEIRS" "$payload" "$conns" "$inflight")")
  done
  python3 - "$payload" "$conns" "$inflight" "$(printf '%s;' "${ours[@]}")" "$(printf '%s;' "${theirs[@]}")" <<'PY'
import statistics, sys
payload, conns, inflight = sys.argv[1:4]
parse = lambda s: [tuple(map(float, x.split())) for x in s.split(";") if x]
ours, theirs = parse(sys.argv[4]), parse(sys.argv[5])
mb = lambda rs: statistics.median(r[0] for r in rs) / 1e6
p99 = lambda rs: statistics.median(r[1] for r in rs)
size = f"{int(payload) // 1024} KiB" if int(payload) >= 1024 else f"{payload} B"
if int(payload) >= 1 << 20:
    size = f"{int(payload) >> 20} MiB"
print(f"| {size} | {conns}x{inflight} | {mb(ours):,.1f} | {mb(theirs):,.1f} | {mb(ours) / mb(theirs):.2f} "
      f"| {p99(ours):,.0f} | {p99(theirs):,.0f} |")
PY
done
