#!/usr/bin/env python3
"""Lightning on PostgreSQL with 1, 2 and 3 replicas beside the embedded SQLite store, measured in the same run and
reported as ratios against SQLite (the machine is noisy). A sibling of bench.py; it uses the same binaries.

usage: replicas.py BIN_DIR [--attempts 1000] [--latency 100] [--replicas 1,2,3] [--capacity 4]

Each configuration gets a fresh store: a SQLite file, or a new database on one throwaway PostgreSQL server
(Debian's binaries, a unix socket only, fsync and synchronous_commit on: durable, like SQLite's synchronous=FULL).
Replicas are `lightning serve` processes on one database, each in a directory of its own holding a copy of one
key set; worker i is connected to replica i only. The total worker capacity is the same in every configuration
(--capacity, split over the workers: 4, 2+2, 2+1+1), so every configuration runs as many steps at once.

Figures per configuration:
- throughput: --attempts one-step attempts (`true`), webhooks posted by four threads round-robin over the replicas;
- CPU per attempt (from /proc, as bench.py): every Lightning replica, every worker (its steps included) and the
  PostgreSQL server (the postmaster, its reaped children and its live ones: backends, walwriter, checkpointer...);
- dispatch latency (as bench.py: webhook POST -> the step's process start), --latency sequential webhooks, measured
  while only worker 1 is connected (to replica 1): posted to replica 1 ("local"), and with 2+ replicas also posted
  to replica 2, which has no worker then ("via another replica": made there, signalled to replica 1 by
  LISTEN/NOTIFY, claimed through it);
- PostgreSQL serialization failures and deadlocks (the errors in the server's log; Lightning runs those
  transactions again) and warning/error lines in Lightning's logs.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import cpu_seconds, say  # noqa: E402

PG_PORT = 5432
started = []  # every process this script started, stopped by pid at the end whatever happened


def track(p):
    started.append(p)
    return p


def stop_all():
    for p in reversed(started):
        if p.poll() is None:
            p.terminate()
    for p in reversed(started):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Replica(bench.Stack):
    """One `lightning serve` (bench.Stack's calls, workers and stop) on a given database, in `workdir` with a copy
    of the key set `keys` (Lightning and its workers read keys/ from there). The first replica on a database writes
    keys/operator_token; the others are given that token (operator tokens live in the database)."""

    def __init__(self, bin_dir, workdir, keys, database, token=None):
        self.bin, self.dir = bin_dir, workdir
        os.makedirs(workdir)
        shutil.copytree(keys, os.path.join(workdir, "keys"))
        self.start(database, timeout=60)
        track(self.lightning)
        if self.port is None:
            raise RuntimeError("lightning did not start:\n" + open(self.log.name).read()[-3000:])
        self.token = token or open(os.path.join(workdir, "keys", "operator_token")).read().strip()
        self.secret = open(os.path.join(workdir, "keys", "worker_secret")).read().strip()
        self.workers = []
        self.local = threading.local()

    def worker(self, name, capacity):
        return track(super().worker(name, capacity))


class Postgres:
    """A throwaway PostgreSQL server (as Tests/TestSupport/PostgresServer.swift, but durable: fsync on)."""

    def __init__(self):
        root = "/usr/lib/postgresql"
        versions = sorted((int(v) for v in (os.listdir(root) if os.path.isdir(root) else []) if v.isdigit()), reverse=True)
        bins = [os.path.join(root, str(v), "bin") for v in versions if os.access(os.path.join(root, str(v), "bin", "postgres"), os.X_OK)]
        if not bins:
            raise RuntimeError("PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)")
        self.bin = bins[0]
        self.dir = tempfile.mkdtemp(prefix="lr-replicas-pg-")  # 0700: only its owner (and root) may enter
        self.proc = None
        self.as_user = []
        if os.geteuid() == 0:  # PostgreSQL refuses root: its own user, through setpriv, dying with this script
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups", "--pdeathsig", "SIGKILL", "--"]
        data = os.path.join(self.dir, "data")
        # --no-sync: only initdb's own files; the server below runs with fsync and synchronous_commit on.
        r = subprocess.run(self.as_user + [os.path.join(self.bin, "initdb"), "-D", data, "-U", "lightning", "--auth=trust",
                                           "-E", "UTF8", "--locale=C", "--no-sync"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("initdb failed: " + r.stdout + r.stderr)
        self.log_path = os.path.join(self.dir, "postgres.log")
        log = open(self.log_path, "w")
        if self.as_user:
            os.chown(self.log_path, pw.pw_uid, pw.pw_gid)
        self.proc = track(subprocess.Popen(
            self.as_user + [os.path.join(self.bin, "postgres"), "-D", data, "-k", self.dir, "-p", str(PG_PORT),
                            "-c", "listen_addresses=", "-c", "max_connections=200", "-c", "shared_buffers=128MB",
                            "-c", "fsync=on", "-c", "synchronous_commit=on"],
            stdout=log, stderr=log))
        log.close()
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            if subprocess.run([os.path.join(self.bin, "pg_isready"), "-h", self.dir, "-p", str(PG_PORT), "-q"]).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("PostgreSQL did not start: " + open(self.log_path).read()[-3000:])
        say("PostgreSQL %s: %s (socket directory %s)" % (os.path.basename(os.path.dirname(self.bin)), self.bin, self.dir))

    def createdb(self, name):
        subprocess.run([os.path.join(self.bin, "createdb"), "-h", self.dir, "-p", str(PG_PORT), "-U", "lightning", name], check=True)
        return "postgresql://lightning@/%s?host=%s&port=%d" % (name, self.dir, PG_PORT)

    def checkpoint(self):
        """Writes out the previous configuration's dirty pages now rather than during the next one's figures."""
        subprocess.run([os.path.join(self.bin, "psql"), "-h", self.dir, "-p", str(PG_PORT), "-U", "lightning", "-d", "postgres",
                        "-q", "-c", "CHECKPOINT"], check=True)

    def pids(self):
        """The postmaster and its children (backends, walwriter, checkpointer, autovacuum, ...)."""
        found = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            found.append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        return found

    def cpu(self):
        """CPU seconds of the whole server: the postmaster's own and its reaped children's, plus its live children."""
        return sum_cpu(self.pids())

    def log_size(self):
        return os.path.getsize(self.log_path)

    def log_since(self, offset):
        with open(self.log_path, errors="replace") as f:
            f.seek(offset)
            return f.read()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # fast shutdown
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def sum_cpu(pids):
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):  # gone in between: its time is in its parent's cutime by now
            pass
    return total


def capacities(total, n):
    if total < n:
        sys.exit("--capacity %d cannot be split over %d workers" % (total, n))
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def latency(post_to, poll_on, n):
    """bench.bench_latency's measure (webhook POST -> the step's process start), posting to one replica and following
    the attempt on another (or the same). Returns (p50, p99) in ms."""
    lat = []
    for i in range(n + 5):
        t0 = time.time_ns()
        r = post_to.call("POST", "/i/stamp", "{}", auth=False)
        a = poll_on.wait_final(r["attempt_id"], timeout=120)
        logs = poll_on.call("GET", "/api/attempts/%s/logs" % r["attempt_id"])["logs"]
        if a["state"] != "success" or not logs:
            raise RuntimeError("latency attempt failed: %r" % a)
        if i >= 5:  # warm-up
            lat.append((int(logs[0]["message"]) - t0) / 1e6)
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def finished(counts):
    return sum(v for k, v in counts.items() if k not in ("available", "claimed", "started"))


def throughput(replicas, pg, n):
    """bench.bench_throughput's measure over several replicas: webhooks posted round-robin by four threads."""
    first = replicas[0]
    before = first.counts()
    done_before = finished(before)
    workers = [w for r in replicas for w in r.workers]

    def cpu_now():
        return (sum_cpu([r.lightning.pid for r in replicas]), sum_cpu([w.pid for w in workers]), pg.cpu() if pg else 0.0)

    cpu_before = cpu_now()
    start = time.perf_counter()

    bench.post_webhooks(replicas, "/i/noop", n)
    posted = time.perf_counter() - start
    deadline = time.time() + max(300, n * 0.2)
    while True:
        c = first.counts()
        if finished(c) - done_before >= n:
            break
        if time.time() > deadline:
            raise RuntimeError("only %d of %d attempts finished in time: %r" % (finished(c) - done_before, n, c))
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    cpu_after = cpu_now()
    cpu = [(a - b) / n * 1000 for a, b in zip(cpu_after, cpu_before)]
    return {"rate": n / elapsed, "accept": n / posted, "ok": c.get("success", 0) - before.get("success", 0),
            "cpu_l": cpu[0], "cpu_w": cpu[1], "cpu_pg": cpu[2] if pg else None,
            "busy": sum(a - b for a, b in zip(cpu_after, cpu_before)) / elapsed}


