#!/usr/bin/env bash
# Meridian load tests: gateway + edge nodes vs nginx proxy_cache vs anvil direct, and a bare hyper
# server (the ceiling), same workloads, same run, one table of ratios. See loadtests/README.md.
#
#   loadtests/run.sh
#
# Installs what is missing (scripts/deps.sh), builds the release binaries and the ceiling
# (gateway/examples/ceiling.rs), starts on 127.0.0.1 only: anvil, a redis-server (the tenants'
# shared limits; on a free port), three gateways sharing it (gw-load, tuned, measured throughout,
# with a tenants file: tenant "bench", key "bench-key", limits far above the load; gw-demo, the
# shipped runtime and cache defaults; gw-edge, both gateway cache tiers off), two edge nodes
# joined to all three (eu-west serves, us-east is the failover node), nginx and the ceiling; runs
# the workloads with wrk (idle: loadtests/idle.py); prints the table and writes
# loadtests/RESULTS.md. Everything it starts is stopped on exit, Ctrl-C included. About 22
# minutes plus the build.
#
# Environment (all optional):
#   LT_DURATION=10s         length of each measured wrk run
#   LT_WARMUP=2s            unrecorded wrk run before each measured run (0 to skip)
#   LT_ROUNDS=5             rounds of workloads 1a, 1b, edge and key (the bars' ratios): each round
#                           runs every target in turn for LT_ROUND_DURATION=4s, and the report
#                           takes each target's median, so a drift in the machine's speed over
#                           those minutes touches every target alike
#   LT_PORT_BASE=28545      ports used: BASE .. BASE+13
#   LT_BLOCK_TIME=2         anvil --block-time (s); nginx proxy_cache_valid is the same
#   LT_EDGE_CACHE_BYTES=4194304   edge [cache] max_bytes (small, so the cache-fill run hits it)
#   LT_XFF=81.2.69.142      caller address sent in X-Forwarded-For (London: eu-west is nearest)
#   LT_KILL_AFTER=4         seconds into workload 4 when the serving node is SIGKILLed
#   LT_WORKERS=1            worker_threads of gw-load, gw-edge and each edge node (0: one per core)
#   LT_PEER=1               gw-demo: a gateway with the demo config's runtime and cache sizes
#                           (no worker_threads, no [cache]: shipped defaults) that every edge
#                           node also joins, measured as target gateway-demo in 1a, 1b, 5 and
#                           idle (0: not started, no gateway-demo rows)
#   LT_ANVIL_WORKERS=1      anvil's runtime threads (TOKIO_WORKER_THREADS; "" for its default)
#   LT_ONLY="1 edge key 2 3 5 fill soak 4 idle"   workloads to run, in this order ("hold": keep
#                           the stack up for profiling until Ctrl-C)
#   LT_SOAK=600s            length of the soak run (memory read every LT_SOAK_EVERY=10 s)
#   LT_GATEWAY_CACHE_BYTES=16777216   gw-load [cache] max_bytes (small, so the soak fills it)
#   LT_IDLE_CONNECTIONS=10000   keep-alive connections held open per target in workload idle
#   LT_RESULTS_FILE=loadtests/RESULTS.md   where the Markdown report goes ("" to skip)
#   LT_KEEP=1               keep the temp dir (configs, logs, wrk output) after the run
#   LT_BIN_DIR=target/release   where gateway, edge-node and examples/ceiling are copied from
#                           (relative to the repository; default $CARGO_TARGET_DIR/release
#                           when CARGO_TARGET_DIR is set, which is also where cargo builds)
#   LT_NO_BUILD=1           skip `cargo build` and use LT_BIN_DIR as it is
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
  -h | --help) sed -n '2,41s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) sed -n '2,41s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac

