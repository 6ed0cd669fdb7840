#!/usr/bin/env bash
# Run the test suite against real parts: brownie's pytest plugin launches anvil for the contract
# tests, the chain and node tests start their own anvil chains, and this script starts a local
# js-ipfs daemon for the storage, node and end-to-end tests (`fleml-node devnet up --no-chain`,
# unless FLEML_IPFS_API already names one) and stops it afterwards, whatever the outcome.
# Before pytest, Slither checks the contracts (tools/slither-check.sh): no Medium or High finding.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"

bash "$ROOT/tools/slither-check.sh"

# brownie's plugin starts anvil itself, without --cache-path, so the chain states that anvil
# evicts from memory land in ~/.foundry/anvil/tmp and stay there (GBs per contract-suite run;
# LocalAnvil gives its own chains a folder it deletes). Remove what this run adds there.
ANVIL_TMP="$HOME/.foundry/anvil/tmp"
ANVIL_TMP_BEFORE="$(ls "$ANVIL_TMP" 2>/dev/null || true)"
RUN_DIR=""
cleanup() {
  if [ -n "$RUN_DIR" ]; then fleml-node devnet down --wipe --dir "$RUN_DIR" >&2 || true; fi
  for entry in $(ls "$ANVIL_TMP" 2>/dev/null); do
    grep -qxF "$entry" <<<"$ANVIL_TMP_BEFORE" || rm -rf "${ANVIL_TMP:?}/$entry"
  done
}
trap cleanup EXIT

if [ -z "${FLEML_IPFS_API:-}" ]; then
  echo "[test] starting a local IPFS daemon (js-ipfs, offline, loopback)" >&2
  # A folder per run: runs side by side never share, or stop, each other's daemon.
  mkdir -p "$ROOT/.fleml"
  RUN_DIR="$(mktemp -d "$ROOT/.fleml/test-ipfs.XXXXXX")"
  eval "$(fleml-node devnet up --no-chain --dir "$RUN_DIR")"
  export FLEML_IPFS_API
fi
echo "[test] IPFS API at $FLEML_IPFS_API; anvil is launched by brownie's pytest plugin" >&2
python -m pytest "$@"
