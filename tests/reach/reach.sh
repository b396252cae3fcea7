#!/usr/bin/env bash
# tests/reach/reach.sh MODE: proof in the censor simulator (issue 5, section 5).
#
# Brings up the censor test bed (../shared/censor/testbed.sh: namespaces client, censor, server,
# bridge), starts a real parleyd in the server namespace (with its obfs4 front when parleyd has
# one) and a bridge parleyd in the bridge namespace (when parleyd has --bridge-to), registers
# bob from the server side and alice on the client host, applies one censorship MODE, gives
# alice every way out her client knows, and asserts that alice's message reaches bob exactly
# once. Prints and records the time from alice's send to bob's delivery and the transport that
# won. MODE "probe" is the active-probing test (tests/reach/probe.py).
#
# Modes: base block-ip block-sni block-sni-dpi block-tls block-ja3 block-pattern block-string
#        block-fet slow (throttle 64kbit + loss 10 + delay 50) freeze (16384, through a
#        long-lived parley daemon) combo (block-ip + block-fet + block-sni) probe
#
# Environment: PARLEYD, PARLEY (binaries), TESTBED (testbed.sh), REACH_OUT (a directory for
# MODE.tsv result lines; optional), CZDPI (a prebuilt czdpi path shared by the tests; built on
# first use under a lock), REACH_KEEP=1 keeps the work directory.
# Exit: 0 pass, 1 fail, 77 skipped (not root, or no network namespaces).
set -uo pipefail

MODE=${1:?usage: reach.sh MODE}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=$(date +%s)
BUDGET=${REACH_BUDGET:-100}   # seconds: the deadline of every wait below
[ "$MODE" = freeze ] && BUDGET=${REACH_BUDGET:-120}   # each frozen link costs the 15 s idle timeout

log() { printf '[reach %s %5.1fs] %s\n' "$MODE" "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{print a-b}')" "$*" >&2; }
skip() { echo "SKIPPED: $*"; exit 77; }

# ---------------------------------------------------------------- can we run at all?
[ "$(id -u)" = 0 ] || skip "the censor test bed needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for ip netns)"
command -v ip >/dev/null 2>&1 || skip "no iproute2 (ip) on this machine"
chk=czrchk$$
if ! ip netns add "$chk" 2>/dev/null; then skip "network namespaces cannot be created here"; fi
ip netns del "$chk" 2>/dev/null
: "${PARLEYD:?PARLEYD is not set}" "${PARLEY:?PARLEY is not set}" "${TESTBED:?TESTBED is not set}"
for f in "$PARLEYD" "$PARLEY" "$TESTBED"; do [ -x "$f" ] || { echo "FAIL: $f is missing"; exit 1; }; done
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"   # Debian's tools before any shims
# Debian's python3 (a pyenv shim first in PATH costs seconds per start on a loaded machine)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)
missing=""
for t in nft iptables "$PY" g++ timeout obfs4proxy; do command -v $t >/dev/null 2>&1 || missing="$missing $t"; done
[ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || missing="$missing libnetfilter-queue-dev"
[ -z "$missing" ] || { echo "FAIL: missing tools:$missing (scripts/lib/setup.sh installs them)"; exit 1; }

# ---------------------------------------------------------------- names and addresses
case $MODE in
  base) AB=base;; block-ip) AB=ip;; block-sni) AB=sni;; block-sni-dpi) AB=dpi;; block-tls) AB=tls;;
  block-ja3) AB=ja3;; block-pattern) AB=pat;; block-string) AB=str;; block-fet) AB=fet;;
  slow) AB=slow;; freeze) AB=frz;; combo) AB=cmb;; probe) AB=prb;;
  *) echo "unknown mode $MODE"; exit 2;;
esac
export CZ_PREFIX=czr$AB
export CZ_TTL=$((BUDGET + 60))   # every daemon the test bed starts dies by itself after this
NS_C=$CZ_PREFIX-client NS_S=$CZ_PREFIX-server NS_B=$CZ_PREFIX-bridge
S_IP=10.200.2.2 B_IP=10.200.3.2
SERVER_NAME=chat.example   # the server part of addresses, and the name the censor blocks
W=$(mktemp -d /tmp/parley-reach-$AB.XXXXXX)
export CZ_STATE=$W/cz
mkdir -p "$CZ_STATE"
OUT=${REACH_OUT:-}
PIDS=()

