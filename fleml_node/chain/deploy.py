"""Deploy FlemlConsortium with web3.py from brownie's compiled artifact.

Operators use `brownie run deploy`; this path serves `fleml-node simulate` and the integration
tests, which run without brownie's network layer. Both write the same deployment record.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fleml_node.chain.contract import ChainError
from fleml_node.chain.deployment import CONTRACT_NAME, Deployment, load_record, write_record

ARTIFACT = Path("build/contracts") / f"{CONTRACT_NAME}.json"


def find_artifact(project_root: Path | None = None) -> Path:
    """brownie's artifact for the consortium, or a `ChainError` saying how to build it."""
    root = project_root or Path(__file__).resolve().parents[2]
    path = root / ARTIFACT
    if not path.is_file():
        raise ChainError(f"no compiled contract at {path}: run `brownie compile` "
                         f"(./fleml setup does) in {root}")
    return path


def deploy_consortium(w3: Web3, operator: LocalAccount, record_path: Path,
                      artifact: Path | None = None, network: str = "local") -> Deployment:
    """Deploy the contract from `operator`, write the record and return it."""
    artifact = artifact or find_artifact()
    compiled = json.loads(artifact.read_text())
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
        artifact=str(artifact),
        compiler=compiled.get("compiler", {}),
    )
    return load_record(record_path)


def deploy_local_consortium(w3: Web3, keys: list[str], members: int, record_path: Path,
                            label: str = "member") -> Deployment:
    """A ready consortium for simulations and tests, by the local key convention.

    Key 0 deploys and operates, key 1 is appointed aggregator, keys 2 .. 2+members-1 are
    admitted as members labelled ``f"{label}-{i}"``.
    """
    from eth_account import Account

    from fleml_node.chain.contract import Consortium

    operator = Account.from_key(keys[0])
    record = deploy_consortium(w3, operator, record_path)
    admin = Consortium(w3, record, operator)
    admin.set_aggregator(Account.from_key(keys[1]).address)
    for i in range(members):
        admin.admit_member(Account.from_key(keys[2 + i]).address, f"{label}-{i}")
    return record
