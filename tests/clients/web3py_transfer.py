"""Proves that web3.py, the Python Ethereum client, works end to end through the JSON-RPC URL in
RPC_URL: it reads the chain id and the sender's balance, signs a 0.01 ETH transfer to a fresh random
address locally (Account.sign_transaction, then eth_sendRawTransaction), polls for the receipt (30 s
at most), and checks that the receipt says success and the recipient holds 0.01 ETH.

    RPC_URL=http://127.0.0.1:8545 .deps/venv/bin/python tests/clients/web3py_transfer.py

SENDER_KEY overrides the sender's private key (default: anvil's first dev account).
RYW_ROUNDS=N then runs N read-your-writes rounds: another transfer to the same recipient, its
receipt, and at once eth_blockNumber, the recipient's balance and the sender's nonce at `latest`,
which must all show the transaction's block or later.
web3.py comes from the venv at .deps/venv, installed by scripts/deps.sh.
"""

import os
import sys

from eth_account import Account
from web3 import Web3

ANVIL_DEV_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
VALUE = Web3.to_wei("0.01", "ether")


def fail(message):
    print(f"web3.py client FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    url = os.environ.get("RPC_URL") or fail("RPC_URL is not set")
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
    sender = Account.from_key(os.environ.get("SENDER_KEY") or ANVIL_DEV_KEY_0)

    chain_id = w3.eth.chain_id
    balance = w3.eth.get_balance(sender.address)
    if balance < VALUE:
        fail(f"sender {sender.address} on chain {chain_id} has {Web3.from_wei(balance, 'ether')} ETH, needs more than 0.01")

    to = Account.create().address  # fresh random address
    tx = {
        "chainId": chain_id,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "from": sender.address,
        "to": to,
        "value": VALUE,
    }
    tx["gas"] = w3.eth.estimate_gas(tx)
    base_fee = w3.eth.get_block("latest").get("baseFeePerGas")
    if base_fee is None:  # chain without EIP-1559
        tx["gasPrice"] = w3.eth.gas_price
    else:
        tip = w3.eth.max_priority_fee
        tx.update(type=2, maxPriorityFeePerGas=tip, maxFeePerGas=2 * base_fee + tip)
    del tx["from"]

    signed = Account.sign_transaction(tx, sender.key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.25)
    hash_hex, block = w3.to_hex(tx_hash), receipt["blockNumber"]
    if receipt["status"] != 1:
        fail(f"tx {hash_hex} in block {block} has status {receipt['status']}")

    received = w3.eth.get_balance(to, block_identifier=block)
    if received != VALUE:
        fail(f"recipient {to} holds {Web3.from_wei(received, 'ether')} ETH at block {block}, expected 0.01")
    print(f"web3.py client OK: tx {hash_hex} block {block}")

    rounds = int(os.environ.get("RYW_ROUNDS") or "0")
    sent = VALUE
    for i in range(rounds):
        tx["nonce"] = tx["nonce"] + 1
        signed = Account.sign_transaction(tx, sender.key)
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30, poll_latency=0.05
        )
        sent += VALUE
        block = receipt["blockNumber"]
        seen = w3.eth.block_number
        if seen < block:
            fail(f"round {i}: eth_blockNumber {seen} after a receipt for block {block}")
        received = w3.eth.get_balance(to, "latest")
        if received != sent:
            fail(f"round {i}: recipient holds {received} wei at latest after block {block}, expected {sent}")
        nonce = w3.eth.get_transaction_count(sender.address, "latest")
        if nonce < tx["nonce"] + 1:
            fail(f"round {i}: sender nonce {nonce} at latest after block {block}, expected {tx['nonce'] + 1}")
    if rounds:
        print(f"web3.py read-your-writes OK: {rounds} rounds")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as err:  # connection refused, RPC error, receipt timeout, ...
        fail(f"{type(err).__name__}: {err}")