tb() { "$TESTBED" "$@" 2>>"$W/testbed.log"; }
cleanup() {
  local rc=$?
  local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  "$TESTBED" down >>"$W/testbed.log" 2>&1
  if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
    echo "---- diagnostics ($W) ----"
    for f in parleyd.err bridge.err bob.err alice.err daemon.err send.err transports.txt; do
      [ -s "$W/$f" ] && { echo "== $f"; tail -n 25 "$W/$f"; }
    done
    [ -s "$CZ_STATE/czdpi.log" ] && { echo "== czdpi.log"; grep -v ja3_string "$CZ_STATE/czdpi.log" | tail -n 20; }
    [ -s "$W/censor.txt" ] && { echo "== censor rules after the send"; cat "$W/censor.txt"; }
  fi
  if [ "${REACH_KEEP:-0}" = 1 ] || { [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ "${REACH_KEEP_ON_FAIL:-0}" = 1 ]; }; then
    echo "work directory kept: $W"
  else
    rm -rf "$W"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A result line for docs/reach.md: mode, result, seconds send->delivery, winner, notes.
RESULT_NOTES=""
note() { RESULT_NOTES="${RESULT_NOTES:+$RESULT_NOTES; }$*"; log "note: $*"; }
record() { # record pass|FAIL SECONDS WINNER
  [ -n "$OUT" ] || return 0
  mkdir -p "$OUT"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$MODE" "$1" "$2" "$3" "$RESULT_NOTES" "$(date -u +%Y-%m-%dT%H:%MZ)" >"$OUT/$MODE.tsv"
}
fail() { log "FAIL: $*"; echo "FAIL ($MODE): $*"; record FAIL "${DELIVERY_S:--}" "${WINNER:--}"; exit 1; }

left() { local l=$((T0 + BUDGET - $(date +%s))); [ $l -lt 1 ] && l=1; echo $l; }
wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.2 s, bounded by SECONDS and the budget
  local end=$(( $(date +%s) + $1 )); shift
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ] || [ "$(left)" -le 1 ]; then return 1; fi
    sleep 0.2
  done
}
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# parley in a namespace, bounded: pl NS PROFILE SECONDS ARGS...
pl() { local ns=$1 prof=$2 t=$3; shift 3; inns "$ns" timeout -k 2 "$t" "$PARLEY" --profile "$prof" "$@"; }
has_line() { grep -q "$2" "$1" 2>/dev/null; }

# ---------------------------------------------------------------- what parley can do today
PARLEYD_HELP=$("$PARLEYD" --help 2>&1)
PARLEY_HELP=$("$PARLEY" --profile /nonexistent --help 2>&1)
REGISTER_HELP=$("$PARLEY" --profile /nonexistent register --help 2>&1)
HAVE_BRIDGE=0 HAVE_OBFS4=0 HAVE_TRANSPORTS=0 HAVE_REG_TRANSPORT=0
grep -q -- '--bridge-to' <<<"$PARLEYD_HELP" && HAVE_BRIDGE=1
grep -q -- '--obfs4' <<<"$PARLEYD_HELP" && HAVE_OBFS4=1
grep -qE '^ *transports? ' <<<"$PARLEY_HELP" && grep -qE '^ *transport ' <<<"$PARLEY_HELP" && HAVE_TRANSPORTS=1
grep -q -- '--transport' <<<"$REGISTER_HELP" && HAVE_REG_TRANSPORT=1
GAPS=""
[ $HAVE_BRIDGE = 1 ] || GAPS="$GAPS parleyd --bridge-to;"
[ $HAVE_OBFS4 = 1 ] || GAPS="$GAPS parleyd --obfs4;"
[ $HAVE_TRANSPORTS = 1 ] || GAPS="$GAPS parley transport add/transports;"
log "features: bridge=$HAVE_BRIDGE obfs4=$HAVE_OBFS4 transports=$HAVE_TRANSPORTS register--transport=$HAVE_REG_TRANSPORT"

# ---------------------------------------------------------------- czdpi, built once for all tests
if [ -n "${CZDPI:-}" ]; then
  export CZDPI
  mkdir -p "$(dirname "$CZDPI")"
  (
    flock -w 120 9 || exit 1
    src=$(dirname "$TESTBED")/czdpi.cpp
    if ! [ -x "$CZDPI" ] || ! [ "$CZDPI" -nt "$src" ]; then
      g++ -O2 -std=c++17 -Wall -o "$CZDPI.tmp" "$src" -lnetfilter_queue -lnfnetlink -lcrypto && mv "$CZDPI.tmp" "$CZDPI"
    fi
  ) 9>"$CZDPI.lock" || fail "could not build czdpi"
