"""Integration tests: real `fleml-node` processes on a local chain and IPFS."""
