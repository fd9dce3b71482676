#!/usr/bin/env bash
# Meridian load tests: gateway + edge nodes vs nginx proxy_cache vs anvil direct, same workloads,
# same run, one table of ratios. See loadtests/README.md.
#
#   loadtests/run.sh
#
# Installs what is missing (scripts/deps.sh), builds the release binaries, starts on 127.0.0.1
# only: anvil, a redis-server (the tenants' shared limits; on a free port), one gateway (with a
# tenants file: tenant "bench", key "bench-key", limits far above the load), two edge nodes (eu-west serves,
# us-east is the failover node) and nginx; runs the workloads with wrk; prints the table and
# writes loadtests/RESULTS.md. Everything it starts is stopped on exit, Ctrl-C included. About
# 16 minutes plus the build.
#
# Environment (all optional):
#   LT_DURATION=10s         length of each measured wrk run
#   LT_WARMUP=2s            unrecorded wrk run before each measured run (0 to skip)
#   LT_PORT_BASE=28545      ports used: BASE .. BASE+4 and BASE+11 .. BASE+12
#   LT_BLOCK_TIME=2         anvil --block-time (s); nginx proxy_cache_valid is the same
#   LT_EDGE_CACHE_BYTES=4194304   edge [cache] max_bytes (small, so the cache-fill run hits it)
#   LT_XFF=81.2.69.142      caller address sent in X-Forwarded-For (London: eu-west is nearest)
#   LT_KILL_AFTER=4         seconds into workload 4 when the serving node is SIGKILLed
#   LT_WORKERS=1            worker_threads of the gateway and each edge node (0: one per core)
#   LT_PEER=1               a second gateway (gw-peer, sharing the Redis) that every edge node
#                           also joins, as in a deployment with several gateways; it takes no
#                           load (0: nodes join the measured gateway only)
#   LT_ANVIL_WORKERS=1      anvil's runtime threads (TOKIO_WORKER_THREADS; "" for its default)
#   LT_ONLY="1 key 2 3 5 fill soak 4"   workloads to run, in this order ("hold": keep the
#                           stack up for profiling until Ctrl-C)
#   LT_SOAK=600s            length of the soak run (memory read every LT_SOAK_EVERY=10 s)
#   LT_GATEWAY_CACHE_BYTES=16777216   gateway [cache] max_bytes (small, so the soak fills it)
#   LT_RESULTS_FILE=loadtests/RESULTS.md   where the Markdown report goes ("" to skip)
#   LT_KEEP=1               keep the temp dir (configs, logs, wrk output) after the run
#   LT_NO_BUILD=1           skip `cargo build` and use target/release as it is
set -euo pipefail

LT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd -- "$LT_DIR/.." && pwd)"
export LT_DIR
# shellcheck source=lib.sh
source "$LT_DIR/lib.sh"
# shellcheck source=../scripts/redis.sh
source "$ROOT/scripts/redis.sh"

case "${1:-}" in
  "") ;;
  -h | --help) sed -n '2,36s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) sed -n '2,36s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac

DURATION=${LT_DURATION:-10s}
WARMUP=${LT_WARMUP:-2s}
PORT_BASE=${LT_PORT_BASE:-28545}
BLOCK_TIME=${LT_BLOCK_TIME:-2}
NGINX_TTL="${BLOCK_TIME}s"
CACHE_MAX=${LT_EDGE_CACHE_BYTES:-4194304}
XFF=${LT_XFF:-81.2.69.142}
KILL_AFTER=${LT_KILL_AFTER:-4}
WORKERS=${LT_WORKERS:-1}
SOAK=${LT_SOAK:-600s}
SOAK_EVERY=${LT_SOAK_EVERY:-10}
GW_CACHE_MAX=${LT_GATEWAY_CACHE_BYTES:-16777216}
ANVIL_WORKERS=${LT_ANVIL_WORKERS-1}
ONLY=${LT_ONLY:-1 key 2 3 5 fill soak 4}
RESULTS_MD=${LT_RESULTS_FILE-$LT_DIR/RESULTS.md}
COMMAND="loadtests/run.sh"
for v in LT_DURATION LT_WARMUP LT_PORT_BASE LT_BLOCK_TIME LT_EDGE_CACHE_BYTES LT_XFF LT_KILL_AFTER LT_WORKERS LT_ANVIL_WORKERS LT_SOAK LT_GATEWAY_CACHE_BYTES LT_ONLY; do
  if [ -n "${!v:-}" ]; then COMMAND="$v='${!v}' $COMMAND"; fi
