#!/usr/bin/env python3
"""An operator viewer that joins attempt:<id>, then stops reading until GO_FILE exists, then reads to the end.
Its receive buffer is tiny, so what the server sends meanwhile queues on the server. Prints "joined", then
"closed <code>" for the close frame it finds (or "no close frame").
usage: slow_viewer.py PORT TOKEN TOPIC GO_FILE"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../TestSupport/Python"))
from raw_websocket import connect, frame, read_until_close  # noqa: E402


def main():
    port, token, topic, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    s = connect(port, "/socket/websocket?token=%s&vsn=2.0.0" % token, receive_buffer=4096, timeout=60)
    s.sendall(frame(json.dumps(["1", "1", topic, "phx_join", {}])))
    time.sleep(0.5)
    print("joined", flush=True)
    while not os.path.exists(go):
        time.sleep(0.05)
    code, size = read_until_close(s)
    print("closed %d" % code if code is not None else "no close frame in %d bytes" % size, flush=True)


if __name__ == "__main__":
    main()