LOG_PROBLEM = re.compile(r"\b(warning|error|critical)\b", re.I)


def log_problems(paths):
    found = []
    for path in paths:
        with open(path, errors="replace") as f:
            found += ["%s: %s" % (os.path.basename(os.path.dirname(path)) + "/" + os.path.basename(path), line.rstrip())
                      for line in f if LOG_PROBLEM.search(line)]
    return found


def run_config(label, bin_dir, root, keys, pg, n_replicas, capacity, n_attempts, n_latency):
    """Starts the configuration, measures it, stops it. pg None: SQLite, one Lightning."""
    say("%s: starting" % label)
    base = os.path.join(root, re.sub(r"\W+", "-", label).strip("-"))
    os.makedirs(base)
    if pg:
        pg.checkpoint()
        url = pg.createdb(os.path.basename(base).replace("-", "_").lower())
        pg_log_at = pg.log_size()
    else:
        url = os.path.join(base, "l.db")
    replicas = []
    result = {"label": label}
    try:
        for i in range(n_replicas):
            replicas.append(Replica(bin_dir, os.path.join(base, "r%d" % (i + 1)), keys, url,
                                    token=replicas[0].token if replicas else None))
        first = replicas[0]
        first.apply("""name: stamp
triggers: [{name: hook, type: webhook, path: stamp}]
jobs: [{name: t, adaptor: sh, body: "date +%s%N"}]
""")
        first.apply("""name: noop
triggers: [{name: hook, type: webhook, path: noop}]
jobs: [{name: t, adaptor: sh, body: "true"}]
""")
        caps = capacities(capacity, n_replicas)
        result["caps"] = caps
        first.worker("w1", caps[0])
        time.sleep(0.5)
        say("%s: dispatch latency, %d sequential webhooks to replica 1 (its worker the only one)" % (label, n_latency))
        result["lat_local"] = latency(first, first, n_latency)
        if n_replicas > 1:
            say("%s: dispatch latency, %d sequential webhooks to replica 2 (no worker there)" % (label, n_latency))
            result["lat_cross"] = latency(replicas[1], replicas[1], n_latency)
        for i, r in enumerate(replicas[1:], start=2):
            r.worker("w%d" % i, caps[i - 1])
        time.sleep(0.5)
        say("%s: throughput, %d one-step attempts, workers of capacity %s" % (label, n_attempts, "+".join(map(str, caps))))
        result.update(throughput(replicas, pg, n_attempts))
        # Before the stop: a worker says it lost its connection when its replica stops first.
        paths = [r.log.name for r in replicas] + [os.path.join(r.dir, f) for r in replicas for f in sorted(os.listdir(r.dir))
                                                  if re.fullmatch(r"w\d+\.log", f)]
        problems = log_problems(paths)
        result["log_problems"] = len(problems)
        for line in problems[:5]:
            say("  log: " + line[:300])
    finally:
        for r in replicas:
            r.stop()
    if pg:
        text = pg.log_since(pg_log_at)
        result["serialization"] = len(re.findall(r"could not serialize access", text))
        # Which statements failed most (PostgreSQL logs each error with its STATEMENT line after it).
        failed = {}
        for m in re.finditer(r"could not serialize access[^\n]*\n(?:[^\n]*DETAIL:[^\n]*\n)?(?:[^\n]*HINT:[^\n]*\n)?[^\n]*STATEMENT:\s*([^\n]*)", text):
            stmt = re.sub(r"\s+", " ", m.group(1))[:140]
            failed[stmt] = failed.get(stmt, 0) + 1
        for stmt, k in sorted(failed.items(), key=lambda x: -x[1])[:3]:
            say("  postgres: %d serialization failures at: %s" % (k, stmt))
        result["deadlocks"] = len(re.findall(r"deadlock detected", text))
        other = [l for l in text.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", l)
                 and "could not serialize access" not in l and "deadlock detected" not in l]
        result["pg_other"] = len(other)
        for line in other[:5]:
            say("  postgres: " + line)
    say("%s: %.1f attempts/s, CPU/attempt lightning %.2f ms, workers %.2f ms%s" % (
        label, result["rate"], result["cpu_l"], result["cpu_w"],
        ", postgres %.2f ms" % result["cpu_pg"] if pg else ""))
    return result