DURATION=${LT_DURATION:-10s}
WARMUP=${LT_WARMUP:-2s}
ROUNDS=${LT_ROUNDS:-5}
ROUND_DURATION=${LT_ROUND_DURATION:-4s}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: LT_ROUNDS must be a whole number of at least 1, not '$ROUNDS'" >&2; exit 2; }
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
IDLE_CONNS=${LT_IDLE_CONNECTIONS:-10000}
# idle comes last: the servers keep the memory of 10,000 closed connections for reuse (RSS does
# not go back down), which would hide that much growth from the soak run's leak check.
ONLY=${LT_ONLY:-1 edge key 2 3 5 fill soak 4 idle}
RESULTS_MD=${LT_RESULTS_FILE-$LT_DIR/RESULTS.md}
COMMAND="loadtests/run.sh"
for v in LT_DURATION LT_WARMUP LT_ROUNDS LT_ROUND_DURATION LT_PORT_BASE LT_BLOCK_TIME LT_EDGE_CACHE_BYTES LT_XFF LT_KILL_AFTER LT_WORKERS LT_ANVIL_WORKERS LT_PEER LT_SOAK LT_GATEWAY_CACHE_BYTES LT_IDLE_CONNECTIONS LT_ONLY; do
  if [ -n "${!v:-}" ]; then COMMAND="$v='${!v}' $COMMAND"; fi
done

P_ANVIL=$PORT_BASE
P_GW=$((PORT_BASE + 1))
P_GW_ADMIN=$((PORT_BASE + 2))
P_QUIC=$((PORT_BASE + 3))
P_NGINX=$((PORT_BASE + 4))
P_DEMO=$((PORT_BASE + 5))
P_DEMO_ADMIN=$((PORT_BASE + 6))
P_DEMO_QUIC=$((PORT_BASE + 7))
P_EDGEGW=$((PORT_BASE + 8))
P_EDGEGW_ADMIN=$((PORT_BASE + 9))
P_EDGEGW_QUIC=$((PORT_BASE + 10))
P_CEILING=$((PORT_BASE + 13))
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
  [gateway-demo]="http://127.0.0.1:$P_DEMO/"
  [gateway-edge]="http://127.0.0.1:$P_EDGEGW/"
  [nginx]="http://127.0.0.1:$P_NGINX/"
  [anvil]="http://127.0.0.1:$P_ANVIL/"
  [ceiling]="http://127.0.0.1:$P_CEILING/"
)
TARGETS=(gateway nginx anvil)
# Workloads 1a, 1b and 5 also measure the demo config (LT_PEER=1); 1a and 1b the ceiling, whose
# one fixed answer is right only for those two bodies.
DEMO=()
if [ "$PEER" = 1 ]; then DEMO=(gateway-demo); fi
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

BIN_DIR=${LT_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
if [ "${LT_NO_BUILD:-}" = 1 ]; then
  lt_log "LT_NO_BUILD=1: using the binaries already in $BIN_DIR"
else
  lt_log "building release binaries and the ceiling (gateway/examples/ceiling.rs)"
  cargo build --release --quiet --bin gateway --bin edge-node --example ceiling
fi
BUILD_S=$(($(date +%s) - T_START))
# The code measured: the tree as it was built (the report is written minutes later, and an edit
# or a commit made during the run must not be credited with it).
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain -- gateway edge-node proto Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | paste -sd' ' - || true)
for b in gateway edge-node examples/ceiling; do
  [ -x "$BIN_DIR/$b" ] || lt_die "$BIN_DIR/$b is missing (LT_BIN_DIR; without LT_NO_BUILD=1 run.sh builds it)"
done

# Every port from BASE to BASE+13 (+11 and +12: the edge nodes' admin listeners).
for ((p = PORT_BASE; p <= PORT_BASE + 13; p++)); do
  lt_port_free "$p" || lt_die "port $p is in use; pick other ports with LT_PORT_BASE=..."
done

# Workload idle holds LT_IDLE_CONNECTIONS connections per server, and the servers inherit this
# limit (nginx raises its own, worker_rlimit_nofile); without root, the hard limit is as far as
# it goes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" = unlimited ]; then NOFILE=1048576; fi