fi

# ---------------------------------------------------------------- the test bed and parleyd
"$TESTBED" down >>"$W/testbed.log" 2>&1   # a leftover of a killed run with our prefix
tb up || fail "testbed.sh up failed: $(tail -3 "$W/testbed.log")"
log "test bed up ($CZ_PREFIX)"

SRV_ARGS=(--data "$W/srv" --listen "$S_IP:443" --name "$SERVER_NAME" --registration open)
[ $HAVE_OBFS4 = 1 ] && SRV_ARGS+=(--obfs4 "$S_IP:9443")
inns "$NS_S" timeout -k 2 "$CZ_TTL" "$PARLEYD" "${SRV_ARGS[@]}" >"$W/parleyd.out" 2>"$W/parleyd.err" &
PIDS+=($!)
wait_for 20 has_line "$W/parleyd.out" '^invite: ' || fail "parleyd did not print its invite"
INVITE=$(sed -n 's/^invite: //p' "$W/parleyd.out" | head -1)
log "server up: $INVITE"
# the pieces of the invite (pin, path) for the capture and the probes
# (bash, not python: on a loaded machine each python3 start costs seconds)
inv_param() { local re="[?&]$1=([^&]*)"; [[ $INVITE =~ $re ]] || return 0; local v=${BASH_REMATCH[1]}; printf '%b\n' "${v//%/\\x}"; }

BRIDGE_LINK=""
if [ $HAVE_BRIDGE = 1 ]; then
  inns "$NS_B" timeout -k 2 "$CZ_TTL" "$PARLEYD" --data "$W/brg" --listen "$B_IP:443" --bridge-to "$S_IP:443" \
    >"$W/bridge.out" 2>"$W/bridge.err" &
  PIDS+=($!)
  wait_for 20 has_line "$W/bridge.out" '^bridge: ' || fail "the bridge parleyd did not print its link"
  BRIDGE_LINK=$(sed -n 's/^bridge: //p' "$W/bridge.out" | head -1)
  log "bridge up: $BRIDGE_LINK"
fi

# bob: on the server side of the censor, listening from before alice sends
pl "$NS_S" "$W/bob" 30 register "$INVITE" --name bob >"$W/bob.reg" 2>"$W/bob.err" </dev/null ||
  fail "bob could not register: $(tail -2 "$W/bob.err")"
# alice: on the client host, registered before the censor starts (her profile holds the invite)
pl "$NS_C" "$W/alice" 30 register "$INVITE" --name alice >"$W/alice.reg" 2>"$W/alice.err" </dev/null ||
  fail "alice could not register: $(tail -2 "$W/alice.err")"
log "bob and alice registered"

# ---------------------------------------------------------------- parley's own bytes and fingerprint
# capture_hello: parley's first client flight, as it leaves the client host: a throwaway profile
# registers against a listener that records the bytes (tests/reach/capture.py), in the server ns.
capture_hello() {
  inns "$NS_S" timeout 15 "$PY" "$HERE/capture.py" "$S_IP" 4443 "$W/hello.bin" >"$W/capture.log" 2>&1 &
  local cap=$!
  wait_for 20 has_line "$W/capture.log" '^listening' || fail "capture listener did not start"
  local link=${INVITE/"$S_IP:443/"/"$S_IP:4443/"}   # the same invite, the listener's port
  pl "$NS_C" "$W/capture-profile" 15 register "$link" --name capture >/dev/null 2>&1 </dev/null &
  local reg=$!
  wait "$cap" 2>/dev/null   # capture.py exits once it has the flight
  kill "$reg" 2>/dev/null; wait "$reg" 2>/dev/null
  [ -s "$W/hello.bin" ] || fail "could not capture parley's ClientHello: $(cat "$W/capture.log")"
  log "captured parley's first flight: $(stat -c %s "$W/hello.bin") bytes"
}

