#!/usr/bin/env bash
# Instructions the gateway spends per request, counted by valgrind's callgrind: a speed figure
# that stays put on a noisy machine (wall-clock runs on this VM swing by 2x from hour to hour).
#
#   loadtests/callgrind.sh [BIN_DIR ...]   default: target/release (built when missing)
#
# For each BIN_DIR (holding `gateway` and `edge-node`; give two to compare builds in one run) it
# starts, on 127.0.0.1 only: anvil, one edge node, and the gateway under callgrind. Per request
# kind it sends warm-up requests, zeroes the counters, sends CG_N requests on one keep-alive
# connection, dumps the counters and prints the gateway's instructions per request:
#   hit     eth_getBalance at block 0x0 (a final answer: the gateway tier)
#   batch   a batch of 50 such calls (instructions per batch)
#   node    eth_getBalance of a new random address at `latest` (every call goes to the node)
#   keyed   the hit as tenant `bench` with its key in the URL (only with CG_TENANT=1: the gateway
#           gets a tenants file with every limit on, far above the load; no Redis)
# With CG_EDGE=1, instead: both gateway tiers off and the edge node under callgrind too, so
# each request travels to the node; both processes' instructions per request are printed:
#   edgehit eth_getBalance at block 0x0, answered from the edge node's cache
#   node    as above (the node asks anvil each time)
# With CG_GEO=1 the gateway locates each caller as run.sh's gateways do: the DB-IP databases,
# 127.0.0.0/8 trusted, and X-Forwarded-For: $CG_XFF (default run.sh's 81.2.69.142) on every
# request (needs DBIP_V4_MMDB and DBIP_V6_MMDB: `source .deps/env.sh`).
# With CG_ONE_WRITE=1 each request's head and body go out in one write, as wrk sends them
# (Python's http.client writes them apart, which costs the server a second wake-up).
# Background work (health ticks every 250 ms) is counted too, the same way for every build.
# Both daemons log at $RUST_LOG (default warn: no per-request spans); RUST_LOG=info measures
# the level they ship with.
# CG_BLOCK (default "0x0", as JSON) is the block parameter of the hit kinds' request;
# CG_BLOCK=genesis is `{"blockHash":"<anvil's genesis hash>"}`, workloads 1a and E's spelling.
# With CG_WRK=1 the requests come from wrk -t1 -c32 for CG_WRK_SECONDS (10) after a 2 s warm-up
# instead of one connection at a time: a load test's concurrency under callgrind, where many
# requests share each wake-up, packet and poll (counts per request then move by a few percent
# between runs, with the number of requests per poll). Kinds hit, edgehit, node and keyed.
# CG_KEEP=1 keeps the callgrind files (run-1/, run-2/, ... in the order given) for
# callgrind_annotate.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${CG_N:-2000}
KINDS="hit batch node"
BASE=${CG_PORT_BASE:-29545}
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
KEEP_TMP=${CG_KEEP:-}
# shellcheck source=stack.sh
source "$ROOT/loadtests/stack.sh" "$@"

ANVIL_URL="http://127.0.0.1:$BASE"
"$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --quiet >"$TMP/anvil.log" 2>&1 &
PIDS+=($!)
wait_for rpc "$ANVIL_URL" eth_chainId '[]'
rpc "$ANVIL_URL" anvil_mine '["0x80"]' >/dev/null
if [ "${CG_BLOCK:-}" = genesis ]; then
  CG_BLOCK="{\"blockHash\":\"$(rpc "$ANVIL_URL" eth_getBlockByNumber '["0x0",false]' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["result"]["hash"])')\"}"
  export CG_BLOCK
fi
# The hit kinds' request (both senders).
export CG_HIT_BODY="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBalance\",\"params\":[\"0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266\",${CG_BLOCK:-\"0x0\"}]}"

if [ -n "${CG_EDGE:-}" ]; then
  KINDS="edgehit node"
  GW_EXTRA_TOML="[cache]
max_bytes = 0
tip_max_bytes = 0"
fi
if [ -n "${CG_GEO:-}" ]; then
  [ -s "${DBIP_V4_MMDB:-}" ] || { echo "callgrind.sh: CG_GEO needs DBIP_V4_MMDB (source .deps/env.sh)" >&2; exit 1; }
  GW_EXTRA_TOML="${GW_EXTRA_TOML:-}
