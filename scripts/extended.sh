#!/usr/bin/env bash
# The runs too long or too machine-bound for CI: a soak of echo_server under load
# (memory and descriptors must stay flat), and the performance measurements whose
# numbers BENCHMARKS.md quotes. Server on CPU 0, clients on CPU 1.
#
#   scripts/extended.sh [soak|soak-tls|bench|observability|governed|instructions|scaling|latency|large|tls|grpc|all]   (default: all)
#
# Environment: SOAK (total soak time in seconds, default 120), SOAK_STEP (seconds per
# sample, default 10), and each script's own (REPEATS, DURATION).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}

soak() { # [tls]: the same over TLS (test certificates from tls_certs)
  local total=${SOAK:-120} step=${SOAK_STEP:-10}
  cargo build --release -q -p examples --bin echo_server --bin tls_certs -p benches --bin rpc-bench
  local port=$((20000 + RANDOM % 20000))
  local server_tls=() client_tls=()
  if [ "${1:-}" = tls ]; then
    local pki=/tmp/soak-pki.$$
    target/release/tls_certs $pki >/dev/null
    server_tls=(--tls-cert $pki/server.pem --tls-key $pki/server.key)
    client_tls=(--tls-ca $pki/ca.pem)
  fi
  taskset -c 0 target/release/echo_server --addr 127.0.0.1:$port --cores 1 \
    --metrics 127.0.0.1:$((port + 1)) "${server_tls[@]}" >/dev/null 2>&1 &
  local server=$!
  trap 'kill $server 2>/dev/null || true' RETURN
  sleep 0.5
  local samples=()
  for ((t = 0; t < total; t += step)); do
    # Alternate protocols and connection counts, so that connections come and go.
    local proto conns
    if (( (t / step) % 2 == 0 )); then proto=ttheader conns=16; else proto=framed conns=64; fi
    taskset -c 1 target/release/rpc-bench --addr 127.0.0.1:$port --protocol $proto \
      --connections $conns --inflight 16 --duration "${step}s" --warmup 0s --json "${client_tls[@]}" \
      > /tmp/soak-step.$$ || { echo "soak: rpc-bench failed at ${t}s"; return 1; }
    local rss fds qps
    sleep 0.5 # the server closes the connections rpc-bench left
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$server/status)
    fds=$(ls /proc/$server/fd | wc -l)
    qps=$(python3 -c 'import sys,json; print(int(json.load(open(sys.argv[1]))["qps"]))' /tmp/soak-step.$$)
    echo "soak: ${t}s +${step}s  ${proto}x${conns}  ${qps} calls/s  rss ${rss} KiB  fds ${fds}"
    samples+=("$rss:$fds")
  done
  rm -f /tmp/soak-step.$$
  # After the first two samples (pools and buffers warm up), memory may not grow by
  # more than 10%, and descriptors must come back to what they were.
  python3 - "${samples[@]}" <<'PY'
import sys
s = [tuple(map(int, x.split(":"))) for x in sys.argv[1:]]
if len(s) < 4:
    sys.exit("soak: too short to judge (SOAK >= 4 * SOAK_STEP)")
base_rss = max(r for r, _ in s[:2])
last_rss = s[-1][0]
fds = {f for _, f in s[1:]}
print(f"soak: rss {base_rss} -> {last_rss} KiB; descriptors seen after warm-up: {sorted(fds)}")
if last_rss > base_rss * 1.10:
    sys.exit("soak: memory grew by more than 10%")
if max(fds) > min(fds) + 2:
    sys.exit("soak: descriptors grew")
print("soak: flat")
PY
}

case "$what" in
  soak) soak ;;
  soak-tls) soak tls ;;
  tls) scripts/tls-bench.sh ;;
  grpc) scripts/grpc-bench.sh ;;
  bench) python3 scripts/bench-rpc.py ;;
  observability) scripts/observability-cost.sh ;;
  governed) scripts/governed-bench.sh ;;
  instructions) scripts/instructions.sh ;;
  scaling) scripts/scaling.sh ;;
  latency) python3 scripts/latency-under-load.py ;;
  large) scripts/large-payloads.sh ;;
  all)
    soak
    python3 scripts/bench-rpc.py
    scripts/observability-cost.sh
    scripts/governed-bench.sh
    scripts/instructions.sh
    scripts/scaling.sh
    python3 scripts/latency-under-load.py
    scripts/large-payloads.sh
    soak tls
    scripts/tls-bench.sh
    scripts/grpc-bench.sh
    ;;
  *) echo "usage: scripts/extended.sh [soak|soak-tls|bench|observability|governed|instructions|scaling|latency|large|tls|grpc|all]" >&2; exit 2 ;;
esac
