#!/usr/bin/env python3
"""A WebSocket client on a raw TCP socket that asks for a flood of pushes and then stops reading.
Prints "close <code>" for the close frame it finally finds. usage: slow_consumer.py PORT TOKEN"""
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
    port, token = int(sys.argv[1]), sys.argv[2]
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /socket/websocket?token=%s&vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (token, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    s.sendall(frame(json.dumps(["1", "1", "room:slow", "phx_join", {}])))
    time.sleep(0.3)
    s.sendall(frame(json.dumps(["1", "2", "room:slow", "flood", {"count": 3000}])))  # 30 MB: more than the kernel buffers
    time.sleep(3)  # not reading: the server's queue for us grows past its limit
    data, i = b"", 0
    while True:
        chunk = s.recv(65536)
        if not chunk:
            print("no close frame in %d bytes" % len(data))
            return
        data += chunk
        # Walk whole frames; stop at the close frame.
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
                print("close %d" % struct.unpack(">H", data[j:j + 2])[0])
                return
            i = j + n


if __name__ == "__main__":
    main()
