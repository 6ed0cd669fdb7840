"""Deploy FlemlConsortium with web3.py from the compiled artifact shipped in the package.

Operators use `brownie run deploy`; this path serves `fleml-node simulate`, the devnet and the
tests, which run without brownie's network layer. Both write the same deployment record.

The artifact (ABI, bytecode, deployed bytecode, compiler settings) is package data,
``fleml_node/contracts/FlemlConsortium.json``, so an installed package deploys without a
checkout. ``tools/setup.sh`` exports it from brownie's build after ``brownie compile``
(:mod:`fleml_node.devnet.artifacts`), and a test fails when it differs from the build or the
Solidity sources it was compiled from.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fleml_node.chain.contract import ChainError
from fleml_node.chain.deployment import CONTRACT_NAME, Deployment, load_record, write_record

ARTIFACT_RESOURCE = f"contracts/{CONTRACT_NAME}.json"
"""The shipped artifact, relative to the ``fleml_node`` package."""


def artifact_path() -> Path:
    """Where the shipped artifact lies on disk.

    Raises
    ------
    ChainError
        If the package was built without it.
    """
    path = Path(str(resources.files("fleml_node").joinpath(ARTIFACT_RESOURCE)))
    if not path.is_file():
        raise ChainError(f"the package lacks its compiled contract {path}: in a checkout run "
                         "tools/setup.sh (it compiles and exports it), then reinstall")
    return path


def load_artifact(path: Path | None = None) -> dict[str, Any]:
    """The compiled contract: ``abi``, ``bytecode``, ``deployedBytecode``, ``compiler``.

    Parameters
    ----------
    path
        An artifact file to read instead of the shipped one (brownie's build output works too).

    Raises
    ------
    ChainError
        If the file is missing or is not a compiled contract.
    """
    path = path or artifact_path()
    try:
        compiled = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ChainError(f"cannot read the compiled contract {path}: {err}") from err
    if not compiled.get("abi") or not compiled.get("bytecode"):
        raise ChainError(f"{path} holds no abi and bytecode")
    return compiled


def deploy_consortium(w3: Web3, operator: LocalAccount, record_path: Path,
                      artifact: Path | None = None, network: str = "local") -> Deployment:
    """Deploy the contract from `operator`, write the record and return it.

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

    Returns
    -------
    Deployment
        The record just written.

    Raises
    ------
    ChainError
        If the artifact is missing or the deployment transaction fails.
    """
    path = artifact or artifact_path()
    compiled = load_artifact(path)
    factory = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
    tx = factory.constructor().build_transaction({
        "from": operator.address,
        "nonce": w3.eth.get_transaction_count(operator.address, "pending"),
        "chainId": w3.eth.chain_id,
    })
    signed = operator.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(
        signed.raw_transaction), timeout=60)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise ChainError("deployment transaction failed")
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
    )
    return load_record(record_path)
