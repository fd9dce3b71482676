#!/usr/bin/env python3
"""Helpers for workload 3 (mixed realistic reads while blocks are produced). Python stdlib only.

    mixed.py pool  --rpc URL --lua OUT.lua --json OUT.json   deploy the eth_call contract, write the question pool
    mixed.py heads --rpc URL --out FILE                     record when each new head was first seen (until SIGTERM)
    mixed.py txs   --rpc URL                                 send a transfer every --interval s (until SIGTERM)
    mixed.py stale --rpc URL --pool OUT.json --heads FILE --samples FILE...
                                                             check sampled answers against anvil, print JSON

All requests go to the given URL, which run.sh points at anvil on 127.0.0.1.

The stale check (see README.md, "How stale answers are detected"):
  * a question addressed by block number or hash (or a static one) must get exactly the answer anvil
    gives for the same question after the run;
  * a `latest` question (and eth_blockNumber) must match anvil's answer at some block that was the
    head while the request was in flight, i.e. block B with seen(B) - slack <= t1 and seen(B+1) > t0,
    where seen(B) is when the head watcher first saw block B, t0 the send and t1 the receive time.
    An answer that instead matches an older block is stale (and we say how many blocks behind);
    one that matches none of the last 16 blocks is counted as a mismatch (also stale).
"""

import argparse
import bisect
import http.client
import json
import random
import signal
import sys
import time
import urllib.parse

# Runtime code of a tiny contract: returns BALANCE(calldata[0:32]), i.e. eth_call with an address
# as data answers that address's balance at the given block, so eth_call answers change as
# transfers land (like multicall's getEthBalance).
#   PUSH1 0 CALLDATALOAD BALANCE PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
RUNTIME = "6000353160005260206000f3"
# Init code: PUSH12 <runtime> PUSH1 0 MSTORE PUSH1 12 PUSH1 20 RETURN
INITCODE = "0x6b" + RUNTIME + "600052600c6014f3"

METHODS = [  # Zipf rank order of method popularity
    "eth_call",
    "eth_getBalance",
    "eth_blockNumber",
    "eth_getBlockByNumber",
    "eth_getTransactionCount",
    "eth_chainId",
    "eth_getBlockByHash",
]
STATE_METHODS = {"eth_call", "eth_getBalance", "eth_getTransactionCount"}


