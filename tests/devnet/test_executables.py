"""Finding anvil and jsipfs: variable, PATH, then a checkout's node_modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleml_node.devnet import executables
from fleml_node.devnet.executables import (
    ANVIL_ENV,
    ExecutableNotFound,
    find_anvil,
    find_jsipfs,
)


def _program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_variable_then_path_then_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "checkout"
    bundled = _program(checkout / "node_modules/@foundry-rs/anvil-linux-amd64/bin", "anvil")
    monkeypatch.setattr(executables, "checkout_root", lambda: checkout)
    monkeypatch.delenv(ANVIL_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_anvil() == bundled
    on_path = _program(tmp_path / "bin", "anvil")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_anvil() == on_path
    named = _program(tmp_path / "elsewhere", "my-anvil")
    monkeypatch.setenv(ANVIL_ENV, str(named))
    assert find_anvil() == named


def test_not_found_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executables, "checkout_root", lambda: None)  # an installed package
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FLEML_JSIPFS_BIN", raising=False)
    with pytest.raises(ExecutableNotFound) as info:
        find_jsipfs()
    message = str(info.value)
    assert "\n" not in message and "FLEML_JSIPFS_BIN" in message and "on PATH" in message
