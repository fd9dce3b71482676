# shellcheck shell=bash
# Helpers for loadtests/run.sh: logging, ports, child processes, JSON-RPC over curl, memory and
# metrics readings, and one wrk run. Sourced, not executed.
#
# Expects LT_TMP (the run's temp dir) and LT_RESULTS (the JSON-lines results file) to be set.

lt_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
lt_die() {
  lt_log "ERROR: $*"
  exit 1
}

# ---------------------------------------------------------------- ports

# True when no TCP listener or UDP socket is bound to PORT (any address).
lt_port_free() {
  local p=$1
  [ -z "$(ss -Hltnu "( sport = :$p )" 2>/dev/null)" ]
}

# ---------------------------------------------------------------- child processes

# Everything started here is in LT_PIDS (name -> pid) and stopped by lt_stop_all.
declare -gA LT_PIDS=()
declare -ga LT_ORDER=() # names in start order

# lt_start NAME COMMAND... : runs COMMAND in the background, output in $LT_TMP/logs/NAME.log.
lt_start() {
  local name=$1
  shift
  mkdir -p "$LT_TMP/logs"
  "$@" >"$LT_TMP/logs/$name.log" 2>&1 &
  LT_PIDS[$name]=$!
  LT_ORDER+=("$name")
  # Out of the job table: bash still reaps it, but prints no "Killed" line when workload 4 kills it.
  disown "$!"
}

# lt_adopt NAME PID: hands a background child started another way (scripts/redis.sh's
# start_redis) to lt_stop, lt_stop_all and lt_alive, out of the job table like lt_start's.
lt_adopt() {
  LT_PIDS[$1]=$2
  LT_ORDER+=("$1")
  disown "$2" 2>/dev/null || true
}

lt_pid() { echo "${LT_PIDS[$1]:-}"; }

# lt_stop NAME [SIGNAL]: stops one child (default SIGTERM, SIGKILL after 5 s) and forgets it.
lt_stop() {
  local name=$1 sig=${2:-TERM} pid
  pid=${LT_PIDS[$name]:-}
  [ -n "$pid" ] || return 0
  unset "LT_PIDS[$name]"
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -KILL "$pid" 2>/dev/null; then lt_log "$name did not stop within 5 s of SIG$sig: killed"; fi
}

# Stops every child, the last started first.
LT_WRK_PID=""
lt_stop_all() {
  local i
  if [ -n "$LT_WRK_PID" ]; then # wrk, or the subshell running it (workload 4) and so its wrk
    local kids
    read -ra kids <<<"$(ps -o pid= --ppid "$LT_WRK_PID" 2>/dev/null | paste -sd' ' -)"
    kill "${kids[@]}" "$LT_WRK_PID" 2>/dev/null || true
  fi
  if [ -s "$LT_TMP/wrk.pid" ]; then kill "$(cat "$LT_TMP/wrk.pid")" 2>/dev/null || true; fi
  for ((i = ${#LT_ORDER[@]} - 1; i >= 0; i--)); do lt_stop "${LT_ORDER[i]}"; done
}

# Fails with the end of NAME's log when NAME is no longer running.
lt_alive() {
  local pid=${LT_PIDS[$1]:-}
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$LT_TMP/logs/$1.log" >&2 2>/dev/null || true
    lt_die "$1 is not running (log above: $LT_TMP/logs/$1.log)"
  fi
}

# ---------------------------------------------------------------- HTTP and JSON-RPC

# lt_rpc URL METHOD PARAMS_JSON: prints the raw JSON `result`; fails on an error answer.
lt_rpc() {
  curl -fsS --max-time 5 -H 'content-type: application/json' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}" "$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit("rpc error: %s" % r["error"]) if "error" in r else print(json.dumps(r["result"]))'
}

# lt_wait WHAT COMMAND...: retries COMMAND for up to 20 s.
lt_wait() {
  local what=$1
  shift
  for _ in $(seq 1 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  lt_die "$what did not come up within 20 s (logs: $LT_TMP/logs/)"
}

# lt_region URL XFF BODY: the x-edge-region header the gateway answers with.
lt_region() {
  curl -fsS --max-time 5 -o /dev/null -D - -H 'content-type: application/json' \
    -H "X-Forwarded-For: $2" -d "$3" "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-edge-region"{print $2}'
}

# ---------------------------------------------------------------- memory and metrics

# Resident set size of PID in KiB (VmRSS), or 0 when it is gone.
lt_rss_kb() {
  awk '/^VmRSS:/{print $2; found=1} END{if(!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}

# lt_metric URL NAME [LABEL_SUBSTRING]: the value of one Prometheus sample (0 when absent).
lt_metric() {
  curl -fsS --max-time 5 "$1" 2>/dev/null |
    awk -v n="$2" -v l="${3:-}" '
      $1 == n || (index($1, n "{") == 1 && index($1, l) > 0) { v = $2; found = 1 }
      END { print (found ? v : 0) }'
}

# lt_metric_sum URL NAME LABEL_SUBSTRING: the sum of NAME's samples whose labels contain
# LABEL_SUBSTRING (0 when there are none), e.g. one tenant's refusals over all its limits.
lt_metric_sum() {
  curl -fsS --max-time 5 "$1" 2>/dev/null |
    awk -v n="$2" -v l="$3" '
      index($1, n "{") == 1 && index($1, l) > 0 { s += $2 }
      END { printf "%.0f\n", s }'
}

# CPU time (user + system, clock ticks) used so far by the serving processes, per component, as
# JSON: {"gateway":N,"edge":N,"nginx":N,"anvil":N,"redis":N,"ceiling":N}. "gateway" is every
# gateway process (gateway, gateway-demo, gateway-edge: only the one under load is busy); nginx's
# workers are counted with the master; redis is the tenants' shared store (started as "redis",
# see lt_adopt); ceiling is the bare hyper server. Reaped children's time is included, so that
# nginx's cache loader, which exits a minute after start, does not take its time with it.
lt_cpu() {
  local name comp pid p t
  declare -A sum=([gateway]=0 [edge]=0 [nginx]=0 [anvil]=0 [redis]=0 [ceiling]=0)
  for name in "${!LT_PIDS[@]}"; do
    case $name in
      gateway | nginx | anvil | redis | ceiling) comp=$name ;;
      gateway-*) comp=gateway ;;
      edge-*) comp=edge ;;
      *) continue ;;
    esac
    pid=${LT_PIDS[$name]}
    for p in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
      t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || true)
      sum[$comp]=$((sum[$comp] + ${t:-0}))
    done
  done
  printf '{"gateway":%d,"edge":%d,"nginx":%d,"anvil":%d,"redis":%d,"ceiling":%d}' \
    "${sum[gateway]}" "${sum[edge]}" "${sum[nginx]}" "${sum[anvil]}" "${sum[redis]}" "${sum[ceiling]}"
}