done

P_ANVIL=$PORT_BASE
P_GW=$((PORT_BASE + 1))
P_GW_ADMIN=$((PORT_BASE + 2))
P_QUIC=$((PORT_BASE + 3))
P_NGINX=$((PORT_BASE + 4))
P_PEER=$((PORT_BASE + 5))
P_PEER_ADMIN=$((PORT_BASE + 6))
P_PEER_QUIC=$((PORT_BASE + 7))
PEER=${LT_PEER:-1}
# Edge nodes: region, latitude, longitude, admin port. The first one serves (nearest to $XFF),
# the second is where workload 4 fails over to.
EDGES=("eu-west 50.11 8.68 $((PORT_BASE + 11))" "us-east 39.04 -77.49 $((PORT_BASE + 12))")
SERVING=eu-west
DEV0=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 # anvil's first dev account
TOKEN="loadtest-join-token-$$-$RANDOM"
# The tenant of workload "key": no limit of any kind, so nothing is ever refused and the run
# measures only what a key costs (look-up, accounting, the shared counters in Redis).
BENCH_KEY=bench-key

declare -A URL=(
  [gateway]="http://127.0.0.1:$P_GW/"
  [gateway-key]="http://127.0.0.1:$P_GW/v1/$BENCH_KEY"
  [nginx]="http://127.0.0.1:$P_NGINX/"
  [anvil]="http://127.0.0.1:$P_ANVIL/"
)
TARGETS=(gateway nginx anvil)
ANVIL_URL=${URL[anvil]}
T_START=$(date +%s)

# ---------------------------------------------------------------- dependencies and build
cd "$ROOT"
have_deps() {
  [ -f .deps/env.sh ] || return 1
  # shellcheck source=/dev/null
  source .deps/env.sh
  [ -x "${ANVIL_BIN:-}" ] && [ -s "${DBIP_V4_MMDB:-}" ] && [ -x "${REDIS_SERVER_BIN:-}" ] &&
    command -v nginx && command -v wrk && command -v python3 && command -v curl && command -v ss &&
    command -v sha256sum
} >/dev/null 2>&1
if ! have_deps; then
  lt_log "installing dependencies (scripts/deps.sh)"
  "$ROOT/scripts/deps.sh"
  have_deps || lt_die "dependencies still missing after scripts/deps.sh"
fi

if [ "${LT_NO_BUILD:-}" = 1 ]; then
  lt_log "LT_NO_BUILD=1: using the binaries already in target/release"
else
  lt_log "building release binaries"
  cargo build --release --quiet --bin gateway --bin edge-node
fi
BUILD_S=$(($(date +%s) - T_START))

for p in "$P_ANVIL" "$P_GW" "$P_GW_ADMIN" "$P_QUIC" "$P_NGINX" "$P_PEER" "$P_PEER_ADMIN" $((PORT_BASE + 11)) $((PORT_BASE + 12)); do
  lt_port_free "$p" || lt_die "port $p is in use; pick other ports with LT_PORT_BASE=..."
done

LT_TMP="$(mktemp -d "${TMPDIR:-/tmp}/meridian-loadtest.XXXXXX")"
LT_RESULTS="$LT_TMP/results.jsonl"
export LT_TMP LT_RESULTS
: >"$LT_RESULTS"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  lt_stop_all
  if [ "$rc" -ne 0 ] || [ "${LT_KEEP:-}" = 1 ]; then
    lt_log "kept $LT_TMP (configs, logs, wrk output)"
  else
    rm -rf "$LT_TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Copies, so that another build in the same target dir cannot swap them mid-run.
mkdir -p "$LT_TMP/bin" "$LT_TMP/keys"
cp target/release/gateway target/release/edge-node "$LT_TMP/bin/"
BIN="$LT_TMP/bin"

