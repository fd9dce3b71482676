# Shared by the small measuring scripts (callgrind.sh, heads.sh, gzip.sh, pair.sh, miss.sh): what they need
# installed, the builds to measure, JSON-RPC over curl, waiting, and one gateway with one edge
# node in front of an upstream, on 127.0.0.1 only. Sourced from $ROOT with the script's
# arguments; sets DIRS (the BIN_DIRs given, else target/release, built when missing), TMP (a temp
# dir, removed on exit unless KEEP_TMP is set) and PIDS (killed on exit).
# shellcheck shell=bash

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
  if [ -n "${KEEP_TMP:-}" ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

rpc() { curl -fsS -H 'content-type: application/json' -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}" "$1"; }
serving() { rpc "$1" eth_chainId '[]' | grep -q '"result"'; }
wait_for() { for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$(basename "$0"): gave up waiting for: $*" >&2; exit 1; }

# start_pair BIN_DIR RUN_DIR BASE UPSTREAM_URL [WRAPPER...]: writes the configs into RUN_DIR and
# starts the gateway (JSON-RPC on BASE+1, QUIC on BASE+2; run under WRAPPER when given, such as
# valgrind) and one edge node (eu-west) in front of UPSTREAM_URL, both with worker_threads =
# $WORKERS (default 0: one per core), $GW_SERVER_TOML added to the gateway's [server] table
# and $GW_EXTRA_TOML appended to its config, both logging at $RUST_LOG (default warn; the
# daemons' own default is info, where each request's span costs ~2-3k instructions in each);
# waits until the gateway serves. Sets GW_PID and EDGE_PID.
start_pair() {
  local bin=$1 run=$2 base=$3 upstream=$4 fp
  shift 4
  mkdir -p "$run/keys"
  cat >"$run/gateway.toml" <<TOML
default_chain = "anvil"
[server]
listen = "127.0.0.1:$((base + 1))"
worker_threads = ${WORKERS:-0}
${GW_SERVER_TOML:-}
[quic]
listen = "127.0.0.1:$((base + 2))"
key_file = "$run/keys/gateway.key"
join_tokens = ["measuring"]
[[chains]]
name = "anvil"
chain_id = 31337
${GW_EXTRA_TOML:-}
TOML
  cat >"$run/edge.toml" <<TOML
key_file = "$run/keys/edge.key"
region = "eu-west"
latitude = 50.1
longitude = 8.7
worker_threads = ${WORKERS:-0}
[[gateways]]
address = "127.0.0.1:$((base + 2))"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
token = "measuring"
[[chains]]
chain_id = 31337
upstreams = ["$upstream"]
TOML
  fp=$("$bin/gateway" --config "$run/gateway.toml" --print-fingerprint)
  RUST_LOG=${RUST_LOG:-warn} "$@" "$bin/gateway" --config "$run/gateway.toml" >"$run/gateway.log" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  # EDGE_WRAP: a command the edge node runs under too (callgrind.sh's CG_EDGE=1).
  RUST_LOG=${RUST_LOG:-warn} ${EDGE_WRAP:-} "$bin/edge-node" --config "$run/edge.toml" --gateway-fingerprint "$fp" >"$run/edge.log" 2>&1 &
  EDGE_PID=$!
  PIDS+=("$EDGE_PID")
  wait_for serving "http://127.0.0.1:$((base + 1))/"
}
