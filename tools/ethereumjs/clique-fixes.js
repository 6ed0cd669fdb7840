// Fixes for @ethereumjs/client 0.9.0 on a Clique network of several nodes, preloaded with
// NODE_OPTIONS=--require=<this file>. docs/poa-ethereumjs.md explains the bugs and reproduces them.
//
// 1. A peer's head is only what its eth STATUS handshake said: FullSynchronizer.best() and
//    latest() read peer.eth.status.{td,bestHash} and nothing updates them afterwards, while
//    handleNewBlock() drops a block more than one past the local head and handleNewBlockHashes()
//    does nothing unless a fetcher is running. A node that falls two blocks behind (late start,
//    restart, two announcements handled out of order) never imports again, and a node on the
//    lighter side of a Clique fork never switches. Here every NewBlock / NewBlockHashes
//    announcement refreshes the announcing peer's status, so the synchronizer's loop fetches from
//    it. (Upstream changed this in PR #3354, "Keep Peer Latest Block Updated", client 0.10.2;
//    0.10.x cannot replace 0.9.0 here: see the document.)
// 2. Miner.assembleBlock() runs from a timer and throws when the parent's state is not executed
//    yet (a restarted sealer that just fetched many blocks: "State trie does not contain state
//    root"); the exception is uncaught and exits the client, and `assembling` stays true. Here
//    the error is logged and the assembly queued again one period later.
// 3. eth_getTransactionCount refuses the "pending" block tag ("\"pending\" is not yet
//    supported"), which web3 and the nodes use for nonces. Here "pending" answers the latest
//    nonce advanced past the sender's pooled transactions that continue it (upstream PR #3415,
//    0.10.x, adds the pool's count, which overcounts here: see below).
// 4. eth_estimateGas and eth_call refuse "pending" too (upstream still does in 0.10.5); here
//    they answer for "latest", the newest state this client has.
// 7. eth_getTransactionReceipt throws "value for <hash> not found in DB" when the receipt index
//    names a block a Clique fork has since discarded; here that answers null (not mined yet),
//    as for any transaction not in a canonical block.
// 8. Sealers started one after the other each seal their own block 1 and, with three signers,
//    may then all be "too recently signed" to seal block 2 on their own fork, waiting for a
//    block nobody seals. With FLEML_POA_START_PEERS=n a sealer seals block 1 only once it has n
//    peers (fleml_node.devnet.poa sets n to the number of other nodes); later blocks never wait.
//    Fix 1 also treats an announced block at our own height with another hash as a fork to
//    fetch, so a node on the lighter side of a fork learns of the heavier one from hashes alone.
// 9. eth_getTransactionReceipt answers from a transaction index that still names a block a
//    Clique fork has displaced (the node executed that block when it sealed or imported it), so a
//    sender sees its transaction "mined" in a block that is not in the chain. Here a receipt is
//    answered only for a canonical block (null otherwise, so the sender waits and resends).
// 10. The transactions of a block that loses a fork are lost: 0.9.0 takes a block's transactions
//    out of the pool when the block arrives or is sealed, canonical or not, and never puts them
//    back. Here they go back into the pool, and out to the peers, once their block is displaced
//    and no canonical block holds them (as geth does on a reorg).
// 6. eth_call returns the output even when the call failed (a revert, an invalid opcode), so a
//    reverted read looks like an empty success and an opcode probe always "passes". Here a
//    failed call is an error, as upstream PR #3547 (0.10.x) does (codes as geth: 3 for a revert,
//    -32000 for anything else).
// 5. eth_gasPrice suggests the next block's base fee plus a 1 wei tip, but the pool refuses a
//    transaction from a peer whose tip is under 0.1 gwei (txpool.js MIN_GAS_PRICE; only local
//    ones are exempt), so a transaction sent to a node that does not seal never reaches a
//    sealer; and while the base fee falls, that price is under the latest block's base fee, so
//    eth_estimateGas rejects it. Here the suggestion is the higher of the two base fees plus
//    0.1 gwei, a price every node relays and mines.
const fs = require('fs');
const path = require('path');

// The client's folder, from the script node runs: <client>/dist/bin/cli.js
const clientDir = path.resolve(fs.realpathSync(process.argv[1]), '../../..');
const load = (rel) => require(path.join(clientDir, 'dist/src', rel));
const util = require(require.resolve('@ethereumjs/util', { paths: [clientDir] }));
const { FullEthereumService } = load('service/fullethereumservice.js');
const { Miner } = load('miner/miner.js');
const { Eth } = load('rpc/modules/eth.js');

const handle = FullEthereumService.prototype.handle;
FullEthereumService.prototype.handle = async function (message, protocol, peer) {
  if (protocol === 'eth') {
    try {
      refreshPeerHead(this.chain.blocks, message, peer);
    } catch (error) {
      this.config.logger.debug(`clique-fixes: peer head not refreshed: ${error}`);
    }
  }
  return handle.call(this, message, protocol, peer);
};