LT_TMP="$(mktemp -d "${TMPDIR:-/tmp}/meridian-loadtest.XXXXXX")"
LT_RESULTS="$LT_TMP/results.jsonl"
export LT_TMP LT_RESULTS
: >"$LT_RESULTS"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  lt_stop_all
  case "${NG_FILES:-}" in /dev/shm/meridian-nginx.*) rm -rf "$NG_FILES" ;; esac
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
cp "$BIN_DIR/gateway" "$BIN_DIR/edge-node" "$BIN_DIR/examples/ceiling" "$LT_TMP/bin/"
BIN="$LT_TMP/bin"

# ---------------------------------------------------------------- the host
# What a hop costs here before anything runs: each cross-process hop of a request pays a
# wake-up, and on a VM that depends on the host (loadtests/host.py).
lt_log "measuring wake-ups on this host (loadtests/host.py)"
# A probe that fails leaves the run without its Host line, not without its report.
host=$(python3 "$LT_DIR/host.py") || host=null
lt_record "{\"kind\":\"host\",\"host\":$host}"

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

# ---------------------------------------------------------------- gateways and edge nodes
# gateway_toml NAME HTTP_PORT ADMIN_PORT QUIC_PORT SERVER_LINES CACHE_SECTION: one gateway's
# config. All of them share geo (trusted proxies), the tenants file and its Redis.
gateway_toml() {
  cat <<EOF
# Written by loadtests/run.sh. Every key: config/gateway.example.toml.
default_chain = "anvil"

[server]
name = "$1"
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
# Workload idle holds $IDLE_CONNS keep-alive connections open: at the default (10000) the
# gateway would shed the oldest idle ones once the probes' and wrk's connections come on top.
max_connections = $((IDLE_CONNS * 2 > 10000 ? IDLE_CONNS * 2 : 10000))
$5

[quic]
listen = "127.0.0.1:$4"
key_file = "$LT_TMP/keys/$1.key"
join_tokens = ["$TOKEN"]

[geo]
databases = ["$DBIP_V4_MMDB", "$DBIP_V6_MMDB"]
trusted_proxies = ["127.0.0.0/8"]

$6

[[chains]]
name = "anvil"
chain_id = 31337

[tenants]
file = "$LT_TMP/tenants.toml"
redis_url = "$REDIS_URL"
EOF
}

# gw-load, the measured gateway: one thread, a small gateway tier (so the soak run fills it).
gateway_toml gw-load "$P_GW" "$P_GW_ADMIN" "$P_QUIC" \
  "# One thread, like nginx's one worker below (and the lowest latency: see README.md).
worker_threads = $WORKERS" \
  "[cache]
max_bytes = $GW_CACHE_MAX" >"$LT_TMP/gateway.toml"
# gw-edge, for workload edge: both gateway tiers off, so every answer is the edge node's.
gateway_toml gw-edge "$P_EDGEGW" "$P_EDGEGW_ADMIN" "$P_EDGEGW_QUIC" \
  "worker_threads = $WORKERS" \
  "[cache]
# Both gateway tiers off (final answers and tip answers): every call goes to an edge node.
max_bytes = 0
tip_max_bytes = 0" >"$LT_TMP/gateway-edge.toml"
# gw-demo: the demo configuration (config/gateway.toml) as shipped in what sets the speed, i.e.
# no worker_threads (one per core) and no [cache] (max_bytes 64 MiB, tip_max_bytes 16 MiB).
# Geo, trusted proxies, the tenants file and Redis are the measured gateway's: the run's tenants
# file, like the demo's config/tenants.toml, serves keyless callers without a limit (the demo's
# differs in its tenant and compute-unit table, which keyless calls never touch), and the demo's
# own Redis, admin token and location settings are scripts/demo.sh's, not a load test's.
gateway_toml gw-demo "$P_DEMO" "$P_DEMO_ADMIN" "$P_DEMO_QUIC" \
  "# No worker_threads: the shipped default (one per core), as in config/gateway.toml." \
  "# No [cache]: the shipped bounds, as in config/gateway.toml." >"$LT_TMP/gateway-demo.toml"

