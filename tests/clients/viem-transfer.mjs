// Proves that viem, the JavaScript client dApps use, works end to end through the JSON-RPC URL in
// RPC_URL: it reads the chain id and the sender's balance, signs a 0.01 ETH transfer to a fresh
// random address locally (privateKeyToAccount, so it travels as eth_sendRawTransaction), polls for
// the receipt (30 s at most), and checks that the receipt says success and the recipient holds 0.01 ETH.
//
//   RPC_URL=http://127.0.0.1:8545 node tests/clients/viem-transfer.mjs
//
// SENDER_KEY overrides the sender's private key (default: anvil's first dev account).
// RYW_ROUNDS=N then runs N read-your-writes rounds: another transfer to the same recipient, its
// receipt, and at once eth_blockNumber, the recipient's balance and the sender's nonce at
// `latest`, which must all show the transaction's block or later.
// viem comes from tests/clients/node_modules, installed by scripts/deps.sh.
import { randomBytes } from 'node:crypto';
import { createPublicClient, createWalletClient, formatEther, getAddress, http, parseEther } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

const ANVIL_DEV_KEY_0 = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80';
const VALUE = parseEther('0.01');

function fail(message) {
  console.error(`viem client FAILED: ${message}`);
  process.exit(1);
}

const url = process.env.RPC_URL || fail('RPC_URL is not set');
const account = privateKeyToAccount(process.env.SENDER_KEY || ANVIL_DEV_KEY_0);
const transport = http(url, { timeout: 10_000, retryCount: 0 });
const publicClient = createPublicClient({ transport, pollingInterval: 250 });
const walletClient = createWalletClient({ account, transport });

try {
  const chainId = await publicClient.getChainId();
  const balance = await publicClient.getBalance({ address: account.address });
  if (balance < VALUE) {
    fail(`sender ${account.address} on chain ${chainId} has ${formatEther(balance)} ETH, needs more than 0.01`);
  }

  const to = getAddress(`0x${randomBytes(20).toString('hex')}`);
  const hash = await walletClient.sendTransaction({ to, value: VALUE });
  const receipt = await publicClient.waitForTransactionReceipt({ hash, timeout: 30_000 });
  if (receipt.status !== 'success') fail(`tx ${hash} in block ${receipt.blockNumber} has status ${receipt.status}`);

  const received = await publicClient.getBalance({ address: to, blockNumber: receipt.blockNumber });
  if (received !== VALUE) {
    fail(`recipient ${to} holds ${formatEther(received)} ETH at block ${receipt.blockNumber}, expected 0.01`);
  }
  console.log(`viem client OK: tx ${hash} block ${receipt.blockNumber}`);

  const rounds = Number(process.env.RYW_ROUNDS || 0);
  let sent = VALUE;
  for (let i = 0; i < rounds; i++) {
    const h = await walletClient.sendTransaction({ to, value: VALUE });
    const r = await publicClient.waitForTransactionReceipt({ hash: h, timeout: 30_000, pollingInterval: 50 });
    sent += VALUE;
    const nonceWanted = (await publicClient.getTransaction({ hash: h })).nonce + 1;
    // No client-side caching: the question is what the gateway answers.
    const seen = await publicClient.getBlockNumber({ cacheTime: 0 });
    if (seen < r.blockNumber) fail(`round ${i}: eth_blockNumber ${seen} after a receipt for block ${r.blockNumber}`);
    const got = await publicClient.getBalance({ address: to, blockTag: 'latest' });
    if (got !== sent) fail(`round ${i}: recipient holds ${got} wei at latest after block ${r.blockNumber}, expected ${sent}`);
    const nonce = await publicClient.getTransactionCount({ address: account.address, blockTag: 'latest' });
    if (nonce < nonceWanted) fail(`round ${i}: sender nonce ${nonce} at latest after block ${r.blockNumber}, expected ${nonceWanted}`);
  }
  if (rounds) console.log(`viem read-your-writes OK: ${rounds} rounds`);
} catch (err) {
  fail(err?.shortMessage ? `${err.shortMessage} (${err.name})` : String(err?.stack ?? err));
}
