#!/usr/bin/env bash
# Instructions per call, counted by callgrind (Debian's `valgrind`): the noise-free figure
# for small changes, where CPU time per call drifts by more than the change between runs
# (this VM exposes no hardware counters).
#
#   scripts/instructions.sh            (env: ROWS, SHORT=1s, LONG=4s, BIN)
#
# BIN=DIR takes the binaries from DIR (the release directory of another commit's build)
# instead of building this tree's: how two commits are compared.
#
# Each row runs the measured process under callgrind twice, driven for SHORT and for LONG,
# and reports (instructions of the long run - of the short run) / (calls of the long run -
# of the short run): start-up, connects and shut-down cancel out. Valgrind cannot follow
# io_uring, so the measured process runs netpoll's epoll backend (NETPOLL_BACKEND=epoll):
# the figures count our code and the epoll driver, not io_uring's; compare rows and
# commits, not these numbers with CPU time.
#
# Rows (ROWS, space separated):
#   server:framed     echo_server (Framed binary Echo.echo) under rpc-bench's raw client
#   server:ttheader   the same over TTHeader
#   netpoll:raw       netpoll_echo --server-only (netpoll, no RPC) under rpc-bench raw
#   client:raw        rpc-bench's raw Framed client against the minimal io_uring responder
#   client:governed   the framework's governed client (static resolver, p2c, retry and
#                     breakers on) against the minimal io_uring responder
# The unmeasured side runs natively; measured servers on CPU 0, clients on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-"server:framed server:ttheader netpoll:raw client:raw client:governed"}
SHORT=${SHORT:-1s}
LONG=${LONG:-4s}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p benches --bin rpc-bench --bin minimal-responder
  cargo build --release -q -p examples --bin echo_server --example netpoll_echo
  BIN=$PWD/target/release
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { echo $((20000 + RANDOM % 20000)); }
wait_port() { # port
  for _ in $(seq 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
calls() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["errors"]==0, d; print(sum(d["instances"].values()) if "instances" in d else d["calls"])' "$1"; }
irefs() { grep -o 'refs: *[0-9,]*' "$1" | tr -d ', ' | cut -d: -f2; }

# One measured run of a server: prints "calls instructions".
server_run() { # duration protocol server-args...
  local d=$1 proto=$2; shift 2
  local p; p=$(port)
  NETPOLL_BACKEND=epoll taskset -c 0 valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/cg.out" "$@" "127.0.0.1:$p" >/dev/null 2>"$WORK/vg.err" &
  local vp=$!
  PIDS+=("$vp")
  wait_port "$p"
  taskset -c 1 "$BIN/rpc-bench" --addr "127.0.0.1:$p" --protocol "$proto" --duration "$d" \
    --warmup 0s --json >"$WORK/run.json"
  kill -TERM "$vp"
  wait "$vp" 2>/dev/null || true
  echo "$(calls "$WORK/run.json") $(irefs "$WORK/vg.err")"
}

# One measured run of a client against the native minimal responder.
client_run() { # duration rpc-bench-args...
  local d=$1; shift
  local p; p=$(port)
  taskset -c 0 "$BIN/minimal-responder" "127.0.0.1:$p" 0 thrift >/dev/null &
  local sp=$!
  PIDS+=("$sp")
  wait_port "$p"
  local args=("${@//PORT/$p}")
  NETPOLL_BACKEND=epoll taskset -c 1 valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/cg.out" "$BIN/rpc-bench" "${args[@]}" --duration "$d" \
    --warmup 0s --json >"$WORK/run.json" 2>"$WORK/vg.err"
  kill "$sp"
  wait "$sp" 2>/dev/null || true
  echo "$(calls "$WORK/run.json") $(irefs "$WORK/vg.err")"
}

per_call() { # "calls ir" "calls ir"
  python3 -c 'import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print("%.0f" % ((int(b[1])-int(a[1]))/(int(b[0])-int(a[0]))))' "$1" "$2"
}

printf '%-18s %s\n' row "instructions per call"
for row in $ROWS; do
  case $row in
    server:framed | server:ttheader)
      proto=${row#server:}
      a=$(server_run "$SHORT" "$proto" "$BIN/echo_server" --addr)
      b=$(server_run "$LONG" "$proto" "$BIN/echo_server" --addr)
      ;;
    netpoll:raw)
      a=$(server_run "$SHORT" raw "$BIN/examples/netpoll_echo" --server-only)
      b=$(server_run "$LONG" raw "$BIN/examples/netpoll_echo" --server-only)
      ;;
    client:raw)
      a=$(client_run "$SHORT" --addr 127.0.0.1:PORT --protocol framed)
      b=$(client_run "$LONG" --addr 127.0.0.1:PORT --protocol framed)
      ;;
    client:governed)
      a=$(client_run "$SHORT" --resolver static://127.0.0.1:PORT --protocol framed --retry 2)
      b=$(client_run "$LONG" --resolver static://127.0.0.1:PORT --protocol framed --retry 2)
      ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  printf '%-18s %s   (calls/instructions: short %s, long %s)\n' "$row" "$(per_call "$a" "$b")" "$a" "$b"
done
