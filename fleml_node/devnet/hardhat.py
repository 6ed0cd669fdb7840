"""A local Hardhat Network chain: FLEML's second development chain, beside anvil.

The contract tests and an end-to-end federation run on it as on anvil, changing only the RPC
URL and the chain profile; that proves the nodes need no anvil-only RPC method. It is Hardhat
2.x (Hardhat 3 needs Node.js >= 22.10), installed by ``tools/setup.sh`` into
``tools/hardhat/node_modules`` from ``tools/hardhat/package-lock.json``, and run as
``hardhat --config tools/hardhat/hardhat.config.js node`` (hardfork cancun, chain id 31337,
the accounts of the same test mnemonic as anvil, so key i is the same account on both chains).

The executable is ``$FLEML_HARDHAT_BIN`` if set, else the checkout's
``tools/hardhat/node_modules/.bin/hardhat``; the config is ``$FLEML_HARDHAT_CONFIG`` if set,
else the checkout's ``tools/hardhat/hardhat.config.js``. Hardhat is not searched on ``PATH``:
a global Hardhat (possibly 3.x) refuses to run a project it is not installed in.

Run one by hand (Ctrl-C stops it)::

    python -m fleml_node.devnet.hardhat --port 8555
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from fleml_node.chain.contract import ChainError
from fleml_node.devnet.anvil import free_port, port_in_use
from fleml_node.devnet.executables import ExecutableNotFound, find_executable
from fleml_node.locations import checkout_root

log = logging.getLogger(__name__)

HARDHAT_ENV = "FLEML_HARDHAT_BIN"
CONFIG_ENV = "FLEML_HARDHAT_CONFIG"
_CHECKOUT_BIN = "tools/hardhat/node_modules/.bin/hardhat"
_CHECKOUT_CONFIG = "tools/hardhat/hardhat.config.js"
CHAIN_ID = 31337
_STARTUP_SECONDS = 60.0  # node and the EDR engine start in 3-10 s on a busy 2-core machine
_STOP_SECONDS = 10.0
DEFAULT_BASE_FEE = 1_000_000_000
"""Initial base fee (wei) when not zero: Hardhat's own default, and anvil's."""


def find_hardhat(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Hardhat executable: `explicit`, ``$FLEML_HARDHAT_BIN`` or the checkout's copy.

    Raises
    ------
    ChainError
        None of them exists; the message says how to install it.
    """
    try:
        # not on PATH: a global Hardhat 3 there would refuse this Node.js
        return find_executable("hardhat", HARDHAT_ENV, (_CHECKOUT_BIN,),
                               "run tools/setup.sh (or `npm ci` in tools/hardhat) for Hardhat "
                               "2.x", explicit, search_path=False)
    except ExecutableNotFound as err:
        raise ChainError(str(err)) from err


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Hardhat config: `explicit`, ``$FLEML_HARDHAT_CONFIG`` or the checkout's."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    if chosen:
        path = Path(chosen)
    else:
        root = checkout_root()
        if root is None:
            raise ChainError(f"no Hardhat config: set {CONFIG_ENV} (outside a checkout)")
        path = root / _CHECKOUT_CONFIG
    if not path.is_file():
        raise ChainError(f"Hardhat config {path} does not exist")
    return path.resolve()


def _rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())["result"]


