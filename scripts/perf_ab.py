#!/usr/bin/env python3
"""The measuring half of scripts/perf-ab.sh: alternates rpc-bench runs against two
echo_server binaries and prints a Markdown table of medians with head/base ratios."""

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def cpu_seconds(pid):
    """CPU time the process's threads have run, in seconds: the sum of each thread's
    /proc/PID/task/TID/schedstat (nanoseconds), or /proc/PID/stat's utime + stime (clock
    ticks, 10 ms: too coarse for a few seconds of a fast server) where schedstat is
    missing."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_cmd(cmd, env=None):
    """Starts server command `cmd` on CPU 0 with `--addr` on a free port, with the
    environment variables `env` ("K=V" strings) added; waits until it accepts. Returns the
    process and the address."""
    addr = f"127.0.0.1:{free_port()}"
    environ = dict(os.environ)
    for kv in env or []:
        k, v = kv.split("=", 1)
        environ[k] = v
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd + ["--addr", addr], stdout=subprocess.DEVNULL,
                         env=environ)
    host, port = addr.rsplit(":", 1)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection((host, int(port)), 0.2).close()
            return p, addr
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"{cmd[0]} did not start")


def start(binary, env=None):
    return start_cmd([binary, "--cores", "1", "--cpus", "0"], env)


def run(bench, server, addr, proto, conns, inflight, duration):
    cpu0 = cpu_seconds(server.pid)
    out = subprocess.run(
        [bench, "--addr", addr, "--protocol", proto, "--connections", str(conns), "--inflight", str(inflight),
         "--payload", "128", "--duration", duration, "--warmup", "1s", "--cpus", "1", "--json"],
        capture_output=True, text=True, check=True)
    cpu = cpu_seconds(server.pid) - cpu0
    r = json.loads(out.stdout)
    if r.get("errors"):
        raise SystemExit(f"rpc-bench reported {r['errors']} errors against {addr}")
    # The server also worked during the warm-up: count its calls at the same rate.
    r["cpu_us"] = cpu / max(1, r["calls"] + r["qps"] * 1.0) * 1e6
    return r


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def spread(xs):
    m = median(xs)
    return (max(xs) - min(xs)) / m if m else 0.0


def main():
    ap = argparse.ArgumentParser()
    for a in ["--base", "--base-bin", "--head", "--head-bin", "--bench", "--duration", "--rows"]:
        ap.add_argument(a, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    # "K=V" environment variables for one side's server (the same binary on two backends).
    ap.add_argument("--base-env", action="append", default=[])
    ap.add_argument("--head-env", action="append", default=[])
    args = ap.parse_args()
    rows = [r.split(":") for r in args.rows.split()]
    servers = {}
    try:
        for side, binary, env in [("base", args.base_bin, args.base_env),
                                  ("head", args.head_bin, args.head_env)]:
            servers[side] = start(binary, env)
        results = {(tuple(r), side): [] for r in rows for side in ("base", "head")}
        for i in range(args.repeats):
            for proto, conns, inflight in rows:
                # Alternate which side goes first, so neither always runs on a warmer machine.
                order = ("base", "head") if i % 2 == 0 else ("head", "base")
                for side in order:
                    p, addr = servers[side]
                    r = run(args.bench, p, addr, proto, int(conns), int(inflight), args.duration)
                    results[((proto, conns, inflight), side)].append(r)
                    print(f"run {i + 1}/{args.repeats} {proto} {conns}x{inflight} {side}: "
                          f"{r['qps']:,.0f} calls/s p99 {r['p99_us']} us cpu {r['cpu_us']:.3f} us/call",
                          file=sys.stderr)
    finally:
        for p, _ in servers.values():
            p.kill()
    print(f"base {args.base[:10]}, head {args.head[:10]}; medians of {args.repeats} alternating runs of "
          f"{args.duration}; 128 B; server on CPU 0, rpc-bench on CPU 1. Noise: (max-min)/median of each side's runs.")
    print()
    print("| row | calls/s base | calls/s head | ratio | noise b/h | p99 µs base | p99 µs head | ratio | "
          "CPU µs/call base | CPU µs/call head | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for proto, conns, inflight in rows:
        b = results[((proto, conns, inflight), "base")]
        h = results[((proto, conns, inflight), "head")]
        q = (median([r["qps"] for r in b]), median([r["qps"] for r in h]))
        p99 = (median([r["p99_us"] for r in b]), median([r["p99_us"] for r in h]))
        cpu = (median([r["cpu_us"] for r in b]), median([r["cpu_us"] for r in h]))
        noise = (spread([r["qps"] for r in b]), spread([r["qps"] for r in h]))
        print(f"| {proto} {conns}x{inflight} | {q[0]:,.0f} | {q[1]:,.0f} | {q[1] / q[0]:.3f} | "
              f"{noise[0]:.1%} / {noise[1]:.1%} | {p99[0]} | {p99[1]} | {p99[1] / max(1, p99[0]):.3f} | "
              f"{cpu[0]:.3f} | {cpu[1]:.3f} | {cpu[1] / cpu[0]:.3f} |")


if __name__ == "__main__":
    main()
