#!/usr/bin/env bash
# WebSocket fan-out (issue 13): `newHeads` from one node to N subscribers on N sockets through
# one gateway. Per block, the delay from the node's publish to every subscriber's receipt (the
# last subscriber's above all), and the gateway's memory per idle subscriber.
#
#   loadtests/ws-fanout.sh          WF_N="1000 10000" WF_RUNS=2 WF_BLOCKS=100 by default
#
# For each run and each N it starts, on 127.0.0.1 only and from scratch: anvil (no block time:
# blocks come from `evm_mine`) and the gateway (release build, its own process, so its VmRSS is
# its alone); then the bench client (`tests/e2e/examples/ws-fanout.rs`, release), which runs the
# edge node in its own process (so publish and receipt instants are read from one clock), opens
# N sockets with one `eth_subscribe ["newHeads"]` each, reads the gateway's RSS before and after
# (idle for WF_IDLE_SECS), mines WF_BLOCKS blocks WF_INTERVAL_MS apart and measures every
# (block, subscriber) delay. Prints the table and writes it as the section "WebSocket fan-out
# (issue 13)" of loadtests/RESULTS.md (replacing an earlier one; WF_NO_RESULTS=1: don't).
#
# Knobs: WF_N, WF_RUNS, WF_BLOCKS, WF_INTERVAL_MS (1000), WF_IDLE_SECS (5), WF_CLIENT_THREADS
# (2: the clients' tokio workers), WF_WORKERS (gateway worker_threads, 0 = one per core),
# WF_PORT_BASE (29845: anvil; +1 gateway JSON-RPC/WebSocket; +2 gateway QUIC), WF_NO_BUILD=1,
# WF_GATEWAY (another gateway binary to measure, such as a copy of an earlier build),
# KEEP_TMP=1 (keep configs, logs and the per-block JSON).
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NS=${WF_N:-"1000 10000"}
RUNS=${WF_RUNS:-2}
BLOCKS=${WF_BLOCKS:-100}
INTERVAL=${WF_INTERVAL_MS:-1000}
IDLE=${WF_IDLE_SECS:-5}
THREADS=${WF_CLIENT_THREADS:-2}
WORKERS=${WF_WORKERS:-0}
BASE=${WF_PORT_BASE:-29845}
TD=${CARGO_TARGET_DIR:-$ROOT/target}
COMMAND="loadtests/ws-fanout.sh"
for v in WF_GATEWAY WF_N WF_RUNS WF_BLOCKS WF_INTERVAL_MS WF_IDLE_SECS WF_CLIENT_THREADS WF_WORKERS; do
  [ -n "${!v:-}" ] && COMMAND="$v=\"${!v}\" $COMMAND"
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# shellcheck source=stack.sh
source "$ROOT/loadtests/stack.sh" "$TD/release"
trap 'exit 130' INT TERM

if [ -z "${WF_NO_BUILD:-}" ]; then
  cargo build --release --quiet -p gateway --bin gateway
  cargo build --release --quiet -p e2e --example ws-fanout
fi
# Copies, so that another build in the same target dir cannot swap them mid-run.
mkdir -p "$TMP/bin"
cp "${WF_GATEWAY:-$TD/release/gateway}" "$TMP/bin/gateway"
cp "$TD/release/examples/ws-fanout" "$TMP/bin/"

