#!/usr/bin/env python3
"""Dispatch latency of two builds, measured side by side in one run: an A/B for changes smaller than the noise
between separate runs of bench.py (on this 2-core machine one run's p50 moves by 0.5 ms from the next).

Both stacks (Lightning with one worker each, capacity 4, sandboxed, durable) run at once in scratch directories, and
webhooks go to them in turn, one at a time (A, B, B, A, ...), so drift in the machine's state falls on both alike.
Each attempt's step stamps its own start (`date +%s%N`); nothing polls the stack while an attempt is dispatched.

    python3 bench/e2e/dispatch_ab.py BIN_A BIN_B [--n 600]

Prints p50 / p90 / p99 of each, the median of the paired differences (B - A) with a bootstrap 95 % interval, and
each side's CPU per attempt (Lightning / worker with its steps, from /proc; each stack's idle ticking while the other
works is counted too, alike on both sides).
"""
import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Stack, cpu_seconds  # noqa: E402

STAMP = """name: stamp
triggers: [{name: hook, type: webhook, path: stamp}]
jobs: [{name: t, adaptor: sh, body: "date +%s%N"}]
"""


def one(stack):
    t0 = time.time_ns()
    r = stack.call("POST", "/i/stamp", "{}", auth=False)
    time.sleep(0.03)  # the step stamps itself: nothing is asked of the stack while it dispatches
    a = stack.wait_final(r["attempt_id"])
    logs = stack.call("GET", "/api/attempts/%s/logs" % r["attempt_id"])["logs"]
    if a["state"] != "success" or not logs:
        raise RuntimeError("attempt failed: %r" % a)
    return (int(logs[0]["message"]) - t0) / 1e6


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--n", type=int, default=600, help="attempts per side")
    args = ap.parse_args()
    dirs = [tempfile.mkdtemp(prefix="dispatch-ab-") for _ in range(2)]
    stacks = []
    try:
        for bin_dir, d in zip((args.a, args.b), dirs):
            s = Stack(os.path.abspath(bin_dir), d)
            stacks.append(s)  # stopped below even if its worker does not start
            s.worker("w1", 4)
            s.apply(STAMP)
        for _ in range(10):  # warm-up
            for s in stacks:
                one(s)
        lat = ([], [])
        def cpu(s):
            return (cpu_seconds(s.lightning.pid), cpu_seconds(s.workers[0].pid))
        cpu0 = [cpu(s) for s in stacks]
        for i in range(args.n):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for k in order:
                lat[k].append(one(stacks[k]))
            if (i + 1) % 100 == 0:
                print("==> %d of %d pairs" % (i + 1, args.n), file=sys.stderr, flush=True)
        cpu1 = [cpu(s) for s in stacks]
    finally:
        for s in stacks:
            s.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    diffs = [b - a for a, b in zip(*lat)]
    rng = random.Random(1)
    boots = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(1000))
    for name, xs in (("A " + args.a, lat[0]), ("B " + args.b, lat[1])):
        k = 0 if name.startswith("A") else 1
        per = [(cpu1[k][j] - cpu0[k][j]) * 1000 / args.n for j in (0, 1)]
        print("%-32s p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  CPU per attempt %.2f / %.2f ms"
              % (name, pct(xs, 0.5), pct(xs, 0.9), pct(xs, 0.99), per[0], per[1]))
    print("B - A, median of paired differences: %+.2f ms (95 %% interval %+.2f to %+.2f ms)"
          % (statistics.median(diffs), boots[25], boots[974]))


if __name__ == "__main__":
    main()
