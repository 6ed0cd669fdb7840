"""The aggregator can close a round after its deadline on an idle local chain.

A local anvil mines a block only when a transaction arrives, so after the last submission
the latest block's timestamp stays behind the wall clock. `Consortium.now()` takes the wall
clock for that reason (the next block will carry it), so the aggregator decides the deadline
has passed and sends ``closeRound``; the contract must then accept it rather than revert with
``QuorumNotReached`` because the gas estimate ran against the stale latest block. This is the
single chain step behind the process test where a killed client misses a round; it fails
here in seconds with the revert in the message.
"""

from __future__ import annotations

from eth_account import Account

from fleml_node.chain.contract import Consortium, RoundStatus, connect
from fleml_node.chain.deployment import load_record
from fleml_node.chain.events import round_events

from .conftest import AGGREGATOR_KEY, NUM_MEMBERS, Federation

MODEL_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def test_round_without_quorum_closes_once_its_deadline_has_passed(federation: Federation):
    fed = federation
    aggregator = Consortium(connect(fed.url), load_record(fed.record_path),
                            Account.from_key(fed.keys[AGGREGATOR_KEY]))
    deadline = aggregator.now() + 2
    aggregator.open_round(b"\x01" * 32, MODEL_CID, deadline, NUM_MEMBERS)
    fed.wait_until("the wall clock to pass the deadline",
                   lambda: aggregator.now() > deadline, timeout=30, interval=0.1)
    latest = aggregator.w3.eth.get_block("latest")["timestamp"]
    assert latest <= deadline  # nothing was mined since: the chain is idle, as in a real run

    aggregator.close_round(1)  # raised ChainError(QuorumNotReached) with a "latest" estimate

    assert aggregator.get_round(1).status is RoundStatus.CLOSED
    closed = round_events(aggregator, 1)["RoundClosed"][-1]
    assert closed.args["quorumReached"] is False and closed.args["submissions"] == 0
