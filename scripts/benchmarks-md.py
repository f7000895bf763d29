#!/usr/bin/env python3
"""Turns criterion's results into a Markdown table, with each function's ratio to tonic.

  scripts/benchmarks-md.py [TARGET_DIR] [GROUP_PREFIX ...]

Reads TARGET_DIR/criterion/<group>/<function>/<parameter>/new/{estimates,benchmark}.json
(TARGET_DIR defaults to $CARGO_TARGET_DIR or ./target) and prints, per group and
parameter, the median time per iteration of every function and, for groups with an
element throughput, the rate; where a `tonic` function exists beside another, the ratio
("8.1x tonic": faster by that factor). Only groups starting with one of the prefixes are
shown when prefixes are given.
"""

import json
import os
import sys


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def main():
    args = sys.argv[1:]
    target = args.pop(0) if args and os.path.isdir(args[0]) else os.environ.get("CARGO_TARGET_DIR", "target")
    prefixes = args
    root = os.path.join(target, "criterion")
    rows = {}
    for dirpath, _dirs, files in os.walk(root):
        if "estimates.json" not in files or os.path.basename(dirpath) != "new":
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        group = bench["group_id"]
        if prefixes and not any(group.startswith(p) for p in prefixes):
            continue
        func = bench.get("function_id") or ""
        param = bench.get("value_str") or ""
        median = est["median"]["point_estimate"]
        elements = (bench.get("throughput") or {}).get("Elements")
        rows.setdefault((group, param), {})[func] = (median, elements)
    if not rows:
        print(f"no criterion results under {root}", file=sys.stderr)
        return 1
    print("| group | case | implementation | median time per call | calls/s | vs tonic |")
    print("|---|---|---|---|---|---|")
    for (group, param) in sorted(rows):
        funcs = rows[(group, param)]
        base = funcs.get("tonic")
        for func in sorted(funcs, key=lambda f: (f == "tonic", f)):
            median, elements = funcs[func]
            rate = f"{elements * 1e9 / median:,.0f}" if elements else ""
            ratio = ""
            if base and func != "tonic":
                ratio = f"**{base[0] / median:.1f}x** tonic"
            print(f"| {group} | {param} | {func} | {fmt_time(median)} | {rate} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
