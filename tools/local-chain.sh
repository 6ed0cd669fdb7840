#!/usr/bin/env bash
# A persistent local anvil chain for trying FLEML by hand (tests and `fleml-node simulate`
# start their own chains).
#   tools/local-chain.sh start    start anvil on 127.0.0.1:8545 unless something listens there
#   tools/local-chain.sh deploy   start it if needed, then `brownie run deploy` against it
#   tools/local-chain.sh stop     stop the anvil this script started
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
STATE="$ROOT/.fleml/chain"
PORT="${FLEML_CHAIN_PORT:-8545}"
mkdir -p "$STATE"

listening() { python - "$PORT" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

start() {
  if listening; then
    echo "[chain] something already listens on 127.0.0.1:$PORT; using it" >&2
    return
  fi
  echo "[chain] starting anvil on 127.0.0.1:$PORT (log: $STATE/anvil.log)" >&2
  # the same settings as brownie's development network (zero base fee: brownie sends 0 gwei)
  nohup anvil --port "$PORT" --hardfork cancun --accounts 20 --gas-limit 30000000 \
    --block-base-fee-per-gas 0 \
    > "$STATE/anvil.log" 2>&1 &
  echo $! > "$STATE/anvil.pid"
  for _ in $(seq 50); do listening && return; sleep 0.2; done
  echo "[chain] anvil did not start; see $STATE/anvil.log" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  deploy)
    start
    brownie run deploy --network development
    echo "[chain] anvil keeps running; stop it with: tools/local-chain.sh stop" >&2 ;;
  stop)
    if [ -f "$STATE/anvil.pid" ]; then
      kill "$(cat "$STATE/anvil.pid")" 2>/dev/null || true
      rm -f "$STATE/anvil.pid"
      echo "[chain] stopped" >&2
    fi ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
