#!/usr/bin/env bash
# Same-run comparison of the netpoll echo server with the minimal io_uring responder.
# Both servers are pinned to CPU 0 and driven by the same client (netpoll_echo
# --client-only) on CPU 1; each shape runs REPEATS times alternating the servers, and
# the median messages/s of each is reported with the ratio.
# Usage: benches/compare-echo.sh [REPEATS] [DURATION_S]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
DURATION=${2:-5}
cargo build --release -q --example netpoll_echo -p examples
cargo build --release -q -p benches --bin minimal-responder
ECHO=target/release/examples/netpoll_echo
MIN=target/release/minimal-responder
PORT_NP=19401
PORT_MIN=19402

taskset -c 0 "$ECHO" --server-only 127.0.0.1:$PORT_NP --server-cpu 0 >/dev/null &
NP_PID=$!
"$MIN" 127.0.0.1:$PORT_MIN 0 >/dev/null &
MIN_PID=$!
trap 'kill $NP_PID $MIN_PID 2>/dev/null || true' EXIT
sleep 0.5

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { # addr shape...
  local addr=$1; shift
  "$ECHO" --client-only "$addr" --client-cpu 1 --warmup 1 --duration "$DURATION" "$@" |
    awk '/msgs\/s/ {for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") print $i}'
}

printf '%-34s %14s %14s %8s\n' shape minimal netpoll ratio
for shape in "--conns 16 --inflight 32 --size 128" "--conns 64 --inflight 1 --size 128" \
             "--conns 1 --inflight 1 --size 128" "--conns 16 --inflight 4 --size 16384" \
             "--conns 4 --inflight 2 --size 1048576"; do
  min_runs=(); np_runs=()
  for _ in $(seq "$REPEATS"); do
    min_runs+=("$(rate 127.0.0.1:$PORT_MIN $shape)")
    np_runs+=("$(rate 127.0.0.1:$PORT_NP $shape)")
  done
  m=$(printf '%s\n' "${min_runs[@]}" | median)
  n=$(printf '%s\n' "${np_runs[@]}" | median)
  printf '%-34s %14s %14s %8s\n' "${shape//--/}" "$m" "$n" "$(awk -v a="$n" -v b="$m" 'BEGIN {printf "%.2f", a/b}')"
done
