#!/usr/bin/env bash
# The miss path at one connection (run.sh's workload 2-c1 without its other processes): what a
# gateway and one edge node add to anvil's own p50 when every request goes to anvil.
#
#   loadtests/miss.sh [BIN_DIR ...]   each holding `gateway` and `edge-node` (default
#                                      target/release)
#
# Per build: anvil direct, then through the gateway (one thread each, logging at $RUST_LOG,
# default warn), MISS_ROUNDS (3) rounds of MISS_DURATION (5s), wrk -t1 -c1, eth_getBalance of
# a new random address at `latest`. Prints p50, p99, the added p50 and the CPU the gateway and
# the node spent per request (user + system, from /proc).
#
# MISS_PIN=N runs everything (anvil, the daemons and wrk) on CPU N only. On this VM a request
# that wakes a process on an idle vCPU pays for the wake-up: anvil direct has two such wakes
# per request and the gateway path six, so comparing both layouts tells the wake-ups from the
# CPU work on the path. MISS_PORT_BASE (31545; +1 and +2).
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS=${MISS_ROUNDS:-3}
DURATION=${MISS_DURATION:-5s}
BASE=${MISS_PORT_BASE:-31545}
if [ -n "${MISS_PIN:-}" ]; then
  # Children inherit the mask: wrk, anvil and the daemons all share the one CPU.
  taskset -p -c "$MISS_PIN" $$ >/dev/null
fi
# shellcheck source=stack.sh
source "$ROOT/loadtests/stack.sh" "$@"
command -v wrk >/dev/null || { echo "miss.sh: needs wrk" >&2; exit 1; }

ANVIL_URL="http://127.0.0.1:$BASE"
TOKIO_WORKER_THREADS=1 "$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --block-time 2 --quiet >"$TMP/anvil.log" 2>&1 &
PIDS+=($!)
wait_for rpc "$ANVIL_URL" eth_chainId '[]'

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# p50 of a wrk --latency output, in µs.
p50_us() { awk '$1 == "50%" { v = $2; if (v ~ /ms$/) { sub(/ms/, "", v); v *= 1000 } else sub(/us/, "", v); print v }'; }

for d in "${DIRS[@]}"; do
  WORKERS=1 start_pair "$d" "$TMP/run-$(basename "$d")" "$BASE" "$ANVIL_URL"
  echo "build $d${MISS_PIN:+ (everything on CPU $MISS_PIN)}"
  for round in $(seq 1 "$ROUNDS"); do
    direct=$(LT_DIR="$ROOT/loadtests" LT_BLOCK='"latest"' wrk -t1 -c1 -d"$DURATION" --latency -s loadtests/miss.lua "$ANVIL_URL")
    g0=$(ticks "$GW_PID"); e0=$(ticks "$EDGE_PID")
    through=$(LT_DIR="$ROOT/loadtests" LT_BLOCK='"latest"' wrk -t1 -c1 -d"$DURATION" --latency -s loadtests/miss.lua "http://127.0.0.1:$((BASE + 1))")
    g1=$(ticks "$GW_PID"); e1=$(ticks "$EDGE_PID")
    n=$(echo "$through" | awk '/requests in/ {print $1}')
    if echo "$through$direct" | grep -q "Non-2xx\|Socket errors"; then
      echo "miss.sh: failed requests in round $round" >&2
      exit 1
    fi
    a=$(echo "$direct" | p50_us); t=$(echo "$through" | p50_us)
    hz=$(getconf CLK_TCK)
    printf '  round %s: anvil p50 %s µs, through the gateway p50 %s µs (p99 %s): +%s µs; CPU per request: gateway %s µs, node %s µs\n' \
      "$round" "$a" "$t" "$(echo "$through" | awk '$1 == "99%" {print $2}')" \
      "$(awk -v t="$t" -v a="$a" 'BEGIN { printf "%.0f", t - a }')" \
      "$(awk -v d=$((g1 - g0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')" \
      "$(awk -v d=$((e1 - e0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')"
  done
  kill "$GW_PID" "$EDGE_PID"
  wait "$GW_PID" "$EDGE_PID" 2>/dev/null || true
done
