"""Proves that web3.py's WebSocket subscriptions through the gateway (GATEWAY_WS) deliver the same
blocks and logs as the same subscriptions made directly to anvil (DIRECT_WS). It deploys a tiny
contract that emits Ping(address indexed from, uint256 value) on every call (over RPC_URL, anvil's
HTTP URL), subscribes on both URLs with `AsyncWeb3(WebSocketProvider(...))`: `eth.subscribe("newHeads")`
and `eth.subscribe("logs", {address, topics: [Ping's topic0]})`, read from
`socket.process_subscriptions()`, mines BLOCKS blocks of one or two calls each, waits until both sides
have them all, and compares block hashes by number and logs (blockHash, transactionHash, logIndex,
data, topics).

    GATEWAY_WS=ws://127.0.0.1:8545/ DIRECT_WS=ws://127.0.0.1:8546 RPC_URL=http://127.0.0.1:8546 \\
        .deps/venv/bin/python tests/clients/web3py_subscribe.py

BLOCKS (default 5), TIMEOUT_S (default 60), BLOCK_GAP_MS (pause between blocks, default 200),
SENDER_KEY (default anvil's first dev account). Anvil mines only when told: the script turns automine
off (evm_setAutomine) and mines each block with evm_mine, then turns it back on.
Prints a `RESULT {json}` line, then `web3.py subscribe OK: …`; else `web3.py subscribe FAILED: …` on
stderr, exit 1. The same logic as subscribe-common.mjs (used by the viem and ethers scripts).
web3.py sends its WebSocket requests as binary frames (its default), so the gateway must take those.
web3.py (and websockets, which it requires) comes from the venv at .deps/venv, installed by
scripts/deps.sh.
"""

import asyncio
import json
import os
import sys
import time

from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3, WebSocketProvider

ANVIL_DEV_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

# Every call to the contract, whatever its calldata, emits Ping(msg.sender, first calldata word).
EVENT_SIGNATURE = "Ping(address,uint256)"
EVENT_ABI = [
    {
        "type": "event",
        "name": "Ping",
        "anonymous": False,
        "inputs": [
            {"name": "from", "type": "address", "indexed": True},
            {"name": "value", "type": "uint256", "indexed": False},
        ],
    }
]


def contract_code(topic0):
    """Hand-assembled EVM code (no solc here); topic0 = keccak256(EVENT_SIGNATURE) as 0x + 64 hex.

    runtime: PUSH1 0 CALLDATALOAD PUSH1 0 MSTORE          memory[0..32] = calldata word 0
             CALLER PUSH32 topic0 PUSH1 32 PUSH1 0 LOG2   log(data = memory[0..32], topic0, caller)
             STOP                                          46 bytes
    init:    PUSH1 46 DUP1 PUSH1 11 PUSH1 0 CODECOPY PUSH1 0 RETURN, then the runtime (11 + 46 bytes)
    """
    runtime = f"600035600052337f{topic0[2:]}60206000a200"
    assert len(runtime) == 46 * 2, "runtime code is not 46 bytes"
    return "0x602e80600b6000396000f3" + runtime, "0x" + runtime


def call_data(n):
    """The calldata word of the n-th call (1, 2, ...; sync calls use 0)."""
    return "0x" + format(n, "064x")


class Failure(Exception):
    pass


