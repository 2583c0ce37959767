"""The operator socket as a browser opens it: the session cookie and an Origin header (websockets, from PyPI).

    console_socket.py PORT COOKIE ORIGIN refused             -> exit 0 if the upgrade is refused with 403
    console_socket.py PORT COOKIE ORIGIN joined-until-closed FLAG
        joins `attempts`, creates FLAG, then waits for the server to close the socket; prints the close code and
        reason and exits 0 if it was closed with 1008 within 60 s.
"""
import json
import sys

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def main():
    port, cookie, origin, mode = sys.argv[1:5]
    url = "ws://127.0.0.1:%s/socket/websocket?vsn=2.0.0" % port
    headers = {"Cookie": cookie}
    try:
        ws = connect(url, additional_headers=headers, origin=origin if origin != "-" else None, open_timeout=30)
    except InvalidStatus as e:
        print("refused %d" % e.response.status_code)
        sys.exit(0 if mode == "refused" and e.response.status_code == 403 else 1)
    if mode == "refused":
        print("accepted, but a refusal was expected")
        sys.exit(1)
    ws.send(json.dumps(["1", "1", "attempts", "phx_join", {}]))
    reply = json.loads(ws.recv(timeout=30))
    if reply[3] != "phx_reply" or reply[4]["status"] != "ok":
        print("join refused: %s" % reply)
        sys.exit(1)
    open(sys.argv[5], "w").close()
    try:
        while True:
            ws.recv(timeout=60)
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else None
        print("closed %s %s" % (code, e.rcvd.reason if e.rcvd else ""))
        sys.exit(0 if code == 1008 else 1)
    except TimeoutError:
        print("still open after 60 s")
        sys.exit(1)


if __name__ == "__main__":
    main()
