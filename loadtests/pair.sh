#!/usr/bin/env bash
# Builds side by side on the wall clock (give two or more to compare), interleaved so that the hour's noise falls
# on each alike: per build, a gateway and one edge node in front of anvil, wrk -t1 at
# PAIR_CONNS (32) connections on one hot read (eth_getBalance at block 0x0), PAIR_ROUNDS (3)
# rounds of PAIR_DURATION (5s) each after a 2 s warm-up, build after build in every round.
#
#   loadtests/pair.sh BIN_DIR [BIN_DIR ...]   each holding `gateway` and `edge-node`
#
# PAIR_TIER=gateway (the default): the answer comes from the gateway's own tier (a hit).
# PAIR_TIER=edge: both gateway tiers off, so every request crosses QUIC and the edge node
# answers from its cache (workload E of run.sh, without its other processes).
# PAIR_WORKERS: worker_threads of both daemons (default 1; 0 is one per core). PAIR_GEO=1: the
# gateway locates callers as run.sh's do (DB-IP, 127.0.0.0/8 trusted, X-Forwarded-For $LT_XFF,
# default 81.2.69.142; needs `source .deps/env.sh`). RUST_LOG=info: the level they ship with.
# Per run it prints req/s, p50 and p99, the CPU each process spent per request (user + system,
# from /proc) and the UDP sends per request between them (the machine's OutDatagrams counter,
# which counts a GSO batch once; run it on a quiet machine). Server CPU includes the kernel's
# share of each process's sockets: compare builds, not processes of different kinds. A run
# with any failed answer (not 200, a JSON-RPC error, a socket error) stops the script.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ $# -ge 1 ] || { sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2; }
ROUNDS=${PAIR_ROUNDS:-3}
DURATION=${PAIR_DURATION:-5s}
CONNS=${PAIR_CONNS:-32}
TIER=${PAIR_TIER:-gateway}
BASE=${PAIR_PORT_BASE:-31545}
case "$TIER" in
  gateway) GW_EXTRA_TOML="" ;;
  edge) GW_EXTRA_TOML=$'[cache]\nmax_bytes = 0\ntip_max_bytes = 0' ;;
  *) echo "pair.sh: PAIR_TIER is gateway or edge, not $TIER" >&2; exit 2 ;;
esac
if [ -n "${PAIR_GEO:-}" ]; then
  [ -s "${DBIP_V4_MMDB:-}" ] || { echo "pair.sh: PAIR_GEO needs DBIP_V4_MMDB (source .deps/env.sh)" >&2; exit 1; }
  # shellcheck disable=SC2089 # TOML text: its quotes are meant literally.
  printf -v geo '[geo]\ndatabases = ["%s", "%s"]\ntrusted_proxies = ["127.0.0.0/8"]' \
    "$DBIP_V4_MMDB" "$DBIP_V6_MMDB"
  GW_EXTRA_TOML="$GW_EXTRA_TOML"$'\n'"$geo"
  export LT_XFF=${LT_XFF:-81.2.69.142}
fi
# shellcheck disable=SC2090 # read as TOML by stack.sh, never split into words.
export GW_EXTRA_TOML
# shellcheck source=stack.sh
source "$ROOT/loadtests/stack.sh" "$@"
command -v wrk >/dev/null || { echo "pair.sh: needs wrk" >&2; exit 1; }

ANVIL_URL="http://127.0.0.1:$BASE"
# Blocks keep coming, as in run.sh: a head that stops moving for a minute is a stale node, and
# the gateway would drop it mid-run.
"$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --block-time 2 --quiet >"$TMP/anvil.log" 2>&1 &
PIDS+=($!)
wait_for rpc "$ANVIL_URL" eth_chainId '[]'
rpc "$ANVIL_URL" anvil_mine '["0x80"]' >/dev/null

# One gateway and edge node per build, each pair on its own ports, all up for the whole run.
GWS=() EDGES=() PORTS=()
for i in "${!DIRS[@]}"; do
  base=$((BASE + 10 * (i + 1)))
  WORKERS=${PAIR_WORKERS:-1} start_pair "${DIRS[$i]}" "$TMP/run-$i" "$base" "$ANVIL_URL"
  GWS+=("$GW_PID") EDGES+=("$EDGE_PID") PORTS+=($((base + 1)))
done

export LT_DIR="$ROOT/loadtests"
export LT_BODY='{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266","0x0"]}'
udp_sent() { awk '/^Udp:/ { n++; if (n == 2) print $5 }' /proc/net/snmp; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

printf '%-28s %5s %9s %8s %8s %10s %12s %10s\n' build round "req/s" "p50 us" "p99 us" "gw us/req" "node us/req" "sends/req"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!DIRS[@]}"; do
    url="http://127.0.0.1:${PORTS[$i]}/"
    wrk -t1 -c"$CONNS" -d2s -s "$LT_DIR/hot.lua" "$url" >/dev/null
    u0=$(udp_sent) g0=$(cpu_ticks "${GWS[$i]}") e0=$(cpu_ticks "${EDGES[$i]}")
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$LT_DIR/hot.lua" "$url")
    u1=$(udp_sent) g1=$(cpu_ticks "${GWS[$i]}") e1=$(cpu_ticks "${EDGES[$i]}")
    result=$(grep '^LTRESULT ' <<<"$out" | cut -d' ' -f2-) ||
      { echo "pair.sh: wrk gave no result for ${DIRS[$i]}: $out" >&2; exit 1; }
    python3 - "${DIRS[$i]}" "$round" "$u1" "$u0" "$g1" "$g0" "$e1" "$e0" "$hz" "$result" <<'PY'
import json, sys
name, rnd, u1, u0, g1, g0, e1, e0, hz, result = sys.argv[1:]
r = json.loads(result)
n = r["requests"]
if r["failed"] or not n:
    sys.exit("pair.sh: %s answered %d of %d requests badly" % (name, r["failed"], n))
per = lambda a, b: (int(a) - int(b)) / int(hz) * 1e6 / n
print("%-28s %5s %9.0f %8.0f %8.0f %10.1f %12.1f %10.2f" % (
    name[-28:], rnd, r["rps"], r["p50_us"], r["p99_us"], per(g1, g0), per(e1, e0),
    (int(u1) - int(u0)) / n))
PY
  done
done