def fail(message):
    print(f"web3.py subscribe FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def hexstr(value):
    return value.to_0x_hex() if hasattr(value, "to_0x_hex") else str(value).lower()


class Side:
    """What one subscriber (the gateway's or anvil's) delivered, in arrival order."""

    def __init__(self, name):
        self.name = name
        self.blocks = []  # {number, hash}
        self.logs = []  # {blockNumber, blockHash, transactionHash, logIndex, data, topics}
        self.errors = []

    def block(self, number, block_hash):
        self.blocks.append({"number": int(number), "hash": hexstr(block_hash).lower()})

    def log(self, log):
        self.logs.append(
            {
                "blockNumber": int(log["blockNumber"]),
                "blockHash": hexstr(log["blockHash"]).lower(),
                "transactionHash": hexstr(log["transactionHash"]).lower(),
                "logIndex": int(log["logIndex"]),
                "data": hexstr(log["data"]).lower(),
                "topics": [hexstr(t).lower() for t in log["topics"]],
            }
        )

    def error(self, message):
        self.errors.append(message)

    def saw_block(self, number):
        return any(b["number"] == number for b in self.blocks)

    def saw_tx(self, tx_hash):
        return any(entry["transactionHash"] == tx_hash.lower() for entry in self.logs)

    def in_range(self, first, last):
        blocks = sorted((b for b in self.blocks if first <= b["number"] <= last), key=lambda b: b["number"])
        logs = sorted(
            (entry for entry in self.logs if first <= entry["blockNumber"] <= last),
            key=lambda entry: (entry["blockNumber"], entry["logIndex"]),
        )
        return {"blocks": blocks, "logs": logs}

    def complete(self, first, last, tx_hashes):
        return all(self.saw_block(n) for n in range(first, last + 1)) and all(self.saw_tx(h) for h in tx_hashes)

    def summary(self):
        errors = f", errors: {'; '.join(self.errors)}" if self.errors else ""
        return f"{self.name} delivered {len(self.blocks)} blocks and {len(self.logs)} logs{errors}"

    def progress(self, first, last, tx_hashes):
        numbers = {b["number"] for b in self.blocks}
        missing = [n for n in range(first, last + 1) if n not in numbers]
        logs = sum(1 for h in tx_hashes if self.saw_tx(h))
        text = f"{self.name} saw {last - first + 1 - len(missing)} of blocks {first}..{last}"
        if missing:
            text += f" (missing {','.join(map(str, missing))})"
        text += f", logs of {logs} of {len(tx_hashes)} txs"
        if self.errors:
            text += f", errors: {'; '.join(self.errors)}"
        return text


async def wait_until(done, deadline):
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.025)


def compare_sides(gateway, direct, first, last, tx_hashes):
    """None when both sides delivered the same over [first, last], else the first difference."""
    g, d = gateway.in_range(first, last), direct.in_range(first, last)
    for side, seen in ((gateway, g), (direct, d)):
        for a, b in zip(seen["blocks"], seen["blocks"][1:]):
            if a["number"] == b["number"]:
                return f"{side.name} delivered block {b['number']} twice ({a['hash']}, {b['hash']})"
        if len(seen["blocks"]) != last - first + 1:
            return f"{side.name} delivered {len(seen['blocks'])} of blocks {first}..{last}"
        for a, b in zip(seen["logs"], seen["logs"][1:]):
            if (a["blockNumber"], a["logIndex"]) == (b["blockNumber"], b["logIndex"]):
                return f"{side.name} delivered the log {b['blockNumber']}/{b['logIndex']} (tx {b['transactionHash']}) twice"
        if len(seen["logs"]) != len(tx_hashes):
            return f"{side.name} delivered {len(seen['logs'])} logs in blocks {first}..{last}, expected {len(tx_hashes)}"
    for a, b in zip(g["blocks"], d["blocks"]):
        if a["hash"] != b["hash"]:
            return f"block {a['number']}: gateway hash {a['hash']}, anvil {b['hash']}"
    for i, (a, b) in enumerate(zip(g["logs"], d["logs"])):
        for field in ("blockNumber", "blockHash", "transactionHash", "logIndex", "data", "topics"):
            if a[field] != b[field]:
                return (
                    f"log #{i} (block {b['blockNumber']}, index {b['logIndex']}): "
                    f"gateway {field} {json.dumps(a[field])}, anvil {json.dumps(b[field])}"
                )
    expected = {h.lower() for h in tx_hashes}
    strays = [entry for entry in d["logs"] if entry["transactionHash"] not in expected]
    if strays:
        return f"anvil delivered a log of tx {strays[0]['transactionHash']}, which the script did not send"
    return None


def result_line(contract, first, last, gateway, direct):
    def side(s):
        return {**s.in_range(first, last), "errors": s.errors}

    body = {
        "client": "web3.py",
        "contract": contract.lower(),
        "first_block": first,
        "last_block": last,
        "gateway": side(gateway),
        "direct": side(direct),
    }
    return "RESULT " + json.dumps(body, separators=(",", ":"))


