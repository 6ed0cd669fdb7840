"""From the main suite: run the Flower and Ray tests in the Flower venv (tests/flower and
tests/experiments/test_ray.py; soak tests stay deselected), and check that the runtime package
needs no brownie (which is why Flower can have a venv without it)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOWER_PYTHON = ROOT / ".fleml/flower-venv/bin/python"


@pytest.mark.skipif(importlib.util.find_spec("flwr") is not None,
                    reason="this is the Flower venv: its tests run directly")
@pytest.mark.skipif(not FLOWER_PYTHON.exists(),
                    reason="no .fleml/flower-venv (tools/setup.sh step 9; FLEML_FLOWER=0 skips "
                           "it): the Flower tests cannot run")
def test_flower_and_ray_tests_pass_in_the_flower_venv(tmp_path):
    env = {**os.environ, "RAY_local_fs_capacity_threshold": "0.99"}
    proc = subprocess.run(
        [str(FLOWER_PYTHON), "-m", "pytest", "-p", "no:pytest-brownie", "-p", "no:cacheprovider",
         # its own basetemp: pytest prunes old numbered ones, another session's included
         "-q", "--durations=5", f"--basetemp={tmp_path / 'flower'}",
         str(ROOT / "tests/flower/test_strategy.py"),
         str(ROOT / "tests/flower/test_simulation.py"),
         str(ROOT / "tests/experiments/test_ray.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], tail


BLOCK_BROWNIE = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "brownie" or name.startswith("brownie."):
            raise ImportError("brownie is blocked")
sys.meta_path.insert(0, Block())
import fleml_node
skipped = ("fleml_node.flower",)  # needs flwr, another venv
names = [m.name for m in pkgutil.walk_packages(fleml_node.__path__, "fleml_node.")
         if not m.name.startswith(skipped)]
for name in names:
    importlib.import_module(name)
assert "brownie" not in sys.modules
print(len(names))
"""


def test_runtime_package_imports_without_brownie():
    proc = subprocess.run([sys.executable, "-c", BLOCK_BROWNIE], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 30  # every module of the package was imported
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if "brownie" in d]
    assert project["optional-dependencies"]["operator"] == ["eth-brownie==1.22.2"]
    flower = project["optional-dependencies"]["flower"]
    assert flower == ["flwr[simulation]==1.42.0"]
    assert "flwr[simulation]==1.42.0" in (ROOT / "requirements-flower.txt").read_text()
