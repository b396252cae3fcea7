#!/usr/bin/env python3
"""capture.py HOST PORT OUT: records a client's first flight (everything it sends before it
waits for an answer: the TLS ClientHello) from the first connection that sends data, into OUT.
Bounded: each connection is read for at most 3 s; the caller wraps this in `timeout`."""
import socket, sys, time

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port))
ls.listen(8)
print("listening", flush=True)
while True:
    c, peer = ls.accept()
    c.settimeout(3)
    data = b""
    end = time.monotonic() + 3
    try:
        while time.monotonic() < end and len(data) < 65536:
            c.settimeout(max(0.05, min(0.5, end - time.monotonic())))
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                if data:
                    break  # the flight is complete: the client now waits for the server
                continue
            if not chunk:
                break
            data += chunk
    finally:
        c.close()
    if data:
        with open(out, "wb") as f:
            f.write(data)
        print(f"captured {len(data)} bytes from {peer[0]}:{peer[1]}", flush=True)
        break
