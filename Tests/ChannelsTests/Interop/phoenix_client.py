#!/usr/bin/env python3
"""A Phoenix Channels V2 client nobody here wrote the transport of: the `websockets` library from PyPI, with raw
frames. Exercises a server started by the Swift test. Prints one JSON line of findings; exits 1 on a failure.

usage: phoenix_client.py PORT GOOD_TOKEN BAD_TOKEN
"""
import json
import sys

try:
    from websockets.sync.client import connect
    from websockets.exceptions import InvalidStatus
except ImportError as e:
    sys.exit("python module missing: %s (pip install websockets)" % e)


def main():
    port, good, bad = sys.argv[1], sys.argv[2], sys.argv[3]
    url = "ws://127.0.0.1:%s/socket/websocket?token=%s&vsn=2.0.0" % (port, good)
    found = {}
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps(["1", "1", "room:py", "phx_join", {"hello": "py"}]))
        reply = json.loads(ws.recv(timeout=30))
        found["join"] = reply
        ws.send(json.dumps([None, "2", "phoenix", "heartbeat", {}]))
        found["heartbeat"] = json.loads(ws.recv(timeout=30))
        ws.send(json.dumps(["1", "3", "room:py", "echo", {"n": 1700000000123456}]))
        found["echo"] = json.loads(ws.recv(timeout=30))
        ws.send(json.dumps(["1", "4", "room:py", "binary", {"k": "v"}]))
        frame = ws.recv(timeout=30)
        assert isinstance(frame, bytes), "expected a binary frame, got %r" % (frame,)
        kind, lj, lr, lt, ls = frame[0], frame[1], frame[2], frame[3], frame[4]
        o = 5
        join_ref = frame[o:o + lj].decode(); o += lj
        ref = frame[o:o + lr].decode(); o += lr
        topic = frame[o:o + lt].decode(); o += lt
        status = frame[o:o + ls].decode(); o += ls
        found["binary"] = {"kind": kind, "join_ref": join_ref, "ref": ref, "topic": topic, "status": status,
                           "payload": json.loads(frame[o:])}
        ws.send(json.dumps(["9", "5", "room:other", "echo", {}]))
        found["unmatched"] = json.loads(ws.recv(timeout=30))
        # A message in three fragments (websockets sends an iterable as a fragmented message).
        text = json.dumps(["1", "6", "room:py", "echo", {"fragmented": "x" * 3000}])
        ws.send([text[:1000], text[1000:2000], text[2000:]])
        found["fragmented"] = json.loads(ws.recv(timeout=30))
    try:
        with connect("ws://127.0.0.1:%s/socket/websocket?token=%s&vsn=2.0.0" % (port, bad), open_timeout=30):
            found["bad_token"] = "connected?!"
    except InvalidStatus as e:
        found["bad_token"] = {"status": e.response.status_code, "reason": e.response.reason_phrase}
    print(json.dumps(found, sort_keys=True))


if __name__ == "__main__":
    main()
