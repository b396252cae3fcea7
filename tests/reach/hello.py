#!/usr/bin/env python3
"""hello.py pattern|string FILE: fixed bytes of parley's captured ClientHello for the censor.
   pattern: "HEX OFFSET", the first 8 bytes of the cipher-suite list and their offset in the
            TCP payload (a fixed-offset match, testbed.sh block-pattern)
   string:  a printable string sent in clear (the ALPN protocol name, else the longest run)
hello.py winner FILE: the winning transport from `parley transports --json` output."""
import json, re, sys


def client_hello_fields(b):
    if len(b) < 44 or b[0] != 0x16 or b[5] != 0x01:
        raise SystemExit("not a TLS ClientHello")
    i = 5 + 4 + 2 + 32  # record header, handshake header, client_version, random
    sid = b[i]
    i += 1 + sid
    cs_len = int.from_bytes(b[i:i + 2], "big")
    return i + 2, cs_len


def alpn_names(b):
    ciphers_at, cs_len = client_hello_fields(b)
    i = ciphers_at + cs_len
    i += 1 + b[i]  # compression methods
    end = i + 2 + int.from_bytes(b[i:i + 2], "big")
    i += 2
    names = []
    while i + 4 <= end:
        t = int.from_bytes(b[i:i + 2], "big")
        n = int.from_bytes(b[i + 2:i + 4], "big")
        body = b[i + 4:i + 4 + n]
        if t == 16:
            j = 2
            while j < len(body):
                ln = body[j]
                names.append(body[j + 1:j + 1 + ln].decode("ascii", "replace"))
                j += 1 + ln
        i += 4 + n
    return names


def main():
    what, path = sys.argv[1], sys.argv[2]
    if what == "winner":
        return winner(path)
    b = open(path, "rb").read()
    if what == "pattern":
        at, n = client_hello_fields(b)
        print(b[at:at + min(8, n)].hex(), at)
    elif what == "string":
        names = [a for a in alpn_names(b) if len(a) >= 4]
        if names:
            print(names[0])
            return
        runs = re.findall(rb"[\x21-\x7e]{6,}", b)
        print(max(runs, key=len).decode() if runs else "")


def winner(path):
    """Accepts the shapes `parley transports --json` may take: one object per line or a list of
    objects with a winner/last_winner/active flag, or an object naming the winner."""
    text = open(path).read().strip()
    items = []
    try:
        v = json.loads(text)
        items = v if isinstance(v, list) else [v]
    except json.JSONDecodeError:
        for line in text.splitlines():
            line = line.strip()
            if line:
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    def name(o):
        if o.get("kind") == "pt" and isinstance(o.get("link"), str) and o["link"]:
            return o["link"].split()[0] + " (pt)"
        for k in ("kind", "type", "name", "transport", "route", "link"):
            if isinstance(o.get(k), str) and o[k]:
                return o[k]
        return json.dumps(o, sort_keys=True)
    for o in items:
        if not isinstance(o, dict):
            continue
        for k in ("winner", "last_winner", "current", "active"):
            if k in o and isinstance(o[k], (str, dict)) and o[k]:
                return print(o[k] if isinstance(o[k], str) else name(o[k]))
        for k in ("transports", "routes"):
            if isinstance(o.get(k), list):
                items.extend(o[k])
    for o in items:
        if isinstance(o, dict) and any(o.get(k) is True for k in ("preferred", "winner", "last_winner", "current", "active", "won")):
            return print(name(o))
    print("?")


if __name__ == "__main__":
    main()