class Rpc:
    """A keep-alive JSON-RPC client."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/"
        self.conn = None

    def call_raw(self, method, params):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request("POST", self.path, body, {"content-type": "application/json"})
                return json.loads(self.conn.getresponse().read())
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method, params):
        r = self.call_raw(method, params)
        if "error" in r:
            raise RuntimeError(f"{method} {params}: {r['error']}")
        return r["result"]


def zipf(n, s):
    w = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


# ---------------------------------------------------------------- pool


def deploy(rpc, sender):
    tx = rpc.call("eth_sendTransaction", [{"from": sender, "data": INITCODE, "gas": "0x30000"}])
    deadline = time.time() + 30
    while time.time() < deadline:
        receipt = rpc.call("eth_getTransactionReceipt", [tx])
        if receipt:
            if receipt.get("status") != "0x1":
                sys.exit(f"contract deployment failed: {receipt}")
            return receipt["contractAddress"]
        time.sleep(0.2)
    sys.exit("contract deployment was not mined within 30 s")


def cmd_pool(a):
    rpc = Rpc(a.rpc)
    rng = random.Random(a.seed)
    dev = rpc.call("eth_accounts", [])
    contract = deploy(rpc, dev[-1])
    accounts = dev[: a.accounts]
    while len(accounts) < a.accounts:  # never-used addresses: balance 0, never change
        accounts.append("0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40)))
    head = int(rpc.call("eth_blockNumber", []), 16)
    numbers = [n for n in range(head, head - a.blocks, -1) if n >= 0]
    hashes = {n: rpc.call("eth_getBlockByNumber", [hex(n), False])["hash"] for n in numbers}

    w_method = dict(zip(METHODS, zipf(len(METHODS), 1.0)))
    w_account = zipf(len(accounts), 1.0)
    # Block selectors for state reads, by popularity: latest, then recent blocks first, each by
    # number and by hash (EIP-1898).
    selectors = [("latest", None)]
    for n in numbers:
        selectors.append((hex(n), n))
        selectors.append(({"blockHash": hashes[n]}, n))
    w_sel = zipf(len(selectors), a.block_skew)
    w_num = zipf(len(numbers) + 1, a.block_skew)  # eth_getBlockByNumber: latest, then recent
    w_hash = zipf(len(numbers), a.block_skew)  # eth_getBlockByHash: recent first

    questions = []  # (weight, method, params, index of the "latest" parameter or None)
    for m in METHODS:
        wm = w_method[m]
        if m in STATE_METHODS:
            for ai, acct in enumerate(accounts):
                for si, (sel, _) in enumerate(selectors):
                    if m == "eth_call":
                        data = "0x" + "0" * 24 + acct[2:].lower()
                        params = [{"to": contract, "data": data}, sel]
                    else:
                        params = [acct, sel]
                    latest_at = 1 if sel == "latest" else None
                    questions.append((wm * w_account[ai] * w_sel[si], m, params, latest_at))
        elif m == "eth_getBlockByNumber":
            for i, sel in enumerate(["latest"] + [hex(n) for n in numbers]):
                questions.append((wm * w_num[i], m, [sel, False], 0 if sel == "latest" else None))
        elif m == "eth_getBlockByHash":
            for i, n in enumerate(numbers):
                questions.append((wm * w_hash[i], m, [hashes[n], False], None))
        else:  # eth_blockNumber, eth_chainId
            questions.append((wm, m, [], None))
    questions.sort(key=lambda q: -q[0])
    total = sum(q[0] for q in questions)

    out = []
    with open(a.lua, "w") as lua:
        lua.write("-- Written by loadtests/mixed.py pool: question bodies and cumulative Zipf weights.\n")
        lua.write("return {\nbodies = {\n")
        cum = 0.0
        cums = []
        for i, (w, m, params, latest_at) in enumerate(questions, start=1):
            body = json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": params},
                              separators=(",", ":"))
            assert "]==]" not in body
            lua.write(f"[==[{body}]==],\n")
            cum += w / total
            cums.append(cum)
            out.append({"method": m, "params": params, "latest_at": latest_at, "weight": w / total})
        cums[-1] = 1.0
        lua.write("},\ncum = {\n")
        lua.write(",\n".join(f"{c:.12f}" for c in cums))
        lua.write("\n},\n}\n")
    share = {}
    for q in out:
        share[q["method"]] = share.get(q["method"], 0) + q["weight"]
    latest_share = sum(q["weight"] for q in out if q["latest_at"] is not None or q["method"] == "eth_blockNumber")
    with open(a.json, "w") as f:
        json.dump({"head": head, "contract": contract, "questions": out}, f)
    print(json.dumps({
        "questions": len(out), "head_at_pool": head, "contract": contract,
        "accounts": len(accounts), "blocks": len(numbers),
        "method_share": {k: round(v, 3) for k, v in share.items()},
        "latest_share": round(latest_share, 3),
    }))


# ---------------------------------------------------------------- heads and txs


class Stop:
    stop = False

    def __init__(self):
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)

    def set(self, *_):
        self.stop = True


def cmd_heads(a):
    rpc, stop, last = Rpc(a.rpc), Stop(), None
    with open(a.out, "w") as f:
        while not stop.stop:
            try:
                n = int(rpc.call("eth_blockNumber", []), 16)
            except (OSError, RuntimeError, http.client.HTTPException):
                n = None
            if n is not None and n != last:
                f.write(f"{time.time():.6f} {n}\n")
                f.flush()
                last = n
            time.sleep(a.interval)


def cmd_txs(a):
    rpc, stop, rng = Rpc(a.rpc), Stop(), random.Random(a.seed)
    dev = rpc.call("eth_accounts", [])[:10]
    i = sent = 0
    while not stop.stop:
        frm, to = dev[i % len(dev)], dev[(3 * i + 1) % len(dev)]
        try:
            rpc.call("eth_sendTransaction", [{"from": frm, "to": to, "value": hex(rng.randint(1, 10**15))}])
            sent += 1
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            print(f"txs: {e}", file=sys.stderr)
        i += 1
        time.sleep(a.interval)
    print(json.dumps({"sent": sent}))


# ---------------------------------------------------------------- stale check


def cmd_stale(a):
    rpc = Rpc(a.rpc)
    pool = json.load(open(a.pool))["questions"]
    heads = []  # (time first seen, block), block increasing
    for line in open(a.heads):
        t, n = line.split()
        if not heads or int(n) > heads[-1][1]:
            heads.append((float(t), int(n)))
    if not heads:
        sys.exit("no head records")
    head_blocks = [n for _, n in heads]
    top = heads[-1][1]

    def seen(b):
        """When block b (or a later one) was first seen as head; inf if never."""
        i = bisect.bisect_left(head_blocks, b)
        return heads[i][0] if i < len(heads) else float("inf")

    answers = {}

    def anvil(q, block):
        key = (q, block)
        if key not in answers:
            qq = pool[q]
            params = json.loads(json.dumps(qq["params"]))
            if block is not None:
                params[qq["latest_at"]] = hex(block)
            r = rpc.call_raw(qq["method"], params)
            answers[key] = r.get("result", ("error", r.get("error")))
        return answers[key]

    stats = {"sampled": 0, "failed": 0, "checked": 0, "fresh": 0, "stale": 0, "stale_latest": 0,
             "stale_block": 0, "mismatch": 0, "max_blocks_behind": 0, "latest_checked": 0,
             "block_checked": 0, "examples": []}
    for path in a.samples:
        try:
            lines = open(path).read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split(" ", 5)
            if len(parts) < 6:
                continue
            t0, t1, q, status, cache, body = float(parts[0]), float(parts[1]), int(parts[2]) - 1, parts[3], parts[4], parts[5]
            stats["sampled"] += 1
            try:
                resp = json.loads(body)
            except ValueError:
                stats["failed"] += 1
                continue
            if status != "200" or "error" in resp or "result" not in resp or not 0 <= q < len(pool):
                stats["failed"] += 1
                continue
            got = resp["result"]
            qq = pool[q]
            stats["checked"] += 1
            is_latest = qq["latest_at"] is not None or qq["method"] == "eth_blockNumber"
            if not is_latest:
                stats["block_checked"] += 1
                if got == anvil(q, None):
                    stats["fresh"] += 1
                else:
                    stats["stale"] += 1
                    stats["stale_block"] += 1
                    if len(stats["examples"]) < 3:
                        stats["examples"].append({"question": qq, "cache": cache, "got": got,
                                                  "anvil": anvil(q, None)})
                continue
            stats["latest_checked"] += 1
            lo = max(0, bisect.bisect_right([t for t, _ in heads], t0) - 1)
            first = heads[lo][1]
            window = [b for b in range(first, top + 1)
                      if seen(b) - a.slack <= t1 and seen(b + 1) > t0]
            if not window:
                window = [first]

            def answer_at(b):
                return hex(b) if qq["method"] == "eth_blockNumber" else anvil(q, b)

            if any(got == answer_at(b) for b in window):
                stats["fresh"] += 1
                continue
            stats["stale"] += 1
            stats["stale_latest"] += 1
            behind = None
            for b in range(min(window) - 1, max(-1, min(window) - 17), -1):
                if got == answer_at(b):
                    behind = min(window) - b
                    break
            if behind is None:
                stats["mismatch"] += 1
            else:
                stats["max_blocks_behind"] = max(stats["max_blocks_behind"], behind)
            if len(stats["examples"]) < 3:
                stats["examples"].append({"question": qq, "cache": cache, "got": got,
                                          "window": window, "blocks_behind": behind})
    print(json.dumps(stats))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("pool")
    s.add_argument("--rpc", required=True)
    s.add_argument("--lua", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--accounts", type=int, default=16)
    s.add_argument("--blocks", type=int, default=32)
    s.add_argument("--block-skew", type=float, default=1.5, help="Zipf exponent over block selectors")
    s.add_argument("--seed", type=int, default=3)
    s = sub.add_parser("heads")
    s.add_argument("--rpc", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--interval", type=float, default=0.02)
    s = sub.add_parser("txs")
    s.add_argument("--rpc", required=True)
    s.add_argument("--interval", type=float, default=0.25)
    s.add_argument("--seed", type=int, default=4)
    s = sub.add_parser("stale")
    s.add_argument("--rpc", required=True)
    s.add_argument("--pool", required=True)
    s.add_argument("--heads", required=True)
    s.add_argument("--samples", nargs="+", required=True)
    s.add_argument("--slack", type=float, default=0.1,
                   help="seconds a new head may predate its first sighting (poll interval + margin)")
    a = p.parse_args()
    {"pool": cmd_pool, "heads": cmd_heads, "txs": cmd_txs, "stale": cmd_stale}[a.cmd](a)


if __name__ == "__main__":
    main()
