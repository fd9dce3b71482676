// Proves that ethers v6's WebSocket subscriptions through the gateway (GATEWAY_WS) deliver the same
// blocks and logs as the same subscriptions made directly to anvil (DIRECT_WS). It deploys a tiny
// contract that emits Ping(address indexed from, uint256 value) on every call (over RPC_URL, anvil's
// HTTP URL), listens on both URLs with a `WebSocketProvider`: `provider.on("block")` (eth_subscribe
// newHeads) and a `Contract` listener for Ping (eth_subscribe logs, filtered by the contract's address
// and Ping's topic0), mines BLOCKS blocks of one or two calls each, waits until both sides have them
// all, and compares block hashes by number and logs (blockHash, transactionHash, logIndex, data,
// topics).
//
//   GATEWAY_WS=ws://127.0.0.1:8545/ DIRECT_WS=ws://127.0.0.1:8546 RPC_URL=http://127.0.0.1:8546 \
//     node tests/clients/ethers-subscribe.mjs
//
// BLOCKS (default 5), TIMEOUT_S (default 60), BLOCK_GAP_MS (pause between blocks, default 200),
// SENDER_KEY (default anvil's first dev account). Anvil mines only when told: the script turns
// automine off (evm_setAutomine) and mines each block with evm_mine, then turns it back on.
// Prints a `RESULT {json}` line, then `ethers subscribe OK: …`; else `ethers subscribe FAILED: …` on
// stderr, exit 1.
//
// ethers' "block" event carries only the block number; the hash is taken from the newHeads message
// that ethers' own SocketBlockSubscriber received for it (a subclass records it before emitting).
// ethers comes from tests/clients/node_modules, installed by scripts/deps.sh.
import { Contract, JsonRpcProvider, SocketBlockSubscriber, Wallet, WebSocketProvider, id } from 'ethers';
import {
  EVENT_ABI,
  EVENT_SIGNATURE,
  Side,
  callData,
  compareSides,
  contractCode,
  readEnv,
  resultLine,
  sleep,
  syncSubscriptions,
  waitUntil,
} from './subscribe-common.mjs';

function fail(message) {
  console.error(`ethers subscribe FAILED: ${message}`);
  process.exit(1);
}
// Inside main(): stop with a failure after cleanup() (automine back on, sockets closed).
class Failure extends Error {}
const bail = (message) => {
  throw new Failure(message);
};

// Unexpected errors and the watchdog still turn automine back on (cleanup, 3 s at most) before failing.
const failAfterCleanup = (message) => Promise.race([cleanup(), sleep(3000)]).catch(() => {}).finally(() => fail(message));
process.on('uncaughtException', (err) => failAfterCleanup(`uncaught: ${err?.stack ?? err}`));
process.on('unhandledRejection', (err) => failAfterCleanup(`unhandled rejection: ${err?.stack ?? err}`));
const env = readEnv(fail);
const deadline = Date.now() + env.timeoutS * 1000;
// ethers retries some things forever (network detection); never outlive TIMEOUT_S by much.
setTimeout(() => failAfterCleanup(`still running ${env.timeoutS + 10} s after start`), (env.timeoutS + 10) * 1000).unref();

// A WebSocketProvider whose newHeads subscriber remembers each header's hash by number, so the
// "block" listener (which gets only the number) can record the hash that came with it.
class HeadsProvider extends WebSocketProvider {
  heads = new Map(); // number -> [hash, ...] not yet taken by the "block" listener
  _getSubscriber(sub) {
    if (sub.type !== 'block') return super._getSubscriber(sub);
    const heads = this.heads;
    return new (class extends SocketBlockSubscriber {
      async _emit(provider, message) {
        const n = parseInt(message.number);
        heads.set(n, [...(heads.get(n) ?? []), message.hash]);
        await super._emit(provider, message);
      }
    })(this);
  }
  takeHash(n) {
    const hashes = this.heads.get(n) ?? [];
    return hashes.length > 1 ? hashes.shift() : hashes[0];
  }
}

const rpc = new JsonRpcProvider(env.rpcUrl, undefined, { staticNetwork: true, batchMaxCount: 1 });
const wallet = new Wallet(env.senderKey, rpc);
const topic0 = id(EVENT_SIGNATURE);
const { initCode, runtimeCode } = contractCode(topic0);
const sides = [new Side('gateway'), new Side('direct')];
const [gateway, direct] = sides;
const wsProviders = [];
let closing = false;
let automineWas = null;
let nonce;

// Sends one call per value (consecutive nonces), mines one block, returns the receipts.
async function mineCalls(contract, values) {
  const hashes = [];
  for (const v of values) {
    const tx = await wallet.sendTransaction({ to: contract, data: callData(v), gasLimit: 100_000n, nonce: nonce++ });
    hashes.push(tx.hash);
  }
  await rpc.send('evm_mine', []);
  const receipts = await Promise.all(hashes.map((h) => rpc.getTransactionReceipt(h)));
  for (const [i, r] of receipts.entries()) {
    if (!r) bail(`no receipt for tx ${hashes[i]} after evm_mine`);
    if (r.status !== 1) bail(`tx ${r.hash} in block ${r.blockNumber} has status ${r.status}`);
  }
  return receipts;
}