# ---------------------------------------------------------------- the censorship modes
apply_mode() {
  case $MODE in
    base) ;;
    block-ip) tb block-ip "$S_IP" ;;
    block-sni) tb block-sni "$SERVER_NAME" ;;
    block-sni-dpi) tb block-sni-dpi "$SERVER_NAME" ;;
    block-tls) tb block-tls ;;
    block-ja3)
      # learn parley's JA3 from czdpi's log: czdpi logs every ClientHello it sees
      tb block-sni-dpi none.invalid
      pl "$NS_C" "$W/alice" 15 receive --timeout 5 >/dev/null 2>&1 </dev/null || true
      sleep 0.3
      JA3=$(awk -v s="$S_IP:443" '$4 == s { sub("ja3=","",$6); sub("[(]partial[)]","",$6); print $6; exit }' "$CZ_STATE/czdpi.log")
      JA4=$(grep -A1 " -> $S_IP:443 " "$CZ_STATE/czdpi.log" | sed -n 's/^ *ja4=//p' | head -1)
      [ -n "$JA3" ] || fail "czdpi saw no ClientHello from parley (log: $(head -3 "$CZ_STATE/czdpi.log"))"
      note "parley's JA3 $JA3, JA4 $JA4"
      tb clear; tb block-ja3 "$JA3" ;;
    block-pattern)
      capture_hello
      read -r PAT_HEX PAT_OFF <<<"$("$PY" "$HERE/hello.py" pattern "$W/hello.bin")"
      [ -n "$PAT_HEX" ] || fail "no cipher list in the captured ClientHello"
      note "pattern 0x$PAT_HEX at payload offset $PAT_OFF (the first 8 bytes of parley's TLS cipher list)"
      tb block-pattern "$PAT_HEX" "$PAT_OFF" ;;
    block-string)
      capture_hello
      STR=$("$PY" "$HERE/hello.py" string "$W/hello.bin")
      [ -n "$STR" ] || fail "no printable string in the captured ClientHello"
      note "string '$STR' (from parley's ClientHello)"
      tb block-string "$STR" ;;
    block-fet) tb block-fet ;;
    slow) tb throttle 64kbit all && tb loss 10 all && tb delay 50 all ;;
    freeze) tb freeze 16384 all ;;
    combo) tb block-ip "$S_IP" && tb block-fet && tb block-sni "$SERVER_NAME" ;;
  esac || fail "testbed.sh could not apply $MODE"
  log "censor: $MODE applied"
}

# ---------------------------------------------------------------- alice's ways out
add_transports() {
  [ $HAVE_TRANSPORTS = 1 ] || { note "parley has no 'transport add': direct only"; return 0; }
  if [ -n "$BRIDGE_LINK" ]; then
    pl "$NS_C" "$W/alice" 20 transport add "$BRIDGE_LINK" >>"$W/transports.txt" 2>&1 </dev/null ||
      fail "transport add (bridge) failed: $(tail -2 "$W/transports.txt")"
  fi
  pl "$NS_C" "$W/alice" 20 transports >>"$W/transports.txt" 2>&1 </dev/null || true
}

winner() { # the transport that carried alice's last connection, from `parley transports --json`
  [ $HAVE_TRANSPORTS = 1 ] || { echo direct; return; }
  pl "$NS_C" "$W/alice" 20 transports --json >"$W/transports.json" 2>>"$W/transports.txt" </dev/null || { echo "?"; return; }
  "$PY" "$HERE/hello.py" winner "$W/transports.json" || echo "?"
}

censor_evidence() { # what the censor did to parley's flows (for the notes)
  ip netns exec "$CZ_PREFIX-censor" nft list table inet censor >"$W/censor.txt" 2>&1
  ip netns exec "$CZ_PREFIX-censor" iptables -w -L CZ -v -n -x >>"$W/censor.txt" 2>&1
  local drops
  drops=$(awk '/counter packets/ && /drop/ { for (i=1;i<=NF;i++) if ($i=="packets") s+=$(i+1) } END { print s+0 }' "$W/censor.txt")
  local xt
  xt=$(ip netns exec "$CZ_PREFIX-censor" iptables -w -L CZ -v -n -x 2>/dev/null | awk '$3=="DROP"||$3=="REJECT"||$3=="CONNMARK" { s+=$1 } END { print s+0 }')
  local dpi=0
  [ -f "$CZ_STATE/czdpi.log" ] && dpi=$(grep -c 'verdict=BLOCK' "$CZ_STATE/czdpi.log")
  local snis=""
  [ -f "$CZ_STATE/czdpi.log" ] && snis=$(awk '/ -> .* sni=/ { sub("sni=", "", $5); print $5 }' "$CZ_STATE/czdpi.log" | sort -u | tr '\n' ' ')
  note "censor: nft drops $drops, iptables matches $xt, czdpi BLOCK verdicts $dpi${snis:+, SNI seen: $snis}"
}

