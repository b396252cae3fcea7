#!/usr/bin/env python3
"""daemon_send.py SOCKET TO N SIZE BOB_OUT DEADLINE_S: sends N messages of SIZE characters through
a `parley daemon` (JSON-RPC on SOCKET), one after the other, each after the previous one reached
bob (a line in BOB_OUT, as written by reach.sh: "EPOCH JSON"). Prints first_delivery_s,
worst_delivery_s and per-message timings. Exit 1 when a message does not arrive in time.
daemon_send.py --count-only BOB_OUT N: exit 0 when each of the N messages is in BOB_OUT once."""
import json, os, socket, sys, time


def texts_in(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                ts, _, js = line.partition(" ")
                try:
                    o = json.loads(js)
                except json.JSONDecodeError:
                    try:
                        o, ts = json.loads(line), "0"
                    except json.JSONDecodeError:
                        continue
                out.append((float(ts), o.get("text", "")))
    except FileNotFoundError:
        pass
    return out


def tag(i):
    return f"reach freeze #{i:02d} "


def count_only(path, n):
    ok = True
    got = [t for _, t in texts_in(path)]
    for i in range(1, n + 1):
        c = sum(1 for t in got if t.startswith(tag(i)))
        if c != 1:
            print(f"message {i}: received {c} times")
            ok = False
    return 0 if ok else 1


def main():
    if sys.argv[1] == "--count-only":
        return count_only(sys.argv[2], int(sys.argv[3]))
    sock_path, to, n, size, bob_out, deadline = sys.argv[1:7]
    n, size = int(n), int(size)
    end = time.monotonic() + float(deadline)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    f = s.makefile("rwb")
    nonce = os.urandom(4).hex()
    first = worst = None
    errors = 0
    for i in range(1, n + 1):
        text = tag(i) + nonce + " " + ("abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1))[:size]
        t0 = time.time()
        req = {"jsonrpc": "2.0", "id": i, "method": "send", "params": {"to": to, "text": text}}
        f.write((json.dumps(req) + "\n").encode())
        f.flush()
        s.settimeout(max(1.0, end - time.monotonic()))
        resp = None
        while resp is None:
            try:
                line = f.readline()
            except (TimeoutError, socket.timeout):
                print(f"FAIL the daemon did not answer the send of message {i} in time")
                return 1
            if not line:
                print(f"FAIL the daemon closed the socket at message {i}")
                return 1
            o = json.loads(line)
            if o.get("id") == i:
                resp = o
        t_ack = time.time()
        if "error" in resp:
            errors += 1
            print(f"message {i}: send answered an error after {t_ack - t0:.2f} s: {resp['error']}")
        delivered = None
        while time.monotonic() < end:
            for ts, t in texts_in(bob_out):
                if t.startswith(tag(i)):
                    delivered = ts
                    break
            if delivered:
                break
            time.sleep(0.1)
        if delivered is None:
            print(f"FAIL message {i} did not reach bob in time (acked after {t_ack - t0:.2f} s)")
            return 1
        d = delivered - t0
        first = d if first is None else first
        worst = d if worst is None else max(worst, d)
        print(f"message {i}: acked {t_ack - t0:.2f} s, delivered {d:.2f} s after the send")
    print(f"first_delivery_s={first:.2f}")
    print(f"worst_delivery_s={worst:.2f}")
    print(f"send_errors={errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