# ---------------------------------------------------------------- results

# lt_record JSON: appends one record to the results file.
lt_record() { printf '%s\n' "$1" >>"$LT_RESULTS"; }

# lt_run_wrk OUTPUT_FILE WRK_ARGS...: runs wrk in the background and waits for it, so that a
# signal to run.sh is acted on at once (bash runs traps only between commands, and a background
# child ignores the terminal's SIGINT); the EXIT trap stops it through LT_WRK_PID.
lt_run_wrk() {
  local out=$1 rc=0
  shift
  wrk "$@" >"$out" 2>&1 &
  LT_WRK_PID=$!
  # Also on disk: when this runs in a background subshell (workloads 4 and soak) that a signal
  # kills first, the main shell still finds wrk through this file.
  echo "$LT_WRK_PID" >"$LT_TMP/wrk.pid"
  wait "$LT_WRK_PID" || rc=$?
  rm -f "$LT_TMP/wrk.pid"
  LT_WRK_PID=""
  return "$rc"
}

# lt_wrk WORKLOAD TARGET URL SCRIPT CONNECTIONS DURATION [wrk options...]
# Runs wrk with a Lua script from loadtests/ (the script's done() prints one `LTRESULT {json}`
# line) and records it with the workload and target names. Extra variables for the script are
# passed in the environment (LT_*). With LT_ROUND set, the run is that round of its workload
# (its record says so, and the report takes the median over the rounds).
lt_wrk() {
  local workload=$1 target=$2 url=$3 script=$4 conns=$5 dur=$6
  shift 6
  local out="$LT_TMP/wrk-$workload-$target${LT_ROUND:+-round$LT_ROUND}.txt" line cpu0 cpu1
  cpu0=$(lt_cpu)
  lt_run_wrk "$out" -t1 "-c$conns" "-d$dur" "$@" -s "$LT_DIR/$script" "$url" ||
    lt_die "wrk failed for $workload/$target: $(tail -n 5 "$out")"
  cpu1=$(lt_cpu)
  line=$(sed -n 's/^LTRESULT //p' "$out")
  [ -n "$line" ] || lt_die "wrk printed no result for $workload/$target: $(tail -n 5 "$out")"
  python3 - "$line" "$workload" "$target" "$dur" <<'PY' >&2 || lt_die "wrk run $workload/$target was cut short (interrupted?)"
import json, sys
r = json.loads(sys.argv[1])
print("    %-10s %-8s %9.0f req/s  p50 %7.0f us  p99 %7.0f us  failed %d" % (
    sys.argv[2], sys.argv[3], r["rps"], r["p50_us"], r["p99_us"], r["failed"]))
d = sys.argv[4]
want = float(d[:-1]) * {"s": 1, "m": 60, "h": 3600}[d[-1]] if d[-1] in "smh" else float(d)
sys.exit(r["seconds"] < 0.9 * want)
PY
  lt_record "{\"kind\":\"wrk\",\"workload\":\"$workload\",\"target\":\"$target\",\"connections\":$conns,\"cpu_before\":$cpu0,\"cpu_after\":$cpu1,\"clk_tck\":$(getconf CLK_TCK)${LT_ROUND:+,\"round\":$LT_ROUND},\"wrk\":$line}"
}