# ---------------------------------------------------------------- anvil
lt_log "starting anvil on 127.0.0.1:$P_ANVIL (block time $BLOCK_TIME s)"
# anvil's runtime honours TOKIO_WORKER_THREADS: one thread, like every other server here.
anvil_env=()
[ -z "$ANVIL_WORKERS" ] || anvil_env=(env "TOKIO_WORKER_THREADS=$ANVIL_WORKERS")
lt_start anvil "${anvil_env[@]}" "$ANVIL_BIN" --host 127.0.0.1 --port "$P_ANVIL" --block-time "$BLOCK_TIME" --quiet
lt_wait anvil lt_rpc "$ANVIL_URL" eth_chainId '[]'
# A chain with history: 128 blocks at once, so genesis (workload 1) is final for the edge nodes
# (finality_depth 64) from the start and workload 3 has old and recent blocks to ask about.
lt_rpc "$ANVIL_URL" anvil_mine '["0x80"]' >/dev/null

# ---------------------------------------------------------------- Redis and the tenants file
# Its own redis-server on a free loopback port (never a system one), logging to logs/redis.log.
start_redis "$LT_TMP/logs" || lt_die "redis-server did not start"
lt_adopt redis "$REDIS_PID"
lt_log "started redis-server on 127.0.0.1:$REDIS_PORT"
cat >"$LT_TMP/tenants.toml" <<EOF
# Written by loadtests/run.sh. Every key: config/tenants.example.toml.
# Callers without a key (every workload but "key") are served with no limit.
[keyless]
serve = true
requests_per_second = 0

# Workload "key": sha256("$BENCH_KEY"). Every limit is on, far above what the run sends, so
# each call is charged to every budget (and tokens leased from Redis) yet nothing is refused.
[[tenants]]
name = "bench"
key_sha256 = ["$(printf %s "$BENCH_KEY" | sha256sum | cut -d' ' -f1)"]
requests_per_second = 2000000000
compute_units_per_second = 4000000000
daily_quota = 1000000000000
EOF
# The config names the run's Redis; an inherited override must not send the gateway elsewhere.
unset MERIDIAN_REDIS_URL

# ---------------------------------------------------------------- gateway and edge nodes
cat >"$LT_TMP/gateway.toml" <<EOF
# Written by loadtests/run.sh. Every key: config/gateway.example.toml.
default_chain = "anvil"

[server]
name = "gw-load"
listen = "127.0.0.1:$P_GW"
admin_listen = "127.0.0.1:$P_GW_ADMIN"
# One thread, like nginx's one worker below (and the lowest latency: see README.md).
worker_threads = $WORKERS

[quic]
listen = "127.0.0.1:$P_QUIC"
key_file = "$LT_TMP/keys/gateway.key"
join_tokens = ["$TOKEN"]

[geo]
databases = ["$DBIP_V4_MMDB", "$DBIP_V6_MMDB"]
trusted_proxies = ["127.0.0.0/8"]

[cache]
max_bytes = $GW_CACHE_MAX

[[chains]]
name = "anvil"
chain_id = 31337

[tenants]
file = "$LT_TMP/tenants.toml"
redis_url = "$REDIS_URL"
EOF
FP=$("$BIN/gateway" --config "$LT_TMP/gateway.toml" --print-fingerprint)
lt_log "starting the gateway on 127.0.0.1:$P_GW (QUIC $P_QUIC)"
lt_start gateway "$BIN/gateway" --config "$LT_TMP/gateway.toml"
lt_wait "the gateway" curl -fsS "http://127.0.0.1:$P_GW_ADMIN/healthz"
PEER_LINK=""
PEER_PIN=()
if [ "$PEER" = 1 ]; then
  # The measured gateway's config with the peer's name, ports and key.
  sed -e "s/^name = \"gw-load\"/name = \"gw-peer\"/" \
    -e "s/127.0.0.1:$P_GW\"/127.0.0.1:$P_PEER\"/" \
    -e "s/127.0.0.1:$P_GW_ADMIN\"/127.0.0.1:$P_PEER_ADMIN\"/" \
    -e "s/127.0.0.1:$P_QUIC\"/127.0.0.1:$P_PEER_QUIC\"/" \
    -e "s|keys/gateway.key|keys/gateway-peer.key|" "$LT_TMP/gateway.toml" >"$LT_TMP/gateway-peer.toml"
  FP_PEER=$("$BIN/gateway" --config "$LT_TMP/gateway-peer.toml" --print-fingerprint)
  lt_log "starting the peer gateway gw-peer on 127.0.0.1:$P_PEER (QUIC $P_PEER_QUIC); every edge node joins it too"
  lt_start gateway-peer "$BIN/gateway" --config "$LT_TMP/gateway-peer.toml"
  lt_wait "the peer gateway" curl -fsS "http://127.0.0.1:$P_PEER_ADMIN/healthz"
  PEER_LINK="[[gateways]]
