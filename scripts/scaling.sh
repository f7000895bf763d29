#!/usr/bin/env bash
# How echo_server scales with server cores: runs it on 1, 2, 4, 8 ... cores (CPUs 0..k-1)
# against rpc-bench on the machine's other CPUs, and prints calls/s, the server's CPU time
# per call and the throughput per server core relative to one core. Meant for machines
# bigger than the 2-core one the project is built on, where the claim in BENCHMARKS.md
# ("Scaling beyond one core") can be checked; here it runs the 1-core row only.
#
#   scripts/scaling.sh          (env: PROTOCOL=framed, DURATION=5s, REPEATS=3,
#                                INFLIGHT=32, CONNS_PER_CORE=16, MAX_CORES)
#
# Each row takes the median of REPEATS runs. The client gets every CPU the server does not
# use (at least one); with fewer client CPUs than server cores the client may be what
# limits the row, which the table says (client CPUs busy above 90%).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p benches --bin rpc-bench
cargo build --release -q -p examples --bin echo_server
exec python3 - "$PWD/target/release" <<'PY'
import json, os, socket, statistics, subprocess, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
from perf_ab import cpu_seconds, free_port

bin_dir = sys.argv[1]
proto = os.environ.get("PROTOCOL", "framed")
duration = os.environ.get("DURATION", "5s")
repeats = int(os.environ.get("REPEATS", "3"))
inflight = int(os.environ.get("INFLIGHT", "32"))
per_core = int(os.environ.get("CONNS_PER_CORE", "16"))
cpus = sorted(os.sched_getaffinity(0))
max_cores = int(os.environ.get("MAX_CORES", str(max(1, len(cpus) - 1))))

def busy(pid):
    return cpu_seconds(pid)

rows, k = [], 1
while k <= max_cores and k < len(cpus):
    server_cpus, client_cpus = cpus[:k], cpus[k:]
    runs = []
    for _ in range(repeats):
        addr = f"127.0.0.1:{free_port()}"
        srv = subprocess.Popen(
            [f"{bin_dir}/echo_server", "--addr", addr, "--cores", str(k),
             "--cpus", ",".join(map(str, server_cpus))], stdout=subprocess.DEVNULL)
        host, port = addr.rsplit(":", 1)
        for _ in range(200):
            try:
                socket.create_connection((host, int(port)), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        cpu0, t0 = busy(srv.pid), time.time()
        t0c = os.times()
        out = subprocess.run(
            [f"{bin_dir}/rpc-bench", "--addr", addr, "--protocol", proto,
             "--connections", str(per_core * k), "--inflight", str(inflight),
             "--threads", str(len(client_cpus)), "--cpus", ",".join(map(str, client_cpus)),
             "--duration", duration, "--warmup", "1s", "--json"],
            capture_output=True, text=True, check=True)
        t1c = os.times()
        cpu, wall = busy(srv.pid) - cpu0, time.time() - t0
        srv.terminate()
        srv.wait()
        r = json.loads(out.stdout)
        if r.get("errors"):
            raise SystemExit(f"rpc-bench reported {r['errors']} errors")
        client_cpu = (t1c.children_user + t1c.children_system) - (t0c.children_user + t0c.children_system)
        # The server worked through the warm-up too: count its calls at the same rate.
        calls = r["calls"] + r["qps"] * 1.0
        runs.append((r["qps"], cpu / calls * 1e6, client_cpu / wall / len(client_cpus)))
    qps = statistics.median(x[0] for x in runs)
    cpu_us = statistics.median(x[1] for x in runs)
    client_busy = statistics.median(x[2] for x in runs)
    rows.append((k, len(client_cpus), qps, cpu_us, client_busy))
    k *= 2

base = rows[0][2] if rows else 1
print(f"echo_server scaling, {proto}, {per_core} connections per server core x {inflight} in flight, "
      f"median of {repeats} runs of {duration}")
print("| server cores | client CPUs | calls/s | server CPU per call | calls/s per core vs 1 core | client CPUs busy |")
print("|---|---|---|---|---|---|")
for k, c, qps, cpu_us, cb in rows:
    note = " (client-bound)" if cb > 0.9 else ""
    print(f"| {k} | {c} | {qps:,.0f} | {cpu_us:.3f} µs | {qps / k / base:.2f} | {cb:.0%}{note} |")
PY
