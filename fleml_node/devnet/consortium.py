"""A ready consortium on a local chain, by the devnet's key convention.

Key 0 of anvil's test mnemonic deploys and operates, key 1 is the aggregator, keys 2, 3, ...
are the members. Simulations, the tests and ``fleml-node devnet up`` all use this layout.
"""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from web3 import Web3

from fleml_node.chain.contract import Consortium, Policy
from fleml_node.chain.deploy import deploy_consortium
from fleml_node.chain.deployment import Deployment
from fleml_node.chain.profile import ChainProfile

OPERATOR_KEY_INDEX = 0
AGGREGATOR_KEY_INDEX = 1
FIRST_MEMBER_KEY_INDEX = 2


DEFAULT_POLICY = Policy()
"""The devnet's round policy: plain submissions, a result from 1 submission on, deadlines 1 s
to 7 days away, and 60 s of grace after a deadline before anyone may abandon the round."""


def deploy_local_consortium(w3: Web3, keys: list[str], members: int, record_path: Path,
                            label: str = "member", policy: Policy | None = None,
                            validation: tuple[bytes, str] | None = None,
                            profile: ChainProfile | None = None) -> Deployment:
    """Deploy, appoint the aggregator, admit the members, set the initial policy and, if
    given, the validation set.

    Parameters
    ----------
    w3
        A connected client of a local chain whose accounts ``keys`` fund.
    keys
        Private keys in the devnet's order (operator, aggregator, members).
    members
        How many members to admit (keys 2 .. 2 + members - 1).
    record_path
        Where to write the deployment record.
    label
        Members are labelled ``f"{label}-{i}"``.
    policy
        The round policy (`setInitialPolicy`); `DEFAULT_POLICY` when None.
    validation
        The consortium's validation set as (sha256 of the file's bytes, IPFS CID), set before
        round 1 so that round 1 opens with it (`setValidationSet`); None: none.

    Returns
    -------
    Deployment
        The deployment record.
    """
    operator = Account.from_key(keys[OPERATOR_KEY_INDEX])
    record = deploy_consortium(w3, operator, record_path, profile=profile)
    admin = Consortium(w3, record, operator)
    admin.set_aggregator(Account.from_key(keys[AGGREGATOR_KEY_INDEX]).address)
    for i in range(members):
        admin.admit_member(Account.from_key(keys[FIRST_MEMBER_KEY_INDEX + i]).address,
                           f"{label}-{i}")
    admin.set_initial_policy(policy or DEFAULT_POLICY)
    if validation is not None:
        admin.set_validation_set(*validation)
    return record