def print_table(results, n_attempts, n_latency):
    base = results[0]
    header = ["figure"] + [r["label"] for r in results]

    def ratio(value, ref):
        return " (%.2fx)" % (value / ref) if ref else ""

    table = []

    def row(name, fmt, key, ref_key=None, relative=True):
        cells = [name]
        for r in results:
            v = key(r) if callable(key) else r.get(key)
            if v is None:
                cells.append("-")
                continue
            ref_of = ref_key or key
            ref = (ref_of(base) if callable(ref_of) else base.get(ref_of)) if relative else None
            cells.append(fmt % v + (ratio(v, ref) if ref is not None and r is not base else ""))
        table.append(cells)

    row("throughput, %d one-step attempts (attempts/s)" % n_attempts, "%.1f", "rate")
    row("  accepting the webhooks (/s)", "%.0f", "accept")
    row("  attempts succeeded", "%d", "ok", relative=False)
    row("CPU per attempt: lightning, all replicas (ms)", "%.2f", "cpu_l")
    row("CPU per attempt: workers, their steps included (ms)", "%.2f", "cpu_w")
    row("CPU per attempt: postgresql server (ms)", "%.2f", "cpu_pg", relative=False)
    row("CPU per attempt: lightning + store (ms; SQLite is in lightning)", "%.2f",
        lambda r: r["cpu_l"] + (r["cpu_pg"] or 0))
    row("CPU per attempt: everything (ms)", "%.2f", lambda r: r["cpu_l"] + r["cpu_w"] + (r["cpu_pg"] or 0))
    row("  cores busy during the throughput run (of %d)" % os.cpu_count(), "%.2f", "busy", relative=False)
    row("dispatch p50, %d webhooks to replica 1, its worker (ms)" % n_latency, "%.2f", lambda r: r["lat_local"][0])
    row("dispatch p99, same (ms)", "%.2f", lambda r: r["lat_local"][1])
    row("dispatch p50, to replica 2, worker on replica 1 (ms; ratio vs SQLite)", "%.2f",
        lambda r: r["lat_cross"][0] if "lat_cross" in r else None, lambda b: b["lat_local"][0])
    row("dispatch p99, same (ms; ratio vs SQLite)", "%.2f",
        lambda r: r["lat_cross"][1] if "lat_cross" in r else None, lambda b: b["lat_local"][1])
    row("postgresql serialization failures (retried)", "%d", "serialization", relative=False)
    row("postgresql deadlocks (retried)", "%d", "deadlocks", relative=False)
    row("postgresql other ERROR/FATAL lines", "%d", "pg_other", relative=False)
    row("warning/error lines in lightning + worker logs", "%d", "log_problems", relative=False)

    widths = [max(len(c[i]) for c in [header] + table) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for cells in table:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    print()
    print("Ratios (in parentheses) are against the SQLite column, measured in the same run. Total worker capacity is the")
    print("same everywhere (%s); worker i is connected to replica i only; throughput webhooks go round-robin to the replicas."
          % ", ".join("+".join(map(str, r["caps"])) for r in results))
    print("Latency is measured with worker 1 alone connected. PostgreSQL: fsync and synchronous_commit on; SQLite: synchronous=FULL.")


def main():
    ap = argparse.ArgumentParser(description="Lightning on PostgreSQL with 1-3 replicas against SQLite, in one run.")
    ap.add_argument("bin")
    ap.add_argument("--attempts", type=int, default=1000)
    ap.add_argument("--latency", type=int, default=100)
    ap.add_argument("--replicas", default="1,2,3", help="comma-separated replica counts on PostgreSQL (default 1,2,3)")
    ap.add_argument("--capacity", type=int, default=4, help="total worker capacity, split over the workers (default 4)")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.replicas.split(",") if x.strip()]
    except ValueError:
        ap.error("--replicas takes numbers, e.g. 1,2,3")
    if any(c < 1 or c > args.capacity for c in counts):
        ap.error("each replica count must be from 1 to --capacity (%d)" % args.capacity)
    for exe in ("lightning", "runtime-worker", "gen-worker-keys"):
        if not os.access(os.path.join(args.bin, exe), os.X_OK):
            sys.exit("%s not found in %s" % (exe, args.bin))

    # A SIGTERM ends the run through the finally below (every process stopped, every directory removed), as ^C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = tempfile.mkdtemp(prefix="lr-replicas-")
    pg = None
    results = []
    try:
        keys = os.path.join(root, "keys")
        subprocess.run([os.path.join(args.bin, "gen-worker-keys"), "--out", keys], check=True, stdout=subprocess.DEVNULL)
        pg = Postgres()
        results.append(run_config("SQLite", args.bin, root, keys, None, 1, args.capacity, args.attempts, args.latency))
        for n in counts:
            label = "PG, %d replica%s" % (n, "" if n == 1 else "s")
            results.append(run_config(label, args.bin, root, keys, pg, n, args.capacity, args.attempts, args.latency))
    finally:
        stop_all()
        if pg:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print_table(results, args.attempts, args.latency)


if __name__ == "__main__":
    main()