# start_gateway PROCESS_NAME CONFIG HTTP_PORT QUIC_PORT ADMIN_PORT WHAT: starts one and waits
# for its /healthz.
start_gateway() {
  lt_log "starting $6 on 127.0.0.1:$3 (QUIC $4)"
  lt_start "$1" "$BIN/gateway" --config "$2"
  lt_wait "$6" curl -fsS "http://127.0.0.1:$5/healthz"
}
# The edge nodes pin each gateway's QUIC key (--gateway-fingerprint NAME=FP).
FP=$("$BIN/gateway" --config "$LT_TMP/gateway.toml" --print-fingerprint)
FP_EDGEGW=$("$BIN/gateway" --config "$LT_TMP/gateway-edge.toml" --print-fingerprint)
start_gateway gateway "$LT_TMP/gateway.toml" "$P_GW" "$P_QUIC" "$P_GW_ADMIN" "gw-load (measured gateway)"
start_gateway gateway-edge "$LT_TMP/gateway-edge.toml" "$P_EDGEGW" "$P_EDGEGW_QUIC" "$P_EDGEGW_ADMIN" \
  "gw-edge (gateway tiers off, workload edge)"
# The [[gateways]] every edge node joins beyond gw-load, and their pins.
GW_LINKS="[[gateways]]
name = \"gw-edge\"
address = \"127.0.0.1:$P_EDGEGW_QUIC\"
fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"
token = \"$TOKEN\""
GW_PINS=(--gateway-fingerprint "gw-edge=$FP_EDGEGW")
if [ "$PEER" = 1 ]; then
  FP_DEMO=$("$BIN/gateway" --config "$LT_TMP/gateway-demo.toml" --print-fingerprint)
  start_gateway gateway-demo "$LT_TMP/gateway-demo.toml" "$P_DEMO" "$P_DEMO_QUIC" "$P_DEMO_ADMIN" \
    "gw-demo (demo config: shipped defaults)"
  GW_LINKS+="

[[gateways]]
name = \"gw-demo\"
address = \"127.0.0.1:$P_DEMO_QUIC\"
fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"
token = \"$TOKEN\""
  GW_PINS+=(--gateway-fingerprint "gw-demo=$FP_DEMO")
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

$GW_LINKS

[cache]
max_bytes = $CACHE_MAX

[[chains]]
chain_id = 31337
upstreams = ["$ANVIL_URL"]
EOF
  lt_log "starting edge node $region (admin 127.0.0.1:$admin)"
  lt_start "edge-$region" "$BIN/edge-node" --config "$LT_TMP/edge-$region.toml" --gateway-fingerprint "gw-load=$FP" "${GW_PINS[@]}"
done

# Both nodes must serve: a London caller reaches eu-west, a US caller (8.8.8.8) us-east.
# (A `latest` read: never answered by the gateway's own tier, so it always names its node.)
probe="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBalance\",\"params\":[\"$DEV0\",\"latest\"]}"
region_is() { [ "$(lt_region "${URL[${3:-gateway}]}" "$1" "$probe")" = "$2" ]; } # XFF REGION [TARGET]
lt_wait "eu-west serving $XFF" region_is "$XFF" "$SERVING"
lt_wait "us-east serving 8.8.8.8" region_is 8.8.8.8 us-east
# The other gateways have the same nodes (so the same routing) once both have joined them too.
for t in gateway-edge "${DEMO[@]}"; do
  lt_wait "$SERVING serving $XFF through $t" region_is "$XFF" "$SERVING" "$t"
  lt_wait "us-east serving 8.8.8.8 through $t" region_is 8.8.8.8 us-east "$t"
done

# ---------------------------------------------------------------- the ceiling
lt_log "starting the ceiling (bare hyper, one thread) on 127.0.0.1:$P_CEILING"
lt_start ceiling "$BIN/ceiling" "127.0.0.1:$P_CEILING"
lt_wait "the ceiling" lt_rpc "${URL[ceiling]}" eth_chainId '[]'

