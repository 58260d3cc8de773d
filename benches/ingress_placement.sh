#!/bin/bash
# One-connection GET through kiln's ingress and through nginx, with the scheduler's placement
# taken out of the comparison: "pinned" puts both proxies on CPU 1 and wrk and the upstream on
# CPU 0; "free" lets every process run anywhere (as benches/ingress.py does). Every benchmark
# process runs at SCHED_FIFO 50, so other work on the machine cannot preempt it. Rounds
# alternate which proxy goes first. Prints each run, then the median kiln/nginx ratios.
#
# Why: at one connection the scheduler moves nginx's worker to its waker's core about once a
# request and never moves kiln's serving thread (docs/benchmarks.md, sessions 19 and 20); this
# shows what is left of the difference when both are placed alike.
#
# Needs: cargo build --release -p kiln-ingress --examples; nginx, wrk (apt); root (chrt).
# Usage: benches/ingress_placement.sh [rounds=8] [seconds=5]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
E=$ROOT/target/release/examples
ROUNDS=${1:-8}; SECS=${2:-5}
P1=$((30000 + RANDOM % 5000)); PK=$((P1 + 1)); PN=$((P1 + 2))
D=$(mktemp -d)
"$E/bench_upstream" 127.0.0.1:$P1 13 2>/dev/null & UP=$!
KILN_INGRESS_THREADS=2 "$E/proxy" 127.0.0.1:$PK 127.0.0.1:$P1 >/dev/null 2>&1 & PX=$!
python3 - "$ROOT" "$D" $P1 $PN <<'PY'
import importlib.util, sys
root, d, up, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec = importlib.util.spec_from_file_location("ingress", f"{root}/benches/ingress.py")
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
open(f"{d}/nginx.conf", "w").write(m.NGINX.format(d=d, upstream=up, port=port))
PY
nginx -p "$D" -c "$D/nginx.conf" 2>/dev/null & NG=$!
trap 'kill $PX $UP $NG 2>/dev/null || true' EXIT
for port in $P1 $PK $PN; do
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
mapfile -t WORKERS < <(pgrep -P $NG)
chrt -a -f -p 50 $UP >/dev/null
chrt -a -f -p 50 $PX >/dev/null
for w in "${WORKERS[@]}"; do chrt -f -p 50 "$w" >/dev/null; done
place() {
  local up=$1 proxies=$2
  taskset -a -pc "$up" $UP >/dev/null
  taskset -a -pc "$proxies" $PX >/dev/null
  for w in "${WORKERS[@]}"; do taskset -pc "$proxies" "$w" >/dev/null; done
}
run() { # name port wrk-cpus
  chrt -f 50 taskset -c "$3" wrk -t1 -c1 -d1s "http://127.0.0.1:$2/" >/dev/null
  chrt -f 50 taskset -c "$3" wrk -t1 -c1 -d"${SECS}s" --latency "http://127.0.0.1:$2/" |
    awk -v n="$1" '/Requests\/sec/{r=$2} $1=="50%"{p50=$2} $1=="99%"{p99=$2} END{print n, r, p50, p99}'
}
OUT=$(mktemp)
for r in $(seq 1 "$ROUNDS"); do
  place 0 1
  if [ $((r % 2)) = 1 ]; then run kiln-pinned $PK 0; run nginx-pinned $PN 0
  else run nginx-pinned $PN 0; run kiln-pinned $PK 0; fi
  place 0-1 0-1
  if [ $((r % 2)) = 1 ]; then run nginx-free $PN 0-1; run kiln-free $PK 0-1
  else run kiln-free $PK 0-1; run nginx-free $PN 0-1; fi
done | tee "$OUT"
python3 - "$OUT" <<'PY'
import statistics, sys
def ms(v):
    return float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-2]) if v.endswith("ms") else float(v[:-1]) * 1000
runs = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99 = line.split()
    runs.setdefault(name, []).append((float(rps), ms(p50), ms(p99)))
for setting in ("pinned", "free"):
    k, n = runs[f"kiln-{setting}"], runs[f"nginx-{setting}"]
    rps = [a[0] / b[0] for a, b in zip(k, n)]
    p99 = [a[2] / b[2] for a, b in zip(k, n)]
    print(f"{setting}: kiln/nginx requests/s median {statistics.median(rps):.3f} "
          f"(range {min(rps):.2f}-{max(rps):.2f}), p99 median {statistics.median(p99):.2f} "
          f"(range {min(p99):.2f}-{max(p99):.2f}), {len(rps)} rounds")
PY