[geo]
databases = [\"$DBIP_V4_MMDB\", \"$DBIP_V6_MMDB\"]
trusted_proxies = [\"127.0.0.0/8\"]"
  export CG_XFF=${CG_XFF:-81.2.69.142}
fi
if [ -n "${CG_TENANT:-}" ]; then
  KINDS="hit keyed batch node"
  cat >"$TMP/tenants.toml" <<TOML
[[tenants]]
name = "bench"
key_sha256 = ["$(printf %s bench-key | sha256sum | cut -d' ' -f1)"]
requests_per_second = 2000000000
compute_units_per_second = 4000000000
daily_quota = 1000000000000
TOML
  GW_EXTRA_TOML="${GW_EXTRA_TOML:-}
[tenants]
file = \"$TMP/tenants.toml\""
fi

# Sends N requests of one kind on one keep-alive connection.
send() { # KIND COUNT
  python3 - "$1" "$2" "127.0.0.1" "$((BASE + 1))" <<'PY'
import http.client, json, os, sys
kind, n, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

class OneWrite(http.client.HTTPConnection):
    """Sends each request's head and body in one write, as wrk does (http.client writes them
    apart, so the server wakes twice per request)."""
    def request(self, *args, **kwargs):
        if self.sock is None:
            self.connect()
        parts = []
        self.send = parts.append
        try:
            super().request(*args, **kwargs)
        finally:
            del self.send
        self.sock.sendall(b"".join(parts))

c = (OneWrite if os.environ.get("CG_ONE_WRITE") else http.client.HTTPConnection)(host, port)
one = os.environ["CG_HIT_BODY"]
batch = "[" + ",".join(one.replace('"id":1', '"id":%d' % i) for i in range(50)) + "]"
path = "/v1/bench-key" if kind == "keyed" else "/"
headers = {"content-type": "application/json"}
if os.environ.get("CG_XFF"):
    headers["x-forwarded-for"] = os.environ["CG_XFF"]
for i in range(n):
    if kind in ("hit", "keyed", "edgehit"):
        body = one
    elif kind == "batch":
        body = batch
    else:
        addr = "0x" + os.urandom(20).hex()
        body = '{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["%s","latest"]}' % addr
    c.request("POST", path, body, headers)
    r = c.getresponse()
    data = r.read()
    if r.status != 200 or b'"error"' in data:
        sys.exit("bad answer: %s %s" % (r.status, data[:200]))
PY
}

# Sends KIND's requests from wrk -t1 -c32 for SECONDS; prints how many were answered (every one
# must have succeeded).
load() { # KIND SECONDS
  local path=/ out script=hot.lua
  [ "$1" != keyed ] || path=/v1/bench-key
  [ "$1" != node ] || script=miss.lua
  out=$(LT_DIR="$ROOT/loadtests" LT_XFF="${CG_XFF:-}" LT_BLOCK='"latest"' \
    LT_BODY="$CG_HIT_BODY" \
    wrk -t1 -c32 -d"$2"s -s "loadtests/$script" "http://127.0.0.1:$((BASE + 1))$path")
  if echo "$out" | grep -q "Non-2xx\|Socket errors" || ! echo "$out" | grep -q '"failed":0,'; then
    echo "callgrind.sh: failed requests under wrk ($1): $out" >&2
    exit 1
  fi
  echo "$out" | awk '/requests in/ {print $1}'
}

measure() { # BIN_DIR
  local bin=$1 run="$TMP/run-$2"
  rm -rf "$run" && mkdir -p "$run"
  local edge_wrap=""
  [ -z "${CG_EDGE:-}" ] || edge_wrap="valgrind --tool=callgrind --callgrind-out-file=$run/edge.%p"
  WORKERS=1 EDGE_WRAP="$edge_wrap" start_pair "$bin" "$run" "$BASE" "$ANVIL_URL" \
    valgrind --tool=callgrind --callgrind-out-file="$run/cg.%p"
  local gw_pid=$GW_PID edge_pid=$EDGE_PID
  local kind pid who n
  for kind in $KINDS; do
    if [ -n "${CG_WRK:-}" ]; then
      [ "$kind" != batch ] || continue
      # A new head first: anvil makes none of its own here, and a wrk run per kind and build
      # outlasts the gateway's stale-head limit (60 s), past which the node is not routed to.
      rpc "$ANVIL_URL" anvil_mine '["0x1"]' >/dev/null
      load "$kind" 2 >/dev/null
    else
      send "$kind" 200
    fi
    for pid in $gw_pid ${edge_wrap:+$edge_pid}; do callgrind_control -z "$pid" >/dev/null 2>&1; done
    if [ -n "${CG_WRK:-}" ]; then
      n=$(load "$kind" "${CG_WRK_SECONDS:-10}")
    else
      send "$kind" "$N"
      n=$N
    fi
    for pid in $gw_pid ${edge_wrap:+$edge_pid}; do callgrind_control -d "$kind" "$pid" >/dev/null 2>&1; done
    sleep 1
    for who in cg ${edge_wrap:+edge}; do
      awk -v n="$n" -v kind="$kind" -v bin="$bin" -v who="$([ "$who" = cg ] && echo gateway || echo edge-node)" \
        '/^summary:/ { printf "%-8s %-10s %-32s %12.0f instructions per request (%d requests)\n", kind, who, bin, $2 / n, n }' \
        "$(ls -t "$run/$who".* | head -1)"
    done
  done
  kill "$gw_pid" "$edge_pid" 2>/dev/null || true
  wait "$gw_pid" "$edge_pid" 2>/dev/null || true
}

i=0
for d in "${DIRS[@]}"; do
  i=$((i + 1))
  measure "$d" "$i"
done
