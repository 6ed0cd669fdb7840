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

The chain profile (fleml_node.chain.profile: EVM version, fee mode, proof of authority,
confirmations, block time) comes from FLEML_CHAIN_PROFILE (a builtin name such as clique, or a
JSON file); whatever it leaves open is detected from the chain. It is written into the record,
so every node talks to the chain the same way. brownie builds for the project's EVM version
(cancun); on a chain that runs an older EVM (e.g. a London-era Clique network) the contracts
are compiled again for that version here, with the same compiler settings, and that build is
deployed. On such chains set the network's gas price (`brownie networks modify NAME
gas_price=...`): some PoA clients lack EIP-1559 fee estimation.
"""

import os
from pathlib import Path

from brownie import FlemlConsortium, accounts, chain, network, project, web3
from brownie.network.contract import ContractContainer

from fleml_node.chain.deploy import verification
from fleml_node.chain.deployment import default_record_path, write_record
from fleml_node.chain.profile import detect, load_profile
from fleml_node.devnet.artifacts import compile_for, standard_input
from scripts.admin import admit_members, deployer_account, parse_policy


def container_for(evm_version):
    """brownie's FlemlConsortium, compiled for `evm_version` when the project's build is not."""
    if FlemlConsortium._build["compiler"]["evm_version"] == evm_version:
        return FlemlConsortium
    print(f"compiling FlemlConsortium for the {evm_version} EVM of chain {chain.id}")
    loaded = project.main.get_loaded_projects()[0]
    build = compile_for(evm_version, Path(loaded._path), FlemlConsortium._build)
    return ContractContainer(loaded, build)


def main():
    operator = deployer_account()
    profile = detect(web3, load_profile())
    container = container_for(profile.evm_version)
    consortium = container.deploy({"from": operator})
    receipt = consortium.tx
    if os.environ.get("FLEML_AGGREGATOR"):
        consortium.setAggregator(os.environ["FLEML_AGGREGATOR"], {"from": operator})
    admit_members(consortium, operator, os.environ.get("FLEML_MEMBERS", ""))
    policy = parse_policy(os.environ.get("FLEML_POLICY", ""))
    consortium.setInitialPolicy(policy.as_tuple(), {"from": operator})

    loaded = project.main.get_loaded_projects()[0]
    config = loaded._compiler_config
    path = Path(os.environ.get("FLEML_DEPLOYMENT") or default_record_path(chain.id))
    # the solc standard-JSON input of exactly the code deployed, for Etherscan / Sourcify
    build = container._build
    checked = verification(build, standard_input(profile.evm_version, Path(loaded._path), build))
    write_record(
        path,
        chain_id=chain.id,
        network=network.show_active(),
        address=consortium.address,
        abi=container.abi,
        block_number=receipt.block_number,
        transaction=receipt.txid,
        deployer=operator.address,
        artifact="build/contracts/FlemlConsortium.json" if container is FlemlConsortium
        else f"compiled for {profile.evm_version} by scripts/deploy.py",
        compiler={"solc": config["solc"]["version"], "evm_version": profile.evm_version,
                  "optimizer": config["solc"]["optimizer"]},
        profile=profile,
        extra={"verification": checked},
    )
    print(f"FlemlConsortium at {consortium.address} on chain {chain.id} "
          f"(block {receipt.block_number}); record: {path}")
    return consortium


__all__ = ["main", "accounts"]
