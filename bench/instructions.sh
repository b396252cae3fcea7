#!/usr/bin/env bash
# Instructions per message, counted by valgrind's callgrind: a figure that does not drift with
# the machine's speed (parley-load's wall-clock figures move by a third from run to run on the
# 2-vCPU test machine), for comparing two builds of a change. It counts user-space
# instructions only: the kernel's share (system calls, loopback TCP) and waiting are not in it,
# so confirm a gain with parley-load's own figures too.
#
#   bench/instructions.sh BUILD_DIR WHAT
#
# BUILD_DIR: a build with apps/parleyd/parleyd and bench/parley-load (build-load).
# WHAT:
#   server-offline     parleyd under callgrind during parley-load's offline enqueue of 20,000
#                      messages (100 senders); prints instructions per enqueue
#   client-offline     the same with parley-load (the client library) under callgrind
#   server-throughput  parleyd under callgrind for 10 s of the throughput scenario (100 pairs);
#                      prints instructions per message pushed (parley_messages_pushed_total
#                      read from /metrics before and after)
#   server-handshake   parleyd under callgrind for 8 s of the handshake scenario's first phase
#                      (full TLS + WebSocket handshakes, 64 at once); prints instructions per
#                      full handshake (parley_tls_handshakes_total{outcome="full"})
# The callgrind file is kept (its path is printed) for callgrind_annotate.
# Needs valgrind (apt-get install valgrind), and ss (iproute2) for server-throughput.
set -euo pipefail

usage() {
  sed -n '2,23p' "$0" >&2
  exit 2
}
[[ $# -eq 2 ]] || usage
build=$(cd "$1" && pwd)
what=$2
parleyd="$build/apps/parleyd/parleyd"
load="$build/bench/parley-load"
[[ -x "$parleyd" && -x "$load" ]] || { echo "instructions.sh: no parleyd or parley-load in $build" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 2; }

work=$(mktemp -d /tmp/parley-instructions-XXXXXX)
out="$work/run.out"
messages=20000
vg=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no --collect-jumps=no
    "--callgrind-out-file=$work/callgrind.%p")

# Waits (at most `tenths` tenths of a second) for a line matching `pattern` in the run's output.
wait_for() {
  local pattern=$1 tenths=$2 i
  for ((i = 0; i < tenths; i++)); do
    grep -qE "$pattern" "$out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "instructions.sh: timed out waiting for '$pattern' (see $out)" >&2
  return 1
}

# The pid of the process valgrind runs for `binary`.
valgrind_pid() {
  local pid
  for _ in $(seq 1 100); do
    pid=$(pgrep -f "^[^ ]*valgrind(\.bin)? .*$1" | head -1 || true)
    [[ -n "$pid" ]] && { echo "$pid"; return 0; }
    sleep 0.1
  done
  echo "instructions.sh: no valgrind process for $1" >&2
  return 1
}

# The value of metric `name` (its whole name, labels included) from the admin listener of
# process `pid`.
metric() {
  local pid=$1 name=$2 port body value
  for port in $(ss -ltnp | grep "pid=$pid," | grep -oE '127\.0\.0\.1:[0-9]+' | cut -d: -f2); do
    body=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3" 2>/dev/null || true)
    value=$(awk -v n="$name" '$1 == n {print $2; exit}' <<<"$body")
    if [[ -n "$value" ]]; then
      echo "$value"
      return 0
    fi
  done
  echo "instructions.sh: no /metrics for process $pid" >&2
  return 1
}

total_ir() {
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

case "$what" in
  server-offline | client-offline)
    if [[ $what == server-offline ]]; then
      printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${vg[*]}" "$parleyd" >"$work/parleyd"
      chmod +x "$work/parleyd"
      timeout 900 "$load" --parleyd "$work/parleyd" --scenario offline --offline-messages $messages \
        --pairs 100 >"$out" 2>&1 &
      target=$parleyd
    else
      timeout 900 "${vg[@]}" "$load" --parleyd "$parleyd" --scenario offline \
        --offline-messages $messages --pairs 100 >"$out" 2>&1 &
      target=$load
    fi
    run=$!
    wait_for 'registered' 3000
    pid=$(valgrind_pid "$target")
    callgrind_control -i on "$pid" >/dev/null 2>&1
    wait_for '^offline: [0-9]+ enq' 6000
    callgrind_control -d enqueue "$pid" >/dev/null 2>&1
    callgrind_control -i off "$pid" >/dev/null 2>&1
    count=$messages
    unit=enqueue
    ;;
  server-throughput)
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${vg[*]}" "$parleyd" >"$work/parleyd"
    chmod +x "$work/parleyd"
    timeout 900 "$load" --parleyd "$work/parleyd" --scenario throughput --seconds 20 --pairs 100 \
      >"$out" 2>&1 &
    run=$!
    wait_for 'registered' 3000
    sleep 6  # the pairs log in and the load settles
    pid=$(valgrind_pid "$parleyd")
    before=$(metric "$pid" parley_messages_pushed_total)
    callgrind_control -i on "$pid" >/dev/null 2>&1
    sleep 10
    callgrind_control -i off "$pid" >/dev/null 2>&1
    after=$(metric "$pid" parley_messages_pushed_total)
    callgrind_control -d throughput "$pid" >/dev/null 2>&1
    count=$((after - before))
    unit="message pushed"
    ;;
  server-handshake)
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${vg[*]}" "$parleyd" >"$work/parleyd"
    chmod +x "$work/parleyd"
    timeout 900 "$load" --parleyd "$work/parleyd" --scenario handshake --seconds 20 >"$out" 2>&1 &
    run=$!
    wait_for '^== handshake' 3000
    sleep 4  # parleyd starts under valgrind and the first handshakes run
    pid=$(valgrind_pid "$parleyd")
    full='parley_tls_handshakes_total{outcome="full"}'
    before=$(metric "$pid" "$full")
    callgrind_control -i on "$pid" >/dev/null 2>&1
    sleep 8
    callgrind_control -i off "$pid" >/dev/null 2>&1
    after=$(metric "$pid" "$full")
    callgrind_control -d handshake "$pid" >/dev/null 2>&1
    count=$((after - before))
    unit="full handshake"
    # The later phases restart parleyd; they are not measured.
    kill "$run" 2>/dev/null || true
    pkill -f "valgrind.*$parleyd" 2>/dev/null || true
    ;;
  *) usage ;;
esac

wait "$run" || true
file=$(find "$work" -name "callgrind.*.1" | head -1)
[[ -n "$file" ]] || { echo "instructions.sh: callgrind wrote no dump (see $out)" >&2; exit 1; }
ir=$(total_ir "$file")
[[ $count -gt 0 ]] || { echo "instructions.sh: no messages counted (see $out)" >&2; exit 1; }
echo "$what: $ir instructions for $count, $((ir / count)) per $unit"
echo "  callgrind file: $file"
