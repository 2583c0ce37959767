#!/usr/bin/env python3
"""An operator viewer that joins attempt:<id>, then stops reading until GO_FILE exists, then reads to the end.
Its receive buffer is tiny, so what the server sends meanwhile queues on the server. Prints "joined", then
"closed <code>" for the close frame it finds (or "no close frame").
usage: slow_viewer.py PORT TOKEN TOPIC GO_FILE"""
import base64
import json
import os
import socket
import struct
import sys
import time


def frame(payload):
    data = payload.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(data)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def main():
    port, token, topic, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /socket/websocket?token=%s&vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (token, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    s.sendall(frame(json.dumps(["1", "1", topic, "phx_join", {}])))
    time.sleep(0.5)
    print("joined", flush=True)
    while not os.path.exists(go):
        time.sleep(0.05)
    data, i = b"", 0
    while True:
        try:
            chunk = s.recv(65536)
        except OSError as e:
            print("no close frame (%s) after %d bytes" % (e, len(data)), flush=True)
            return
        if not chunk:
            print("no close frame in %d bytes" % len(data), flush=True)
            return
        data += chunk
        while True:
            if i + 2 > len(data):
                break
            op, n, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
            if n == 126:
                if j + 2 > len(data):
                    break
                n = struct.unpack(">H", data[j:j + 2])[0]; j += 2
            elif n == 127:
                if j + 8 > len(data):
                    break
                n = struct.unpack(">Q", data[j:j + 8])[0]; j += 8
            if j + n > len(data):
                break
            if op == 8:
                print("closed %d" % struct.unpack(">H", data[j:j + 2])[0], flush=True)
                return
            i = j + n


if __name__ == "__main__":
    main()