# ---------------------------------------------------------------- bob listens
# bob's `receive --follow`, from the server side; each line stamped with the time it arrived
start_bob() {
  local t; t=$(left)
  ( inns "$NS_S" sh -c 'echo $$ >"$0"; exec "$@"' "$W/bob.pid" timeout -k 2 "$t" "$PARLEY" --profile "$W/bob" \
      receive --follow --json --timeout "$((t - 3))" 2>"$W/bob.err" </dev/null |
      while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$W/bob.out" ) &
  BOB_SUB=$!
  PIDS+=("$BOB_SUB")
  wait_for 5 test -s "$W/bob.pid"
  BOB_PID=$(cat "$W/bob.pid")
  PIDS+=("$BOB_PID")
  sleep 1.5   # bob's connection is up (he drains an empty queue first)
}
stop_bob() { # ends bob's receive (timeout passes SIGTERM on to parley) and waits for it
  kill -TERM "$BOB_PID" 2>/dev/null
  wait_for 5 bash -c "! kill -0 $BOB_PID 2>/dev/null"
  kill -KILL "$BOB_PID" 2>/dev/null
  wait "$BOB_SUB" 2>/dev/null
}

# ---------------------------------------------------------------- send and deliver (one-shot CLI)
deliver_once() {
  local text="reach $MODE $(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  start_bob
  local t_send=$EPOCHREALTIME rc=0
  log "alice sends: $text"
  pl "$NS_C" "$W/alice" "$(( $(left) > 75 ? 75 : $(left) ))" send bob "$text" >"$W/send.out" 2>"$W/send.err" </dev/null || rc=$?
  local t_acked=$EPOCHREALTIME
  log "send returned $rc after $(awk -v a="$t_acked" -v b="$t_send" 'BEGIN{printf "%.2f", a-b}') s"
  SEND_S=$(awk -v a="$t_acked" -v b="$t_send" 'BEGIN{printf "%.2f", a-b}')
  note "parley send returned after $SEND_S s"
  [ $rc = 0 ] || note "parley send exited $rc: $(tail -1 "$W/send.err")"
  if ! wait_for "$(left)" grep -qF "\"text\":\"$text\"" "$W/bob.out"; then
    censor_evidence
    fail "bob did not receive alice's message within the budget (send rc $rc; gaps:${GAPS:- none})"
  fi
  local t_deliv
  t_deliv=$(grep -F "\"text\":\"$text\"" "$W/bob.out" | head -1 | cut -d' ' -f1)
  DELIVERY_S=$(awk -v a="$t_deliv" -v b="$t_send" 'BEGIN{printf "%.2f", a-b}')
  log "bob received it $DELIVERY_S s after alice's send"
  WINNER=$(winner)
  censor_evidence
  # exactly once: give a duplicate time to show up, then count
  sleep 3
  stop_bob
  pl "$NS_S" "$W/bob" 20 receive --json --timeout 10 >>"$W/bob.out" 2>>"$W/bob.err" </dev/null || true
  local n
  n=$(grep -cF "\"text\":\"$text\"" "$W/bob.out")
  [ "$n" = 1 ] || fail "bob received alice's message $n times"
  [ $rc = 0 ] || fail "the message arrived but 'parley send' reported failure (rc $rc)"
}

# ---------------------------------------------------------------- freeze: a long-lived daemon
# Each one-shot CLI run opens a fresh connection that carries far less than 16 KB, so the freeze
# only bites a long-lived link: alice runs `parley daemon` and sends messages through it until
# her link has carried well over 16 KB; every one must reach bob exactly once.
deliver_daemon() {
  local n_msgs=${FREEZE_MSGS:-5}
  start_bob
  pl "$NS_C" "$W/alice" "$(left)" daemon --socket "$W/alice.sock" >"$W/daemon.out" 2>"$W/daemon.err" </dev/null &
  PIDS+=($!)
  wait_for 20 has_line "$W/daemon.out" 'listening on' || fail "alice's daemon did not start"
  sleep 1
  inns "$NS_C" timeout "$(left)" "$PY" "$HERE/daemon_send.py" "$W/alice.sock" bob "$n_msgs" 1500 "$W/bob.out" \
    "$(( $(left) - 5 ))" >"$W/daemon_send.out" 2>&1
  local rc=$?
  cat "$W/daemon_send.out" >&2
  DELIVERY_S=$(sed -n 's/^first_delivery_s=//p' "$W/daemon_send.out")
  local worst; worst=$(sed -n 's/^worst_delivery_s=//p' "$W/daemon_send.out")
  WINNER=$(sed -n 's/^winner=//p' "$W/daemon_send.out")
  [ -n "$WINNER" ] || WINNER=$(winner)
  censor_evidence
  note "$n_msgs messages of 1500 chars through one daemon; slowest send->delivery ${worst:-?} s"
  [ $rc = 0 ] || fail "daemon sends: $(tail -1 "$W/daemon_send.out")"
  sleep 3
  stop_bob
  pl "$NS_S" "$W/bob" 20 receive --json --timeout 10 >>"$W/bob.out" 2>>"$W/bob.err" </dev/null || true
  "$PY" "$HERE/daemon_send.py" --count-only "$W/bob.out" "$n_msgs" || fail "not every message arrived exactly once"
}

# ---------------------------------------------------------------- main
if [ "$MODE" = probe ]; then
  capture_hello
  tb_cert="$W/site.crt"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=www.example -keyout "$W/site.key" -out "$tb_cert" 2>/dev/null
  mkdir -p "$W/www"; echo "<html><body>hello</body></html>" >"$W/www/index.html"
  inns "$NS_S" timeout -k 2 "$CZ_TTL" "$PY" "$(dirname "$TESTBED")/https_server.py" "$S_IP" 8443 "$tb_cert" "$W/site.key" "$W/www" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_for 10 inns "$NS_C" bash -c "exec 3<>/dev/tcp/$S_IP/8443" || fail "reference website did not start"
  targets=(--target "server=$S_IP:443")
  [ -n "$BRIDGE_LINK" ] && targets+=(--target "bridge=$B_IP:443")
  [ -n "$BRIDGE_LINK" ] || note "no bridge (parleyd has no --bridge-to): only the server was probed"
  inns "$NS_C" timeout "$(left)" "$PY" "$HERE/probe.py" "${targets[@]}" --reference "$S_IP:8443" \
     --replay "$W/hello.bin" --path "$(inv_param path)" --report "$W/probe.txt" >&2
  rc=$?
  [ -n "$OUT" ] && cp "$W/probe.txt" "$OUT/probe.txt" 2>/dev/null
  [ $rc = 0 ] || fail "active probing: $(grep -c '^FAIL' "$W/probe.txt") probe(s) told parley apart from a plain website"
  DELIVERY_S=- WINNER=-
  record pass - -
  echo "PASS ($MODE)"
  exit 0
fi

# register_under_censorship: a new user, carol, registers from the client host while the censor
# is on, through the transports given on the command line (issue 5: registration works
# through every transport, not only messaging).
register_under_censorship() {
  [ -n "$BRIDGE_LINK" ] || return 0
  if [ $HAVE_REG_TRANSPORT != 1 ]; then note "no 'register --transport': carol's registration under censorship not tried"; return 0; fi
  local t0=$EPOCHREALTIME rc=0
  pl "$NS_C" "$W/carol" "$(( $(left) > 60 ? 60 : $(left) ))" register "$INVITE" --name carol --transport "$BRIDGE_LINK" \
    >"$W/carol.reg" 2>"$W/carol.err" </dev/null || rc=$?
  [ $rc = 0 ] || fail "carol could not register under censorship through the bridge: $(tail -1 "$W/carol.err")"
  note "carol registered under censorship via the bridge in $(awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN{printf "%.1f", a-b}') s"
}

apply_mode
add_transports
if [ "$MODE" = freeze ]; then deliver_daemon; else deliver_once; fi
# The censor must really have stopped the direct path (a pass through an untouched direct link
# proves nothing), and under block-fet the TLS path must beat the random-looking obfs4.
case $MODE in
  block-ip|block-sni|block-sni-dpi|block-tls|block-ja3|block-pattern|block-string|combo)
    [ "$WINNER" != direct ] || fail "the direct path won under $MODE: the censor did not block parley's TLS, so this run proves nothing" ;;
  block-fet)
    case $WINNER in direct|bridge) ;; *) fail "under block-fet $WINNER won; a TLS path should" ;; esac ;;
esac
case $MODE in block-ip|combo) register_under_censorship;; esac
[ -n "$GAPS" ] && note "not yet in parley:$GAPS"
record pass "$DELIVERY_S" "$WINNER"
log "PASS: delivered once in $DELIVERY_S s via $WINNER"
echo "PASS ($MODE): delivered once in $DELIVERY_S s via $WINNER"