class Run:
    def __init__(self):
        need = lambda name: os.environ.get(name) or fail(f"{name} is not set")  # noqa: E731
        self.gateway_ws, self.direct_ws, self.rpc_url = need("GATEWAY_WS"), need("DIRECT_WS"), need("RPC_URL")
        try:
            self.blocks = int(os.environ.get("BLOCKS") or "5")
            self.timeout_s = float(os.environ.get("TIMEOUT_S") or "60")
            self.block_gap = float(os.environ.get("BLOCK_GAP_MS") or "200") / 1000
        except ValueError as err:
            fail(f"bad number in BLOCKS/TIMEOUT_S/BLOCK_GAP_MS: {err}")
        if self.blocks < 1:
            fail("BLOCKS must be at least 1")
        self.deadline = time.monotonic() + self.timeout_s
        self.sender = Account.from_key(os.environ.get("SENDER_KEY") or ANVIL_DEV_KEY_0)
        self.w3 = AsyncWeb3(AsyncHTTPProvider(self.rpc_url, request_kwargs={"timeout": 10}))
        self.topic0 = Web3.keccak(text=EVENT_SIGNATURE).to_0x_hex()
        self.init_code, self.runtime_code = contract_code(self.topic0)
        self.gateway, self.direct = Side("gateway"), Side("direct")
        self.sockets = []  # (w3, [subscription ids], reader task)
        self.automine_was = None
        self.chain_id = self.nonce = None

    async def rpc(self, method, params):
        response = await self.w3.provider.make_request(method, params)
        if response.get("error"):
            raise Failure(f"{method}: {response['error']}")
        return response.get("result")

    async def mine_calls(self, to, datas):
        """Sends one tx per calldata (consecutive nonces; to=None deploys), mines one block,
        returns the receipts."""
        block = await self.w3.eth.get_block("latest")
        tip = await self.w3.eth.max_priority_fee
        hashes = []
        for data in datas:
            tx = {
                "chainId": self.chain_id,
                "nonce": self.nonce,
                "gas": 200_000,
                "maxPriorityFeePerGas": tip,
                "maxFeePerGas": 2 * block["baseFeePerGas"] + tip,
                "data": data,
                "type": 2,
            }
            if to is not None:
                tx["to"] = to
            self.nonce += 1
            signed = Account.sign_transaction(tx, self.sender.key)
            hashes.append(await self.w3.eth.send_raw_transaction(signed.raw_transaction))
        await self.rpc("evm_mine", [])
        receipts = [await self.w3.eth.get_transaction_receipt(h) for h in hashes]
        for r in receipts:
            if r["status"] != 1:
                raise Failure(f"tx {r['transactionHash'].to_0x_hex()} in block {r['blockNumber']} has status {r['status']}")
        return receipts

    async def subscribe(self, side, url, contract):
        ws = AsyncWeb3(WebSocketProvider(url, max_connection_retries=1))
        await ws.provider.connect()
        heads_id = await ws.eth.subscribe("newHeads")
        logs_id = await ws.eth.subscribe("logs", {"address": contract, "topics": [self.topic0]})
        ping = ws.eth.contract(address=contract, abi=EVENT_ABI).events.Ping()

        async def read():
            try:
                async for message in ws.socket.process_subscriptions():
                    result = message["result"]
                    if message["subscription"] == heads_id:
                        side.block(result["number"], result["hash"])
                    elif message["subscription"] == logs_id:
                        # The decoded event must match what was sent: the ABI and the bytecode agree.
                        event = ping.process_log(result)
                        if event["args"]["from"] != self.sender.address or call_data(event["args"]["value"]) != hexstr(result["data"]):
                            side.error(f"log {hexstr(result['transactionHash'])} decoded as {dict(event['args'])}")
                        side.log(result)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # socket closed, decoding error, ...
                side.error(f"{type(err).__name__}: {err}")

        self.sockets.append((ws, [heads_id, logs_id], asyncio.create_task(read())))

    async def sync(self, contract):
        """Until both sides have delivered the block and the log of one and the same sync call (so
        all four subscriptions are live), mines one more; returns the last such block's number."""
        rounds = []
        sides = (self.gateway, self.direct)

        def seen_everywhere():
            return any(all(s.saw_block(n) and s.saw_tx(h) for s in sides) for n, h in rounds)

        def failing():
            return any(s.errors for s in sides)

        while time.monotonic() < self.deadline and not failing():
            (r,) = await self.mine_calls(contract, [call_data(0)])
            rounds.append((r["blockNumber"], r["transactionHash"].to_0x_hex()))
            # Up to 1 s per round; a late notification of an earlier round still counts.
            if await wait_until(lambda: seen_everywhere() or failing(), min(self.deadline, time.monotonic() + 1)):
                if not failing():
                    return rounds[-1][0]
        raise Failure(f"subscriptions not delivering (timeout {self.timeout_s:g} s): {self.gateway.summary()}; {self.direct.summary()}")

    async def cleanup(self):
        for ws, ids, task in self.sockets:
            for sub_id in ids:
                try:
                    await asyncio.wait_for(ws.eth.unsubscribe(sub_id), 2)
                except Exception:
                    pass
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            try:
                await asyncio.wait_for(ws.provider.disconnect(), 2)
            except Exception:
                pass
        self.sockets = []
        if self.automine_was:
            try:
                await self.rpc("evm_setAutomine", [True])
            except Exception:
                pass
        self.automine_was = None

    async def main(self):
        self.chain_id = await self.w3.eth.chain_id
        self.automine_was = await self.rpc("anvil_getAutomine", [])
        await self.rpc("evm_setAutomine", [False])
        self.nonce = await self.w3.eth.get_transaction_count(self.sender.address, "pending")

        # Deploy, and check that the chain holds exactly the hand-assembled runtime code.
        (deployed,) = await self.mine_calls(None, [self.init_code])
        contract = deployed["contractAddress"]
        code = (await self.w3.eth.get_code(contract)).to_0x_hex()
        if code != self.runtime_code:
            raise Failure(f"contract {contract} has code {code}, expected {self.runtime_code}")

        # Subscribe on both URLs (two providers, two sockets even when the URLs are equal).
        await self.subscribe(self.gateway, self.gateway_ws, contract)
        await self.subscribe(self.direct, self.direct_ws, contract)

        # Count from the first block after all four subscriptions have delivered a sync call.
        first = await self.sync(contract) + 1
        tx_hashes, calls, last = [], 0, first - 1
        for i in range(self.blocks):
            values = [calls + 1] if i % 2 == 0 else [calls + 1, calls + 2]  # 1, 2, 1, 2, ... calls per block
            calls = values[-1]
            receipts = await self.mine_calls(contract, [call_data(v) for v in values])
            for v, r in zip(values, receipts):
                tx_hashes.append(r["transactionHash"].to_0x_hex())
                last = max(last, r["blockNumber"])
                logs = r["logs"]
                if len(logs) != 1 or logs[0]["data"].to_0x_hex() != call_data(v) or logs[0]["topics"][0].to_0x_hex() != self.topic0:
                    raise Failure(f"tx {tx_hashes[-1]} has {len(logs)} logs, expected one Ping with data {call_data(v)}")
            if self.block_gap and i + 1 < self.blocks:
                await asyncio.sleep(self.block_gap)
        last = max(last, await self.w3.eth.block_number)

        sides = (self.gateway, self.direct)
        done = await wait_until(
            lambda: all(s.complete(first, last, tx_hashes) for s in sides) or any(s.errors for s in sides), self.deadline
        )
        if done:
            await asyncio.sleep(0.3)  # let any duplicate arrive before comparing
        await self.cleanup()
        print(result_line(contract, first, last, self.gateway, self.direct), flush=True)
        for s in sides:
            if s.errors:
                raise Failure(f"{s.name}: {'; '.join(s.errors)}")
        if not done:
            raise Failure(
                f"timeout after {self.timeout_s:g} s: {self.gateway.progress(first, last, tx_hashes)}; "
                f"{self.direct.progress(first, last, tx_hashes)}"
            )
        diff = compare_sides(self.gateway, self.direct, first, last, tx_hashes)
        if diff:
            raise Failure(diff)
        print(f"web3.py subscribe OK: {last - first + 1} blocks {len(tx_hashes)} logs identical to anvil's (blocks {first}..{last})")


async def run():
    r = Run()
    try:
        # Never outlive TIMEOUT_S by much, whatever hangs.
        await asyncio.wait_for(r.main(), r.timeout_s + 10)
    except BaseException as err:
        try:
            await asyncio.wait_for(r.cleanup(), 5)
        except BaseException:
            pass
        if isinstance(err, Failure):
            fail(str(err))
        if isinstance(err, asyncio.TimeoutError):
            fail(f"still running {r.timeout_s + 10:g} s after start")
        if isinstance(err, SystemExit):
            raise
        fail(f"{type(err).__name__}: {err}")
    finally:
        await r.w3.provider.disconnect()


if __name__ == "__main__":
    asyncio.run(run())
