#!/usr/bin/env python3
"""A WebSocket client on a raw TCP socket that asks for a flood of pushes and then stops reading.
Prints "close <code>" for the close frame it finally finds. usage: slow_consumer.py PORT TOKEN"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../TestSupport/Python"))
from raw_websocket import connect, frame, read_until_close  # noqa: E402


def main():
    port, token = int(sys.argv[1]), sys.argv[2]
    s = connect(port, "/socket/websocket?token=%s&vsn=2.0.0" % token)
    s.sendall(frame(json.dumps(["1", "1", "room:slow", "phx_join", {}])))
    time.sleep(0.3)
    s.sendall(frame(json.dumps(["1", "2", "room:slow", "flood", {"count": 3000}])))  # 30 MB: more than the kernel buffers
    time.sleep(3)  # not reading: the server's queue for us grows past its limit
    code, size = read_until_close(s)
    print("close %d" % code if code is not None else "no close frame in %d bytes" % size)


if __name__ == "__main__":
    main()
