#!/usr/bin/env python3
"""The console's attempts list with 100,000 attempts: how long each kind of page takes, against a same-run baseline.

usage: paging.py BIN_DIR [--attempts 100000] [--lines-per-attempt 3] [--repeat 15]

Starts the real `lightning` (release build in BIN_DIR) on a scratch database, writes the attempts and their log
lines straight into SQLite (as many as a busy month; the API would take minutes to make them), then times
GET /api/attempts for: the newest page, a page 50,000 deep by cursor, each filter, and the log-text search (one
rare match, and no match at all: the worst case, every log line read). The baseline is GET /healthz on the same
connection: the HTTP round trip itself. Prints medians and each as a multiple of the baseline.
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from bench import Stack, say  # noqa: E402


def populate(db, n, lines_per_attempt):
    """n attempts over two workflows, a tenth failed, log lines for each; one attempt has a rare word."""
    c = sqlite3.connect(db, timeout=60)
    wf = dict(c.execute("SELECT name, id FROM workflows"))
    snap = dict(c.execute("SELECT w.name, w.current_snapshot_id FROM workflows w"))
    now = int(time.time() * 1e6) - n * 1000
    clip = str(uuid.uuid4())
    c.execute("INSERT INTO dataclips (id, type, body, inserted_at) VALUES (?, 'http_request', '{}', ?)", (clip, now))
    attempts, orders, logs = [], [], []
    for i in range(n):
        name = "alpha" if i % 3 else "beta"
        aid, wo = str(uuid.uuid4()), str(uuid.uuid4())
        at = now + i * 1000
        state = "failed" if i % 10 == 0 else "success"
        orders.append((wo, wf[name], snap[name], clip, at))
        attempts.append((aid, wo, wf[name], snap[name], clip, state, state if state == "failed" else "success",
                         at, at, at + 500))
        for k in range(lines_per_attempt):
            message = "needle-in-a-haystack" if i == n // 4 and k == 0 else "step %d of attempt %d: all fine" % (k, i)
            logs.append((aid, k + 1, "info", "JOB", message, at + k))
    c.executemany("INSERT INTO work_orders (id, workflow_id, snapshot_id, dataclip_id, inserted_at) VALUES (?,?,?,?,?)", orders)
    c.executemany("""INSERT INTO attempts (id, work_order_id, workflow_id, snapshot_id, dataclip_id, state, reason,
                     run_timeout_ms, inserted_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,60000,?,?,?)""", attempts)
    c.executemany("INSERT INTO log_lines (attempt_id, seq, level, source, message, timestamp) VALUES (?,?,?,?,?,?)", logs)
    c.commit()
    middle = c.execute("SELECT seq FROM attempts ORDER BY seq LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
    c.close()
    return middle, now


def timed(stack, path, repeat):
    samples = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = stack.call("GET", path)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bin_dir")
    p.add_argument("--attempts", type=int, default=100_000)
    p.add_argument("--lines-per-attempt", type=int, default=3)
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-console-")
    stack = Stack(os.path.abspath(args.bin_dir), work)
    try:
        for name in ("alpha", "beta"):
            stack.apply("name: %s\njobs:\n  - {name: a, adaptor: sh, body: 'true'}\n" % name)
        say("writing %d attempts and %d log lines" % (args.attempts, args.attempts * args.lines_per_attempt))
        middle, start = populate(os.path.join(work, "l.db"), args.attempts, args.lines_per_attempt)
        base, _ = timed(stack, "/healthz", args.repeat)
        window = "since=%d&until=%d" % (start + args.attempts * 400, start + args.attempts * 600)
        cases = [
            ("newest page (50)", "/api/attempts?limit=50"),
            ("page 50,000 deep, by cursor", "/api/attempts?limit=50&before=%d" % middle),
            ("state=failed", "/api/attempts?limit=50&state=failed"),
            ("workflow=beta", "/api/attempts?limit=50&workflow=beta"),
            ("a time window in the middle", "/api/attempts?limit=50&" + window),
            ("log text, one rare match", "/api/attempts?limit=50&q=needle-in-a"),
            ("log text, no match (every line read)", "/api/attempts?limit=50&q=no-such-text"),
        ]
        print("\n%d attempts, %d log lines; median of %d; baseline GET /healthz %.2f ms\n" % (
            args.attempts, args.attempts * args.lines_per_attempt, args.repeat, base))
        print("%-40s %10s %10s %8s" % ("page", "median ms", "x healthz", "rows"))
        for label, path in cases:
            ms, r = timed(stack, path, args.repeat if "no match" not in label else max(3, args.repeat // 5))
            print("%-40s %10.2f %10.1f %8d" % (label, ms, ms / base, len(r["attempts"])))
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
