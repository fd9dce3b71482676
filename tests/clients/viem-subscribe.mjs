// Proves that viem's WebSocket subscriptions through the gateway (GATEWAY_WS) deliver the same blocks
// and logs as the same subscriptions made directly to anvil (DIRECT_WS). It deploys a tiny contract
// that emits Ping(address indexed from, uint256 value) on every call (over RPC_URL, anvil's HTTP URL),
// watches both URLs with `watchBlocks` (eth_subscribe newHeads) and `watchContractEvent` (eth_subscribe
// logs, filtered by the contract's address and Ping's topic0), mines BLOCKS blocks of one or two
// calls each, waits until both sides have them all, and compares block hashes by number and logs
// (blockHash, transactionHash, logIndex, data, topics).
//
//   GATEWAY_WS=ws://127.0.0.1:8545/ DIRECT_WS=ws://127.0.0.1:8546 RPC_URL=http://127.0.0.1:8546 \
//     node tests/clients/viem-subscribe.mjs
//
// BLOCKS (default 5), TIMEOUT_S (default 60), BLOCK_GAP_MS (pause between blocks, default 200),
// SENDER_KEY (default anvil's first dev account). Anvil mines only when told: the script turns
// automine off (evm_setAutomine) and mines each block with anvil_mine, then turns it back on.
// Prints a `RESULT {json}` line, then `viem subscribe OK: …`; else `viem subscribe FAILED: …` on stderr, exit 1.
// viem comes from tests/clients/node_modules, installed by scripts/deps.sh.
import {
  createPublicClient,
  createTestClient,
  createWalletClient,
  http,
  toEventSelector,
  webSocket,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
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
  console.error(`viem subscribe FAILED: ${message}`);
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
// Never outlive TIMEOUT_S by much, whatever hangs.
setTimeout(() => failAfterCleanup(`still running ${env.timeoutS + 10} s after start`), (env.timeoutS + 10) * 1000).unref();
const deadline = Date.now() + env.timeoutS * 1000;
const account = privateKeyToAccount(env.senderKey);
const transport = http(env.rpcUrl, { timeout: 10_000, retryCount: 0 });
const publicClient = createPublicClient({ transport });
const walletClient = createWalletClient({ account, transport });
const testClient = createTestClient({ mode: 'anvil', transport });

const topic0 = toEventSelector(EVENT_SIGNATURE);
const { initCode, runtimeCode } = contractCode(topic0);
const sides = [new Side('gateway'), new Side('direct')];
const [gateway, direct] = sides;
const wsClients = [];
const unwatchers = [];
let automineWas = null;
let nonce;

// Sends one call per value (consecutive nonces), mines one block, returns the receipts.
async function mineCalls(contract, values) {
  const hashes = [];
  for (const v of values) {
    hashes.push(await walletClient.sendTransaction({ to: contract, data: callData(v), gas: 100_000n, nonce: nonce++ }));
  }
  await testClient.mine({ blocks: 1 });
  const receipts = await Promise.all(hashes.map((hash) => publicClient.getTransactionReceipt({ hash })));
  for (const r of receipts) {
    if (r.status !== 'success') bail(`tx ${r.transactionHash} in block ${r.blockNumber} has status ${r.status}`);
  }
  return receipts;
}

async function cleanup() {
  for (const unwatch of unwatchers.splice(0)) {
    try {
      await Promise.race([unwatch(), sleep(2000)]);
    } catch {}
  }
  for (const client of wsClients.splice(0)) {
    try {
      (await client.transport.getRpcClient()).close();
    } catch {}
  }
  if (automineWas) await testClient.setAutomine(true).catch(() => {});
  automineWas = null;
}

async function main() {
  automineWas = await testClient.getAutomine();
  await testClient.setAutomine(false);
  nonce = await publicClient.getTransactionCount({ address: account.address, blockTag: 'pending' });

  // Deploy, and check that the chain holds exactly the hand-assembled runtime code.
  const deployHash = await walletClient.sendTransaction({ data: initCode, gas: 200_000n, nonce: nonce++ });
  await testClient.mine({ blocks: 1 });
  const deployed = await publicClient.getTransactionReceipt({ hash: deployHash });
  const contract = deployed.contractAddress;
  if (deployed.status !== 'success' || !contract) bail(`deployment ${deployHash} failed (status ${deployed.status})`);
  const code = await publicClient.getCode({ address: contract });
  if (code !== runtimeCode) bail(`contract ${contract} has code ${code}, expected ${runtimeCode}`);

  // Subscribe on both URLs. reconnect differs only so that equal URLs still get two sockets (viem
  // shares one socket per url + options); neither side reconnects, so a dropped socket shows.
  for (const [side, url, reconnect] of [[gateway, env.gatewayWs, false], [direct, env.directWs, { attempts: 0 }]]) {
    const client = createPublicClient({ transport: webSocket(url, { keepAlive: false, reconnect, retryCount: 0 }) });
    wsClients.push(client);
    unwatchers.push(
      client.watchBlocks({
        onBlock: (block) => (block ? side.block(block.number, block.hash) : side.error('watchBlocks delivered no block')),
        onError: (err) => side.error(err),
      }),
    );
    unwatchers.push(
      client.watchContractEvent({
        address: contract,
        abi: EVENT_ABI,
        eventName: 'Ping',
        onLogs: (logs) => {
          for (const log of logs) {
            // The decoded event must match what was sent: the ABI and the bytecode agree.
            if (log.eventName !== 'Ping' || log.args.from !== account.address || typeof log.args.value !== 'bigint') {
              side.error(`log ${log.transactionHash}/${log.logIndex} decoded as ${log.eventName} ${JSON.stringify(log.args, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`);
            }
            side.log(log);
          }
        },
        onError: (err) => side.error(err),
      }),
    );
  }

  // Wait until all four subscriptions deliver (a sync call per round), then count from the next block.
  let calls = 0;
  const synced = await syncSubscriptions(sides, async () => {
    const [r] = await mineCalls(contract, [0]);
    return { number: Number(r.blockNumber), txHash: r.transactionHash };
  }, deadline);
  if (synced === null) {
    bail(`subscriptions not delivering (timeout ${env.timeoutS} s): ${sides.map((x) => x.summary()).join('; ')}`);
  }
  const first = synced + 1;
  const txHashes = [];
  let last = first - 1;
  for (let i = 0; i < env.blocks; i++) {
    const values = i % 2 === 0 ? [++calls] : [++calls, ++calls]; // 1, 2, 1, 2, ... calls per block
    const receipts = await mineCalls(contract, values);
    for (const r of receipts) {
      txHashes.push(r.transactionHash);
      last = Math.max(last, Number(r.blockNumber));
      // Check our decoded-value expectation against the receipt: data = the call's word.
      const v = values[receipts.indexOf(r)];
      if (r.logs.length !== 1 || r.logs[0].data !== callData(v) || r.logs[0].topics[0] !== topic0) {
        bail(`tx ${r.transactionHash} has ${r.logs.length} logs (first data ${r.logs[0]?.data}), expected one Ping with data ${callData(v)}`);
      }
    }
    if (env.blockGapMs && i + 1 < env.blocks) await sleep(env.blockGapMs);
  }
  last = Math.max(last, Number(await publicClient.getBlockNumber({ cacheTime: 0 })));

  const failing = () => sides.some((s) => s.errors.length);
  const done = await waitUntil(() => sides.every((s) => s.complete(first, last, txHashes)) || failing(), deadline);
  if (done) await sleep(300); // let any duplicate arrive before comparing
  await cleanup();
  console.log(resultLine('viem', contract, first, last, gateway, direct));
  for (const side of sides) if (side.errors.length) bail(`${side.name}: ${side.errors.join('; ')}`);
  if (!done) {
    bail(`timeout after ${env.timeoutS} s: ${gateway.progress(first, last, txHashes)}; ${direct.progress(first, last, txHashes)}`);
  }
  const diff = compareSides(gateway, direct, first, last, txHashes);
  if (diff) bail(diff);
  console.log(`viem subscribe OK: ${last - first + 1} blocks ${txHashes.length} logs identical to anvil's (blocks ${first}..${last})`);
}

try {
  await main();
  process.exit(0);
} catch (err) {
  await cleanup().catch(() => {});
  if (err instanceof Failure) fail(err.message);
  fail(err?.shortMessage ? `${err.shortMessage} (${err.name})` : String(err?.stack ?? err));
}
