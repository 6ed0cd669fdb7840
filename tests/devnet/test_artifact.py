"""The compiled contracts the package ships stay in step with the Solidity sources and build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleml_node.chain.deploy import artifact_path, artifact_resource, load_artifact
from fleml_node.chain.profile import EVM_VERSIONS
from fleml_node.devnet.artifacts import BUILD_ARTIFACT, KEPT_FIELDS, source_sha1

ROOT = Path(__file__).resolve().parents[2]
FIX = ("run tools/setup.sh (brownie compile, then python -m fleml_node.devnet.artifacts) and "
       "commit fleml_node/contracts/ with the contract change")


@pytest.mark.parametrize("evm", EVM_VERSIONS)
def test_shipped_artifact_matches_the_current_sources(evm: str) -> None:
    shipped = load_artifact(evm_version=evm)
    assert set(shipped) == {*KEPT_FIELDS, "sources"}  # no ASTs or source maps: size
    assert artifact_path(evm).stat().st_size < 200_000
    assert shipped["compiler"]["evm_version"] == evm
    assert "contracts/FlemlConsortium.sol" in shipped["sources"]
    changed = [path for path, sha1 in shipped["sources"].items()
               if not (ROOT / path).is_file() or source_sha1(ROOT / path) != sha1]
    assert not changed, f"{artifact_resource(evm)} predates changes to {changed}: {FIX}"


def test_artifacts_differ_only_in_the_evm_version() -> None:
    cancun, london = (load_artifact(evm_version=evm) for evm in ("cancun", "london"))
    assert cancun["abi"] == london["abi"]
    assert {**cancun["compiler"], "evm_version": "london"} == london["compiler"]
    assert cancun["bytecode"] != london["bytecode"]
    # EIP-170: both deploy on a chain that enforces the 24,576-byte code limit
    assert len(london["deployedBytecode"]) // 2 - 1 <= 24_576


def test_london_artifact_has_no_push0() -> None:
    """PUSH0 (0x5f) is Shanghai's; a London chain rejects it. Walk the code, skipping push
    data, up to the metadata (which the artifact's last two bytes give the length of)."""
    code = bytes.fromhex(load_artifact(evm_version="london")["deployedBytecode"].removeprefix("0x"))
    end = len(code) - 2 - int.from_bytes(code[-2:], "big")
    pc, push0 = 0, 0
    while pc < end:
        op = code[pc]
        push0 += op == 0x5F
        pc += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)
    assert push0 == 0


def test_shipped_artifact_matches_brownies_build() -> None:
    build_path = ROOT / BUILD_ARTIFACT
    if not build_path.is_file():
        pytest.skip(f"no {BUILD_ARTIFACT}: tools/setup.sh compiles it")
    build = json.loads(build_path.read_text())
    if build["sha1"] != source_sha1(ROOT / build["sourcePath"]):
        pytest.skip("brownie's build predates the current source (the test above says what "
                    "to do)")
    shipped = load_artifact(evm_version=build["compiler"]["evm_version"])
    for field in ("abi", "bytecode", "deployedBytecode", "compiler"):
        assert shipped[field] == build[field], f"{field} differs from {BUILD_ARTIFACT}: {FIX}"
