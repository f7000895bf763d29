#!/usr/bin/env python3
"""Latency under load: open-loop runs of our echo_server and of the minimal io_uring
responder (no framework), in one run, at the same fixed rates.

  scripts/latency-under-load.py [--repeats 5] [--duration 5s] [--svg docs/latency-under-load.svg]

Both servers run at once, each pinned to CPU 0 with one core (the idle one costs nothing),
answering Framed binary Thrift `Echo.echo` (128 B); `rpc-bench` runs on CPU 1.

1. echo_server's closed-loop maximum: 16 connections x 32 in flight, median of --repeats.
2. At 10%, 30%, 50% and 70% of that maximum, open loop (`rpc-bench --rate`: calls leave
   on a fixed schedule, and each call's latency is measured from when it was due to
   leave, so a stalled server is charged for the calls it delayed: coordinated omission
   corrected), 16 connections, --repeats runs against each server, alternating between
   them so that drift hits both alike.
3. Prints a Markdown table of the medians (p50, p99, p99.9, achieved rate) with the ratio
   of our p99 to the responder's, and writes an SVG plot of both servers' p50 and p99.
"""

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTIONS = [0.1, 0.3, 0.5, 0.7]
CONNECTIONS = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


def bench(bench_bin, port, duration, rate=None):
    args = ["taskset", "-c", "1", bench_bin, "--addr", f"127.0.0.1:{port}", "--protocol",
            "framed", "--connections", str(CONNECTIONS), "--payload", "128",
            "--duration", duration, "--warmup", "1s", "--json"]
    if rate is None:
        args += ["--inflight", "32"]
    else:
        # The schedule, not a queue limit, decides when calls leave.
        args += ["--rate", f"{rate:.0f}", "--inflight", "1024"]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    try:
        r = json.loads(out.stdout)
    except json.JSONDecodeError:
        sys.exit(f"rpc-bench failed: {out.stderr.strip()}")
    if r["errors"]:
        sys.exit(f"rpc-bench saw {r['errors']} errors: {r['errors_by_kind']}")
    return r


def svg(points, title):
    """points: {server: [(rate, p50, p99), ...]} -> an SVG document (log latency axis)."""
    w, h, left, right, top, bottom = 780, 420, 70, 220, 40, 50
    rates = [p[0] for ps in points.values() for p in ps]
    lats = [v for ps in points.values() for p in ps for v in p[1:]]
    x_max = max(rates) * 1.05
    y_lo = 10 ** math.floor(math.log10(min(lats)))
    y_hi = 10 ** math.ceil(math.log10(max(lats)))

    def x(v):
        return left + (w - left - right) * v / x_max

    def y(v):
        f = (math.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
        return top + (h - top - bottom) * (1 - f)

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    decade = y_lo
    while decade <= y_hi:
        o.append(f'<line x1="{left}" x2="{w - right}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" '
                 f'stroke="#ddd"/>')
        o.append(f'<text x="{left - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">'
                 f'{decade:g} µs</text>')
        decade *= 10
    for i in range(6):
        v = x_max * i / 5
        o.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top}" y2="{h - bottom}" '
                 f'stroke="#eee"/>')
        o.append(f'<text x="{x(v):.1f}" y="{h - bottom + 16}" text-anchor="middle">'
                 f'{v / 1e6:.2f}M</text>')
    o.append(f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">'
             f'offered rate (calls/s, open loop)</text>')
    o.append(f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" '
             f'stroke="black"/>')
    o.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="black"/>')
    colors = {"echo_server": "#c0392b", "minimal responder": "#2471a3"}
    legend = 0
    for server, ps in points.items():
        for idx, (name, dash) in enumerate([("p50", ""), ("p99", ' stroke-dasharray="6,4"')]):
            path = " ".join(f"{x(p[0]):.1f},{y(p[1 + idx]):.1f}" for p in ps)
            c = colors.get(server, "black")
            o.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
            for p in ps:
                o.append(f'<circle cx="{x(p[0]):.1f}" cy="{y(p[1 + idx]):.1f}" r="3" fill="{c}"/>')
            ly = top + 10 + 18 * legend
            o.append(f'<line x1="{w - right + 10}" x2="{w - right + 34}" y1="{ly}" y2="{ly}" '
                     f'stroke="{c}" stroke-width="2"{dash}/>')
            o.append(f'<text x="{w - right + 40}" y="{ly + 4}">{server} {name}</text>')
            legend += 1
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--svg", default=os.path.join(ROOT, "docs", "latency-under-load.svg"))
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "examples", "--bin", "echo_server",
                    "-p", "benches", "--bin", "rpc-bench", "--bin", "minimal-responder"],
                   cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    rel = os.path.join(target, "release")
    bench_bin = os.path.join(rel, "rpc-bench")
    ours, theirs = free_port(), free_port()
    servers = [
        subprocess.Popen(["taskset", "-c", "0", os.path.join(rel, "echo_server"), "--addr",
                          f"127.0.0.1:{ours}", "--cores", "1", "--cpus", "0"],
                         stdout=subprocess.DEVNULL),
        subprocess.Popen(["taskset", "-c", "0", os.path.join(rel, "minimal-responder"),
                          f"127.0.0.1:{theirs}", "0", "thrift"], stdout=subprocess.DEVNULL),
    ]
    try:
        wait_port(ours)
        wait_port(theirs)
        maxima = [bench(bench_bin, ours, args.duration)["qps"] for _ in range(args.repeats)]
        top = statistics.median(maxima)
        print(f"echo_server closed-loop maximum (16x32): {top:,.0f} calls/s "
              f"(runs: {', '.join(f'{m:,.0f}' for m in maxima)})\n")
        runs = {"echo_server": {}, "minimal responder": {}}
        for f in FRACTIONS:
            rate = top * f
            for _ in range(args.repeats):
                for name, port in (("echo_server", ours), ("minimal responder", theirs)):
                    runs[name].setdefault(f, []).append(bench(bench_bin, port, args.duration, rate))
    finally:
        for s in servers:
            s.terminate()
            s.wait()

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    print("| load | offered calls/s | server | achieved calls/s | p50 µs | p99 µs | p99.9 µs "
          "| p99 / responder's |")
    print("|---|---|---|---|---|---|---|---|")
    points = {name: [] for name in runs}
    for f in FRACTIONS:
        ref = med(runs["minimal responder"][f], "p99_us")
        for name in runs:
            rs = runs[name][f]
            p50, p99, p999 = med(rs, "p50_us"), med(rs, "p99_us"), med(rs, "p999_us")
            points[name].append((top * f, p50, p99))
            print(f"| {f:.0%} | {top * f:,.0f} | {name} | {med(rs, 'qps'):,.0f} | {p50:.1f} "
                  f"| {p99:.1f} | {p999:.1f} | {p99 / ref:.2f} |")
    os.makedirs(os.path.dirname(args.svg), exist_ok=True)
    with open(args.svg, "w") as out:
        out.write(svg(points, "Framed echo, 128 B, 16 connections, open loop: "
                              f"medians of {args.repeats}"))
    print(f"\nplot written to {os.path.relpath(args.svg, ROOT)}")


if __name__ == "__main__":
    main()