async function cleanup() {
  closing = true;
  for (const p of wsProviders) await p.removeAllListeners().catch(() => {}); // sends eth_unsubscribe
  if (wsProviders.length) await sleep(200); // let the unsubscribes go out before closing
  for (const p of wsProviders.splice(0)) await p.destroy().catch(() => {});
  if (automineWas) await rpc.send('evm_setAutomine', [true]).catch(() => {});
  automineWas = null;
  rpc.destroy();
}

async function main() {
  automineWas = await rpc.send('anvil_getAutomine', []);
  await rpc.send('evm_setAutomine', [false]);
  nonce = await rpc.getTransactionCount(wallet.address, 'pending');

  // Deploy, and check that the chain holds exactly the hand-assembled runtime code.
  const deployTx = await wallet.sendTransaction({ data: initCode, gasLimit: 200_000n, nonce: nonce++ });
  await rpc.send('evm_mine', []);
  const deployed = await rpc.getTransactionReceipt(deployTx.hash);
  const address = deployed?.contractAddress;
  if (deployed?.status !== 1 || !address) bail(`deployment ${deployTx.hash} failed (status ${deployed?.status})`);
  const code = await rpc.getCode(address);
  if (code !== runtimeCode) bail(`contract ${address} has code ${code}, expected ${runtimeCode}`);

  // Subscribe on both URLs (two providers, so two sockets even when the URLs are equal). The
  // network is given: without it ethers detects it after the socket opens, and a subscription
  // message arriving before that throws "network is not available yet" (ethers 6.17).
  const network = await rpc.getNetwork();
  for (const [side, url] of [[gateway, env.gatewayWs], [direct, env.directWs]]) {
    const provider = new HeadsProvider(url, network);
    wsProviders.push(provider);
    provider.websocket.addEventListener('error', (ev) => side.error(`websocket error: ${ev.message ?? ev.error ?? ev}`));
    provider.websocket.addEventListener('close', (ev) => closing || side.error(`websocket closed (code ${ev.code})`));
    provider.on('error', (err) => side.error(err));
    await provider.on('block', (n) => side.block(n, provider.takeHash(n)));
    const contract = new Contract(address, EVENT_ABI, provider);
    await contract.on('Ping', (from, value, payload) => {
      const log = payload.log;
      // The decoded event must match what was sent: the ABI and the bytecode agree.
      if (from !== wallet.address || typeof value !== 'bigint' || callData(value) !== log.data) {
        side.error(`log ${log.transactionHash}/${log.index} decoded as Ping(${from}, ${value})`);
      }
      side.log({ ...log, logIndex: log.index });
    });
  }

  // Wait until all four subscriptions deliver (a sync call per round), then count from the next block.
  let calls = 0;
  const synced = await syncSubscriptions(sides, async () => {
    const [r] = await mineCalls(address, [0]);
    return { number: r.blockNumber, txHash: r.hash };
  }, deadline);
  if (synced === null) bail(`subscriptions not delivering (timeout ${env.timeoutS} s): ${sides.map((x) => x.summary()).join('; ')}`);
  const first = synced + 1;
  const txHashes = [];
  let last = first - 1;
  for (let i = 0; i < env.blocks; i++) {
    const values = i % 2 === 0 ? [++calls] : [++calls, ++calls]; // 1, 2, 1, 2, ... calls per block
    const receipts = await mineCalls(address, values);
    for (const [j, r] of receipts.entries()) {
      txHashes.push(r.hash);
      last = Math.max(last, r.blockNumber);
      if (r.logs.length !== 1 || r.logs[0].data !== callData(values[j]) || r.logs[0].topics[0] !== topic0) {
        bail(`tx ${r.hash} has ${r.logs.length} logs (first data ${r.logs[0]?.data}), expected one Ping with data ${callData(values[j])}`);
      }
    }
    if (env.blockGapMs && i + 1 < env.blocks) await sleep(env.blockGapMs);
  }
  last = Math.max(last, await rpc.getBlockNumber());

  const failing = () => sides.some((s) => s.errors.length);
  const done = await waitUntil(() => sides.every((s) => s.complete(first, last, txHashes)) || failing(), deadline);
  if (done) await sleep(300); // let any duplicate arrive before comparing
  await cleanup();
  console.log(resultLine('ethers', address, first, last, gateway, direct));
  for (const side of sides) if (side.errors.length) bail(`${side.name}: ${side.errors.join('; ')}`);
  if (!done) bail(`timeout after ${env.timeoutS} s: ${gateway.progress(first, last, txHashes)}; ${direct.progress(first, last, txHashes)}`);
  const diff = compareSides(gateway, direct, first, last, txHashes);
  if (diff) bail(diff);
  console.log(`ethers subscribe OK: ${last - first + 1} blocks ${txHashes.length} logs identical to anvil's (blocks ${first}..${last})`);
}

try {
  await main();
  process.exit(0);
} catch (err) {
  await cleanup().catch(() => {});
  if (err instanceof Failure) fail(err.message);
  fail(err?.shortMessage ? `${err.shortMessage} (${err.code})` : String(err?.stack ?? err));
}
