"""Deploy the FLEML consortium contract and write the deployment record.

    brownie run deploy [--network NAME]

The deployer becomes the operator. On the development network it is accounts[0]; elsewhere set
FLEML_DEPLOYER_KEY (a private key, never logged) or FLEML_DEPLOYER_ACCOUNT (a brownie keystore
id, which prompts for its password). Optional, in the same run:
    FLEML_AGGREGATOR=0x...                       appoint the aggregator
    FLEML_MEMBERS=0xabc:hospital-a,0xdef:lab-b   admit members with their labels
    FLEML_POLICY=min_submissions=3,grace_seconds=600   the initial round policy
The initial policy (setInitialPolicy; later changes wait, see `brownie run admin
schedule_policy`) defaults to fleml_node.chain.contract.Policy(): plain submissions,
min_submissions=1, min_round_seconds=1, max_round_seconds=604800 (7 days), grace_seconds=60;
FLEML_POLICY overrides any of its fields (min_round_seconds, max_round_seconds,
min_submissions, min_submissions_bps, mode (0 plain, 1 commit-reveal), reveal_seconds,
grace_seconds).
The record goes to $FLEML_DEPLOYMENT, or deployments/<chain_id>.json.
"""

import os
from pathlib import Path

from brownie import FlemlConsortium, accounts, chain, network, project

from fleml_node.chain.deployment import default_record_path, write_record
from scripts.admin import admit_members, deployer_account, parse_policy


def main():
    operator = deployer_account()
    consortium = FlemlConsortium.deploy({"from": operator})
    receipt = consortium.tx
    if os.environ.get("FLEML_AGGREGATOR"):
        consortium.setAggregator(os.environ["FLEML_AGGREGATOR"], {"from": operator})
    admit_members(consortium, operator, os.environ.get("FLEML_MEMBERS", ""))
    policy = parse_policy(os.environ.get("FLEML_POLICY", ""))
    consortium.setInitialPolicy(policy.as_tuple(), {"from": operator})

    config = project.main.get_loaded_projects()[0]._compiler_config
    path = Path(os.environ.get("FLEML_DEPLOYMENT") or default_record_path(chain.id))
    write_record(
        path,
        chain_id=chain.id,
        network=network.show_active(),
        address=consortium.address,
        abi=FlemlConsortium.abi,
        block_number=receipt.block_number,
        transaction=receipt.txid,
        deployer=operator.address,
        artifact="build/contracts/FlemlConsortium.json",
        compiler={"solc": config["solc"]["version"], "evm_version": config["evm_version"],
                  "optimizer": config["solc"]["optimizer"]},
    )
    print(f"FlemlConsortium at {consortium.address} on chain {chain.id} "
          f"(block {receipt.block_number}); record: {path}")
    return consortium


__all__ = ["main", "accounts"]
