"""Slowloris against Lightning: N connections that send a request's headers a few bytes at a time and never finish,
while /healthz is asked on fresh connections. Prints one JSON object:
{"connections", "healthz_ms": [p50, p99, max], "closed": how many slow ones the server closed, "closed_by_s": when the
last of those closed (seconds after opening), "open_at_end"}.

usage: slow_clients.py PORT N SECONDS
"""
import asyncio, json, resource, sys, time

port, wanted, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n = max(1, min(wanted, hard - 200))


async def slow(results, started):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        results["refused"] += 1
        return
    results["opened"] += 1
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    try:
        while time.monotonic() - started < seconds:
            w.write(b"X")  # a header that never ends
            await w.drain()
            try:
                data = await asyncio.wait_for(r.read(1024), timeout=1.0)
                if not data:
                    break
            except asyncio.TimeoutError:
                continue
        else:
            results["open_at_end"] += 1
            w.close()
            return
    except (ConnectionError, OSError):
        pass
    results["closed"] += 1
    results["closed_by_s"] = max(results["closed_by_s"], time.monotonic() - started)
    w.close()


async def healthz(lat):
    t = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await w.drain()
    data = await asyncio.wait_for(r.read(), timeout=20)
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    lat.append((time.monotonic() - t) * 1000)
    w.close()


async def main():
    results = {"opened": 0, "refused": 0, "closed": 0, "closed_by_s": 0.0, "open_at_end": 0}
    started = time.monotonic()
    tasks = [asyncio.create_task(slow(results, started)) for _ in range(n)]
    await asyncio.sleep(1.0)
    lat = []
    while time.monotonic() - started < min(seconds, 8.0):
        await healthz(lat)
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    lat.sort()
    print(json.dumps({"connections": n, **results,
                      "healthz_ms": [lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]],
                      "healthz_count": len(lat)}))


asyncio.run(main())
