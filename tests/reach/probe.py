#!/usr/bin/env python3
"""probe.py --target NAME=IP:PORT ... --reference IP:PORT --replay FILE --path SECRET --report OUT

Active probing, the way a censor's scanner probes a suspected proxy: connects to each target
(parleyd, a parley bridge) and asks what a scanner asks. A target passes when:
  * HTTP over TLS: GET / is an ordinary 200 page; unknown paths get one and the same 404 page;
    a WebSocket upgrade on any path the scanner can guess (/, /ws, the secret path with one
    character off, ...) gets exactly the answer of the same request without the upgrade
    (status, headers minus Date, body); no answer, header or certificate says "parley";
  * raw bytes (random bytes, plain HTTP on the TLS port, a replayed ClientHello of a real
    parley client, an idle connection): the target answers in the same way (TLS alert, TLS
    handshake, silent close, still open) as the reference, an ordinary Python/OpenSSL HTTPS site.
Every connection is bounded (5 s). Exit 1 when any probe fails."""
import argparse, os, socket, ssl, sys, time

TIMEOUT = 5.0
lines = []
failed = 0


def say(kind, msg):
    global failed
    if kind == "FAIL":
        failed += 1
    line = f"{kind} - {msg}"
    lines.append(line)
    print(line, flush=True)


