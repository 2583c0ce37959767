"""A WebSocket client on a raw TCP socket, for tests that need to misbehave (stop reading, shrink buffers)."""
import base64
import os
import socket
import struct


def frame(payload):
    """A masked text frame, as a client sends."""
    data = payload.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(data)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def connect(port, path, receive_buffer=None, timeout=30):
    """Opens the TCP connection (with SO_RCVBUF set first when asked) and upgrades it at `path`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during the upgrade, after %r" % head)
        head += chunk
    assert b" 101 " in head.split(b"\r\n")[0], head
    return s


def read_until_close(s):
    """Reads frames until the server's close frame; returns its code, or None (and the byte count) without one."""
    data, i = b"", 0
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            return None, len(data)
        if not chunk:
            return None, len(data)
        data += chunk
        while True:
            if i + 2 > len(data):
                break
            op, n, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
            if n == 126:
                if j + 2 > len(data):
                    break
                n = struct.unpack(">H", data[j:j + 2])[0]
                j += 2
            elif n == 127:
                if j + 8 > len(data):
                    break
                n = struct.unpack(">Q", data[j:j + 8])[0]
                j += 8
            if j + n > len(data):
                break
            if op == 8:
                return struct.unpack(">H", data[j:j + 2])[0], len(data)
            i = j + n
