// Hardhat Network as FLEML's second development chain (issue 12): the contract tests and an
// end-to-end federation run on it as they run on anvil, changing only the RPC URL and the chain
// profile. Only `hardhat node` is used; nothing is compiled here (brownie compiles contracts/).
//
// Start it with fleml_node.devnet.hardhat.LocalHardhat, or by hand:
//   tools/hardhat/node_modules/.bin/hardhat --config tools/hardhat/hardhat.config.js \
//       node --hostname 127.0.0.1 --port 8555
// The tests start it themselves (see tests/contracts/conftest.py and the README).

// The same mnemonic and derivation path as anvil: account i holds the same key on both chains.
const TEST_MNEMONIC = "test test test test test test test test test test test junk";

// Set by fleml_node/devnet/hardhat.py (LocalHardhat); the defaults suit brownie.
const env = process.env;
const ACCOUNTS = parseInt(env.FLEML_HARDHAT_ACCOUNTS || "20", 10);
const BASE_FEE = parseInt(env.FLEML_HARDHAT_BASE_FEE || "0", 10); // wei
const BLOCK_TIME = parseFloat(env.FLEML_HARDHAT_BLOCK_TIME || "0"); // s; 0: a block per tx

module.exports = {
  // nothing to compile: keep Hardhat's project files inside tools/hardhat
  paths: {
    root: __dirname,
    sources: "contracts",
    cache: "cache",
    artifacts: "artifacts",
  },
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      hardfork: "cancun", // the EVM the contracts are compiled for (solc 0.8.28, evm cancun)
      chainId: 31337, // as anvil: deployments/31337.json is the local, throw-away record
      accounts: {
        mnemonic: TEST_MNEMONIC,
        path: "m/44'/60'/0'/0",
        count: ACCOUNTS,
        accountsBalance: "10000000000000000000000", // 10,000 ETH, as anvil
      },
      blockGasLimit: 30000000, // as LocalAnvil
      // brownie sends its development transactions at 0 gwei (its anvil runs with base fee 0);
      // LocalHardhat sets 1 gwei for the nodes, as anvil's default
      initialBaseFeePerGas: BASE_FEE,
      allowUnlimitedContractSize: false, // EIP-170 holds, as on a real chain
      // brownie expects failing calls and transactions to raise (its own hardhat config does so)
      throwOnTransactionFailures: true,
      throwOnCallFailures: true,
      // automine (a block per transaction), as anvil without --block-time
      mining: BLOCK_TIME > 0
        ? { auto: false, interval: Math.round(BLOCK_TIME * 1000) }
        : { auto: true, interval: 0 },
      // one line per RPC call drowns a test run; FLEML_HARDHAT_LOG=1 turns it on for diagnosis
      loggingEnabled: env.FLEML_HARDHAT_LOG === "1",
    },
  },
};