def tls_connect(ip, port, alpn=("http/1.1",), sni=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection((ip, port), timeout=TIMEOUT)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    s.settimeout(TIMEOUT)
    return s


def read_response(s):
    """(status, [(name, value)], body) of one HTTP/1.1 response; reads no further than it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > 1 << 20:
            break
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head:
        return None, [], b""
    hl = head.decode("latin-1").split("\r\n")
    parts = hl[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    headers = []
    for h in hl[1:]:
        k, _, v = h.partition(":")
        headers.append((k.strip().lower(), v.strip()))
    hd = dict(headers)
    body = rest
    if status in (101, 204, 304) or status < 200:
        return status, headers, body
    if "content-length" in hd:
        n = int(hd["content-length"])
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        body = body[:n]
    elif hd.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ssl.SSLError, OSError):
                break
            if not chunk:
                break
            body += chunk
    return status, headers, body


def http(ip, port, method, path, headers, body=b""):
    """One request over a fresh TLS connection: (status, headers, body) or ("error", str)."""
    try:
        s = tls_connect(ip, port)
        req = f"{method} {path} HTTP/1.1\r\nHost: {ip}\r\n"
        for k, v in headers:
            req += f"{k}: {v}\r\n"
        if body:
            req += f"Content-Length: {len(body)}\r\n"
        req = req.encode() + b"\r\n" + body
        s.sendall(req)
        r = read_response(s)
        s.close()
        return r
    except (OSError, ssl.SSLError) as e:
        return ("error", type(e).__name__ + ": " + str(e), b"")


BROWSER = [("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0"),
           ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
           ("Accept-Language", "en-US,en;q=0.5")]


def ws_headers(conn="Upgrade"):
    return BROWSER + [("Connection", conn), ("Upgrade", "websocket"),
                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


def comparable(r):
    if r[0] == "error":
        return r[:2]
    status, headers, body = r
    return status, [(k, v) for k, v in headers if k != "date"], body


def show(r):
    if r[0] == "error":
        return f"error {r[1]}"
    status, headers, body = r
    hs = ", ".join(f"{k}: {v}" for k, v in headers if k != "date")
    return f"{status} [{hs}] body {len(body)} bytes"


def parley_specific(r):
    if r[0] == "error":
        return ""
    status, headers, body = r
    blob = (" ".join(f"{k}: {v}" for k, v in headers) + " ").encode() + body
    for word in (b"parley", b"websocket", b"boost", b"beast"):
        if word in blob.lower():
            return word.decode()
    if status in (101, 426):
        return f"status {status}"
    return ""


def raw_probe(ip, port, data, wait=3.0):
    """Sends DATA on a plain TCP connection; classifies what comes back within WAIT seconds."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection((ip, port), timeout=TIMEOUT)
    except OSError as e:
        return ("connect-error", str(e), 0.0)
    got = b""
    how = "open"
    try:
        if data:
            s.sendall(data)
        end = t0 + wait
        while time.monotonic() < end:
            s.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                how = "closed"
                break
            got += chunk
    except ConnectionResetError:
        how = "reset"
    except OSError as e:
        how = "error " + str(e)
    finally:
        s.close()
    dt = time.monotonic() - t0
    if got[:1] == b"\x15":
        kind = "tls-alert"
    elif got[:1] == b"\x16":
        kind = "tls-handshake"
    elif got[:5] == b"HTTP/":
        kind = "http-answer"
    elif got:
        kind = "other-bytes"
    else:
        kind = "no-bytes"
    # A FIN or an RST after the last byte is not told apart: which one a server sends depends
    # on whether unread input was left in its socket when it closed, not on what it is.
    shut = "closed" if how in ("closed", "reset") else how
    detail = f"{how}; " + (got[:16].hex() + (f"... ({len(got)} bytes)" if len(got) > 16 else "") if got else "nothing")
    return (f"{kind}, then {shut}", detail, dt)


def cert_der(ip, port):
    s = tls_connect(ip, port)
    der = s.getpeercert(binary_form=True)
    s.close()
    return der


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--replay", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--report", required=True)
    a = ap.parse_args()
    ref_ip, ref_port = a.reference.rsplit(":", 1)
    ref_port = int(ref_port)
    hello = open(a.replay, "rb").read()
    secret = a.path
    rnd = lambda: "/" + os.urandom(6).hex()
    near_misses = [secret + "x", secret[:-1], secret.swapcase(), secret + "/", "/" + secret.lstrip("/")[1:]]
    guesses = ["/", "/ws", "/websocket", "/socket", "/api/ws", "/parley", "/chat", rnd()] + near_misses
    raw_probes = [
        ("random 64 bytes", os.urandom(64)),
        ("random 517 bytes", os.urandom(517)),
        ("plain HTTP on the TLS port", f"GET / HTTP/1.1\r\nHost: {ref_ip}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n".encode()),
        ("replayed ClientHello of a real parley client", hello),
        ("replayed ClientHello, twice in one connection", hello + hello),
        ("a TLS record header announcing 16 KB, then nothing", b"\x16\x03\x01\x40\x00"),
    ]
    ref_raw = {name: raw_probe(ref_ip, ref_port, data) for name, data in raw_probes}
    answers = {}
    for t in a.target:
        name, hp = t.split("=", 1)
        ip, port = hp.rsplit(":", 1)
        port = int(port)
        say("info", f"== {name} {ip}:{port}")
        ans = answers[name] = {}
        # the certificate
        try:
            der = cert_der(ip, port)
            bad = [w for w in (b"parley", b"Parley", b"PARLEY") if w in der]
            say("FAIL" if bad else "ok", f"{name}: certificate ({len(der)} bytes DER) {'names parley' if bad else 'does not name parley'}")
        except (OSError, ssl.SSLError) as e:
            say("FAIL", f"{name}: no TLS handshake: {e}")
            continue
        root = http(ip, port, "GET", "/", BROWSER + [("Connection", "close")])
        ans["GET /"] = root
        say("ok" if root[0] == 200 and len(root[2]) > 0 else "FAIL", f"{name}: GET / -> {show(root)}")
        ps = parley_specific(root)
        if ps:
            say("FAIL", f"{name}: GET / says {ps}")
        r1 = http(ip, port, "GET", rnd(), BROWSER + [("Connection", "close")])
        r2 = http(ip, port, "GET", rnd(), BROWSER + [("Connection", "close")])
        ans["GET /unknown"] = r1
        same = comparable(r1) == comparable(r2)
        say("ok" if same and r1[0] == 404 else "FAIL", f"{name}: unknown paths -> {show(r1)}" + ("" if same else f" but another unknown path -> {show(r2)}"))
        for path in guesses:
            for conn in ("Upgrade", "keep-alive, Upgrade"):
                plain = http(ip, port, "GET", path, BROWSER + [("Connection", conn)])
                up = http(ip, port, "GET", path, ws_headers(conn))
                ps = parley_specific(up)
                if comparable(plain) == comparable(up) and not ps:
                    say("ok", f"{name}: WebSocket upgrade on {path!r} (Connection: {conn}) answered as the plain request: {show(up)}")
                else:
                    say("FAIL", f"{name}: WebSocket upgrade on {path!r} (Connection: {conn}) -> {show(up)}{' says ' + ps if ps else ''}; plain request -> {show(plain)}")
        for method, path, body in (("POST", "/", b"x=1"), ("HEAD", "/", b""), ("OPTIONS", "*", b""),
                                   ("GET", "/../../etc/passwd", b""), ("CONNECT", f"{ip}:{port}", b"")):
            r = http(ip, port, method, path, BROWSER + [("Connection", "close")], body)
            ans[method + " " + path] = r
            ps = parley_specific(r)
            say("FAIL" if ps else "ok", f"{name}: {method} {path} -> {show(r)}{' says ' + ps if ps else ''}")
        for pname, data in raw_probes:
            got = raw_probe(ip, port, data)
            ref = ref_raw[pname]
            ok = got[0] == ref[0]
            if got[1].startswith(b"HTTP/".hex()) or b"parley".hex() in got[1]:
                ok = False
            say("ok" if ok else "FAIL", f"{name}: {pname} -> {got[0]} ({got[1]}, {got[2]:.1f} s); reference site -> {ref[0]} ({ref[1]}, {ref[2]:.1f} s)")
        idle = raw_probe(ip, port, b"", wait=3.0)
        ref_idle = ref_raw.get("idle") or raw_probe(ref_ip, ref_port, b"", wait=3.0)
        say("ok" if idle[0] == ref_idle[0] else "FAIL", f"{name}: idle connection for 3 s -> {idle[0]}; reference site -> {ref_idle[0]}")
    if "server" in answers and "bridge" in answers:
        for k in ("GET /", "GET /unknown"):
            s, b = answers["server"].get(k), answers["bridge"].get(k)
            if s and b:
                same = comparable(s) == comparable(b)
                say("info", f"bridge and server {'give the same' if same else 'differ on'} {k}" + ("" if same else f": server {show(s)}, bridge {show(b)}"))
    say("info", f"{failed} probe(s) failed")
    with open(a.report, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