# ---------------------------------------------------------------- nginx
NG="$LT_TMP/nginx"
# Its cache and temp files live in memory (/dev/shm) where there is one, as a tuned cache's
# would. On disk, the writeback of the ~200k cache files workload 2 leaves went on for minutes
# afterwards and took CPU from whatever was measured next (batch p99 1.5 ms alone, 3.9 ms just
# after workload 2, for us and for nginx alike).
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  NG_FILES=$(mktemp -d /dev/shm/meridian-nginx.XXXXXX)
else
  NG_FILES="$NG"
fi
mkdir -p "$NG" "$NG_FILES/cache" "$NG_FILES/tmp"
nginx_user=""
if [ "$(id -u)" -eq 0 ]; then nginx_user="user root;"; fi # workers must write under $LT_TMP (mode 700)
cat >"$NG/nginx.conf" <<EOF
# Written by loadtests/run.sh: the proxy_cache a user would put in front of a node.
$nginx_user
worker_processes 1;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
# Workload idle holds $IDLE_CONNS client connections on top of the upstream ones.
worker_rlimit_nofile $NOFILE;
events { worker_connections $((IDLE_CONNS * 2 > 4096 ? IDLE_CONNS * 2 : 4096)); }
http {
  access_log off;
  client_body_temp_path $NG_FILES/tmp/body;
  proxy_temp_path $NG_FILES/tmp/proxy;
  fastcgi_temp_path $NG_FILES/tmp/fastcgi;
  uwsgi_temp_path $NG_FILES/tmp/uwsgi;
  scgi_temp_path $NG_FILES/tmp/scgi;
  proxy_cache_path $NG_FILES/cache levels=1:2 keys_zone=rpc:32m max_size=512m inactive=60s use_temp_path=off;
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

# measure_rounds WORKLOAD SCRIPT CONNECTIONS TARGET...: $ROUNDS rounds of every target in turn,
# each run ($ROUND_DURATION) after its warm-up; the report takes each target's median. Taken one
# after another, the targets of one workload were minutes apart, and this machine's speed drifts
# by a tenth or more over minutes: interleaved, a drift touches every target alike.
# ROUND_AFTER_WARM and ROUND_AFTER_RUN, when set, name functions called with the target and the
# round right before and right after each measured run (after its warm-up).
measure_rounds() {
  local wl=$1 script=$2 conns=$3 r t
  shift 3
  for ((r = 1; r <= ROUNDS; r++)); do
    for t in "$@"; do
      warm "$script" "${URL[$t]}" "$conns"
      [ -z "${ROUND_AFTER_WARM:-}" ] || "$ROUND_AFTER_WARM" "$t" "$r"
      LT_ROUND=$r lt_wrk "$wl" "$t" "${URL[$t]}" "$script" "$conns" "$ROUND_DURATION"
      [ -z "${ROUND_AFTER_RUN:-}" ] || "$ROUND_AFTER_RUN" "$t" "$r"
    done
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
  lt_alive gateway-edge
  if [ "$PEER" = 1 ]; then lt_alive gateway-demo; fi
  lt_alive nginx
  lt_alive ceiling
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
# the bench tenant's key in the URL; the ceiling's one fixed answer must be anvil's to both
# bodies it is measured with, 1a's and 1b's).
want=$(lt_rpc "$ANVIL_URL" eth_getBalance "[\"$DEV0\",$BY_HASH]")
for t in gateway gateway-key gateway-edge "${DEMO[@]}" nginx ceiling; do
  got=$(lt_rpc "${URL[$t]}" eth_getBalance "[\"$DEV0\",$BY_HASH]")
  [ "$got" = "$want" ] || lt_die "$t answered $got, anvil $want"
done
want=$(lt_rpc "$ANVIL_URL" eth_getBalance "[\"$DEV0\",\"0x0\"]")
got=$(lt_rpc "${URL[ceiling]}" eth_getBalance "[\"$DEV0\",\"0x0\"]")
[ "$got" = "$want" ] || lt_die "the ceiling answers $got, anvil $want at 0x0"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- workloads

workload_1() {
  lt_log "workload 1: cache hit, one hot read (c32)"
  LT_BODY="$BODY_HASH" measure_rounds 1a hot.lua 32 gateway "${DEMO[@]}" nginx anvil ceiling
  LT_BODY="$BODY_NUM" measure_rounds 1b hot.lua 32 gateway "${DEMO[@]}" nginx anvil ceiling
  LT_BODY="$BODY_HASH" LT_UNIQUE_IDS=1 measure 1c hot.lua 32 gateway nginx
  LT_BODY="$BODY_LATEST" measure 1d hot.lua 32 "${TARGETS[@]}"
}

# Workload 1a again, keyless and then with the bench tenant's key in the URL (/v1/bench-key), in
# turns (rounds) so that the ratio between them is what a key costs; the tenant's calls counter
# must have seen the keyed requests (else they were not served as the tenant's).
workload_key() {
  lt_log "workload key: cache hit (1a) keyless, then as tenant bench with its key in the URL (c32)"
  local m0 m1 gw_admin
  gw_admin="http://127.0.0.1:$P_GW_ADMIN/metrics"
  m0=$(lt_metric "$gw_admin" gateway_tenant_calls_total 'tenant="bench"')
  LT_BODY="$BODY_HASH" measure_rounds key hot.lua 32 gateway gateway-key
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
  LT_BLOCK="$BY_HASH" measure 5 batch.lua 32 gateway "${DEMO[@]}" nginx anvil
}

# edge_cache_counts ADMIN_METRICS_URL: an edge node's edge_cache_requests_total by result, as JSON.
edge_cache_counts() {
  printf '{"hit":%s,"miss":%s,"bypass":%s,"negative":%s}' \
    "$(lt_metric_sum "$1" edge_cache_requests_total 'result="hit"')" \
    "$(lt_metric_sum "$1" edge_cache_requests_total 'result="miss"')" \
    "$(lt_metric_sum "$1" edge_cache_requests_total 'result="bypass"')" \
    "$(lt_metric_sum "$1" edge_cache_requests_total 'result="negative"')"
}

# edge: the edge tier on its own. gw-edge keeps no answers (both gateway tiers off), so every call
# travels to the serving node, which must answer from its own cache (genesis by hash is final
# there). The node's cache counters around the measured run give the share it answered itself.
workload_edge() {
  lt_log "workload edge: the edge node's own cache through gw-edge (gateway tiers off), c32"
  [ -n "$(lt_pid "edge-$SERVING")" ] || lt_die "workload edge needs edge node $SERVING (run it before 4)"
  local admin got want before="" after=""
  admin="http://127.0.0.1:$(edge_admin_port "$SERVING")/metrics"
  want=$(lt_rpc "$ANVIL_URL" eth_getBalance "[\"$DEV0\",$BY_HASH]")
  got=$(lt_rpc "${URL[gateway-edge]}" eth_getBalance "[\"$DEV0\",$BY_HASH]")
  [ "$got" = "$want" ] || lt_die "workload edge: gw-edge answered $got, anvil $want"
  # The node's counts around each measured gateway-edge run (not its warm-up), one record per
  # round; the report adds them up.
  edge_counts_before() { [ "$1" != gateway-edge ] || before=$(edge_cache_counts "$admin"); }
  edge_counts_after() {
    [ "$1" = gateway-edge ] || return 0
    after=$(edge_cache_counts "$admin")
    lt_record "{\"kind\":\"edge\",\"region\":\"$SERVING\",\"round\":$2,\"before\":$before,\"after\":$after}"
  }
  ROUND_AFTER_WARM=edge_counts_before ROUND_AFTER_RUN=edge_counts_after LT_BODY="$BODY_HASH" \
    measure_rounds edge hot.lua 32 gateway-edge nginx anvil
}

# idle: what an idle keep-alive connection costs each server in memory. idle.py opens
# $IDLE_CONNS connections (one request each, then idle), reads VmRSS before and after and the
# server's own count where it has one, then closes them all.
workload_idle() {
  lt_log "workload idle: $IDLE_CONNS idle keep-alive connections per server"
  local t p out pids metrics
  for t in gateway "${DEMO[@]}" nginx ceiling; do
    pids=(--pid "$(lt_pid "$t")")
    metrics=()
    case $t in
      gateway) metrics=(--metrics "http://127.0.0.1:$P_GW_ADMIN/metrics" --metric gateway_http_open_connections) ;;
      gateway-demo) metrics=(--metrics "http://127.0.0.1:$P_DEMO_ADMIN/metrics" --metric gateway_http_open_connections) ;;
      nginx) # the workers hold the connections; the master is counted too (it does not change)
        for p in $(ps -o pid= --ppid "$(lt_pid nginx)"); do pids+=(--pid "$p"); done ;;
    esac
    out=$(python3 "$LT_DIR/idle.py" --url "${URL[$t]}" --body "$BODY_HASH" --xff "$XFF" \
      --connections "$IDLE_CONNS" "${pids[@]}" "${metrics[@]}") || lt_die "workload idle: idle.py failed for $t"
    python3 - "$t" "$out" <<'PY' >&2
