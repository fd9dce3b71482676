# shellcheck shell=bash
# A private redis-server for one script run (the demo, loadtests/run.sh): sourced, not executed.
#
#   source scripts/redis.sh
#   start_redis DIR     starts `redis-server` on a free 127.0.0.1 port, in the foreground of a
#                       background job (no daemon, no persistence: --save '' --appendonly no,
#                       working dir and log in DIR: DIR/redis.log), waits until it answers PING,
#                       and sets REDIS_PORT, REDIS_PID and REDIS_URL=redis://127.0.0.1:PORT/.
#                       Returns non-zero (with the end of the log on stderr) when it cannot start.
#   stop_redis          stops that one process (SIGTERM, SIGKILL after 5 s); safe to call twice.
#
# The binary is $REDIS_SERVER_BIN (written to .deps/env.sh by scripts/deps.sh), else
# `redis-server` on PATH. It never uses or touches a system Redis service. The readiness check
# speaks RESP over bash's /dev/tcp (PING, then INFO for the pid), so redis-cli is not needed.

REDIS_PORT=""
REDIS_PID=""
REDIS_URL=""

# A TCP port free on 127.0.0.1 right now (bound by the kernel's choice, then released). Another
# process may take it before redis-server binds it; start_redis then tries another.
_redis_free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# True when the Redis on 127.0.0.1:$1 answers PING with PONG and is process $2 (INFO names its
# pid: a redis-server that lost the race for the port must not be taken for the one that won it).
_redis_ready() {
  local fd line pong="" ours=""
  exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'PING\r\nINFO server\r\n' >&"$fd"
  while IFS= read -r -t 2 line <&"$fd"; do
    line=${line%$'\r'}
    case "$line" in
      +PONG) pong=1 ;;
      "process_id:$2") ours=1; break ;;
    esac
  done
  exec {fd}>&-
  [ -n "$pong" ] && [ -n "$ours" ]
}

# shellcheck disable=SC2034 # REDIS_PORT and REDIS_URL are for the script that sources this
start_redis() {
  local dir=${1:?start_redis DIR}
  local bin=${REDIS_SERVER_BIN:-}
  local log attempt port pid
  if [ -z "$bin" ]; then
    bin=$(command -v redis-server) || {
      echo "start_redis: redis-server not found (scripts/deps.sh installs it)" >&2
      return 1
    }
  fi
  mkdir -p "$dir"
  dir=$(cd -- "$dir" && pwd)
  log="$dir/redis.log"
  : >"$log"
  for attempt in 1 2 3 4 5; do
    port=$(_redis_free_port) || return 1
    echo "start_redis: attempt $attempt, port $port" >>"$log"
    "$bin" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      --dir "$dir" --logfile '' >>"$log" 2>&1 &
    pid=$!
    # Up to 10 s for PONG; give up on this port at once if the process died (port taken).
    for _ in $(seq 1 100); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if _redis_ready "$port" "$pid" 2>/dev/null; then
        REDIS_PORT=$port
        REDIS_PID=$pid
        REDIS_URL="redis://127.0.0.1:$port/"
        return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "start_redis: redis-server did not answer PING; the end of $log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

stop_redis() {
  local pid=$REDIS_PID
  [ -n "$pid" ] || return 0
  REDIS_PID=""
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
