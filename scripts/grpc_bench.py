#!/usr/bin/env python3
"""Our gRPC server against tonic's, one core each, the same clients, in one run:
echo_server (h2c on its one port) and tonic-echo (tonic 0.14 on a current-thread tokio
runtime), both on CPU 0, loaded in turn from CPU 1.

- rpc-bench --protocol grpc (every reply checked) at 16 connections x 32 streams and
  64 x 1, 128 B: medians of REPEATS alternating runs of calls/s, p99 and the server's CPU
  time per call.
- h2load (nghttp2) at a fixed rate both servers sustain (16 clients, --rps each, 32
  streams each), 128 B: the server's CPU time per call at the same load (h2load checks
  only HTTP status).

Usage: scripts/grpc-bench.sh  (builds, then runs this; env REPEATS=5 DURATION=3s RATE=3000)"""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_ab import cpu_seconds, median, start_cmd as start  # noqa: E402



def rpc_bench(server, addr, conns, inflight, duration):
    cpu0 = cpu_seconds(server.pid)
    out = subprocess.run(
        ["target/release/rpc-bench", "--addr", addr, "--protocol", "grpc", "--connections", str(conns),
         "--inflight", str(inflight), "--payload", "128", "--duration", duration, "--warmup", "1s",
         "--cpus", "1", "--json"], capture_output=True, text=True, check=True)
    cpu = cpu_seconds(server.pid) - cpu0
    r = json.loads(out.stdout)
    if r.get("errors"):
        raise SystemExit(f"rpc-bench reported errors against {addr}: {r['errors']}")
    r["cpu_us"] = cpu / max(1, r["calls"] + r["qps"] * 1.0) * 1e6
    return r


def h2load(server, addr, body, rate, duration):
    cpu0 = cpu_seconds(server.pid)
    out = subprocess.run(
        ["taskset", "-c", "1", "h2load", "-c", "16", "-m", "32", "--rps", str(rate), "-D", duration,
         "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{addr}/echo.Echo/Echo"], capture_output=True, text=True, check=True)
    cpu = cpu_seconds(server.pid) - cpu0
    done = ok = 0
    for line in out.stdout.splitlines():
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            done = int(parts[parts.index("done") - 1])
        if line.startswith("status codes:"):
            ok = int(line.replace(",", "").split()[2])
    if ok == 0 or ok != done:
        raise SystemExit(f"h2load: {done} done, {ok} with 2xx:\n{out.stdout}")
    return {"calls": done, "cpu_us": cpu / done * 1e6, "rate": done / float(duration.rstrip("s"))}


def main():
    repeats = int(os.environ.get("REPEATS", "5"))
    duration = os.environ.get("DURATION", "3s")
    rate = int(os.environ.get("RATE", "3000"))
    body = tempfile.mktemp(prefix="grpc-body-")
    pb = b"\x0a" + bytes([128]) + b"\x01" + b"x" * 128  # EchoRequest { msg: 128 B }
    with open(body, "wb") as f:
        f.write(b"\x00" + len(pb).to_bytes(4, "big") + pb)
    servers = {
        "ours": start(["target/release/echo_server", "--cores", "1", "--cpus", "0"]),
        "tonic": start(["target/release/tonic-echo"]),
    }
    rows = [(16, 32), (64, 1)]
    res = {(r, s): [] for r in rows + ["h2load"] for s in servers}
    try:
        for i in range(repeats):
            order = ("ours", "tonic") if i % 2 == 0 else ("tonic", "ours")
            for row in rows:
                for side in order:
                    p, addr = servers[side]
                    r = rpc_bench(p, addr, row[0], row[1], duration)
                    res[(row, side)].append(r)
                    print(f"run {i + 1}/{repeats} {row[0]}x{row[1]} {side:5} {r['qps']:>12,.0f} calls/s "
                          f"p99 {r['p99_us']} us cpu {r['cpu_us']:.3f} us/call", file=sys.stderr)
            for side in order:
                p, addr = servers[side]
                r = h2load(p, addr, body, rate, duration)
                res[("h2load", side)].append(r)
                print(f"run {i + 1}/{repeats} h2load {side:5} {r['rate']:>10,.0f} calls/s "
                      f"cpu {r['cpu_us']:.3f} us/call", file=sys.stderr)
    finally:
        for p, _ in servers.values():
            p.kill()
        os.unlink(body)
    print("| load | ours calls/s | tonic calls/s | ours/tonic | ours p99 µs | tonic p99 µs "
          "| ours CPU µs/call | tonic CPU µs/call | CPU ours/tonic |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        o, t = res[(row, "ours")], res[(row, "tonic")]
        q = (median([r["qps"] for r in o]), median([r["qps"] for r in t]))
        p99 = (median([r["p99_us"] for r in o]), median([r["p99_us"] for r in t]))
        cpu = (median([r["cpu_us"] for r in o]), median([r["cpu_us"] for r in t]))
        print(f"| rpc-bench {row[0]}x{row[1]} | {q[0]:,.0f} | {q[1]:,.0f} | {q[0] / q[1]:.2f} | {p99[0]} | {p99[1]} "
              f"| {cpu[0]:.3f} | {cpu[1]:.3f} | {cpu[0] / cpu[1]:.2f} |")
    o, t = res[("h2load", "ours")], res[("h2load", "tonic")]
    q = (median([r["rate"] for r in o]), median([r["rate"] for r in t]))
    cpu = (median([r["cpu_us"] for r in o]), median([r["cpu_us"] for r in t]))
    print(f"| h2load 16x32 at {16 * rate:,}/s | {q[0]:,.0f} | {q[1]:,.0f} | | | "
          f"| {cpu[0]:.3f} | {cpu[1]:.3f} | {cpu[0] / cpu[1]:.2f} |")


if __name__ == "__main__":
    main()
