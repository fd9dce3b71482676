// Shared by viem-subscribe.mjs and ethers-subscribe.mjs (web3py_subscribe.py has the same logic in
// Python): the environment, the hand-assembled event contract, what each side saw, the wait and the
// comparison, and the RESULT line. No client library in here: each script drives the chain and
// subscribes with its own client.

export const ANVIL_DEV_KEY_0 = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80';

// The contract's only event. Every call to the contract, whatever its calldata, emits
// Ping(msg.sender, first calldata word) with LOG2: topic0 = keccak256(EVENT_SIGNATURE),
// topic1 = the caller (indexed), data = calldata[0..32].
export const EVENT_SIGNATURE = 'Ping(address,uint256)';
export const EVENT_ABI = [
  {
    type: 'event',
    name: 'Ping',
    anonymous: false,
    inputs: [
      { name: 'from', type: 'address', indexed: true },
      { name: 'value', type: 'uint256', indexed: false },
    ],
  },
];

// Hand-assembled EVM code (no solc here); `topic0` is keccak256(EVENT_SIGNATURE) as 0x + 64 hex.
//   runtime: PUSH1 0 CALLDATALOAD PUSH1 0 MSTORE          memory[0..32] = calldata word 0
//            CALLER PUSH32 topic0 PUSH1 32 PUSH1 0 LOG2   log(data = memory[0..32], topic0, caller)
//            STOP                                          46 bytes
//   init:    PUSH1 46 DUP1 PUSH1 11 PUSH1 0 CODECOPY PUSH1 0 RETURN, then the runtime (11 + 46 bytes)
export function contractCode(topic0) {
  if (!/^0x[0-9a-f]{64}$/.test(topic0)) throw new Error(`bad topic0 ${topic0}`);
  const runtime = `600035600052337f${topic0.slice(2)}60206000a200`;
  if (runtime.length !== 46 * 2) throw new Error('runtime code is not 46 bytes');
  return { initCode: `0x602e80600b6000396000f3${runtime}`, runtimeCode: `0x${runtime}` };
}

// The calldata word of the n-th call (1, 2, ...; sync calls use 0): one 32-byte word.
export const callData = (n) => `0x${BigInt(n).toString(16).padStart(64, '0')}`;