name = \"gw-peer\"
address = \"127.0.0.1:$P_PEER_QUIC\"
fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"
token = \"$TOKEN\""
  PEER_PIN=(--gateway-fingerprint "gw-peer=$FP_PEER")
fi

for e in "${EDGES[@]}"; do
  read -r region lat lon admin <<<"$e"
  cat >"$LT_TMP/edge-$region.toml" <<EOF
# Written by loadtests/run.sh. Every key: config/edge-node.example.toml.
key_file = "$LT_TMP/keys/edge-$region.key"
region = "$region"
latitude = $lat
longitude = $lon
admin_listen = "127.0.0.1:$admin"
worker_threads = $WORKERS

[[gateways]]
name = "gw-load"
address = "127.0.0.1:$P_QUIC"
# The real one is passed with --gateway-fingerprint.
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
token = "$TOKEN"

$PEER_LINK

[cache]
max_bytes = $CACHE_MAX

[[chains]]
chain_id = 31337
upstreams = ["$ANVIL_URL"]
EOF
  lt_log "starting edge node $region (admin 127.0.0.1:$admin)"
  lt_start "edge-$region" "$BIN/edge-node" --config "$LT_TMP/edge-$region.toml" --gateway-fingerprint "gw-load=$FP" "${PEER_PIN[@]}"
done

# Both nodes must serve: a London caller reaches eu-west, a US caller (8.8.8.8) us-east.
# (A `latest` read: never answered by the gateway's own tier, so it always names its node.)
probe="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBalance\",\"params\":[\"$DEV0\",\"latest\"]}"
region_is() { [ "$(lt_region "${URL[gateway]}" "$1" "$probe")" = "$2" ]; }
lt_wait "eu-west serving $XFF" region_is "$XFF" "$SERVING"
lt_wait "us-east serving 8.8.8.8" region_is 8.8.8.8 us-east

# ---------------------------------------------------------------- nginx
NG="$LT_TMP/nginx"
mkdir -p "$NG/cache" "$NG/tmp"
nginx_user=""
if [ "$(id -u)" -eq 0 ]; then nginx_user="user root;"; fi # workers must write under $LT_TMP (mode 700)
cat >"$NG/nginx.conf" <<EOF
# Written by loadtests/run.sh: the proxy_cache a user would put in front of a node.
$nginx_user
worker_processes 1;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  proxy_cache_path $NG/cache levels=1:2 keys_zone=rpc:32m max_size=512m inactive=60s use_temp_path=off;
  upstream anvil {
    server 127.0.0.1:$P_ANVIL;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    # The body must stay in memory for \$request_body (part of the cache key) to be set.
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    # The whole cache key (so the body) must fit in proxy_buffer_size; with the default 4k nginx
    # logs "proxy_buffer_size 4096 is not enough for cache key" and does not cache bodies over
    # ~4 KB, such as a batch of 50 calls.
    proxy_buffer_size 64k;
    proxy_buffers 16 64k;
    location / {
      proxy_pass http://anvil;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache rpc;
      proxy_cache_methods POST;
      proxy_cache_key "\$request_uri|\$request_body";
      proxy_cache_valid 200 $NGINX_TTL;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }
}
EOF
lt_log "starting nginx on 127.0.0.1:$P_NGINX (proxy_cache, TTL $NGINX_TTL)"
lt_start nginx nginx -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log"
lt_wait nginx lt_rpc "${URL[nginx]}" eth_chainId '[]'

# ---------------------------------------------------------------- helpers for the workloads