class LocalHardhat:
    """Start a Hardhat Network node on a loopback port; use as a context manager.

    Same shape as :class:`fleml_node.devnet.anvil.LocalAnvil`.

    Parameters
    ----------
    accounts
        Number of funded test accounts (10,000 ETH each).
    log_file
        Where Hardhat's output goes (kept for diagnosis). ``rpc_logging`` adds a line per
        RPC call.
    block_time
        Seconds per block, or None to mine a block per transaction.
    port
        The port to listen on; ``None`` picks a free one.
    zero_base_fee
        Start with a base fee of 0, as brownie's development networks expect (brownie sends
        transactions at 0 gwei); otherwise 1 gwei, as anvil.
    hardhat, config
        The executable and the config file; ``None`` finds them (module docstring).
    rpc_logging
        Log every RPC call (``FLEML_HARDHAT_LOG=1`` in the config).
    """

    def __init__(self, accounts: int = 20, log_file: Path | None = None,
                 block_time: float | None = None, *, port: int | None = None,
                 zero_base_fee: bool = False,
                 hardhat: str | os.PathLike[str] | None = None,
                 config: str | os.PathLike[str] | None = None,
                 rpc_logging: bool = False) -> None:
        self.accounts = accounts
        self.log_file = log_file
        self.block_time = block_time
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.zero_base_fee = zero_base_fee
        self.hardhat = hardhat
        self.config = config
        self.rpc_logging = rpc_logging
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running, else ``None``."""
        running = self._process is not None and self._process.poll() is None
        return self._process.pid if running else None

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        """The command line, environment and working folder Hardhat runs with."""
        binary = find_hardhat(self.hardhat)
        config = find_config(self.config)
        env = dict(os.environ)
        env.update(
            FLEML_HARDHAT_ACCOUNTS=str(self.accounts),
            FLEML_HARDHAT_BASE_FEE="0" if self.zero_base_fee else str(DEFAULT_BASE_FEE),
            FLEML_HARDHAT_BLOCK_TIME=str(self.block_time or 0),
            FLEML_HARDHAT_LOG="1" if self.rpc_logging else "0",
            HARDHAT_DISABLE_TELEMETRY_PROMPT="true",
            NO_UPDATE_NOTIFIER="1",
        )
        # Hardhat 2 refuses to run unless `require("hardhat")` from its working folder finds
        # the very copy that runs (HH12). The config's folder holds that copy; an executable
        # from elsewhere ($FLEML_HARDHAT_BIN) needs Hardhat's own switch for the check.
        cwd = config.parent
        if self.hardhat or os.environ.get(HARDHAT_ENV):
            env["HARDHAT_EXPERIMENTAL_ALLOW_NON_LOCAL_INSTALLATION"] = "true"
        cmd = [str(binary), "--config", str(config), "node",
               "--hostname", "127.0.0.1", "--port", str(self.port)]
        return cmd, env, cwd

    def start(self) -> LocalHardhat:
        """Start Hardhat and wait until it answers ``eth_chainId``.

        Returns
        -------
        LocalHardhat
            ``self``.

        Raises
        ------
        ChainError
            If Hardhat is not found, its port is taken, it exits, or it does not answer in
            60 s.
        """
        cmd, env, cwd = self.command()
        if port_in_use(self.port):
            raise ChainError(f"cannot start hardhat: 127.0.0.1:{self.port} is already in use")
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            # A session of its own, so that stop() can signal the whole process group.
            self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                             start_new_session=True)
        except OSError as err:
            raise ChainError(f"cannot run {cmd[0]}: {err}") from err
        finally:
            if self.log_file:
                out.close()
        deadline = time.monotonic() + _STARTUP_SECONDS
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    where = f"; see {self.log_file}" if self.log_file else ""
                    raise ChainError(f"hardhat exited with code {self._process.returncode}"
                                     f"{where}")
                if port_in_use(self.port):
                    try:
                        chain_id = int(_rpc(self.url, "eth_chainId"), 16)
                    except (OSError, ValueError, KeyError):
                        chain_id = None
                    if chain_id is not None:
                        log.info("hardhat pid %d listening at %s (chain id %d)",
                                 self._process.pid, self.url, chain_id)
                        return self
                time.sleep(0.2)
            raise ChainError(f"hardhat did not answer at {self.url} within "
                             f"{_STARTUP_SECONDS:g} s")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Hardhat and anything it started (SIGTERM to its process group, SIGKILL after
        10 s). Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            pgid = os.getpgid(process.pid)
        except ProcessLookupError:
            pgid = None
        if process.poll() is None and pgid is not None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("hardhat pid %d ignored SIGTERM; killing it", process.pid)
        if pgid is not None:
            try:  # whatever is left of the group, the leader included
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def __enter__(self) -> LocalHardhat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run a Hardhat chain in the foreground until interrupted (for brownie to attach to)."""
    parser = argparse.ArgumentParser(prog="python -m fleml_node.devnet.hardhat",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8555)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--base-fee", choices=("zero", "default"), default="zero",
                        help="zero (brownie's 0-gwei transactions; the default) or 1 gwei")
    parser.add_argument("--log-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (and SIGINT, ignored in background jobs) stop it too

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        with LocalHardhat(args.accounts, args.log_file, port=args.port,
                          zero_base_fee=args.base_fee == "zero") as chain:
            print(f"hardhat at {chain.url} (pid {chain.pid}); Ctrl-C stops it", flush=True)
            while chain.pid is not None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
