#!/bin/sh
# The `cmd` of brownie's `hardhat-fleml` network (registered by tools/setup.sh). brownie runs it
# only when nothing listens on the network's port (8555); it must never launch Hardhat itself:
# brownie's Hardhat launcher writes a hardhat.config.js into the project root and runs
# `npx hardhat` there, which is not installed there and would be fetched from the registry.
# So this refuses, and says how to start the chain; brownie then attaches to it.
cat >&2 <<'MSG'

brownie network hardhat-fleml: no Hardhat node listens on 127.0.0.1:8555.
  The contract tests start one themselves (pytest tests/contracts --network hardhat-fleml).
  For brownie run/console, start it first, in another terminal:
      .venv/bin/python -m fleml_node.devnet.hardhat --port 8555
MSG
exit 1
