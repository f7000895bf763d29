#!/usr/bin/env bash
# Same-run comparison of the two netpoll backends: one release echo_server, started twice
# (NETPOLL_BACKEND=io_uring and NETPOLL_BACKEND=epoll), driven alternately by rpc-bench
# (scripts/perf_ab.py: medians of REPEATS runs of DURATION, server on CPU 0, client on
# CPU 1). The table's "base" is io_uring and "head" epoll: the ratios are epoll/io_uring.
#
#   scripts/backend-bench.sh          (REPEATS, DURATION, ROWS as for perf-ab.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p examples --bin echo_server
cargo build --release -q -p benches --bin rpc-bench
TARGET=${CARGO_TARGET_DIR:-target}
exec python3 scripts/perf_ab.py \
  --base io_uring --base-bin "$TARGET/release/echo_server" --base-env NETPOLL_BACKEND=io_uring \
  --head epoll --head-bin "$TARGET/release/echo_server" --head-env NETPOLL_BACKEND=epoll \
  --bench "$TARGET/release/rpc-bench" --repeats "${REPEATS:-5}" --duration "${DURATION:-5s}" \
  --rows "${ROWS:-framed:16:32 ttheader:16:32 grpc:16:32 framed:64:1}"
