#!/usr/bin/env python3
"""TLS against plain text in the same run: two echo_server processes on CPU 0, one plain
and one serving TLS (--tls-cert/--tls-key, test certificates from the tls_certs binary,
ECDSA P-256, TLS 1.3), loaded in turn by rpc-bench on CPU 1 (with --tls-ca for the TLS
one). For each shape it prints the medians of REPEATS alternating runs: calls/s, MB/s,
the server's CPU time per call, and TLS/plain ratios, as a Markdown table.

Usage: scripts/tls-bench.sh  (builds, then runs this; env REPEATS=5 DURATION=3s)"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_ab import cpu_seconds, median, start_cmd  # noqa: E402

import json  # noqa: E402

# (label, protocol, connections, inflight, payload bytes)
SHAPES = [
    ("Framed, 16x32, 128 B", "framed", 16, 32, 128),
    ("TTHeader, 16x32, 128 B", "ttheader", 16, 32, 128),
    ("Framed, 4x2, 1 MiB", "framed", 4, 2, 1 << 20),
]


def start(flags):
    return start_cmd(["target/release/echo_server", "--cores", "1", "--cpus", "0",
                      "--max-frame", str(8 << 20)] + flags)


def run(server, addr, shape, duration, tls_flags):
    _, proto, conns, inflight, payload = shape
    cpu0 = cpu_seconds(server.pid)
    out = subprocess.run(
        ["target/release/rpc-bench", "--addr", addr, "--protocol", proto, "--connections", str(conns),
         "--inflight", str(inflight), "--payload", str(payload), "--duration", duration,
         "--warmup", "1s", "--cpus", "1", "--json"] + tls_flags,
        capture_output=True, text=True, check=True)
    cpu = cpu_seconds(server.pid) - cpu0
    r = json.loads(out.stdout)
    if r.get("errors"):
        raise SystemExit(f"rpc-bench reported errors against {addr}: {r['errors']}")
    r["cpu_us"] = cpu / max(1, r["calls"] + r["qps"] * 1.0) * 1e6
    r["mbps"] = r["qps"] * payload * 2 / 1e6  # request and reply
    return r


def main():
    repeats = int(os.environ.get("REPEATS", "5"))
    duration = os.environ.get("DURATION", "3s")
    pki = tempfile.mkdtemp(prefix="tls-bench-")
    subprocess.run(["target/release/tls_certs", pki], check=True, stdout=subprocess.DEVNULL)
    cert = ["--tls-cert", f"{pki}/server.pem", "--tls-key", f"{pki}/server.key"]
    servers = {"plain": start([]), "tls": start(cert)}
    client = {"plain": [], "tls": ["--tls-ca", f"{pki}/ca.pem"]}
    try:
        res = {(s[0], side): [] for s in SHAPES for side in servers}
        for i in range(repeats):
            for shape in SHAPES:
                for side in (("plain", "tls") if i % 2 == 0 else ("tls", "plain")):
                    p, addr = servers[side]
                    r = run(p, addr, shape, duration, client[side])
                    res[(shape[0], side)].append(r)
                    print(f"run {i + 1}/{repeats} {shape[0]:24} {side:5} {r['qps']:>12,.0f} calls/s "
                          f"{r['mbps']:>9,.1f} MB/s  cpu {r['cpu_us']:.3f} us/call", file=sys.stderr)
    finally:
        for p, _ in servers.values():
            p.kill()
    print("| shape | plain calls/s | TLS calls/s | TLS/plain | plain MB/s | TLS MB/s "
          "| plain server CPU us/call | TLS server CPU us/call | CPU TLS/plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        p, t = res[(shape[0], "plain")], res[(shape[0], "tls")]
        q = (median([r["qps"] for r in p]), median([r["qps"] for r in t]))
        mb = (median([r["mbps"] for r in p]), median([r["mbps"] for r in t]))
        cpu = (median([r["cpu_us"] for r in p]), median([r["cpu_us"] for r in t]))
        print(f"| {shape[0]} | {q[0]:,.0f} | {q[1]:,.0f} | {q[1] / q[0]:.3f} | {mb[0]:,.1f} | {mb[1]:,.1f} "
              f"| {cpu[0]:.3f} | {cpu[1]:.3f} | {cpu[1] / cpu[0]:.2f} |")


if __name__ == "__main__":
    main()
