#!/usr/bin/env bash
# Server CPU per call under h2load's fixed gRPC load (16 connections x 32 streams at
# 48,000 calls/s, 128 B echo), for each echo_server binary given, alternating between them
# REPEATS times (default 3): the h2load row of scripts/grpc-bench.sh as a same-run A/B of
# two builds (perf-ab.sh builds each commit's under /tmp/perf-ab/target-<commit>/release).
#
#   scripts/grpc-h2load-ab.sh BASE_ECHO_SERVER HEAD_ECHO_SERVER
#   scripts/grpc-h2load-ab.sh "target/release/echo_server" "target/release/echo_server --buffer-count 128"
#
# Each argument is a command (a binary and flags). Prints each one's runs, sorted, and
# their medians. Server on CPU 0, h2load on CPU 1. CPU time is the server's threads'
# schedstat run time (nanoseconds).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3} PYTHONPATH=scripts python3 - "$@" <<'PY'
import os, shlex, socket, subprocess, sys, tempfile, time
from perf_ab import cpu_seconds as cpu, median

pb = b"\x0a" + bytes([128]) + b"\x01" + b"x" * 128  # EchoRequest { msg: 128 B }
body = tempfile.mktemp(prefix="grpc-body-")
with open(body, "wb") as f:
    f.write(b"\x00" + len(pb).to_bytes(4, "big") + pb)
runs = {b: [] for b in sys.argv[1:]}
for _ in range(int(os.environ["REPEATS"])):
    for i, b in enumerate(sys.argv[1:]):
        port = 19020 + i  # one port each: a port just left can refuse the next server
        p = subprocess.Popen(shlex.split(b) + ["--addr", f"127.0.0.1:{port}", "--cores", "1", "--cpus", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):  # until it listens (at most 5 s)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        c0 = cpu(p.pid)
        out = subprocess.run(["taskset", "-c", "1", "h2load", "-c", "16", "-m", "32", "--rps", "3000",
                              "-D", "3s", "-d", body, "-H", "content-type: application/grpc",
                              "-H", "te: trailers", f"http://127.0.0.1:{port}/echo.Echo/Echo"],
                             capture_output=True, text=True, check=True)
        c = cpu(p.pid) - c0
        line = next(l for l in out.stdout.splitlines() if l.startswith("requests:"))
        parts = line.replace(",", "").split()
        done = int(parts[parts.index("done") - 1])
        if done == 0:
            sys.exit(f"{b}: h2load got no replies:\n{out.stdout}")
        runs[b].append(c / done * 1e6)
        p.kill()
        p.wait()
os.unlink(body)
for b, v in runs.items():
    print(f"{b}: median {median(v):.3f} µs/call; runs", " ".join(f"{x:.3f}" for x in sorted(v)))
PY
