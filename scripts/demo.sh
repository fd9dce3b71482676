#!/usr/bin/env bash
# Starts the whole demo stack on loopback and keeps it running until Ctrl-C:
#   anvil (chain 31337, 2 s blocks)        http://127.0.0.1:18545
#   gateway gw-eu (Frankfurt) JSON-RPC     http://127.0.0.1:8545   (admin http://127.0.0.1:9100)
#   gateway gw-us (Ashburn) JSON-RPC       http://127.0.0.2:8545   (admin http://127.0.0.2:9100)
#   edge nodes us-east, eu-west, ap-southeast, each joined to both (admin :9101, :9102, :9103)
#   redis-server (shared limits and RTTs)  a free 127.0.0.1 port, passed to the gateways in
#                                          MERIDIAN_REDIS_URL
# Pids go to .demo/<name>.pid, logs to .demo/<name>.log (Redis: .demo/redis/redis.log).
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/deps.sh" demo
# shellcheck source=/dev/null
source "$ROOT/.deps/env.sh"
# shellcheck source=scripts/redis.sh
source "$ROOT/scripts/redis.sh"

echo "demo: building release binaries (first build takes a few minutes)..."
cargo build --release --quiet --bin gateway --bin edge-node
BIN="$ROOT/target/release"

mkdir -p .demo/keys
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping..."
  for name in gateway gateway-us edge-us-east edge-eu-west edge-ap-southeast anvil; do
    if [ -f ".demo/$name.pid" ]; then
      kill "$(cat ".demo/$name.pid")" 2>/dev/null || true
      rm -f ".demo/$name.pid"
    fi
  done
  stop_redis
  rm -f .demo/redis.pid
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

start() { # name, command...
  local name=$1
  shift
  "$@" >".demo/$name.log" 2>&1 &
  echo $! >".demo/$name.pid"
  pids+=($!)
}

wait_http() { # url, what
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo: $2 did not come up; see .demo/*.log" >&2
  exit 1
}

start anvil "$ANVIL_BIN" --host 127.0.0.1 --port 18545 --block-time 2
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}' http://127.0.0.1:18545 2>/dev/null && break
  sleep 0.1
done

# The tenants' limits live in a private Redis (config/tenants.toml: the key demo-key-change-me,
# 50 requests a second); the gateway takes its URL from MERIDIAN_REDIS_URL.
start_redis .demo/redis || { echo "demo: redis-server did not start; see .demo/redis/redis.log" >&2; exit 1; }
echo "$REDIS_PID" >.demo/redis.pid
export MERIDIAN_REDIS_URL="$REDIS_URL"

# Two gateways sharing the Redis: gw-eu (Frankfurt) on 127.0.0.1, gw-us (Ashburn) on 127.0.0.2;
# every edge node joins both.
FP_EU=$("$BIN/gateway" --config config/gateway.toml --print-fingerprint)
FP_US=$("$BIN/gateway" --config config/gateway-us.toml --print-fingerprint)
start gateway "$BIN/gateway" --config config/gateway.toml
start gateway-us "$BIN/gateway" --config config/gateway-us.toml
wait_http http://127.0.0.1:9100/healthz gw-eu
wait_http http://127.0.0.2:9100/healthz gw-us
for region in us-east eu-west ap-southeast; do
  start "edge-$region" "$BIN/edge-node" --config "config/edge-$region.toml" \
    --gateway-fingerprint "gw-eu=$FP_EU" --gateway-fingerprint "gw-us=$FP_US"
done
wait_http http://127.0.0.1:8545/readyz "a serving edge node on gw-eu"
wait_http http://127.0.0.2:8545/readyz "a serving edge node on gw-us"

cat <<TXT

Meridian demo is up.
  JSON-RPC (default chain)  http://127.0.0.1:8545 (gw-eu)   http://127.0.0.2:8545 (gw-us)   also /anvil and /31337
  gateway admin             http://127.0.0.1:9100/metrics   /readyz   (gw-us: http://127.0.0.2:9100)
  status page               http://127.0.0.1:9100/status    http://127.0.0.2:9100/status
  Prometheus (optional)     prometheus --config.file=dashboards/prometheus.yml --storage.tsdb.path=.demo/prometheus --web.listen-address=127.0.0.1:9090
  edge admin                http://127.0.0.1:9101/metrics (us-east)  :9102 (eu-west)  :9103 (ap-southeast)
  anvil (upstream)          http://127.0.0.1:18545
  redis (tenants' limits)   $REDIS_URL
  tenants                   config/tenants.toml (edits apply without a restart)
  logs and pids             .demo/

Try:
  curl -si -H 'content-type: application/json' \\
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["0x0",false]}' http://127.0.0.1:8545

  # With the demo tenant's key (50 requests a second), in the URL or in a header:
  curl -s -H 'content-type: application/json' \\
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}' http://127.0.0.1:8545/v1/demo-key-change-me
  curl -s -H 'content-type: application/json' -H 'x-api-key: demo-key-change-me' \\
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}' http://127.0.0.1:8545

  # Over the limit: 100 requests at once with that key; the refused ones get 429
  # (JSON-RPC error -32005, Retry-After):
  for i in \$(seq 100); do curl -s -o /dev/null -w '%{http_code}\\n' -H 'content-type: application/json' \\
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}' http://127.0.0.1:8545/v1/demo-key-change-me & done | sort | uniq -c

  # Tenants and their live usage (admin listener):
  curl -s -H 'authorization: Bearer demo-admin-token-change-me' http://127.0.0.1:9100/admin/tenants

Ctrl-C stops everything.
TXT
wait
