"""A federation on a second development chain: Hardhat Network instead of anvil.

The same `fleml-node` processes as in test_processes.py, driven by the same
:class:`~tests.integration.conftest.Federation`, run on Hardhat Network 2.x
(tools/hardhat, started by :class:`~fleml_node.devnet.hardhat.LocalHardhat`). Nothing changes
but the RPC URL and the chain profile in the deployment record, which
:func:`~fleml_node.chain.deploy.deploy_consortium` resolves from the chain (cancun, EIP-1559
fees, no proof of authority). So the nodes need no anvil-only RPC method (``anvil_*``, anvil's
``--state`` and its block-time behaviour), and the test fails if one sneaks in.

* `test_three_members_finish_two_audited_rounds_on_hardhat`: three members and an aggregator
  finish two rounds with every member's update; each round is FINALIZED with a non-zero result
  hash on chain, and `fleml-node audit` passes both from the chain and IPFS alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleml_node.chain.contract import ChainError, RoundStatus, connect
from fleml_node.devnet import anvil  # not `import test_keys`: pytest would collect it
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.devnet.hardhat import LocalHardhat, find_config, find_hardhat

from .conftest import Federation, small_task
from .test_processes import assert_audit_passes

# Not in CI's budget (about 100 s; the PoA federation already proves the nodes on a second,
# non-anvil chain there): ./fleml test -m soak tests/integration/test_second_chain.py
pytestmark = [pytest.mark.slow, pytest.mark.soak]

MEMBERS = 3
ROUNDS = 2
AGGREGATOR_OPTIONS = ["--rounds", str(ROUNDS), "--round-seconds", "180", "--no-evaluate"]


@pytest.fixture
def hardhat_federation(tmp_path: Path, ipfs_api: str) -> Iterator[Federation]:
    """Key 0 operator, key 1 aggregator, keys 2..4 the members 0..2, on a fresh Hardhat chain
    (a free loopback port, 1 gwei base fee as anvil); nodes and chain stopped after."""
    try:
        find_hardhat()
        find_config()
    except ChainError as err:
        pytest.skip(f"Hardhat is not installed (./fleml setup installs it): {err}")
    chain_log = tmp_path / "hardhat.log"
    with LocalHardhat(accounts=MEMBERS + 2, log_file=chain_log) as chain:
        keys = anvil.test_keys(MEMBERS + 2)
        record = deploy_local_consortium(connect(chain.url), keys, MEMBERS,
                                         tmp_path / "deployment.json")
        fed = Federation(tmp_path, chain.url, record.path, keys, ipfs_api, chain_log)
        fed.task_args = small_task(MEMBERS)
        try:
            yield fed
        finally:
            fed.stop_all()


def test_three_members_finish_two_audited_rounds_on_hardhat(hardhat_federation: Federation):
    fed = hardhat_federation
    w3 = fed.reader.w3
    assert w3.client_version.startswith("HardhatNetwork/"), w3.client_version
    profile = fed.reader.deployment.profile
    assert profile is not None, "the deployment record has no chain profile"
    assert (profile.evm_version, profile.fee_mode, profile.poa) == ("cancun", "eip1559", False)

    clients = [fed.client(i, "--max-rounds", str(ROUNDS)) for i in range(MEMBERS)]
    aggregator = fed.aggregator(*AGGREGATOR_OPTIONS)
    fed.wait_exit(aggregator, timeout=300)
    for client in clients:
        fed.wait_exit(client, timeout=60)

    assert f"done: round {ROUNDS} finalized" in aggregator.log_text(), fed.report("no done line")
    assert fed.reader.current_round() == ROUNDS
    everyone = {fed.member(i) for i in range(MEMBERS)}
    for r in range(1, ROUNDS + 1):
        info = fed.reader.get_round(r)
        assert info.status is RoundStatus.FINALIZED, fed.report(f"round {r} not finalized")
        assert info.result_hash != bytes(32), fed.report(f"round {r} has no aggregate on chain")
        assert fed.submitters(r) == everyone, fed.report(f"round {r} lacks submissions")
        finalized = fed.round_event(r, "RoundFinalized")
        assert bytes(finalized.args["resultHash"]) == info.result_hash, fed.report(
            f"round {r}: RoundFinalized and the round record disagree")
    for i in range(MEMBERS):
        assert fed.reader.latest_commitment(fed.member(i))[0] == ROUNDS
    output = assert_audit_passes(fed, *range(1, ROUNDS + 1))
    assert output.count("commitment matches") == ROUNDS * MEMBERS, output