# Records VmRSS of the gateway and edge nodes and each node's edge_cache_bytes.
mem_snapshot() { # workload, before|after
  local edges="" e region admin pid rss bytes entries
  for e in "${EDGES[@]}"; do
    read -r region _ _ admin <<<"$e"
    pid=$(lt_pid "edge-$region")
    rss=0
    [ -z "$pid" ] || rss=$(lt_rss_kb "$pid")
    if [ "$rss" -gt 0 ]; then
      bytes=$(lt_metric "http://127.0.0.1:$admin/metrics" edge_cache_bytes)
      entries=$(lt_metric "http://127.0.0.1:$admin/metrics" edge_cache_entries)
    else
      bytes=null entries=null
    fi
    edges+="${edges:+,}\"$region\":{\"rss_kb\":$rss,\"cache_bytes\":$bytes,\"cache_entries\":$entries}"
  done
  lt_record "{\"kind\":\"mem\",\"workload\":\"$1\",\"when\":\"$2\",\"gateway_rss_kb\":$(lt_rss_kb "$(lt_pid gateway)"),\"edges\":{$edges}}"
}

# warm SCRIPT URL CONNECTIONS: an unrecorded wrk run (fills caches, opens connections).
warm() {
  [ "$WARMUP" = 0 ] || lt_run_wrk /dev/null -t1 "-c$3" "-d$WARMUP" -s "$LT_DIR/$1" "$2" || true
}

# measure WORKLOAD SCRIPT CONNECTIONS TARGET...: warm-up then a recorded run per target.
measure() {
  local wl=$1 script=$2 conns=$3 t
  shift 3
  for t in "$@"; do
    warm "$script" "${URL[$t]}" "$conns"
    lt_wrk "$wl" "$t" "${URL[$t]}" "$script" "$conns" "$DURATION"
  done
}

edge_admin_port() { # region
  local e region admin
  for e in "${EDGES[@]}"; do
    read -r region _ _ admin <<<"$e"
    if [ "$region" = "$1" ]; then echo "$admin"; fi
  done
}

check_alive() {
  local e region
  lt_alive anvil
  lt_alive redis
  lt_alive gateway
  lt_alive nginx
  for e in "${EDGES[@]}"; do
    read -r region _ _ _ <<<"$e"
    if [ -n "$(lt_pid "edge-$region")" ]; then lt_alive "edge-$region"; fi
  done
}

