#!/usr/bin/env bash
# Installs what the tests need and runs every test in the workspace.
# Usage: ./scripts/test.sh   (from anywhere; CI calls it from .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

# io_uring must be usable (the tests run on it and on epoll): say so plainly instead of
# failing in every test.
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" != "0" ]; then
  echo "test.sh: kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled); set it to 0 (sysctl -w kernel.io_uring_disabled=0)" >&2
  exit 1
fi

# Foreign peers for the interop tests: Apache's Thrift compiler (Debian) generates the
# Python peer's code; Apache Thrift's Python library (PyPI) runs it; grpcio and
# grpcio-tools (PyPI, scripts/requirements-test.txt) are a gRPC peer.
# A real etcd (Debian's etcd-server, 3.4) for the registry and discovery tests, and a real
# Prometheus (Debian's prometheus) for the metrics test; the tests start their own on free
# ports and stop them (the packages' own services are not used).
need=()
command -v thrift >/dev/null 2>&1 || need+=(thrift-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# grpc-go (Debian's golang-google-grpc-dev, built in GOPATH mode with Debian's Go) is a
# gRPC client peer.
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need+=(golang-google-grpc-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    # The package starts its own etcd where an init system runs; the tests do not need it.
    for svc in etcd prometheus prometheus-node-exporter; do
      if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
      fi
    done
  else
    echo "test.sh: the tests need ${need[*]}: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
if [ -f scripts/requirements-test.txt ]; then
  python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi

# Every test on io_uring, then everything that runs the event loop (netpoll, the rpc
# crate, and the end-to-end and interop tests of examples and benches) again on the epoll
# backend. NETPOLL_BACKEND reaches every runtime the tests start, in-process or in an
# echo_server child; io_uring is named, not "auto", so a host without it fails here
# instead of running epoll twice.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed() { grep -hEo "test result: ok\. [0-9]+ passed" "$@" | awk '{s += $4} END {print s + 0}'; }
NETPOLL_BACKEND=io_uring cargo test --workspace --all-targets --profile ci 2>&1 | tee "$logs/io_uring"
NETPOLL_BACKEND=io_uring cargo test --workspace --doc --profile ci 2>&1 | tee "$logs/doc"
NETPOLL_BACKEND=epoll cargo test -p netpoll -p netpoll-rpc -p examples -p benches --all-targets \
  --profile ci 2>&1 | tee "$logs/epoll"
echo "test.sh: $(passed "$logs/io_uring" "$logs/doc") tests passed on io_uring (the workspace)," \
  "$(passed "$logs/epoll") on epoll (netpoll, netpoll-rpc, examples, benches)"
