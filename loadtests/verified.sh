#!/usr/bin/env bash
# What a verified state read costs next to an unverified one (issue 4): the same miss-path
# workload (eth_getBalance of a fresh address at `latest`, so every read reaches the upstream)
# through one gateway to two edge nodes in front of the same anvil: eu-west with
# verify_state = false, us-east with verify_state = true (answers from eth_getProof, checked
# against the header's state root). The caller's X-Forwarded-For picks the node.
#
#   loadtests/verified.sh          (LT_DURATION=10s LT_CONNS=1 LT_PORT_BASE=29545 to change)
#
# Loopback only; everything started is stopped on exit. Prints ratios, asserts nothing.
set -euo pipefail
LT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd -- "$LT_DIR/.." && pwd)"
export LT_DIR
DUR=${LT_DURATION:-10s}
CONNS=${LT_CONNS:-1}
BASE=${LT_PORT_BASE:-29545}
"$ROOT/scripts/deps.sh" demo
# shellcheck source=/dev/null
source "$ROOT/.deps/env.sh"
command -v wrk >/dev/null || "$ROOT/scripts/deps.sh"
(cd "$ROOT" && cargo build --release --quiet --bin gateway --bin edge-node)
BIN="$ROOT/target/release"
TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

"$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --block-time 2 --quiet >"$TMP/anvil.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs -o /dev/null -H 'content-type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}' "http://127.0.0.1:$BASE" && break; sleep 0.1; done
cat >"$TMP/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$((BASE + 1))"
[quic]
listen = "127.0.0.1:$((BASE + 2))"
key_file = "gw.key"
join_tokens = ["verified-bench-token"]
[geo]
databases = ["$DBIP_V4_MMDB", "$DBIP_V6_MMDB"]
trusted_proxies = ["127.0.0.0/8"]
[[chains]]
name = "anvil"
chain_id = 31337
TOML
FP=$("$BIN/gateway" --config "$TMP/gw.toml" --print-fingerprint)
"$BIN/gateway" --config "$TMP/gw.toml" >"$TMP/gw.log" 2>&1 &
pids+=($!)
node() { # region lat lon verify
  cat >"$TMP/$1.toml" <<TOML
key_file = "$1.key"
region = "$1"
latitude = $2
longitude = $3
[[gateways]]
address = "127.0.0.1:$((BASE + 2))"
fingerprint = "$FP"
token = "verified-bench-token"
[[chains]]
chain_id = 31337
upstreams = ["http://127.0.0.1:$BASE"]
verify_state = $4
TOML
  "$BIN/edge-node" --config "$TMP/$1.toml" >"$TMP/$1.log" 2>&1 &
  pids+=($!)
}
node eu-west 50.11 8.68 false
node us-east 39.04 -77.49 true
sleep 4 # joins, three healthy reports, a mined block so `latest` is past genesis

run() { # label xff
  LT_XFF=$2 LT_BLOCK='"latest"' wrk -t1 "-c$CONNS" "-d$DUR" -s "$LT_DIR/miss.lua" "http://127.0.0.1:$((BASE + 1))/" >"$TMP/$1.txt" 2>&1
  sed -n 's/^LTRESULT //p' "$TMP/$1.txt"
}
check() { # xff -> region that served
  curl -s -o /dev/null -w '%header{x-edge-region}' -H 'content-type: application/json' -H "X-Forwarded-For: $1" \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x0000000000000000000000000000000000000001","latest"]}' \
    "http://127.0.0.1:$((BASE + 1))/"
}
if [ "$(check 81.2.69.142)" != eu-west ] || [ "$(check 8.8.8.8)" != us-east ]; then
  echo "routing not as expected: see $TMP/*.log" >&2
  exit 1
fi
U=$(run unverified 81.2.69.142)
V=$(run verified 8.8.8.8)
python3 - "$U" "$V" "$CONNS" "$DUR" <<'PY'
import json, sys
u, v = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"verified vs unverified state reads (miss path, eth_getBalance at latest, wrk -t1 -c{sys.argv[3]} -d{sys.argv[4]})")
print("| read | req/s | p50 us | p99 us | failed |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, r in (("unverified", u), ("verified (eth_getProof + state root)", v)):
    print(f"| {name} | {r['rps']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | {r['failed']} |")
print(f"verified / unverified: req/s {v['rps']/u['rps']:.2f}x, p50 {v['p50_us']/u['p50_us']:.2f}x, p99 {v['p99_us']/u['p99_us']:.2f}x")
PY
