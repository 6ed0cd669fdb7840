"""The compiled contract the package ships stays in step with the Solidity sources and build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleml_node.chain.deploy import ARTIFACT_RESOURCE, artifact_path, load_artifact
from fleml_node.devnet.artifacts import BUILD_ARTIFACT, KEPT_FIELDS, source_sha1

ROOT = Path(__file__).resolve().parents[2]
FIX = ("run tools/setup.sh (brownie compile, then python -m fleml_node.devnet.artifacts) and "
       f"commit fleml_node/{ARTIFACT_RESOURCE} with the contract change")


def test_shipped_artifact_matches_the_current_sources() -> None:
    shipped = load_artifact()
    assert set(shipped) == {*KEPT_FIELDS, "sources"}  # no ASTs or source maps: size
    assert artifact_path().stat().st_size < 200_000
    assert "contracts/FlemlConsortium.sol" in shipped["sources"]
    changed = [path for path, sha1 in shipped["sources"].items()
               if not (ROOT / path).is_file() or source_sha1(ROOT / path) != sha1]
    assert not changed, f"the shipped artifact predates changes to {changed}: {FIX}"


def test_shipped_artifact_matches_brownies_build() -> None:
    build_path = ROOT / BUILD_ARTIFACT
    if not build_path.is_file():
        pytest.skip(f"no {BUILD_ARTIFACT}: tools/setup.sh compiles it")
    build = json.loads(build_path.read_text())
    if build["sha1"] != source_sha1(ROOT / build["sourcePath"]):
        pytest.skip("brownie's build predates the current source (the test above says what "
                    "to do)")
    shipped = load_artifact()
    for field in ("abi", "bytecode", "deployedBytecode", "compiler"):
        assert shipped[field] == build[field], f"{field} differs from {BUILD_ARTIFACT}: {FIX}"
