#!/usr/bin/env bash
# Same-run A/B comparison of two commits' echo_server under rpc-bench.
#
#   scripts/perf-ab.sh BASE [HEAD]      (HEAD defaults to the working tree's HEAD)
#
# Builds `echo_server` of both commits (release profile, each in its own worktree and
# target directory under ${PERF_AB_DIR:-/tmp/perf-ab}) and HEAD's `rpc-bench`, then
# alternates runs against each server -- base, head, base, head, ... -- so that drift of
# the machine hits both sides alike. Rows: Framed and TTHeader, 16 connections x 32 in
# flight and 64 x 1, 128 B payloads. Each row reports the median of REPEATS runs
# (default 5) of DURATION (default 5s, after a 1 s warm-up): throughput, p99 and the
# server's CPU time per call, for both sides and as head/base ratios, plus the spread of
# each side's runs ((max - min) / median), which is the noise a ratio must exceed to
# mean anything. The server is pinned to CPU 0 and the client to CPU 1.
#
# Environment: REPEATS, DURATION, PERF_AB_DIR, ROWS ("framed:16:32 ttheader:64:1 ...").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ $# -lt 1 ]; then
  echo "usage: scripts/perf-ab.sh BASE [HEAD]" >&2
  exit 2
fi
BASE=$(git rev-parse --verify "$1^{commit}")
HEAD_REV=$(git rev-parse --verify "${2:-HEAD}^{commit}")
DIR=${PERF_AB_DIR:-/tmp/perf-ab}
mkdir -p "$DIR"

build() { # rev -> prints the path of its echo_server
  local rev=$1 wt="$DIR/wt-$1" target="$DIR/target-$1"
  if [ ! -d "$wt" ]; then
    git worktree add --detach -q "$wt" "$rev"
  fi
  (
    cd "$wt"
    export CARGO_TARGET_DIR=$target
    # echo_server is a binary from the hardening issue on, an example before it.
    if ! cargo build --release -q -p examples --bin echo_server 2>/dev/null; then
      cargo build --release -q -p examples --example echo_server
    fi
  ) >&2
  if [ -x "$target/release/echo_server" ]; then
    echo "$target/release/echo_server"
  else
    echo "$target/release/examples/echo_server"
  fi
}

echo "building base $BASE and head $HEAD_REV ..." >&2
BASE_BIN=$(build "$BASE")
HEAD_BIN=$(build "$HEAD_REV")
(cd "$DIR/wt-$HEAD_REV" && CARGO_TARGET_DIR="$DIR/target-$HEAD_REV" \
  cargo build --release -q -p benches --bin rpc-bench) >&2
BENCH="$DIR/target-$HEAD_REV/release/rpc-bench"

exec python3 "$ROOT/scripts/perf_ab.py" \
  --base "$BASE" --base-bin "$BASE_BIN" --head "$HEAD_REV" --head-bin "$HEAD_BIN" \
  --bench "$BENCH" --repeats "${REPEATS:-5}" --duration "${DURATION:-5s}" \
  --rows "${ROWS:-framed:16:32 framed:64:1 ttheader:16:32 ttheader:64:1}"
