#!/usr/bin/env bash
# Bytes on the wire for blocks with their transactions, with and without `Accept-Encoding: gzip`,
# and the gateway's CPU per request each way, for every BIN_DIR given.
#
#   loadtests/gzip.sh [BIN_DIR ...]   default: target/release (built when missing)
#
# Starts, on 127.0.0.1 only: anvil, one edge node and the gateway; makes 8 blocks of 40 transfers
# each, then asks for them (`eth_getBlockByNumber(n, true)`) GZ_N times each way on one keep-alive
# connection: first while they are recent (each gzip answer compressed for its caller), then after
# 128 more blocks, when they are final and kept by the gateway (sent from their once-deflated
# form). Prints bytes per answer (body and headers) and the gateway's CPU µs per request.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${GZ_N:-400}
BASE=${GZ_PORT_BASE:-29745}
# shellcheck source=stack.sh
source "$ROOT/loadtests/stack.sh" "$@"

measure() { # BIN_DIR RUN
  local bin=$1 run="$TMP/run-$2" pids=() anvil="http://127.0.0.1:$BASE" gw
  mkdir -p "$run"
  "$ANVIL_BIN" --host 127.0.0.1 --port "$BASE" --quiet >"$run/anvil.log" 2>&1 &
  pids+=($!)
  PIDS+=($!)
  wait_for rpc "$anvil" eth_chainId '[]'
  WORKERS=1 start_pair "$bin" "$run" "$BASE" "$anvil"
  gw=$GW_PID
  pids+=("$GW_PID" "$EDGE_PID")
  python3 - "$bin" "$N" "$BASE" "$gw" <<'PY'
import http.client, json, os, sys, time
bin_dir, n, base, gw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def call(port, method, params, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/", json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
              {"content-type": "application/json", **(headers or {})})
    return json.loads(c.getresponse().read())
call(base, "evm_setAutomine", [False])
blocks = []
for b in range(8):
    for i in range(40):
        call(base, "eth_sendTransaction", [{"from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
              "to": "0x" + os.urandom(20).hex(), "value": hex(1 + i)}])
    call(base, "evm_mine", [])
    blocks.append(int(call(base, "eth_blockNumber", [])["result"], 16))
call(base, "evm_setAutomine", [True])
time.sleep(1.5)  # the node sees the new head
def cpu():
    f = open(f"/proc/{gw}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def run(label, enc):
    c = http.client.HTTPConnection("127.0.0.1", base + 1)
    headers = {"content-type": "application/json"}
    if enc:
        headers["accept-encoding"] = "gzip"
    wire = 0
    c0 = cpu()
    for i in range(n):
        body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber",
                           "params": [hex(blocks[i % len(blocks)]), True]})
        c.request("POST", "/", body, headers)
        r = c.getresponse()
        data = r.read()
        assert r.status == 200 and (r.getheader("content-encoding") == "gzip") == enc, (r.status, r.getheaders())
        wire += len(data) + sum(len(k) + len(v) + 4 for k, v in r.getheaders()) + 17
    return wire / n, (cpu() - c0) * 1e6 / n
for phase in ("recent", "final"):
    if phase == "final":
        call(base, "anvil_mine", ["0x80"])
        time.sleep(2)
        run("warm", False)
    plain, plain_cpu = run(phase, False)
    gz, gz_cpu = run(phase, True)
    print(f"{bin_dir:<24} {phase:<6} blocks of 40 txs: {plain:8.0f} B plain, {gz:7.0f} B gzip ({plain / gz:4.1f}x fewer bytes); gateway CPU {plain_cpu:6.1f} us/req plain, {gz_cpu:6.1f} us/req gzip")
PY
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

i=0
for d in "${DIRS[@]}"; do
  i=$((i + 1))
  measure "$d" "$i"
done
