#!/usr/bin/env bash
# Run the test suite against real parts: brownie's pytest plugin launches anvil for the contract
# tests, and this script starts a local js-ipfs daemon for the storage, node and end-to-end tests
# (unless FLEML_IPFS_API already names one) and stops it afterwards, whatever the outcome.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"

RUN_DIR="$ROOT/.fleml/test-ipfs"
if [ -z "${FLEML_IPFS_API:-}" ]; then
  mkdir -p "$RUN_DIR"
  echo "[test] starting a local IPFS daemon (js-ipfs, offline, loopback)" >&2
  python -m fleml_node.storage.daemon start --repo "$RUN_DIR/repo" \
    --pidfile "$RUN_DIR/daemon.pid" --addr-file "$RUN_DIR/api.addr" >&2
  trap 'python -m fleml_node.storage.daemon stop --pidfile "$RUN_DIR/daemon.pid" >&2 || true' EXIT
  FLEML_IPFS_API="$(cat "$RUN_DIR/api.addr")"
  export FLEML_IPFS_API
fi
echo "[test] IPFS API at $FLEML_IPFS_API; anvil is launched by brownie's pytest plugin" >&2
python -m pytest "$@"
