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
//    nonce plus the sender's transactions in the pool, as upstream PR #3415 (client 0.10.x) does.
// 4. eth_estimateGas and eth_call refuse "pending" too (upstream still does in 0.10.5); here
//    they answer for "latest", the newest state this client has.
const fs = require('fs');
const path = require('path');

// The client's folder, from the script node runs: <client>/dist/bin/cli.js
const clientDir = path.resolve(fs.realpathSync(process.argv[1]), '../../..');
const load = (rel) => require(path.join(clientDir, 'dist/src', rel));
const { bytesToBigInt } = require(require.resolve('@ethereumjs/util', { paths: [clientDir] }));
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
    const total = (typeof td === 'bigint' ? td : bytesToBigInt(td)) + block.header.difficulty;
    if (total > status.td) {
      status.td = total;
      status.bestHash = block.hash();
    }
  } else if (message.name === 'NewBlockHashes') {
    // No TD in the announcement: a block past our head makes the peer worth syncing from; the
    // fetched blocks still go through the blockchain's own validation and fork choice.
    for (const [hash, number] of message.data) {
      if (number > ours.height) {
        status.bestHash = hash;
        if (status.td <= ours.td) status.td = ours.td + 1n;
      }
    }
  }
}

const assembleBlock = Miner.prototype.assembleBlock;
Miner.prototype.assembleBlock = async function () {
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
  const latest = BigInt(await getTransactionCount.call(this, [address, 'latest']));
  const pooled = this.service.txPool.pool.get(address.slice(2).toLowerCase())?.length ?? 0;
  return `0x${(latest + BigInt(pooled)).toString(16)}`;
};

for (const method of ['estimateGas', 'call']) {
  const original = Eth.prototype[method];
  Eth.prototype[method] = async function (params) {
    const [transaction, tag] = params;
    return original.call(this, tag === 'pending' ? [transaction, 'latest'] : params);
  };
}