export LT_XFF="$XFF"
GENESIS=$(lt_rpc "$ANVIL_URL" eth_getBlockByNumber '["0x0",false]' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
BY_HASH="{\"blockHash\":\"$GENESIS\"}"
BODY_HASH="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBalance\",\"params\":[\"$DEV0\",$BY_HASH]}"
BODY_NUM="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBalance\",\"params\":[\"$DEV0\",\"0x0\"]}"
BODY_LATEST="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBalance\",\"params\":[\"$DEV0\",\"latest\"]}"

# Every target must give anvil's answer before it is measured (gateway-key: the same gateway with
# the bench tenant's key in the URL).
want=$(lt_rpc "$ANVIL_URL" eth_getBalance "[\"$DEV0\",$BY_HASH]")
for t in gateway gateway-key nginx; do
  got=$(lt_rpc "${URL[$t]}" eth_getBalance "[\"$DEV0\",$BY_HASH]")
  [ "$got" = "$want" ] || lt_die "$t answered $got, anvil $want"
done
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- workloads

workload_1() {
  lt_log "workload 1: cache hit, one hot read (c32)"
  LT_BODY="$BODY_HASH" measure 1a hot.lua 32 "${TARGETS[@]}"
  LT_BODY="$BODY_NUM" measure 1b hot.lua 32 "${TARGETS[@]}"
  LT_BODY="$BODY_HASH" LT_UNIQUE_IDS=1 measure 1c hot.lua 32 gateway nginx
  LT_BODY="$BODY_LATEST" measure 1d hot.lua 32 "${TARGETS[@]}"
}

# Workload 1a again, keyless and then with the bench tenant's key in the URL (/v1/bench-key), back
# to back so that the ratio between them is what a key costs; the tenant's calls counter must have
# seen the keyed requests (else they were not served as the tenant's).
workload_key() {
  lt_log "workload key: cache hit (1a) keyless, then as tenant bench with its key in the URL (c32)"
  local m0 m1 gw_admin
  gw_admin="http://127.0.0.1:$P_GW_ADMIN/metrics"
  m0=$(lt_metric "$gw_admin" gateway_tenant_calls_total 'tenant="bench"')
  LT_BODY="$BODY_HASH" measure key hot.lua 32 gateway gateway-key
  m1=$(lt_metric "$gw_admin" gateway_tenant_calls_total 'tenant="bench"')
  [ "${m1%.*}" -gt "${m0%.*}" ] ||
    lt_die "workload key: gateway_tenant_calls_total{tenant=\"bench\"} did not grow ($m0 -> $m1)"
  lt_record "{\"kind\":\"tenant\",\"workload\":\"key\",\"tenant\":\"bench\",\"calls\":$((${m1%.*} - ${m0%.*})),\"limited\":$(lt_metric_sum "$gw_admin" gateway_tenant_limited_total 'tenant="bench"')}"
}

workload_2() {
  lt_log "workload 2: miss path, random address at latest (c1, c32)"
  LT_BLOCK='"latest"' measure 2-c1 miss.lua 1 "${TARGETS[@]}"
  LT_BLOCK='"latest"' measure 2-c32 miss.lua 32 "${TARGETS[@]}"
}

workload_3() {
  lt_log "workload 3: mixed Zipf reads while blocks are produced (c32)"
  local pool t txs
  pool=$(python3 "$LT_DIR/mixed.py" pool --rpc "$ANVIL_URL" --lua "$LT_TMP/pool.lua" --json "$LT_TMP/pool.json")
  lt_start heads python3 "$LT_DIR/mixed.py" heads --rpc "$ANVIL_URL" --out "$LT_TMP/heads.txt"
  lt_start txs python3 "$LT_DIR/mixed.py" txs --rpc "$ANVIL_URL"
  local gw_admin="http://127.0.0.1:$P_GW_ADMIN/metrics" before
  before=$(audit_counts "$gw_admin")
  for t in "${TARGETS[@]}"; do
    LT_POOL="$LT_TMP/pool.lua" LT_SAMPLES="$LT_TMP/warm-samples" warm mixed.lua "${URL[$t]}" 32
    LT_POOL="$LT_TMP/pool.lua" LT_SAMPLES="$LT_TMP/samples-$t" \
      lt_wrk 3 "$t" "${URL[$t]}" mixed.lua 32 "$DURATION"
  done
  sleep 0.5 # let the head watcher see the last block
  lt_stop txs
  lt_stop heads
  txs=$(grep -o '"sent": [0-9]*' "$LT_TMP/logs/txs.log" | grep -o '[0-9]*$' || echo null)
  lt_record "{\"kind\":\"pool\",\"pool\":$pool,\"txs\":$txs}"
  lt_record "{\"kind\":\"audit\",\"before\":$before,\"after\":$(audit_counts "$gw_admin")}"
  for t in "${TARGETS[@]}"; do
    lt_record "{\"kind\":\"stale\",\"target\":\"$t\",\"stale\":$(python3 "$LT_DIR/mixed.py" stale \
      --rpc "$ANVIL_URL" --pool "$LT_TMP/pool.json" --heads "$LT_TMP/heads.txt" \
      --samples "$LT_TMP/samples-$t".*)}"
  done
}

# audit_counts ADMIN_METRICS_URL: the gateway's audit counters and the calls it served, as JSON
# (workload 3 reports what audits at the default share add upstream).
audit_counts() {
  printf '{"audit_calls":%s,"audits":%s,"skipped":%s,"wrong":%s,"calls":%s,"node_calls":%s}' \
    "$(lt_metric_sum "$1" gateway_audit_calls_total 'chain="')" \
    "$(lt_metric_sum "$1" gateway_audits_total 'chain="')" \
    "$(lt_metric_sum "$1" gateway_audits_total 'outcome="skipped"')" \
    "$(lt_metric_sum "$1" gateway_audits_total 'outcome="wrong"')" \
    "$(lt_metric_sum "$1" gateway_rpc_calls_total 'chain="')" \
    "$(lt_metric_sum "$1" gateway_cache_results_total 'tier="edge"')"
}

workload_5() {
  lt_log "workload 5: batches of 50 (c32)"
  LT_BLOCK="$BY_HASH" measure 5 batch.lua 32 "${TARGETS[@]}"
}

workload_fill() {
  lt_log "cache fill: unique cacheable answers into a $CACHE_MAX-byte edge cache (c32)"
  local admin m0 m1 after weight
  admin="http://127.0.0.1:$(edge_admin_port "$SERVING")/metrics"
  m0=$(lt_metric "$admin" edge_cache_requests_total 'result="miss"')
  LT_BLOCK="$BY_HASH" lt_wrk fill gateway "${URL[gateway]}" miss.lua 32 "$DURATION"
  sleep 1 # moka applies evictions in the background
  m1=$(lt_metric "$admin" edge_cache_requests_total 'result="miss"')
  after=$(lt_metric "$admin" edge_cache_bytes)
  # The edge cache's weigher: key ("31337|method|canonical params") + value ("0x0") + the
  # per-entry overhead (daemon::weigh::ENTRY_OVERHEAD_BYTES).
  weight=$(($(printf '31337|eth_getBalance|["0x%040d",{"blockHash":"%s"}]' 0 "$GENESIS" | wc -c) + 3 + 480))
  lt_record "{\"kind\":\"fill\",\"misses\":$((${m1%.*} - ${m0%.*})),\"entry_bytes\":$weight,\"inserted_bytes\":$(((${m1%.*} - ${m0%.*}) * weight)),\"max_bytes\":$CACHE_MAX,\"cache_bytes_after\":${after%.*}}"
}

workload_4() {
  lt_log "workload 4: failover, SIGKILL $SERVING after $KILL_AFTER s (c32)"
  [ "$KILL_AFTER" -lt "${DURATION%s}" ] 2>/dev/null ||
    lt_die "LT_KILL_AFTER ($KILL_AFTER) must be below LT_DURATION ($DURATION, in s)"
  local wrk_pid kill_at
  # A fresh question per request: no cache tier can answer, so every request travels to a node.
  LT_FRESH=1 LT_EVENTS="$LT_TMP/events" \
    lt_wrk 4 gateway "${URL[gateway]}" failover.lua 32 "$DURATION" --timeout 10s &
  wrk_pid=$!
  LT_WRK_PID=$wrk_pid
  sleep "$KILL_AFTER"
  kill_at=$(date +%s.%N)
  lt_stop "edge-$SERVING" KILL
  wait "$wrk_pid" || lt_die "workload 4: wrk failed"
  LT_WRK_PID=""
  lt_record "{\"kind\":\"failover\",\"kill_after_s\":$KILL_AFTER,\"failover\":$(python3 "$LT_DIR/report.py" failover \
    --events "$LT_TMP/events".* --kill-at "$kill_at" --region "$SERVING")}"
}

# soak: the cache-fill load (every answer new and cacheable, so both cache tiers fill and then
# evict for the whole run) for $SOAK, with memory read every $SOAK_EVERY s. Growth once the caches
# are full would be a leak; report.py compares the second half of the run with its middle.
workload_soak() {
  lt_log "soak: unique cacheable answers for $SOAK (c32), memory every $SOAK_EVERY s"
  local admin gw_admin wrk_pid t0 samples="" edge_pid
  admin="http://127.0.0.1:$(edge_admin_port "$SERVING")/metrics"
  gw_admin="http://127.0.0.1:$P_GW_ADMIN/metrics"
  edge_pid=$(lt_pid "edge-$SERVING")
  LT_BLOCK="$BY_HASH" lt_wrk soak gateway "${URL[gateway]}" miss.lua 32 "$SOAK" &
  wrk_pid=$!
  LT_WRK_PID=$wrk_pid
  t0=$(date +%s)
  while kill -0 "$wrk_pid" 2>/dev/null; do
    samples+="${samples:+,}{\"t\":$(($(date +%s) - t0)),\"gateway_rss_kb\":$(lt_rss_kb "$(lt_pid gateway)"),\
\"edge_rss_kb\":$(lt_rss_kb "$edge_pid"),\"edge_cache_bytes\":$(lt_metric "$admin" edge_cache_bytes),\
\"gateway_cache_bytes\":$(lt_metric "$gw_admin" gateway_answer_cache_bytes)}"
    sleep "$SOAK_EVERY" & wait $! || true
  done
  wait "$wrk_pid" || lt_die "soak: wrk failed"
  LT_WRK_PID=""
  lt_record "{\"kind\":\"soak\",\"duration\":\"$SOAK\",\"region\":\"$SERVING\",\"edge_max_bytes\":$CACHE_MAX,\"gateway_max_bytes\":$GW_CACHE_MAX,\"samples\":[$samples]}"
}

# Not a measurement: keeps the stack up for profiling (perf, callgrind) until Ctrl-C.
workload_hold() {
  lt_log "holding: gateway ${URL[gateway]} (keyed: ${URL[gateway-key]}) nginx ${URL[nginx]} anvil ${URL[anvil]}; Ctrl-C stops"
  lt_log "pids: gateway $(lt_pid gateway), edge-$SERVING $(lt_pid "edge-$SERVING"), nginx $(lt_pid nginx)"
  lt_log "bodies: $LT_TMP/bodies.env"
  printf 'BODY_HASH=%q\nBODY_NUM=%q\nBODY_LATEST=%q\n' "$BODY_HASH" "$BODY_NUM" "$BODY_LATEST" >"$LT_TMP/bodies.env"
  while :; do sleep 3600 & wait $!; done # wait: so the INT/TERM trap runs at once
}

for w in $ONLY; do
  declare -F "workload_$w" >/dev/null || lt_die "unknown workload $w (LT_ONLY)"
  mem_snapshot "$w" before
  "workload_$w"
  mem_snapshot "$w" after
  check_alive
done

# ---------------------------------------------------------------- report
elapsed=$(($(date +%s) - T_START))
dirty=$(git status --porcelain -- gateway edge-node proto Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | paste -sd' ' - || true)
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
lt_record "{\"kind\":\"info\",\"date\":$(jstr "$(date -u '+%Y-%m-%d %H:%M UTC')"),\
\"commit\":$(jstr "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"),\"dirty\":$(jstr "$dirty"),\
\"rustc\":$(jstr "$(rustc --version)"),\"anvil\":$(jstr "$("$ANVIL_BIN" --version | head -n1 | sed 's/.*Version: *//')"),\
\"nginx\":$(jstr "$(nginx -v 2>&1)"),\"redis\":$(jstr "$("$REDIS_SERVER_BIN" --version | sed 's/^Redis server v=\([^ ]*\).*/\1/')"),\"wrk\":$(jstr "$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"),\
\"machine\":{\"nproc\":$(nproc),\"cpu\":$(jstr "$cpu"),\"mem\":$(jstr "$mem"),\"kernel\":$(jstr "$(uname -r)"),\"loadavg\":$(jstr "$LOADAVG_START")},\
\"duration\":$(jstr "$DURATION"),\"warmup\":$(jstr "$WARMUP"),\"block_time\":$BLOCK_TIME,\"nginx_ttl\":$(jstr "$NGINX_TTL"),\
\"edges\":${#EDGES[@]},\"workers\":$WORKERS,\"anvil_workers\":$(jstr "${ANVIL_WORKERS:-default}"),\"xff\":$(jstr "$XFF"),\"serving_region\":$(jstr "$SERVING"),\"edge_cache_max_bytes\":$CACHE_MAX,\
\"nginx_errors\":$(grep -c '\[error\]' "$NG/error.log" || true),\"nginx_first_error\":$(jstr "$(grep -m1 '\[error\]' "$NG/error.log" || true)"),\
\"elapsed\":$(jstr "$((elapsed / 60)) min $((elapsed % 60)) s"),\"build_s\":$BUILD_S}"

echo
python3 "$LT_DIR/report.py" table --results "$LT_RESULTS"
if [ -n "$RESULTS_MD" ]; then
  python3 "$LT_DIR/report.py" results --results "$LT_RESULTS" --command "$COMMAND" >"$RESULTS_MD.tmp"
  mv "$RESULTS_MD.tmp" "$RESULTS_MD"
  lt_log "wrote $RESULTS_MD"
fi
lt_log "done in $((elapsed / 60)) min $((elapsed % 60)) s"
