#!/usr/bin/env python3
"""Opens N worker sockets to Lightning, each with its own HS256 worker token, joins worker:queue on each
(capacity 1), prints "joined N", then holds them until standard input closes.
usage: worker_sockets.py PORT N WORKER_SECRET"""
import asyncio
import json
import resource
import sys
import time

import jwt
from websockets.asyncio.client import connect


async def one(port, secret, i, ready):
    token = jwt.encode({"worker_id": "bench-%d" % i, "iss": "urn:openfn:worker", "iat": int(time.time())}, secret,
                       algorithm="HS256")
    ws = await connect("ws://127.0.0.1:%d/worker/websocket?token=%s&vsn=2.0.0" % (port, token), open_timeout=120,
                       ping_interval=None, compression=None, max_size=None)
    await ws.send(json.dumps(["1", "1", "worker:queue", "phx_join", {"capacity": 1}]))
    reply = json.loads(await ws.recv())
    if reply[4].get("status") != "ok":
        raise SystemExit("join refused: %r" % (reply,))
    ready.append(ws)


async def main():
    port, n, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    ready = []
    for start in range(0, n, 250):
        await asyncio.gather(*(one(port, secret, i, ready) for i in range(start, min(n, start + 250))))
    print("joined %d" % len(ready), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for ws in ready:
        await ws.close()


asyncio.run(main())
