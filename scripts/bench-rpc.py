#!/usr/bin/env python3
"""Measures our echo_server with rpc-bench and prints a Markdown table of medians.

  scripts/bench-rpc.py [--repeats 3] [--duration 5s] [--quick]

Builds the release binaries, starts `echo_server --cores 1 --cpus 0` (pinned to CPU 0),
runs `rpc-bench --cpus 1` against it for each configuration below, each `--repeats`
times (1 s warm-up, `--duration` measured, every reply checked), and reports the median
run (by calls/s) with its latency percentiles and the server's CPU time per call
(utime + stime of the server process over the run, divided by the calls).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [
    # (protocol, connections, inflight, payload)
    ("framed", 64, 1, 128),
    ("framed", 16, 32, 128),
    ("ttheader", 64, 1, 128),
    ("ttheader", 16, 32, 128),
    ("kitex-protobuf", 64, 1, 128),
    ("kitex-protobuf", 16, 32, 128),
    ("framed", 16, 32, 16384),
    ("framed", 4, 4, 1 << 20),
]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--quick", action="store_true", help="only the two 128 B framed rows")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "examples", "--bin", "echo_server",
                    "-p", "benches", "--bin", "rpc-bench"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    server_bin = os.path.join(target, "release", "echo_server")
    bench_bin = os.path.join(target, "release", "rpc-bench")
    addr = "127.0.0.1:19099"
    server = subprocess.Popen(["taskset", "-c", "0", server_bin, "--addr", addr, "--cores", "1", "--cpus", "0"],
                              stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    configs = CONFIGS[:2] if args.quick else CONFIGS
    rows = []
    try:
        for proto, conns, inflight, payload in configs:
            runs = []
            for _ in range(args.repeats):
                cpu0 = cpu_seconds(server.pid)
                out = subprocess.run(
                    [bench_bin, "--addr", addr, "--protocol", proto, "--connections", str(conns),
                     "--inflight", str(inflight), "--payload", str(payload), "--duration", args.duration,
                     "--warmup", "1s", "--cpus", "1", "--json"],
                    capture_output=True, text=True, check=True)
                cpu = cpu_seconds(server.pid) - cpu0
                r = json.loads(out.stdout)
                # The server also worked during the warm-up: count its calls at the same rate.
                warm_calls = r["qps"] * 1.0
                r["server_us_per_call"] = cpu / max(1, r["calls"] + warm_calls) * 1e6
                runs.append(r)
            runs.sort(key=lambda r: r["qps"])
            m = runs[len(runs) // 2]
            rows.append((proto, conns, inflight, payload, m, [r["qps"] for r in runs]))
            print(f"{proto} {conns}x{inflight} {payload}B: {m['qps']:.0f} calls/s p99 {m['p99_us']} us",
                  file=sys.stderr)
    finally:
        server.kill()
    print(f"| protocol | conns x in flight | payload | calls/s (median of {args.repeats}) | MB/s | p50 µs | p99 µs | p999 µs | max µs | server CPU µs/call | errors | all runs (calls/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for proto, conns, inflight, payload, m, all_qps in rows:
        size = f"{payload // 1024} KiB" if payload >= 1024 else f"{payload} B"
        if payload >= 1 << 20:
            size = f"{payload >> 20} MiB"
        print(f"| {proto} | {conns} x {inflight} | {size} | {m['qps']:,.0f} | {m['bytes_per_sec'] / 1e6:,.1f} | "
              f"{m['p50_us']} | {m['p99_us']} | {m['p999_us']} | {m['max_us']} | {m['server_us_per_call']:.2f} | "
              f"{m['errors']} | {', '.join(f'{q:,.0f}' for q in all_qps)} |")


if __name__ == "__main__":
    main()