function refreshPeerHead(ours, message, peer) {
  const status = peer?.eth?.status;
  if (status === undefined || typeof status.td !== 'bigint') return;
  if (message.name === 'NewBlock') {
    // 0.9.0 announces the TD it had before adding the block (sendNewBlock runs before
    // putBlocks), so the block's TD is that plus the block's difficulty.
    const [block, td] = message.data;
    const total = (typeof td === 'bigint' ? td : util.bytesToBigInt(td)) + block.header.difficulty;
    if (total > status.td) {
      status.td = total;
      status.bestHash = block.hash();
    }
  } else if (message.name === 'NewBlockHashes') {
    // No TD in the announcement: a block past our head, or another block at our height (a
    // fork), makes the peer worth syncing from; the fetched blocks still go through the
    // blockchain's own validation and fork choice (a lighter sibling is stored, not adopted).
    for (const [hash, number] of message.data) {
      const sibling = number === ours.height && !util.equalsBytes(hash, ours.latest.hash());
      if (number > ours.height) {
        status.bestHash = hash;
        if (status.td <= ours.td) status.td = ours.td + 1n;
      } else if (sibling) {
        status.bestHash = hash;
        if (status.td < ours.td) status.td = ours.td;
      }
    }
  }
}

const startPeers = Number(process.env.FLEML_POA_START_PEERS ?? 0);
const assembleBlock = Miner.prototype.assembleBlock;
Miner.prototype.assembleBlock = async function () {
  if (this.service.chain.headers.height === 0n && this.service.pool.peers.length < startPeers) {
    // fix 8: the first block waits until the node has its peers
    this.config.logger.info(`Miner: ${this.service.pool.peers.length}/${startPeers} peers, not sealing block 1 yet`);
    void this.queueNextAssembly();
    return;
  }
  try {
    return await assembleBlock.call(this);
  } catch (error) {
    this.assembling = false;
    this.config.logger.warn(`Miner: block assembly failed (${error.message ?? error}); retrying`);
    void this.queueNextAssembly();
  }
};

const getTransactionCount = Eth.prototype.getTransactionCount;
Eth.prototype.getTransactionCount = async function (params) {
  const [address, tag] = params;
  if (tag !== 'pending') return getTransactionCount.call(this, params);
  // the next nonce after the run of pooled transactions that continues the latest nonce: the
  // pool also keeps transactions already mined in blocks that arrived as NewBlock (0.9.0
  // removes only those of fetched or self-sealed blocks), which must not count
  let next = BigInt(await getTransactionCount.call(this, [address, 'latest']));
  const pooled = this.service.txPool.pool.get(address.slice(2).toLowerCase()) ?? [];
  const nonces = new Set(pooled.map((entry) => entry.tx.nonce));
  while (nonces.has(next)) next += 1n;
  return `0x${next.toString(16)}`;
};

for (const method of ['estimateGas']) {
  const original = Eth.prototype[method];
  Eth.prototype[method] = async function (params) {
    const [transaction, tag] = params;
    return original.call(this, tag === 'pending' ? [transaction, 'latest'] : params);
  };
}

const MIN_TIP = 100000000n; // txpool.js MIN_GAS_PRICE
Eth.prototype.gasPrice = async function () {
  const latest = await this._chain.getCanonicalHeadHeader();
  if (latest.baseFeePerGas === undefined) return `0x${MIN_TIP.toString(16)}`;
  const next = latest.calcNextBaseFee();
  const base = next > latest.baseFeePerGas ? next : latest.baseFeePerGas;
  return `0x${(base + MIN_TIP).toString(16)}`;
};

const { getBlockByOption } = load('rpc/helpers.js');
Eth.prototype.call = async function (params) {
  const [transaction, tag] = params;
  const block = await getBlockByOption(tag === 'pending' ? 'latest' : tag, this._chain);
  if (this._vm === undefined) throw new Error('missing vm');
  const vm = await this._vm.shallowCopy();
  await vm.stateManager.setStateRoot(block.header.stateRoot);
  const { from, to, gas, gasPrice, value, data } = transaction;
  const { execResult } = await vm.evm.runCall({
    caller: from !== undefined ? util.Address.fromString(from) : undefined,
    to: to !== undefined ? util.Address.fromString(to) : undefined,
    gasLimit: util.toType(gas, util.TypeOutput.BigInt),
    gasPrice: util.toType(gasPrice, util.TypeOutput.BigInt),
    value: util.toType(value, util.TypeOutput.BigInt),
    data: data !== undefined ? util.hexToBytes(data) : undefined,
  });
  if (execResult.exceptionError !== undefined) {
    // like geth: code 3 for a revert, -32000 for any other failure (an invalid opcode, ...)
    const reason = execResult.exceptionError.error;
    throw { code: reason === 'revert' ? 3 : -32000, message: reason === 'revert' ? 'execution reverted' : reason };
  }
  return util.bytesToHex(execResult.returnValue);
};

