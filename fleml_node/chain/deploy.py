"""Deploy FlemlConsortium with web3.py from the compiled artifact shipped in the package.

Operators use `brownie run deploy`; this path serves `fleml-node simulate`, the devnet and the
tests, which run without brownie's network layer. Both write the same deployment record.

The artifacts (ABI, bytecode, deployed bytecode, compiler settings) are package data, one per
EVM version the project supports, ``fleml_node/contracts/<evm>/FlemlConsortium.json``
(:data:`fleml_node.chain.profile.EVM_VERSIONS`), so an installed package deploys without a
checkout and onto a London-era proof-of-authority chain as well as onto a Cancun dev chain.
``tools/setup.sh`` exports them after ``brownie compile`` (:mod:`fleml_node.devnet.artifacts`),
and a test fails when one differs from the build or the Solidity sources it was compiled from.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fleml_node.chain.contract import ChainError, receipt_succeeded, send_signed
from fleml_node.chain.deployment import CONTRACT_NAME, Deployment, load_record, write_record
from fleml_node.chain.profile import EVM_VERSIONS, ChainProfile, detect, fee_fields

DEFAULT_EVM_VERSION = "cancun"
"""The EVM version of brownie's own build (brownie-config.yaml) and of the dev chains."""


def artifact_resource(evm_version: str = DEFAULT_EVM_VERSION) -> str:
    """The shipped artifact for `evm_version`, relative to the ``fleml_node`` package."""
    return f"contracts/{evm_version}/{CONTRACT_NAME}.json"


def artifact_path(evm_version: str = DEFAULT_EVM_VERSION) -> Path:
    """Where the shipped artifact for `evm_version` lies on disk.

    Raises
    ------
    ChainError
        If the EVM version is unsupported or the package was built without its artifact.
    """
    if evm_version not in EVM_VERSIONS:
        raise ChainError(f"no artifact for EVM version {evm_version!r}; the project ships "
                         f"{', '.join(EVM_VERSIONS)}")
    path = Path(str(resources.files("fleml_node").joinpath(artifact_resource(evm_version))))
    if not path.is_file():
        raise ChainError(f"the package lacks its compiled contract {path}: in a checkout run "
                         "tools/setup.sh (it compiles and exports it), then reinstall")
    return path


def load_artifact(path: Path | None = None,
                  evm_version: str = DEFAULT_EVM_VERSION) -> dict[str, Any]:
    """The compiled contract: ``abi``, ``bytecode``, ``deployedBytecode``, ``compiler``.

    Parameters
    ----------
    path
        An artifact file to read instead of the shipped one (brownie's build output works too).
    evm_version
        Which shipped artifact to read when `path` is None.

    Raises
    ------
    ChainError
        If the file is missing or is not a compiled contract.
    """
    path = path or artifact_path(evm_version)
    try:
        compiled = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ChainError(f"cannot read the compiled contract {path}: {err}") from err
    if not compiled.get("abi") or not compiled.get("bytecode"):
        raise ChainError(f"{path} holds no abi and bytecode")
    return compiled


def metadata_hash(deployed_bytecode: str) -> dict[str, str]:
    """The CBOR metadata solc appends to the runtime code: the IPFS hash of the contract's
    metadata (CIDv0, what Sourcify looks up) and the solc version, as hex and text."""
    import base58
    import cbor2

    code = bytes.fromhex(deployed_bytecode.removeprefix("0x"))
    length = int.from_bytes(code[-2:], "big")
    fields = cbor2.loads(code[-2 - length:-2])
    out = {"cbor": code[-2 - length:].hex()}
    if "ipfs" in fields:
        out["ipfs"] = base58.b58encode(fields["ipfs"]).decode()
    if "solc" in fields:
        out["solc"] = ".".join(str(b) for b in fields["solc"])
    return out


def verification(compiled: dict[str, Any], standard_input: dict[str, Any]) -> dict[str, Any]:
    """The deployment record's ``verification`` section: what Etherscan's and Blockscout's
    "Solidity (standard JSON input)" verification and Sourcify need, from the record alone.

    ``standard_json_input`` is the solc input the deployed artifact was compiled from (upload
    it as is), ``compiler_version`` the exact solc (``v0.8.28+commit.7893614a``),
    ``contract_name`` the fully qualified name, ``metadata`` the hash solc embedded in the
    runtime code (it matches only if the sources and settings are byte for byte these).
    """
    settings = compiled.get("compiler", {})
    return {
        "format": "solc-standard-json",
        "compiler_version": "v" + str(settings.get("version", "")).removeprefix("v"),
        "contract_name": f"contracts/{CONTRACT_NAME}.sol:{CONTRACT_NAME}",
        "evm_version": standard_input.get("settings", {}).get("evmVersion"),
        "optimizer": standard_input.get("settings", {}).get("optimizer"),
        "constructor_arguments": "",
        "metadata": metadata_hash(compiled["deployedBytecode"]),
        "standard_json_input": standard_input,
    }


def deploy_consortium(w3: Web3, operator: LocalAccount, record_path: Path,
                      artifact: Path | None = None, network: str = "local",
                      profile: ChainProfile | None = None) -> Deployment:
    """Deploy the contract from `operator`, write the record and return it.

    The artifact is the one compiled for the chain's EVM version, and the record carries the
    resolved chain profile, so every node talks to the chain the same way.

    Parameters
    ----------
    w3
        A connected client.
    operator
        The deployer, who becomes the consortium's operator.
    record_path
        Where to write the deployment record.
    artifact
        A compiled contract to deploy instead of the shipped one.
    network
        The network name written into the record (informational).
    profile
        How to talk to the chain; fields it leaves open are detected (default: all).

    Returns
    -------
    Deployment
        The record just written.

    Raises
    ------
    ChainError
        If the artifact is missing or the deployment transaction fails.
    """
    profile = detect(w3, profile)
    path = artifact or artifact_path(profile.evm_version)
    compiled = load_artifact(path)
    factory = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
    tx = factory.constructor().build_transaction({
        "from": operator.address,
        "nonce": w3.eth.get_transaction_count(operator.address, "pending"),
        "chainId": w3.eth.chain_id,
        **fee_fields(w3, profile.fee_mode),
    })
    receipt = send_signed(w3, operator, tx, profile.fee_mode, 120, "deployment")
    if not receipt["contractAddress"] or not receipt_succeeded(w3, receipt, None):
        raise ChainError(f"deployment transaction failed (EVM {profile.evm_version} artifact "
                         f"{path})")
    write_record(
        record_path,
        chain_id=w3.eth.chain_id,
        network=network,
        address=receipt["contractAddress"],
        abi=compiled["abi"],
        block_number=receipt["blockNumber"],
        transaction="0x" + receipt["transactionHash"].hex().removeprefix("0x"),
        deployer=operator.address,
        artifact=str(path),
        compiler=compiled.get("compiler", {}),
        profile=profile,
        extra=_verification_beside(path, compiled),
    )
    return load_record(record_path)


def _verification_beside(artifact: Path, compiled: dict[str, Any]) -> dict[str, Any]:
    """``{"verification": ...}`` from the standard-JSON input beside the artifact, or {} for
    an artifact without one (one given by hand)."""
    source = artifact.with_name(f"{CONTRACT_NAME}.input.json")
    if not source.is_file():
        return {}
    return {"verification": verification(compiled, json.loads(source.read_text()))}
