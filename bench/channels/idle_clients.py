#!/usr/bin/env python3
"""Opens N WebSocket connections to a Phoenix endpoint, joins one topic on each, prints "joined N", then holds
them until standard input closes. usage: idle_clients.py PORT N"""
import asyncio
import json
import resource
import sys

from websockets.asyncio.client import connect


async def one(port, i, ready):
    ws = await connect("ws://127.0.0.1:%d/socket/websocket?token=bench&vsn=2.0.0" % port, open_timeout=60,
                       ping_interval=None, compression=None)
    await ws.send(json.dumps([str(i), str(i), "room:idle", "phx_join", {}]))
    await ws.recv()
    ready.append(ws)


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    ready = []
    for start in range(0, n, 500):
        await asyncio.gather(*(one(port, i, ready) for i in range(start, min(n, start + 500))))
    print("joined %d" % len(ready), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for ws in ready:
        await ws.close()


asyncio.run(main())