const getTransactionReceipt = Eth.prototype.getTransactionReceipt;
Eth.prototype.getTransactionReceipt = async function (params) {
  try {
    // fix 9: the tx index keeps naming a block that a fork displaced (the node executed it
    // when it sealed or imported it); a receipt is only answered for a canonical block
    const found = await this.receiptsManager?.getReceiptByTxHash(util.hexToBytes(params[0]));
    if (found && !(await isCanonical(this._chain, found[1]))) return null;
    return await getTransactionReceipt.call(this, params);
  } catch (error) {
    if (/not found in DB/.test(String(error?.message ?? error))) return null;
    throw error;
  }
};

async function isCanonical(chain, blockHash) {
  const block = await chain.getBlock(blockHash);
  if (block.header.number > chain.headers.height) return false;
  return util.equalsBytes((await chain.getBlock(block.header.number)).hash(), blockHash);
}

// fix 10: a transaction mined in a block that then loses a Clique fork goes back to the pool.
// 0.9.0 removes a block's transactions from the pool when the block arrives or is sealed
// (TxPool.removeNewBlockTxs), whether or not the block stays canonical, and nothing puts them
// back (geth does: core/txpool reorg handling). Every removed transaction is watched for
// REPOOL_WINDOW_MS; once its block is no longer canonical and no canonical block from a little
// before it up to the head holds it, it is put back into this node's pool and sent to every
// peer again (their pools dropped it too when the displaced block reached them).
const { TxPool } = load('service/txpool.js');
const REPOOL_WINDOW_MS = 120000;
const REPOOL_SETTLE_MS = 1000; // let a fork settle before judging
const REPOOL_DEPTH = 32n; // how far before the displaced block a canonical copy is looked for
const removeNewBlockTxs = TxPool.prototype.removeNewBlockTxs;
TxPool.prototype.removeNewBlockTxs = function (newBlocks) {
  if (this.running) {
    this.flemlMined ??= new Map();
    for (const block of newBlocks) {
      for (const tx of block.transactions) {
        this.flemlMined.set(util.bytesToUnprefixedHex(tx.hash()),
          { tx, number: block.header.number, blockHash: block.hash(), at: Date.now() });
      }
    }
    if (this.flemlRepool === undefined) {
      this.flemlRepool = setInterval(() => {
        repoolDisplaced(this).catch((error) =>
          this.config.logger.debug(`clique-fixes: re-pool check failed: ${error}`));
      }, 1000);
      this.flemlRepool.unref?.();
    }
  }
  return removeNewBlockTxs.call(this, newBlocks);
};

async function repoolDisplaced(pool) {
  if (pool.flemlBusy || !pool.running || pool.flemlMined.size === 0) return;
  pool.flemlBusy = true;
  try {
    const chain = pool.service.chain;
    const head = chain.headers.height;
    const canonical = new Map();
    const at = async (n) => {
      if (!canonical.has(n)) canonical.set(n, await chain.getBlock(n));
      return canonical.get(n);
    };
    const back = [];
    const now = Date.now();
    for (const [hash, entry] of pool.flemlMined) {
      if (now - entry.at > REPOOL_WINDOW_MS) {
        pool.flemlMined.delete(hash);
        continue;
      }
      if (now - entry.at < REPOOL_SETTLE_MS) continue;
      if (entry.number <= head && util.equalsBytes((await at(entry.number)).hash(), entry.blockHash)) {
        continue; // still canonical: keep watching
      }
      let mined;
      const from = entry.number > REPOOL_DEPTH ? entry.number - REPOOL_DEPTH : 1n;
      for (let n = from; n <= head && mined === undefined; n++) {
        const block = await at(n);
        if (block.transactions.some((tx) => util.equalsBytes(tx.hash(), entry.tx.hash()))) mined = block;
      }
      if (mined !== undefined) {
        // in another canonical block: watch that one instead
        Object.assign(entry, { number: mined.header.number, blockHash: mined.hash() });
        continue;
      }
      pool.flemlMined.delete(hash);
      if (putBack(pool, entry.tx, hash)) back.push(entry.tx);
    }
    if (back.length > 0) {
      const peers = pool.service.pool.peers;
      for (const peer of peers) {
        const known = pool.knownByPeer.get(peer.id);
        if (known) pool.knownByPeer.set(peer.id, known.filter((k) => !back.some((tx) => k.hash === util.bytesToUnprefixedHex(tx.hash()))));
      }
      pool.sendTransactions(back, peers);
      pool.config.logger.info(`clique-fixes: ${back.length} transaction(s) of a block that lost a fork back in the pool: ${back.map((tx) => util.bytesToHex(tx.hash())).join(' ')}`);
    }
  } finally {
    pool.flemlBusy = false;
  }
}

function putBack(pool, tx, hash) {
  // TxPool.add without its validation: that reads the head's state, which may not be
  // executed yet; the miner checks nonces and balances when it builds a block anyway
  const address = tx.getSenderAddress().toString().slice(2);
  const pooled = pool.pool.get(address) ?? [];
  if (pooled.some((entry) => entry.hash === hash || entry.tx.nonce === tx.nonce)) return false;
  const added = Date.now();
  pooled.push({ tx, added, hash });
  pool.pool.set(address, pooled);
  pool.handled.set(hash, { address, added });
  pool.txsInPool++;
  return true;
}
