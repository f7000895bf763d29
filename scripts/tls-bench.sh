#!/usr/bin/env bash
# TLS against plain text in one run: throughput and server CPU per call at 16x32 (128 B,
# Framed and TTHeader) and at 1 MiB; server on CPU 0, client on CPU 1.
# Usage: scripts/tls-bench.sh   (env: REPEATS=5 DURATION=3s)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p examples --bin echo_server --bin tls_certs -p benches --bin rpc-bench
exec python3 scripts/tls_bench.py