import json, sys
r = json.loads(sys.argv[2])
print("    idle       %-12s %6d open (%d failed, %s by the server, %s established)  RSS %.1f -> %.1f MiB"
      "  %.2f KiB/connection  (opened in %.1f s)" % (sys.argv[1], r["connections"], r["failed"],
      r["server_count"], r["established"], r["rss_before_kb"] / 1024, r["rss_after_kb"] / 1024,
      r["kib_per_connection"], r["open_s"]))
PY
    lt_record "{\"kind\":\"idle\",\"target\":\"$t\",\"idle\":$out}"
  done
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
  lt_log "holding: gateway ${URL[gateway]} (keyed: ${URL[gateway-key]}) gateway-edge ${URL[gateway-edge]}${DEMO:+ gateway-demo ${URL[gateway-demo]}} nginx ${URL[nginx]} anvil ${URL[anvil]} ceiling ${URL[ceiling]}; Ctrl-C stops"
  lt_log "pids: gateway $(lt_pid gateway), gateway-edge $(lt_pid gateway-edge)${DEMO:+, gateway-demo $(lt_pid gateway-demo)}, edge-$SERVING $(lt_pid "edge-$SERVING"), nginx $(lt_pid nginx), ceiling $(lt_pid ceiling)"
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
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
lt_record "{\"kind\":\"info\",\"date\":$(jstr "$(date -u '+%Y-%m-%d %H:%M UTC')"),\
\"commit\":$(jstr "$COMMIT"),\"dirty\":$(jstr "$DIRTY"),\
\"rustc\":$(jstr "$(rustc --version)"),\"anvil\":$(jstr "$("$ANVIL_BIN" --version | head -n1 | sed 's/.*Version: *//')"),\
\"nginx\":$(jstr "$(nginx -v 2>&1)"),\"redis\":$(jstr "$("$REDIS_SERVER_BIN" --version | sed 's/^Redis server v=\([^ ]*\).*/\1/')"),\"wrk\":$(jstr "$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"),\
\"machine\":{\"nproc\":$(nproc),\"cpu\":$(jstr "$cpu"),\"mem\":$(jstr "$mem"),\"kernel\":$(jstr "$(uname -r)"),\"loadavg\":$(jstr "$LOADAVG_START")},\
\"duration\":$(jstr "$DURATION"),\"warmup\":$(jstr "$WARMUP"),\"rounds\":$ROUNDS,\"round_duration\":$(jstr "$ROUND_DURATION"),\"block_time\":$BLOCK_TIME,\"nginx_ttl\":$(jstr "$NGINX_TTL"),\
\"edges\":${#EDGES[@]},\"demo\":$([ "$PEER" = 1 ] && echo true || echo false),\"idle_connections\":$IDLE_CONNS,\"workers\":$WORKERS,\"anvil_workers\":$(jstr "${ANVIL_WORKERS:-default}"),\"xff\":$(jstr "$XFF"),\"serving_region\":$(jstr "$SERVING"),\"edge_cache_max_bytes\":$CACHE_MAX,\
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