# Each process holds one descriptor per socket: N plus a margin.
max_n=0
for n in $NS; do [ "$n" -gt "$max_n" ] && max_n=$n; done
need=$((max_n + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  echo "ws-fanout.sh: N=$max_n needs $need open files per process; the hard limit is $hard" >&2
  exit 1
fi
[ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$need" ] && ulimit -n "$need"

for p in "$BASE" $((BASE + 1)); do
  if ss -Htln "sport = :$p" | grep -q .; then echo "ws-fanout.sh: port $p is in use (WF_PORT_BASE)" >&2; exit 1; fi
done
if ss -Hauln "sport = :$((BASE + 2))" | grep -q .; then echo "ws-fanout.sh: UDP port $((BASE + 2)) is in use" >&2; exit 1; fi

: >"$TMP/results.jsonl"
measure() { # RUN N
  local run="$TMP/run-$1-n$2" anvil="http://127.0.0.1:$BASE" gw fp client pids=()
  mkdir -p "$run/keys"
  "$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --quiet >"$run/anvil.log" 2>&1 &
  pids+=($!)
  PIDS+=($!)
  wait_for rpc "$anvil" eth_chainId '[]'
  cat >"$run/gateway.toml" <<TOML
default_chain = "anvil"
[server]
listen = "127.0.0.1:$((BASE + 1))"
worker_threads = $WORKERS
[quic]
listen = "127.0.0.1:$((BASE + 2))"
key_file = "$run/keys/gateway.key"
join_tokens = ["measuring"]
[websocket]
max_connections = 20000
# Every client is on 127.0.0.1.
max_connections_per_ip = 20000
[[chains]]
name = "anvil"
chain_id = 31337
TOML
  fp=$("$TMP/bin/gateway" --config "$run/gateway.toml" --print-fingerprint)
  RUST_LOG=warn "$TMP/bin/gateway" --config "$run/gateway.toml" >"$run/gateway.log" 2>&1 &
  gw=$!
  pids+=("$gw")
  PIDS+=("$gw")
  wait_for curl -s -o /dev/null "http://127.0.0.1:$((BASE + 1))/readyz"
  echo "== run $1, N = $2" >&2
  RUST_LOG=warn "$TMP/bin/ws-fanout" --gateway "http://127.0.0.1:$((BASE + 1))" \
    --quic "127.0.0.1:$((BASE + 2))" --fingerprint "$fp" --token measuring --anvil "$anvil" \
    --gateway-pid "$gw" --n "$2" --blocks "$BLOCKS" --interval-ms "$INTERVAL" \
    --idle-secs "$IDLE" --threads "$THREADS" >"$run/client.out" 2>"$run/client.log" &
  client=$!
  pids+=("$client")
  PIDS+=("$client")
  tail -f --pid="$client" "$run/client.log" >&2 &
  if ! wait "$client"; then
    echo "ws-fanout.sh: the bench client failed (run $1, N = $2); its log:" >&2
    cat "$run/client.log" >&2
    KEEP_TMP=1
    exit 1
  fi
  sed -n 's/^WFRESULT //p' "$run/client.out" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["run"]=int(sys.argv[1]); r["gateway_warnings"]=int(sys.argv[2]); print(json.dumps(r))' \
      "$1" "$(grep -c -E 'WARN|ERROR' "$run/gateway.log" || true)" >>"$TMP/results.jsonl"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

START=$(date +%s)
for r in $(seq 1 "$RUNS"); do
  for n in $NS; do measure "$r" "$n"; done
done

python3 - "$TMP/results.jsonl" "$ROOT/loadtests/RESULTS.md" "${WF_NO_RESULTS:-}" "$COMMAND" \
  "$LOAD_START" "$(( $(date +%s) - START ))" "$BLOCKS" "$INTERVAL" "$THREADS" "$WORKERS" "$IDLE" <<'PY'
import datetime, json, os, re, subprocess, sys
path, results_md, no_write, command, load, secs, blocks, interval, threads, workers, idle = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
def sh(*a):
    return subprocess.run(a, capture_output=True, text=True).stdout.strip()
commit = sh("git", "rev-parse", "--short", "HEAD")
dirty = sh("git", "status", "--porcelain", "--", "gateway", "edge-node", "proto", "tests/e2e")
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = int(open("/proc/meminfo").readline().split()[1]) / 2**20
f = lambda x: f"{x:,.1f}"
head = ("| run | N | subscribed | p50 ms | p99 ms | last subscriber p50 / **p99** / max ms | first subscriber p50 ms "
        "| missed | gateway RSS before → idle → after MiB | **KiB per idle subscriber** | kernel TCP KiB per socket pair "
        "| gateway CPU ms per block | clients CPU ms per block | connect s |")
lines = [head, "| " + " | ".join(["---"] * 2 + ["---:"] * 12) + " |"]
for r in rows:
    mib = lambda k: f"{r[k] / 1024:,.0f}"
    lines.append(
        f"| {r['run']} | {r['n']:,} | {r['connected']:,} | {f(r['p50_ms'])} | {f(r['p99_ms'])} "
        f"| {f(r['last_p50_ms'])} / **{f(r['last_p99_ms'])}** / {f(r['last_max_ms'])} | {f(r['first_p50_ms'])} "
        f"| {r['missed']:,} of {r['blocks'] * r['connected']:,} | {mib('rss_before_kib')} → {mib('rss_idle_kib')} → {mib('rss_after_kib')} "
        f"| **{f(r['kib_per_sub_idle'])}** | {f(r['sock_mem_kib_per_sub'])} | {f(r['gateway_cpu_ms_per_block'])} "
        f"| {f(r['clients_cpu_ms_per_block'])} | {f(r['connect_secs'])} |")
table = "\n".join(lines)
verdict = []
for r in rows:
    if r["n"] == 10000:
        ok_t = "meets" if r["last_p99_ms"] < 50 else "misses"
        ok_m = "meets" if r["kib_per_sub_idle"] < 20 else "misses"
        verdict.append(f"run {r['run']}: last-subscriber p99 {f(r['last_p99_ms'])} ms ({ok_t} < 50 ms), "
                       f"{f(r['kib_per_sub_idle'])} KiB per idle subscriber ({ok_m} < 20 KiB)")
print(table)
for v in verdict:
    print("10,000 subscribers, " + v)
if no_write:
    sys.exit(0)
now = datetime.datetime.now(datetime.timezone.utc)
worst = max((r["watcher_lag_max_ms"] for r in rows), default=0)
warn = sum(r["gateway_warnings"] for r in rows)
section = f"""## WebSocket fan-out (issue 13), {now:%Y-%m-%d %H:%M} UTC

Command: `{command}` (see README.md, "WebSocket fan-out")

- Machine: {os.cpu_count()} CPUs ({model}), {mem:.1f} GiB memory, Linux {os.uname().release}; load average at start {load}
- Code: commit {commit}{'; uncommitted: ' + ', '.join(l[3:] for l in dirty.splitlines()) if dirty else ''}; release builds
- Settings: anvil without block time, {blocks} blocks by `evm_mine` {interval} ms apart per row, after {idle} s idle with every subscription set up; one gateway (`worker_threads = {workers}`{' (one per core)' if workers == '0' else ''}, `[websocket]` defaults but `max_connections` and `max_connections_per_ip` 20000: every client is on 127.0.0.1); one edge node, inside the bench client's process on a runtime of its own (1 worker); the clients on {threads} tokio workers; every row from a fresh anvil and gateway; each socket one `eth_subscribe ["newHeads"]`
- Whole run took {int(secs) // 60} min {int(secs) % 60} s

{table}

Targets (issue 13) at 10,000 subscribers: p99 of the publish → last subscriber delay under 50 ms, under 20 KiB per idle subscriber.
{chr(10).join('- ' + v for v in verdict) or '- (no row at N = 10,000)'}

- **Delay** is from the node's publish (its chain-state watch firing, in the bench process) to a client reading the notification, one clock for both. *p50 / p99 ms*: over all (block, subscriber) pairs; *last subscriber*: per block the slowest subscriber's delay, then p50 / p99 / max over the blocks (nearest rank: with {blocks} blocks the p99 is the {'slowest block' if int(blocks) < 100 else 'block ranked ' + str(-(-99 * int(blocks) // 100)) + ' of ' + blocks}); *first subscriber*: per block the fastest, the path node → QUIC → gateway → one socket without the fan-out spread. *missed*: pairs with no notification (a closed socket, or a block skipped).
- **Memory**: the gateway's `VmRSS` after a warm-up (16 subscribers, 2 blocks, gone again), after every subscription was set up and idle, and after the blocks; *KiB per idle subscriber* = (idle − before) / subscribed. The kernel's socket buffers are not in RSS: *kernel TCP KiB per socket pair* is the growth of `/proc/net/sockstat` TCP `mem` (pages) per connection, both ends (client and gateway) together.
- **What shares the machine**: the bench client (N sockets reading, and the edge node) runs on the same {os.cpu_count()} cores as the gateway and anvil, so the clients' own reading is inside every delay and the gateway never has the cores to itself; *clients CPU ms per block* shows how much. Other work on the machine (see the load average above) adds noise. The bench's publish watcher woke at most {worst} ms after the node's own publish stamp (ms resolution). Gateway warnings or errors logged: {warn}.
"""
text = open(results_md).read()
text = re.sub(r"\n## WebSocket fan-out \(issue 13\).*?(?=\n## |\Z)", "", text, flags=re.S).rstrip("\n")
open(results_md, "w").write(text + "\n\n" + section)
print(f"written to {results_md}")
PY
