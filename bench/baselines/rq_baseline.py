#!/usr/bin/env python3
"""Baseline for the throughput benchmark: RQ (Redis on loopback) running `true` as a subprocess per job.

Starts its own redis-server on a free loopback port, enqueues N jobs, runs an RQ worker in burst mode and
prints jobs per second for the forking Worker and for SimpleWorker. Stops everything it started.
Usage: rq_baseline.py [--jobs N] [--worker fork|simple|both]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start on 127.0.0.1:%d" % port)


def run(kind, jobs, port):
    from redis import Redis
    from rq import Queue
    conn = Redis(host="127.0.0.1", port=port)
    conn.flushall()
    q = Queue("bench", connection=conn)
    sys.path.insert(0, HERE)
    import rq_jobs
    with conn.pipeline() as pipe:
        for _ in range(jobs):
            q.enqueue(rq_jobs.run_true, pipeline=pipe, result_ttl=60)
        pipe.execute()
    worker_class = "rq.worker.SimpleWorker" if kind == "simple" else "rq.Worker"
    env = dict(os.environ, PYTHONPATH=HERE)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "-q", "-w", worker_class,
         "--url", "redis://127.0.0.1:%d" % port, "bench"],
        env=env, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    done = len(q.finished_job_registry) if hasattr(q, "finished_job_registry") else jobs
    return jobs / elapsed, done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--worker", choices=["fork", "simple", "both"], default="both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        redis, port = start_redis(d)
        try:
            kinds = ["fork", "simple"] if args.worker == "both" else [args.worker]
            for kind in kinds:
                rate, done = run(kind, args.jobs, port)
                print("rq-%s\t%d jobs\t%.1f jobs/s\t(%d finished)" % (kind, args.jobs, rate, done))
        finally:
            redis.terminate()
            redis.wait(timeout=10)


if __name__ == "__main__":
    main()
