#!/usr/bin/env bash
# Our gRPC server against tonic's, one core each, same clients, same run (rpc-bench
# --protocol grpc at 16x32 and 64x1, and h2load at a fixed rate); see scripts/grpc_bench.py.
# Usage: scripts/grpc-bench.sh   (env: REPEATS=5 DURATION=3s RATE=3000 per h2load client)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null 2>&1 || {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
  else
    echo "grpc-bench: needs h2load (apt-get install nghttp2-client)" >&2
    exit 1
  fi
}
cargo build --release -q -p examples --bin echo_server -p benches --bin rpc-bench --bin tonic-echo
exec python3 scripts/grpc_bench.py
