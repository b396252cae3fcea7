#!/usr/bin/env python3
"""report.py RESULTS_DIR: the markdown table of docs/reach.md ("Proof in the censor simulator")
from the MODE.tsv lines that tests/reach/reach.sh writes (mode, result, seconds from alice's
send to bob's delivery, winning transport, notes, time)."""
import os, sys

ORDER = ["base", "block-ip", "block-sni", "block-sni-dpi", "block-tls", "block-ja3", "block-pattern",
         "block-string", "block-fet", "slow", "freeze", "combo", "probe"]
CENSOR = {
    "base": "none (reference)",
    "block-ip": "`block-ip 10.200.2.2` (the server)",
    "block-sni": "`block-sni chat.example` (xt_string)",
    "block-sni-dpi": "`block-sni-dpi chat.example` (ClientHello parsed)",
    "block-tls": "`block-tls` (every ClientHello dropped)",
    "block-ja3": "`block-ja3` parley's own JA3",
    "block-pattern": "`block-pattern` parley's cipher list at its offset",
    "block-string": "`block-string` a string from parley's ClientHello",
    "block-fet": "`block-fet` (random-looking first packet)",
    "slow": "`throttle 64kbit` + `loss 10` + `delay 50`",
    "freeze": "`freeze 16384`",
    "combo": "`block-ip` + `block-fet` + `block-sni`",
    "probe": "active probing of server and bridge",
}

rows = {}
d = sys.argv[1]
for f in os.listdir(d):
    if f.endswith(".tsv"):
        parts = open(os.path.join(d, f)).read().rstrip("\n").split("\t")
        rows[parts[0]] = parts + [""] * (6 - len(parts))
print("| mode | censor | result | send → delivery (s) | transport that won | notes |")
print("|---|---|---|---:|---|---|")
for m in ORDER + sorted(set(rows) - set(ORDER)):
    if m not in rows:
        print(f"| {m} | {CENSOR.get(m, '')} | not run | | | |")
        continue
    mode, result, secs, winner, notes, when = rows[m][:6]
    print(f"| {m} | {CENSOR.get(m, '')} | {result} | {secs} | {winner} | {notes.replace('|', '/')} |")
