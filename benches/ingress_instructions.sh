#!/bin/bash
# User-space instructions per proxied request, counted by valgrind's callgrind: a figure that,
# unlike time, does not move with a noisy neighbour. One serving thread; the bench_upstream
# example behind it; wrk drives it for 2 s to warm up, then callgrind counts during the next
# S seconds. System calls are not counted: benches/ingress_syscalls.py counts them.
#
# Needs: cargo build --release -p kiln-ingress --examples; valgrind, wrk (apt).
# Usage: benches/ingress_instructions.sh PROXY_BINARY [connections=16] [seconds=5]
#        POST=BYTES benches/ingress_instructions.sh ...   (POST requests with a body of BYTES)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
E=$ROOT/target/release/examples
BIN=$1; C=${2:-16}; S=${3:-5}
P1=$((20000 + RANDOM % 10000)); P2=$((P1 + 1))
OUT=$(mktemp -d)/callgrind.out
SCRIPT=()
if [ -n "${POST:-}" ]; then
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' "$POST" > "$(dirname "$OUT")/post.lua"
  SCRIPT=(-s "$(dirname "$OUT")/post.lua")
fi
"$E/bench_upstream" 127.0.0.1:$P1 13 2>/dev/null & UP=$!
KILN_INGRESS_THREADS=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT \
  "$BIN" 127.0.0.1:$P2 127.0.0.1:$P1 >/dev/null 2>&1 & PX=$!
trap 'kill $PX $UP 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$P2) 2>/dev/null && break; sleep 0.1; done
wrk -t1 -c$C -d2s "${SCRIPT[@]}" http://127.0.0.1:$P2/ >/dev/null
callgrind_control -i on $PX >/dev/null
n=$(wrk -t1 -c$C -d${S}s "${SCRIPT[@]}" http://127.0.0.1:$P2/ | awk '/requests in/{print $1}')
callgrind_control -i off $PX >/dev/null
callgrind_control -d $PX >/dev/null
sleep 1
ir=$(for f in $OUT*; do callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; done | sort -n | tail -1)
echo "$(basename "$BIN") c=$C: $n requests, $((ir / n)) instructions/request"
