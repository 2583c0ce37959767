"""Joins worker:queue twice on one raw socket: the same join again (a resend), then a new join of the joined topic.
Usage: double_join.py PORT WORKER_TOKEN. Prints one line per expectation met; exits 1 on the first one missed."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "TestSupport", "Python"))
from raw_websocket import connect, frame  # noqa: E402


def frames(s, buffer):
    """Yields text frames' payloads as they arrive (unmasked server frames)."""
    while True:
        while len(buffer) < 2 or len(buffer) < header_and_length(buffer)[0] + header_and_length(buffer)[1]:
            chunk = s.recv(65536)
            if not chunk:
                return
            buffer += chunk
        start, n = header_and_length(buffer)
        payload, buffer = buffer[start:start + n], buffer[start + n:]
        yield json.loads(payload)


def header_and_length(b):
    if len(b) < 2:
        return 2, 0
    n = b[1] & 0x7F
    if n == 126:
        return (4, int.from_bytes(b[2:4], "big")) if len(b) >= 4 else (4, 1 << 30)
    if n == 127:
        return (10, int.from_bytes(b[2:10], "big")) if len(b) >= 10 else (10, 1 << 30)
    return 2, n


def expect(condition, what):
    if not condition:
        print("missed: " + what)
        sys.exit(1)
    print(what)


port, token = int(sys.argv[1]), sys.argv[2]
s = connect(port, "/worker/websocket?token=%s&vsn=2.0.0&api_version=1.2&worker_version=test" % token)
incoming = frames(s, b"")


def send(message):
    s.sendall(frame(json.dumps(message)))


def reply_to(ref):
    for m in incoming:
        if m[1] == ref:
            return m
    raise SystemExit("missed: a reply to " + ref)


send(["1", "1", "worker:queue", "phx_join", {"capacity": 1}])
r = reply_to("1")
expect(r[3] == "phx_reply" and r[4]["status"] == "ok" and r[0] == "1", "first join ok")
send(["1", "1", "worker:queue", "phx_join", {"capacity": 1}])
r = reply_to("1")
expect(r[4]["status"] == "ok", "same join again ok")
send(["3", "3", "worker:queue", "phx_join", {"capacity": 1}])
seen = []
for m in incoming:
    seen.append(m)
    if m[1] == "3":
        break
expect(any(m[3] == "phx_close" and m[0] == "1" for m in seen), "old join closed")
expect(seen[-1][4]["status"] == "ok" and seen[-1][0] == "3", "new join ok")
send(["3", "4", "worker:queue", "claim", {"demand": 1}])
r = reply_to("4")
expect(r[4]["status"] == "ok" and r[0] == "3", "claim on the new join ok")
