"""A local anvil chain for simulations, tests and the devnet.

`fleml-node simulate` and the tests start a throw-away chain on a free loopback port and stop
it afterwards (a context manager). `fleml-node devnet up` starts one detached, on a fixed port,
with its state in a file so that `down` and `up` again keep the chain, its contracts and its
history. Accounts come from anvil's well-known test mnemonic: they are for local use only and
never hold value. The anvil executable is found as in :mod:`fleml_node.devnet.executables`
(``$FLEML_ANVIL_BIN``, ``PATH``, a checkout's ``node_modules``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from eth_account import Account

from fleml_node.chain.contract import ChainError
from fleml_node.devnet.executables import ExecutableNotFound, find_anvil

log = logging.getLogger(__name__)

TEST_MNEMONIC = "test test test test test test test test test test test junk"
Account.enable_unaudited_hdwallet_features()

_STARTUP_SECONDS = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_keys(count: int) -> list[str]:
    """Private keys of the first `count` accounts of anvil's test mnemonic."""
    return [
        Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
        for i in range(count)
    ]


class LocalAnvil:
    """Start anvil on a loopback port; use as a context manager.

    Parameters
    ----------
    accounts
        Number of funded test accounts.
    log_file
        Where anvil's output goes (kept for diagnosis).
    block_time
        Seconds per block, or None to mine on every transaction.
    port
        The port to listen on; ``None`` picks a free one.
    state_file
        Load the chain from this file if it exists and save it there on exit (anvil
        ``--state``), so a restarted chain keeps its contracts.
    zero_base_fee
        Start with a base fee of 0, as brownie's development network expects (brownie sends
        transactions at 0 gwei).
    detached
        Run anvil in a session of its own, so it outlives this process (the devnet).
    anvil
        Path of the anvil executable; ``None`` searches.
    hardfork
        The EVM anvil runs (``cancun``; ``london`` stands in for a London-era PoA chain).
    cache_path
        Where anvil persists the chain states it evicts from memory (``--cache-path``).
        ``None``: a temporary folder of this instance, deleted by :meth:`stop`. Without it anvil
        writes them under ``~/.foundry/anvil/tmp`` and never deletes them; long test runs left
        67 GB there on this machine.
    """

    def __init__(self, accounts: int = 20, log_file: Path | None = None,
                 block_time: float | None = None, *, port: int | None = None,
                 state_file: Path | None = None, zero_base_fee: bool = False,
                 detached: bool = False, anvil: str | os.PathLike[str] | None = None,
                 hardfork: str = "cancun", cache_path: Path | None = None) -> None:
        self.accounts = accounts
        self.log_file = log_file
        self.block_time = block_time
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_file = state_file
        self.zero_base_fee = zero_base_fee
        self.detached = detached
        self.anvil = anvil
        self.hardfork = hardfork
        self.cache_path = cache_path
        self._own_cache: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running, else ``None``."""
        running = self._process is not None and self._process.poll() is None
        return self._process.pid if running else None

    def start(self) -> LocalAnvil:
        """Start anvil and wait until it accepts connections.

        Returns
        -------
        LocalAnvil
            ``self``.

        Raises
        ------
        ChainError
            If anvil is not found, its port is taken, it exits, or it does not listen in 20 s.
        """
        try:
            binary = find_anvil(self.anvil)
        except ExecutableNotFound as err:
            raise ChainError(str(err)) from err
        if port_in_use(self.port):
            raise ChainError(f"cannot start anvil: 127.0.0.1:{self.port} is already in use")
        cmd = [str(binary), "--port", str(self.port), "--host", "127.0.0.1",
               "--hardfork", self.hardfork, "--accounts", str(self.accounts),
               "--mnemonic", TEST_MNEMONIC, "--gas-limit", "30000000"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.zero_base_fee:
            cmd += ["--block-base-fee-per-gas", "0"]
        if self.state_file is not None:
            cmd += ["--state", str(self.state_file)]
        cache = self.cache_path
        if cache is None:
            cache = self._own_cache = Path(tempfile.mkdtemp(prefix="fleml-anvil-cache-"))
        cmd += ["--cache-path", str(cache)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT,
                                             start_new_session=self.detached)
        except OSError as err:
            raise ChainError(f"cannot run {binary}: {err}") from err
        finally:
            if self.log_file:
                out.close()
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                where = f"; see {self.log_file}" if self.log_file else ""
                raise ChainError(f"anvil exited with code {self._process.returncode}{where}")
            if port_in_use(self.port):
                log.info("anvil pid %d listening at %s", self._process.pid, self.url)
                return self
            time.sleep(0.1)
        self.stop()
        raise ChainError(f"anvil did not start listening within {_STARTUP_SECONDS:g} s")

    def stop(self) -> None:
        """Stop anvil (SIGTERM, which saves ``state_file``; SIGKILL after 10 s). Idempotent."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("anvil pid %d ignored SIGTERM; killing it", self._process.pid)
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._own_cache is not None:
            shutil.rmtree(self._own_cache, ignore_errors=True)
            self._own_cache = None

    def __enter__(self) -> LocalAnvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