export function readEnv(fail) {
  const need = (name) => process.env[name] || fail(`${name} is not set`);
  const num = (name, dflt) => {
    const raw = process.env[name];
    if (raw === undefined || raw === '') return dflt;
    const v = Number(raw);
    if (!Number.isFinite(v) || v < 0) fail(`${name}=${raw} is not a number`);
    return v;
  };
  const env = {
    gatewayWs: need('GATEWAY_WS'),
    directWs: need('DIRECT_WS'),
    rpcUrl: need('RPC_URL'),
    blocks: Math.floor(num('BLOCKS', 5)),
    timeoutS: num('TIMEOUT_S', 60),
    blockGapMs: num('BLOCK_GAP_MS', 200),
    senderKey: process.env.SENDER_KEY || ANVIL_DEV_KEY_0,
  };
  if (env.blocks < 1) fail('BLOCKS must be at least 1');
  return env;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// What one subscriber (the gateway's or anvil's) delivered, in arrival order.
export class Side {
  constructor(name) {
    this.name = name;
    this.blocks = []; // { number, hash }
    this.logs = []; // { blockNumber, blockHash, transactionHash, logIndex, data, topics }
    this.errors = [];
  }
  block(number, hash) {
    this.blocks.push({ number: Number(number), hash: String(hash).toLowerCase() });
  }
  log(l) {
    this.logs.push({
      blockNumber: Number(l.blockNumber),
      blockHash: String(l.blockHash).toLowerCase(),
      transactionHash: String(l.transactionHash).toLowerCase(),
      logIndex: Number(l.logIndex),
      data: String(l.data).toLowerCase(),
      topics: l.topics.map((t) => String(t).toLowerCase()),
    });
  }
  error(err) {
    this.errors.push(err?.shortMessage ?? err?.message ?? String(err));
  }
  sawBlock(number) {
    return this.blocks.some((b) => b.number === number);
  }
  sawTx(hash) {
    return this.logs.some((l) => l.transactionHash === hash.toLowerCase());
  }
  // Blocks and logs inside [first, last], sorted by block number (and log index).
  inRange(first, last) {
    const blocks = this.blocks.filter((b) => b.number >= first && b.number <= last).sort((a, b) => a.number - b.number);
    const logs = this.logs
      .filter((l) => l.blockNumber >= first && l.blockNumber <= last)
      .sort((a, b) => a.blockNumber - b.blockNumber || a.logIndex - b.logIndex);
    return { blocks, logs };
  }
  // True once every block in [first, last] and a log of every expected tx have arrived.
  complete(first, last, txHashes) {
    for (let n = first; n <= last; n++) if (!this.sawBlock(n)) return false;
    return txHashes.every((h) => this.sawTx(h));
  }
  summary() {
    return `${this.name} delivered ${this.blocks.length} blocks and ${this.logs.length} logs` +
      (this.errors.length ? `, errors: ${this.errors.join('; ')}` : '');
  }
  progress(first, last, txHashes) {
    const numbers = new Set(this.blocks.filter((b) => b.number >= first && b.number <= last).map((b) => b.number));
    const missing = [];
    for (let n = first; n <= last; n++) if (!numbers.has(n)) missing.push(n);
    const logs = txHashes.filter((h) => this.sawTx(h)).length;
    return `${this.name} saw ${last - first + 1 - missing.length} of blocks ${first}..${last}` +
      (missing.length ? ` (missing ${missing.join(',')})` : '') + `, logs of ${logs} of ${txHashes.length} txs` +
      (this.errors.length ? `, errors: ${this.errors.join('; ')}` : '');
  }
}

// Polls `done` every 25 ms until it is true (returns true) or `deadline` (ms since epoch) passes.
export async function waitUntil(done, deadline) {
  for (;;) {
    if (done()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(25);
  }
}

// Sync rounds: until both sides have delivered the block and the log of one and the same sync call
// (so all four subscriptions are live), `round()` makes one more such block ({ number, txHash }) and
// the script waits up to 1 s for it (a late notification of an earlier round still counts). Returns
// the last round's block number, or null at the deadline or as soon as a side reports an error.
export async function syncSubscriptions(sides, round, deadline) {
  const rounds = [];
  const seenEverywhere = () =>
    rounds.some((r) => sides.every((s) => s.sawBlock(r.number) && s.sawTx(r.txHash)));
  const failing = () => sides.some((s) => s.errors.length);
  while (Date.now() < deadline && !failing()) {
    rounds.push(await round());
    if (await waitUntil(() => seenEverywhere() || failing(), Math.min(deadline, Date.now() + 1000))) {
      if (failing()) return null;
      return rounds.at(-1).number;
    }
  }
  return null;
}

// Compares the two sides over [first, last]; returns null when identical, else the first difference.
export function compareSides(gateway, direct, first, last, txHashes) {
  const g = gateway.inRange(first, last);
  const d = direct.inRange(first, last);
  for (const [side, seen] of [[gateway, g], [direct, d]]) {
    for (let i = 1; i < seen.blocks.length; i++) {
      if (seen.blocks[i].number === seen.blocks[i - 1].number) {
        return `${side.name} delivered block ${seen.blocks[i].number} twice (${seen.blocks[i - 1].hash}, ${seen.blocks[i].hash})`;
      }
    }
    if (seen.blocks.length !== last - first + 1) return `${side.name} delivered ${seen.blocks.length} of blocks ${first}..${last}`;
    for (let i = 1; i < seen.logs.length; i++) {
      const [a, b] = [seen.logs[i - 1], seen.logs[i]];
      if (a.blockNumber === b.blockNumber && a.logIndex === b.logIndex) {
        return `${side.name} delivered the log ${b.blockNumber}/${b.logIndex} (tx ${b.transactionHash}) twice`;
      }
    }
    if (seen.logs.length !== txHashes.length) {
      return `${side.name} delivered ${seen.logs.length} logs in blocks ${first}..${last}, expected ${txHashes.length}`;
    }
  }
  for (let i = 0; i < g.blocks.length; i++) {
    if (g.blocks[i].hash !== d.blocks[i].hash) {
      return `block ${g.blocks[i].number}: gateway hash ${g.blocks[i].hash}, anvil ${d.blocks[i].hash}`;
    }
  }
  for (let i = 0; i < g.logs.length; i++) {
    for (const field of ['blockNumber', 'blockHash', 'transactionHash', 'logIndex', 'data', 'topics']) {
      const [a, b] = [JSON.stringify(g.logs[i][field]), JSON.stringify(d.logs[i][field])];
      if (a !== b) return `log #${i} (block ${d.logs[i].blockNumber}, index ${d.logs[i].logIndex}): gateway ${field} ${a}, anvil ${b}`;
    }
  }
  const expected = new Set(txHashes.map((h) => h.toLowerCase()));
  const strays = d.logs.filter((l) => !expected.has(l.transactionHash));
  if (strays.length) return `anvil delivered a log of tx ${strays[0].transactionHash}, which the script did not send`;
  return null;
}

// One line for the Rust tests: `RESULT {json}` with what each side saw inside [first, last].
export function resultLine(client, contract, first, last, gateway, direct) {
  const side = (s) => ({ ...s.inRange(first, last), errors: s.errors });
  return `RESULT ${JSON.stringify({ client, contract: contract.toLowerCase(), first_block: first, last_block: last, gateway: side(gateway), direct: side(direct) })}`;
}
