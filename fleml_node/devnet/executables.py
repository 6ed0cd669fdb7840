"""Find the devnet's external programs: anvil (the local chain) and jsipfs (js-ipfs).

Search order, first match wins: the environment variable naming the executable
(``FLEML_ANVIL_BIN``, ``FLEML_JSIPFS_BIN``); the program on ``PATH``; the copy that
``tools/setup.sh`` installs into a source checkout's ``node_modules`` (only when running from a
checkout, see :func:`fleml_node.locations.checkout_root`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fleml_node.locations import checkout_root

ANVIL_ENV = "FLEML_ANVIL_BIN"
JSIPFS_ENV = "FLEML_JSIPFS_BIN"

# Inside a checkout's node_modules; anvil's native binary first, because the `.bin/anvil`
# wrapper is a node script that would stand between us and anvil's signals.
_CHECKOUT_ANVIL = (
    "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil",
    "node_modules/@foundry-rs/anvil-linux-arm64/bin/anvil",
    "node_modules/@foundry-rs/anvil-darwin-arm64/bin/anvil",
    "node_modules/@foundry-rs/anvil-darwin-amd64/bin/anvil",
    "node_modules/.bin/anvil",
)
_CHECKOUT_JSIPFS = ("node_modules/.bin/jsipfs",)


class ExecutableNotFound(FileNotFoundError):
    """A devnet program is neither named by its variable, nor on PATH, nor in a checkout."""


def find_executable(
    name: str,
    env: str,
    checkout_paths: tuple[str, ...],
    install_hint: str,
    explicit: str | os.PathLike[str] | None = None,
    search_path: bool = True,
) -> Path:
    """Locate an external program.

    Parameters
    ----------
    name
        The program's name on ``PATH``.
    env
        The environment variable that names the executable.
    checkout_paths
        Candidates relative to a source checkout's root, tried last.
    install_hint
        How to get the program, for the error message.
    explicit
        A path given by the caller; wins over everything.
    search_path
        Whether to look on ``PATH`` (not for a program whose other major versions are
        commonly installed there, such as a global Hardhat 3).

    Returns
    -------
    Path
        The executable.

    Raises
    ------
    ExecutableNotFound
        One line naming the variable to set and how to install the program.
    """
    chosen = explicit or os.environ.get(env)
    if chosen:
        path = Path(chosen)
        if not path.is_file() or not os.access(path, os.X_OK):
            source = "given" if explicit else f"named by {env}"
            raise ExecutableNotFound(f"{name} executable {path} ({source}) does not exist "
                                     "or is not executable")
        return path
    on_path = shutil.which(name) if search_path else None
    if on_path:
        return Path(on_path)
    root = checkout_root()
    if root is not None:
        for relative in checkout_paths:
            candidate = root / relative
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    places = (["on PATH"] if search_path else []) + (
        [f"in {root / checkout_paths[0]}"] if root is not None and checkout_paths else [])
    where = " nor ".join(places) or "(not a checkout)"
    raise ExecutableNotFound(f"{name} not found {where}: set {env} to the executable, or "
                             f"{install_hint}")


def find_anvil(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``anvil`` executable (see the module docstring for the search order)."""
    return find_executable(
        "anvil", ANVIL_ENV, _CHECKOUT_ANVIL,
        "install Foundry's anvil (npm install @foundry-rs/anvil, or foundryup); in a checkout "
        "tools/setup.sh installs it", explicit)


def find_jsipfs(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``jsipfs`` executable (see the module docstring for the search order)."""
    return find_executable(
        "jsipfs", JSIPFS_ENV, _CHECKOUT_JSIPFS,
        "install js-ipfs (npm install ipfs@0.66.1); in a checkout tools/setup.sh installs it",
        explicit)
