"""A federation on a real proof-of-authority chain: three @ethereumjs/client sealers (Clique,
2 s blocks, London EVM), real `fleml-node` processes connected to different chain nodes, and
one sealer stopped in the middle of a round.

What it shows: the nodes read PoA blocks, send legacy-priced transactions, establish success
without receipt `status`, deploy the London build, and a round survives losing a sealer (the two
left keep sealing in turn). Marked slow (about 3 minutes on 2 cores); skipped only when the
client is not installed (tools/setup.sh installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleml_node.chain.contract import Consortium, RoundStatus, connect
from fleml_node.chain.deployment import load_record
from fleml_node.chain.profile import load_profile
from fleml_node.devnet.anvil import test_keys as anvil_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.devnet.poa import PoaError, PoaNetwork, client_dir
from tests.integration.conftest import FIRST_MEMBER_KEY, Federation, small_task
from tests.integration.test_processes import assert_audit_passes

pytestmark = pytest.mark.slow

MEMBERS = 3
ROUNDS = 2
STOPPED_SEALER = 2


class PoaFederation(Federation):
    """The aggregator on chain node 0, members on nodes 1, 0, 1: never on the sealer that the
    test stops, whose RPC goes down with it."""

    def __init__(self, *args, net: PoaNetwork, **kwargs) -> None:  # noqa: ANN002,ANN003
        super().__init__(*args, **kwargs)
        self.net = net

    def rpc_for(self, key_index: int | None) -> str:
        if key_index is None or key_index < FIRST_MEMBER_KEY:
            return self.net.rpc_urls[0]
        return self.net.rpc_urls[1 - (key_index - FIRST_MEMBER_KEY) % 2]


@pytest.fixture
def poa_federation(tmp_path: Path, ipfs_api: str) -> Iterator[PoaFederation]:
    try:
        client_dir()
    except PoaError as err:
        pytest.skip(f"@ethereumjs/client is not installed (tools/setup.sh installs it): {err}")
    with PoaNetwork(tmp_path / "poa", sealers=3, period=2) as net:
        keys = anvil_keys(MEMBERS + 2)
        record = deploy_local_consortium(connect(net.rpc_urls[1]), keys, MEMBERS,
                                         tmp_path / "deployment.json",
                                         profile=load_profile("clique"))
        net.wait_advancing()  # every node has imported the deployment before anyone binds
        fed = PoaFederation(tmp_path, net.rpc_urls[0], record.path, keys, ipfs_api,
                            net.log_path(0), net=net)
        fed.task_args = small_task(MEMBERS)
        try:
            yield fed
        finally:
            fed.stop_all()


def test_rounds_finalize_on_a_clique_network_while_a_sealer_is_down(poa_federation):
    fed = poa_federation
    record = load_record(fed.record_path)
    assert (record.profile.poa, record.profile.evm_version, record.profile.fee_mode) == \
        (True, "london", "legacy")
    clients = [fed.client(i) for i in range(MEMBERS)]
    fed.wait_ready(*clients, timeout=300)
    fed.aggregator("--rounds", str(ROUNDS), "--round-seconds", "90")
    fed.wait_status(1, RoundStatus.FINALIZED, timeout=300)
    fed.wait_status(2, RoundStatus.OPEN, timeout=120)
    fed.net.stop_node(STOPPED_SEALER)
    fed.wait_status(ROUNDS, RoundStatus.FINALIZED, timeout=300)
    for round_id in range(1, ROUNDS + 1):
        assert fed.submitters(round_id) == {fed.member(i) for i in range(MEMBERS)}
        finalized = fed.round_event(round_id, "RoundFinalized")
        assert finalized.args["resultHash"] != bytes(32)
    # the stopped sealer comes back and catches up with what the others sealed without it
    fed.net.start_node(STOPPED_SEALER)
    # Its first state reads may answer "State trie does not contain state root": it has
    # imported blocks it has not executed yet. Binding is part of the catch-up, so it is retried
    # inside the wait (a transient error counts as "not yet"), as `fleml-node` retries it.
    late_w3 = connect(fed.net.rpc_urls[STOPPED_SEALER])

    def late_sees_the_last_round_finalized() -> bool:
        late = Consortium(late_w3, record)
        return late.get_round(ROUNDS).status is RoundStatus.FINALIZED

    fed.wait_until("the restarted sealer to see round 2 finalized",
                   late_sees_the_last_round_finalized, timeout=180)
    assert_audit_passes(fed, *range(1, ROUNDS + 1))
