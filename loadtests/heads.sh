#!/usr/bin/env bash
# How soon a new block is served: the time from anvil first answering a new block number to the
# gateway first answering it, per block, for every BIN_DIR given (to compare builds in one run).
#
#   loadtests/heads.sh [BIN_DIR ...]   default: target/release (built when missing)
#
# For each BIN_DIR (holding `gateway` and `edge-node`) it starts, on 127.0.0.1 only: anvil with
# `--block-time 1`, one edge node (default config) and the gateway; then two pollers ask anvil and
# the gateway for `eth_blockNumber` back to back on keep-alive connections (well under a
# millisecond each) for HD_SECONDS (default 60) and print the delay per block: p50, p90, p99, max.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${HD_SECONDS:-60}
BASE=${HD_PORT_BASE:-29645}
# shellcheck source=stack.sh
source "$ROOT/loadtests/stack.sh" "$@"

measure() { # BIN_DIR RUN
  local bin=$1 run="$TMP/run-$2" pids=()
  mkdir -p "$run"
  "$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --block-time 1 --quiet >"$run/anvil.log" 2>&1 &
  pids+=($!)
  PIDS+=($!)
  wait_for rpc "http://127.0.0.1:$BASE" eth_chainId '[]'
  start_pair "$bin" "$run" "$BASE" "http://127.0.0.1:$BASE"
  pids+=("$GW_PID" "$EDGE_PID")
  sleep 5 # the node learns the block pace
  python3 - "$bin" "$SECS" "$BASE" <<'PY'
import http.client, json, sys, threading, time
bin_dir, secs, base = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
body = '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
seen = {"anvil": {}, "gateway": {}}
stop = time.monotonic() + secs
def poll(name, port):
    c = http.client.HTTPConnection("127.0.0.1", port)
    first = seen[name]
    while time.monotonic() < stop:
        c.request("POST", "/", body, {"content-type": "application/json"})
        n = int(json.loads(c.getresponse().read())["result"], 16)
        first.setdefault(n, time.monotonic())
threads = [threading.Thread(target=poll, args=a) for a in (("anvil", base), ("gateway", base + 1))]
for t in threads: t.start()
for t in threads: t.join()
a, g = seen["anvil"], seen["gateway"]
blocks = sorted(set(a) & set(g))[1:]  # the first was there before polling began
d = sorted((g[n] - a[n]) * 1000 for n in blocks)
pct = lambda p: d[min(len(d) - 1, int(p * len(d)))]
print(f"{bin_dir:<32} {len(d):3d} blocks  new block served after: p50 {pct(0.5):6.1f} ms  p90 {pct(0.9):6.1f} ms  p99 {pct(0.99):6.1f} ms  max {d[-1]:6.1f} ms")
PY
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

i=0
for d in "${DIRS[@]}"; do
  i=$((i + 1))
  measure "$d" "$i"
done
