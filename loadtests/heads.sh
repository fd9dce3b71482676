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
"$ROOT/scripts/deps.sh" demo >/dev/null
# shellcheck source=/dev/null
source "$ROOT/.deps/env.sh"
DIRS=("$@")
if [ ${#DIRS[@]} -eq 0 ]; then
  [ -x target/release/gateway ] || cargo build --release --quiet --bin gateway --bin edge-node
  DIRS=(target/release)
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

rpc() { curl -fsS -H 'content-type: application/json' -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}" "$1"; }
serving() { rpc "$1" eth_chainId '[]' | grep -q '"result"'; }
wait_for() { for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "heads.sh: gave up waiting for: $*" >&2; exit 1; }

measure() { # BIN_DIR RUN
  local bin=$1 run="$TMP/run-$2" pids=()
  mkdir -p "$run/keys"
  "$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --block-time 1 --quiet >"$run/anvil.log" 2>&1 &
  pids+=($!)
  wait_for rpc "http://127.0.0.1:$BASE" eth_chainId '[]'
  cat >"$run/gateway.toml" <<TOML
default_chain = "anvil"
[server]
listen = "127.0.0.1:$((BASE + 1))"
[quic]
listen = "127.0.0.1:$((BASE + 2))"
key_file = "$run/keys/gateway.key"
join_tokens = ["heads-delay"]
[[chains]]
name = "anvil"
chain_id = 31337
TOML
  cat >"$run/edge.toml" <<TOML
key_file = "$run/keys/edge.key"
region = "eu-west"
latitude = 50.1
longitude = 8.7
[gateway]
address = "127.0.0.1:$((BASE + 2))"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
token = "heads-delay"
[[chains]]
chain_id = 31337
upstreams = ["http://127.0.0.1:$BASE"]
TOML
  local fp
  fp=$("$bin/gateway" --config "$run/gateway.toml" --print-fingerprint)
  RUST_LOG=warn "$bin/gateway" --config "$run/gateway.toml" >"$run/gateway.log" 2>&1 &
  pids+=($!)
  RUST_LOG=warn "$bin/edge-node" --config "$run/edge.toml" --gateway-fingerprint "$fp" >"$run/edge.log" 2>&1 &
  pids+=($!)
  PIDS+=("${pids[@]}")
  wait_for serving "http://127.0.0.1:$((BASE + 1))/"
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
