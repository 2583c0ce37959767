#!/usr/bin/env python3
"""The end-to-end benchmark: the real `lightning` and `runtime-worker` binaries on loopback, with baselines
measured in the same run. Prints one table. Run it through `bench/e2e/run`, which builds and installs first.

usage: bench.py BIN_DIR [--attempts 2000] [--latency 200] [--lines 1000000] [--sockets 10000] [--rq-jobs 300]
                [--only dispatch,throughput,logs,sockets,baselines] [--perf DIR]

--perf DIR samples both processes with `perf record -e cpu-clock -g` while the throughput and the log figures run and writes
DIR/lightning.data, DIR/worker.data (DIR/logs-*.data for the logs) and a report of each (DIR/*.txt).
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
rows = []  # (figure, ours, baseline, ratio / aim)


def say(text):
    print("==> " + text, file=sys.stderr, flush=True)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stack:
    """Lightning (embedded SQLite, durable) and workers, in a scratch directory."""

    def __init__(self, bin_dir, workdir):
        self.bin, self.dir = bin_dir, workdir
        # A worker told `WORKER_SANDBOX=none` runs its steps as nobody, who must reach the work directories under here.
        # (The database and logs become readable by local users; the keys under keys/ keep their own modes.)
        os.chmod(workdir, 0o755)
        subprocess.run([os.path.join(bin_dir, "gen-worker-keys"), "--out", os.path.join(workdir, "keys")],
                       check=True, stdout=subprocess.DEVNULL)
        self.start(os.path.join(workdir, "l.db"))
        if self.port is None:
            sys.exit("lightning did not start:\n" + open(self.log.name).read())
        self.token = open(os.path.join(workdir, "keys", "operator_token")).read().strip()
        self.secret = open(os.path.join(workdir, "keys", "worker_secret")).read().strip()
        self.workers = []
        self.local = threading.local()

    def start(self, database, timeout=30):
        """`lightning serve` on `database` in self.dir; self.port is None when it did not say it listens in time."""
        self.log = open(os.path.join(self.dir, "lightning.log"), "w+")
        self.lightning = subprocess.Popen(
            [os.path.join(self.bin, "lightning"), "serve", "--port", "0", "--database", database],
            cwd=self.dir, stderr=self.log, stdout=self.log)
        self.port = None
        deadline = time.time() + timeout
        while time.time() < deadline and self.port is None and self.lightning.poll() is None:
            time.sleep(0.05)
            m = re.search(r"port=(\d+) \[Lightning\] Lightning is listening", open(self.log.name).read())
            if m:
                self.port = int(m.group(1))

    def worker(self, name, capacity):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        p = subprocess.Popen([os.path.join(self.bin, "runtime-worker"), "--lightning", "ws://127.0.0.1:%d/worker" % self.port,
                              "--name", name, "--capacity", str(capacity), "--work-dir", os.path.join(self.dir, "w-" + name)],
                             cwd=self.dir, stderr=log, stdout=log)
        self.workers.append(p)
        deadline = time.time() + 30
        joined = re.compile(r"worker\.name=%s \[Lightning\] worker joined the queue" % re.escape(name))
        while time.time() < deadline:
            if joined.search(open(self.log.name).read()):
                return p
            time.sleep(0.05)
        sys.exit("worker %s did not join" % name)

    def conn(self):
        if getattr(self.local, "c", None) is None:
            self.local.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return self.local.c

    def call(self, method, path, body=None, auth=True):
        headers = {"Authorization": "Bearer " + self.token} if auth else {}
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        for attempt in range(3):
            try:
                c = self.conn()
                c.request(method, path, body=body if body is not None else b"{}", headers=headers)
                r = c.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    c.close()
                    self.local.c = None
                if r.status >= 300:
                    raise RuntimeError("%s %s -> %d %s" % (method, path, r.status, data[:200]))
                return json.loads(data) if data and data[:1] in b"{[" else data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.local.c = None
                if attempt == 2:
                    raise

    def apply(self, yaml):
        self.call("PUT", "/api/workflows", yaml)

    def wait_final(self, attempt_id, timeout=600):
        # Polled gently: a tight loop of API calls would load the machine whose latency is being measured.
        deadline = time.time() + timeout
        while time.time() < deadline:
            a = self.call("GET", "/api/attempts/" + attempt_id)
            if a["final"]:
                return a
            time.sleep(0.02)
        raise RuntimeError("attempt %s did not finish" % attempt_id)

    def counts(self):
        text = self.call("GET", "/metrics", auth=False).decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r'lightning_attempts\{state="(\w+)"\} ([\d.]+)', text)}

    def stop(self):
        for p in self.workers + [self.lightning]:
            p.terminate()
        for p in self.workers + [self.lightning]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def cpu_seconds(pid):
    """User + system CPU of a process and of its reaped children (a worker's steps), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[11..14] are utime, stime, cutime, cstime (the 14th-17th fields of the whole line)
    return sum(int(x) for x in fields[11:15]) / ticks


def bench_idle(stack):
    time.sleep(1.0)
    rows.append(("idle RSS: lightning (one worker joined)", "%.1f MB" % (rss_kb(stack.lightning.pid) / 1024), "", ""))
    rows.append(("idle RSS: runtime-worker", "%.1f MB" % (rss_kb(stack.workers[0].pid) / 1024), "", ""))


def bench_latency(stack, n):
    say("dispatch latency: %d webhook POSTs, one at a time, to the step's process start" % n)
    stack.apply("""name: stamp
triggers: [{name: hook, type: webhook, path: stamp}]
jobs: [{name: t, adaptor: sh, body: "date +%s%N"}]
""")
    lat = []
    for i in range(n + 5):
        t0 = time.time_ns()
        r = stack.call("POST", "/i/stamp", "{}", auth=False)
        # The step stamps its own start, so nothing is asked while the attempt is dispatched: a first poll sent at once
        # landed in the middle of the claim it measured, on the same two cores (the figure moved by a fifth).
        time.sleep(0.03)
        a = stack.wait_final(r["attempt_id"])
        logs = stack.call("GET", "/api/attempts/%s/logs" % r["attempt_id"])["logs"]
        if a["state"] != "success" or not logs:
            raise RuntimeError("latency attempt failed: %r" % a)
        if i >= 5:  # warm-up
            lat.append((int(logs[0]["message"]) - t0) / 1e6)
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    rows.append(("dispatch: webhook POST -> step process start, p50", "%.2f ms" % p50, "", "aim < 3 ms"))
    rows.append(("dispatch: p99", "%.2f ms" % p99, "", ""))
    # The stamp is taken by the step itself: `sh` has started and has forked and run `date` by then. That part is
    # measured alone, in this run: the same command spawned straight from here, one at a time.
    own = []
    for i in range(n + 5):
        t0 = time.time_ns()
        out = subprocess.run(["/bin/sh", "-c", "date +%s%N"], capture_output=True, check=True).stdout
        if i >= 5:
            own.append((int(out) - t0) / 1e6)
    own.sort()
    stamp = own[len(own) // 2]
    rows.append(("  the stamp's own cost (sh -c 'date +%s%N' spawned from here), p50", "%.2f ms" % stamp, "", ""))
    rows.append(("  dispatch less the stamp's own cost, p50 (an estimate)", "%.2f ms" % (p50 - stamp), "", "aim < 3 ms"))


def start_perf(stack, perf_dir, prefix=""):
    if not perf_dir:
        return []
    if not shutil.which("perf"):
        sys.exit("--perf needs perf (Debian: linux-perf)")
    os.makedirs(perf_dir, exist_ok=True)
    return [subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-o", os.path.join(perf_dir, prefix + name + ".data"),
                              "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in (("lightning", stack.lightning.pid), ("worker", stack.workers[0].pid))]


def stop_perf(recorders, perf_dir, prefix=""):
    for r in recorders:
        r.send_signal(2)
        r.wait()
    for name in (prefix + "lightning", prefix + "worker") if recorders else ():
        data = os.path.join(perf_dir, name + ".data")
        with open(os.path.join(perf_dir, name + ".txt"), "w") as out:
            subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio",
                            "--percent-limit", "0.5", "-g", "none"], stdout=out, stderr=subprocess.DEVNULL)
        say("perf: %s and %s" % (data, out.name))


def post_webhooks(stacks, path, n, threads=4):
    """POSTs `n` empty webhooks to `path` from `threads` threads, round-robin over `stacks`; raises the first error."""
    errors = []

    def post(thread, count):
        try:
            for j in range(count):
                stacks[(thread + threads * j) % len(stacks)].call("POST", path, "{}", auth=False)
        except Exception as e:  # noqa: BLE001 - raised below
            errors.append(e)

    workers = [threading.Thread(target=post, args=(i, n // threads + (1 if i < n % threads else 0))) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]


def bench_throughput(stack, n, capacity, perf_dir=None):
    say("throughput: %d one-step attempts (`true`) through Lightning and one worker (capacity %d)" % (n, capacity))
    stack.apply("""name: noop
triggers: [{name: hook, type: webhook, path: noop}]
jobs: [{name: t, adaptor: sh, body: "true"}]
""")
    before = stack.counts()
    done_before = sum(v for k, v in before.items() if k not in ("available", "claimed", "started"))
    recorders = start_perf(stack, perf_dir)
    cpu_before = (cpu_seconds(stack.lightning.pid), cpu_seconds(stack.workers[0].pid))
    start = time.perf_counter()

    post_webhooks([stack], "/i/noop", n)
    posted = time.perf_counter() - start
    while True:
        c = stack.counts()
        finished = sum(v for k, v in c.items() if k not in ("available", "claimed", "started")) - done_before
        if finished >= n:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    cpu_l = (cpu_seconds(stack.lightning.pid) - cpu_before[0]) / n * 1000
    cpu_w = (cpu_seconds(stack.workers[0].pid) - cpu_before[1]) / n * 1000
    stop_perf(recorders, perf_dir)
    ok = c.get("success", 0) - before.get("success", 0)
    rows.append(("throughput: %d attempts end to end (%d succeeded)" % (n, ok), "%.1f attempts/s" % (n / elapsed), "", ""))
    rows.append(("  of which: accepting the %d webhooks" % n, "%.0f /s" % (n / posted), "", ""))
    rows.append(("  CPU per attempt: lightning / worker (its steps included)", "%.2f ms / %.2f ms" % (cpu_l, cpu_w), "",
                 "aim <= 1 ms / <= 2 ms"))
    return n / elapsed


def bench_logs(stack, lines, perf_dir=None):
    say("log streaming: one step printing %d lines, stored and watched by `lightning attempts tail`" % lines)
    stack.apply("""name: flood
triggers: [{name: hook, type: webhook, path: flood}]
jobs: [{name: t, adaptor: sh, body: "seq 1 %d"}]
""" % lines)
    recorders = start_perf(stack, perf_dir, "logs-")
    t0 = time.perf_counter()
    r = stack.call("POST", "/i/flood", "{}", auth=False)
    env = dict(os.environ, LIGHTNING_TOKEN=stack.token, LIGHTNING_SERVER="http://127.0.0.1:%d" % stack.port)
    tail = subprocess.Popen([os.path.join(stack.bin, "lightning"), "attempts", "tail", r["attempt_id"], "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    seen, expect_seq, bad = 0, 1, 0
    for raw in tail.stdout:
        line = json.loads(raw)
        if "seq" not in line:
            continue
        if line["seq"] != expect_seq or line["message"] != str(expect_seq):
            bad += 1
        expect_seq += 1
        seen += 1
    tail.wait()
    t_tail = time.perf_counter() - t0
    stack.wait_final(r["attempt_id"])
    stop_perf(recorders, perf_dir, "logs-")
    stored = stack.call("GET", "/api/attempts/" + r["attempt_id"])
    # Stored rate: from the attempt's start to its end, both recorded by Lightning.
    def iso(s):
        from datetime import datetime
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    t_store = iso(stored["finished_at"]) - iso(stored["started_at"])
    rows.append(("log lines into SQLite (%d, last_seq %d)" % (lines, stored["last_seq"]),
                 "%.0f lines/s" % (stored["last_seq"] / t_store), "", "aim >= 200,000"))
    rows.append(("log lines to a watching tail (%d received, %d out of order or wrong)" % (seen, bad),
                 "%.0f lines/s" % (seen / t_tail), "", "none lost: %s" % ("yes" if seen == lines and bad == 0 else "NO")))


def bench_sockets(stack, n):
    say("connections: %d worker sockets joined to worker:queue" % n)
    before = rss_kb(stack.lightning.pid)
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "worker_sockets.py"), str(stack.port), str(n), stack.secret],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("joined"):
        p.kill()
        rows.append(("%d worker sockets" % n, "failed: %s" % (line.strip() or p.stderr.read()[-300:]), "", ""))
        return
    time.sleep(2)
    after = rss_kb(stack.lightning.pid)
    rows.append(("%d joined worker sockets: lightning RSS" % n, "%.1f KB each" % ((after - before) / n),
                 "%.0f MB -> %.0f MB" % (before / 1024, after / 1024), ""))
    p.stdin.close()
    p.wait(timeout=120)


def baseline_spawn(n):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    exe = os.path.join(tempfile.gettempdir(), "lr_spawn_loop")
    subprocess.run([cc, "-O2", "-o", exe, os.path.join(ROOT, "bench/baselines/spawn_loop.c")], check=True)
    out = subprocess.run([exe, str(n)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"([\d.]+)\s*(?:spawns)?/s", out)
    return float(m.group(1)) if m else None


def baseline_limit(bin_dir, n):
    """The limit loop (bench-sandbox --limit-loop): per iteration one sandboxed spawn of /bin/true and one RS256
    attempt token, one loop per core, no Lightning and no sockets: this machine's cost of the work itself."""
    exe = os.path.join(bin_dir, "bench-sandbox")
    if not os.path.exists(exe):
        return None
    out = subprocess.run([exe, str(n), "--limit-loop"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"limit loop: ([\d.]+) iterations/s", out)
    return float(m.group(1)) if m else None


def baseline_rq(jobs):
    try:
        out = subprocess.run([sys.executable, os.path.join(ROOT, "bench/baselines/rq_baseline.py"), "--jobs", str(jobs)],
                             capture_output=True, text=True, timeout=900)
    except Exception as e:  # noqa: BLE001
        return {}, str(e)
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"rq-(\w+)\t\d+ jobs\t([\d.]+) jobs/s", out.stdout)}
    return found, (out.stderr.strip().splitlines() or [""])[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--attempts", type=int, default=2000)
    ap.add_argument("--latency", type=int, default=200)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--rq-jobs", type=int, default=300)
    ap.add_argument("--capacity", type=int, default=4, help="the worker's capacity (default 4)")
    ap.add_argument("--only", default="dispatch,throughput,logs,sockets,baselines",
                    help="comma-separated: dispatch, throughput, logs, sockets, baselines")
    ap.add_argument("--perf", metavar="DIR", help="perf record both processes during the throughput figure")
    args = ap.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"dispatch", "throughput", "logs", "sockets", "baselines"}
    if unknown:
        ap.error("unknown --only part: " + ", ".join(sorted(unknown)))
    ours = None

    with tempfile.TemporaryDirectory(prefix="lr-bench-") as d:
        stack = Stack(args.bin, d)
        try:
            stack.worker("bench", args.capacity)
            bench_idle(stack)
            if "dispatch" in only:
                bench_latency(stack, args.latency)
            if "throughput" in only:
                ours = bench_throughput(stack, args.attempts, args.capacity, args.perf)
            if "logs" in only:
                bench_logs(stack, args.lines, args.perf)
            if args.sockets and "sockets" in only:
                bench_sockets(stack, args.sockets)
        finally:
            stack.stop()

    if "baselines" in only:
        baselines(args, ours)
    print_rows()


def baselines(args, ours):
    say("baselines: the limit loop, a plain spawn loop, then RQ (%d jobs, forking and simple workers)" % args.rq_jobs)
    limit = baseline_limit(args.bin, max(2000, args.attempts))
    spawn = baseline_spawn(max(2000, args.attempts))
    rq, rq_note = baseline_rq(args.rq_jobs)
    if limit:
        rows.append(("baseline: limit loop (sandboxed spawn + RS256 sign, both cores)", "%.0f /s" % limit, "",
                     "ours = %.2f of it (aim >= 0.5)" % (ours / limit) if ours else ""))
    if spawn:
        rows.append(("baseline: plain posix_spawn of /bin/true, both cores", "%.0f /s" % spawn, "",
                     "ours = %.2f of it" % (ours / spawn) if ours else ""))
    for kind in ("fork", "simple"):
        if kind in rq and not ours:
            rows.append(("baseline: RQ %s worker, `true` as a subprocess" % kind, "%.1f jobs/s" % rq[kind], "", ""))
        elif kind in rq:
            rows.append(("baseline: RQ %s worker, `true` as a subprocess" % kind, "%.1f jobs/s" % rq[kind], "",
                         "ours = %.1fx%s" % (ours / rq[kind], " (aim >= 10x)" if kind == "fork" else "")))
    if not rq:
        rows.append(("baseline: RQ", "not run: %s" % rq_note, "", ""))


def print_rows():
    width = max(len(r[0]) for r in rows)
    print()
    print("%-*s  %-22s  %-20s  %s" % (width, "figure", "ours", "detail", "ratio / aim"))
    print("-" * (width + 70))
    for r in rows:
        print("%-*s  %-22s  %-20s  %s" % (width, r[0], r[1], r[2], r[3]))


if __name__ == "__main__":
    main()
