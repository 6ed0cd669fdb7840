"""A throwaway local anvil chain for simulations and tests.

`fleml-node simulate` and the integration tests start their own chain on a free loopback port
and stop it afterwards; accounts come from anvil's well-known test mnemonic, so they are for
local use only and never hold value.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from eth_account import Account

from fleml_node.chain.contract import ChainError

log = logging.getLogger(__name__)

TEST_MNEMONIC = "test test test test test test test test test test test junk"
Account.enable_unaudited_hdwallet_features()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys(count: int) -> list[str]:
    """Private keys of the first `count` accounts of anvil's test mnemonic."""
    return [
        Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
        for i in range(count)
    ]


class LocalAnvil:
    """Start anvil on a free loopback port; use as a context manager.

    Parameters
    ----------
    accounts
        Number of funded test accounts.
    log_file
        Where anvil's output goes (kept for diagnosis).
    block_time
        Seconds per block, or None to mine on every transaction.
    """

    def __init__(self, accounts: int = 20, log_file: Path | None = None,
                 block_time: float | None = None) -> None:
        self.accounts = accounts
        self.log_file = log_file
        self.block_time = block_time
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalAnvil:
        binary = shutil.which("anvil")
        if binary is None:
            raise ChainError("anvil is not on PATH: run ./fleml setup (it links anvil into "
                             ".venv/bin) and use the venv's PATH")
        cmd = [binary, "--port", str(self.port), "--host", "127.0.0.1", "--hardfork", "cancun",
               "--accounts", str(self.accounts), "--mnemonic", TEST_MNEMONIC,
               "--gas-limit", "30000000"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        out = open(self.log_file, "wb") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ChainError(f"anvil exited with code {self._process.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    log.info("anvil listening at %s", self.url)
                    return self
            time.sleep(0.1)
        self.stop()
        raise ChainError("anvil did not start listening within 20 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> LocalAnvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
