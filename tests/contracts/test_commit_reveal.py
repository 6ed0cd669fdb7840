"""Commit-reveal rounds: commit before the deadline, reveal in the window after it, every revert
path and every edge of the two windows."""

import brownie
import pytest
from eth_abi import encode
from eth_utils import keccak

from .conftest import (
    CID,
    CR_POLICY,
    MODEL_HASH,
    REPORT_HASH,
    RESULT_HASH,
    REVEAL_SECONDS,
    ROUND_SECONDS,
    UPDATE_HASH,
    error,
    make_policy,
    next_block_at,
    now,
    pass_time,
)

OPEN, CLOSED, FINALIZED = 1, 2, 3
SALTS = ["0x" + f"{i + 0xa0:02x}" * 32 for i in range(4)]
OTHER_HASH = "0x" + "55" * 32


def commitment(member, round_id, update_hash, salt):
    """What a node computes: keccak256(abi.encode(member, roundId, updateHash, salt))."""
    return "0x" + keccak(encode(["address", "uint256", "bytes32", "bytes32"],
                                [member.address, round_id, bytes.fromhex(update_hash[2:]),
                                 bytes.fromhex(salt[2:])])).hex()


@pytest.fixture
def cr_round(consortium, operator, aggregator_account, chain):
    """Round 1 in commit-reveal mode, quorum 2; returns (round id, deadline, reveal deadline)."""
    consortium.setInitialPolicy(CR_POLICY, {"from": operator})
    deadline = now(chain) + ROUND_SECONDS
    tx = consortium.openRound(MODEL_HASH, CID, deadline, 2, {"from": aggregator_account})
    assert tx.events["RoundOpened"]["revealDeadline"] == deadline + REVEAL_SECONDS
    return 1, deadline, deadline + REVEAL_SECONDS


def commit(consortium, members, round_id, count=2, update_hash=UPDATE_HASH):
    for i, member in enumerate(members[:count]):
        consortium.commitUpdate(round_id, commitment(member, round_id, update_hash, SALTS[i]),
                                {"from": member})


def reveal(consortium, members, round_id, count=2, update_hash=UPDATE_HASH):
    for i, member in enumerate(members[:count]):
        consortium.revealUpdate(round_id, update_hash, CID, SALTS[i], {"from": member})


def test_commitment_of_matches_the_nodes_formula(consortium, members):
    assert consortium.commitmentOf(members[0], 7, UPDATE_HASH, SALTS[0]) == \
        commitment(members[0], 7, UPDATE_HASH, SALTS[0])


def test_round_records_its_mode_and_windows(consortium, cr_round):
    round_id, deadline, reveal_deadline = cr_round
    record = consortium.getRound(round_id)
    assert record["mode"] == 1 and record["revealDeadline"] == reveal_deadline
    assert consortium.abandonableAfter(round_id) == reveal_deadline + record["graceSeconds"]


def test_commit_then_reveal(consortium, cr_round, members, chain):
    round_id, deadline, _ = cr_round
    value = commitment(members[0], round_id, UPDATE_HASH, SALTS[0])
    tx = consortium.commitUpdate(round_id, value, {"from": members[0]})
    assert tx.events["UpdateCommitted"] == {"roundId": round_id, "member": members[0],
                                            "commitment": value}
    assert "UpdateSubmitted" not in tx.events
    assert consortium.getRound(round_id)["commits"] == 1
    assert consortium.getRound(round_id)["submissions"] == 0
    assert list(consortium.latestCommit(members[0])) == [round_id, value]
    pass_time(chain, deadline)
    tx = consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[0], {"from": members[0]})
    # the same event as a plain submission: the aggregator's scan is the same in both modes
    assert tx.events["UpdateSubmitted"] == {"roundId": round_id, "member": members[0],
                                            "updateHash": UPDATE_HASH, "updateCid": CID}
    assert consortium.getRound(round_id)["submissions"] == 1
    assert consortium.verifyCommitment(round_id, members[0], UPDATE_HASH) == 1
    assert list(consortium.latestCommitment(members[0])) == [round_id, UPDATE_HASH]


def test_plain_calls_in_a_commit_reveal_round_revert(consortium, cr_round, members):
    round_id = cr_round[0]
    with brownie.reverts(error("WrongSubmissionMode", round_id, 1)):
        consortium.submitUpdate(round_id, UPDATE_HASH, CID, {"from": members[0]})


def test_commit_reveal_calls_in_a_plain_round_revert(consortium, open_round, members):
    with brownie.reverts(error("WrongSubmissionMode", open_round, 0)):
        consortium.commitUpdate(open_round, UPDATE_HASH, {"from": members[0]})
    with brownie.reverts(error("WrongSubmissionMode", open_round, 0)):
        consortium.revealUpdate(open_round, UPDATE_HASH, CID, SALTS[0], {"from": members[0]})


def test_commit_reverts(consortium, cr_round, members, outsider):
    round_id = cr_round[0]
    value = commitment(members[0], round_id, UPDATE_HASH, SALTS[0])
    with brownie.reverts(error("NotMember", outsider)):
        consortium.commitUpdate(round_id, value, {"from": outsider})
    with brownie.reverts(error("UnknownRound", 5)):
        consortium.commitUpdate(5, value, {"from": members[0]})
    with brownie.reverts(error("EmptyHash")):
        consortium.commitUpdate(round_id, "0x" + "00" * 32, {"from": members[0]})
    consortium.commitUpdate(round_id, value, {"from": members[0]})
    # one commitment per (round, member): no replacing it after seeing others' commitments
    with brownie.reverts(error("AlreadyCommitted", round_id, members[0])):
        consortium.commitUpdate(round_id, OTHER_HASH, {"from": members[0]})


def test_commit_exactly_at_the_deadline_and_not_after(consortium, cr_round, members):
    round_id, deadline, _ = cr_round
    next_block_at(deadline)
    consortium.commitUpdate(round_id, commitment(members[0], round_id, UPDATE_HASH, SALTS[0]),
                            {"from": members[0]})
    next_block_at(deadline + 1)
    with brownie.reverts(error("DeadlinePassed", round_id, deadline)):
        consortium.commitUpdate(round_id, commitment(members[1], round_id, UPDATE_HASH,
                                                     SALTS[1]), {"from": members[1]})


def test_reveal_window_edges(consortium, cr_round, members):
    round_id, deadline, reveal_deadline = cr_round
    commit(consortium, members, round_id, count=3)
    next_block_at(deadline)
    with brownie.reverts(error("RevealNotOpen", round_id, deadline)):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[0], {"from": members[0]})
    next_block_at(deadline + 1)
    consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[0], {"from": members[0]})
    next_block_at(reveal_deadline)
    consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[1], {"from": members[1]})
    next_block_at(reveal_deadline + 1)
    with brownie.reverts(error("RevealWindowClosed", round_id, reveal_deadline)):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[2], {"from": members[2]})
    assert consortium.getRound(round_id)["submissions"] == 2


def test_reveal_reverts(consortium, cr_round, members, outsider, chain, operator):
    round_id, deadline, _ = cr_round
    commit(consortium, members, round_id, count=2)
    pass_time(chain, deadline)
    with brownie.reverts(error("NotMember", outsider)):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[0], {"from": outsider})
    with brownie.reverts(error("NoCommitment", round_id, members[2])):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[2], {"from": members[2]})
    with brownie.reverts(error("CommitmentMismatch", round_id, members[0])):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[1], {"from": members[0]})
    with brownie.reverts(error("CommitmentMismatch", round_id, members[0])):
        consortium.revealUpdate(round_id, OTHER_HASH, CID, SALTS[0], {"from": members[0]})
    with brownie.reverts(error("EmptyCid")):
        consortium.revealUpdate(round_id, UPDATE_HASH, "", SALTS[0], {"from": members[0]})
    with brownie.reverts(error("CidTooLong", 129, 128)):
        consortium.revealUpdate(round_id, UPDATE_HASH, "b" * 129, SALTS[0], {"from": members[0]})
    consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[0], {"from": members[0]})
    with brownie.reverts(error("AlreadySubmitted", round_id, members[0])):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[0], {"from": members[0]})
    consortium.removeMember(members[1], {"from": operator})
    with brownie.reverts(error("NotMember", members[1])):
        consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[1], {"from": members[1]})


def test_a_zero_hash_cannot_be_revealed(consortium, cr_round, members, chain):
    round_id, deadline, _ = cr_round
    zero = "0x" + "00" * 32
    consortium.commitUpdate(round_id, commitment(members[0], round_id, zero, SALTS[0]),
                            {"from": members[0]})
    pass_time(chain, deadline)
    with brownie.reverts(error("EmptyHash")):
        consortium.revealUpdate(round_id, zero, CID, SALTS[0], {"from": members[0]})


def test_close_reverts_before_the_deadline(consortium, cr_round, members, aggregator_account):
    round_id, deadline, _ = cr_round
    commit(consortium, members, round_id, count=4)
    with brownie.reverts(error("CommitPhaseOpen", round_id, deadline)):
        consortium.closeRound(round_id, {"from": aggregator_account})


def test_close_early_once_every_commitment_is_revealed(consortium, cr_round, members,
                                                       aggregator_account, chain):
    round_id, deadline, _ = cr_round
    commit(consortium, members, round_id, count=3)
    pass_time(chain, deadline)
    reveal(consortium, members, round_id, count=2)
    with brownie.reverts(error("RevealsPending", round_id, 3, 2)):
        consortium.closeRound(round_id, {"from": aggregator_account})
    consortium.revealUpdate(round_id, UPDATE_HASH, CID, SALTS[2], {"from": members[2]})
    tx = consortium.closeRound(round_id, {"from": aggregator_account})
    assert tx.events["RoundClosed"]["submissions"] == 3
    assert tx.events["RoundClosed"]["quorumReached"]


def test_close_below_quorum_waits_for_the_reveal_deadline(consortium, cr_round, members,
                                                          aggregator_account):
    round_id, deadline, reveal_deadline = cr_round
    commit(consortium, members, round_id, count=1)
    next_block_at(deadline + 1)
    reveal(consortium, members, round_id, count=1)
    with brownie.reverts(error("QuorumNotReached", round_id, 1, 2)):
        consortium.closeRound(round_id, {"from": aggregator_account})
    next_block_at(reveal_deadline)
    with brownie.reverts(error("QuorumNotReached", round_id, 1, 2)):
        consortium.closeRound(round_id, {"from": aggregator_account})
    next_block_at(reveal_deadline + 1)
    tx = consortium.closeRound(round_id, {"from": aggregator_account})
    assert not tx.events["RoundClosed"]["quorumReached"]


def test_unrevealed_commitments_do_not_count_and_cannot_be_flagged(consortium, operator,
                                                                   aggregator_account, members,
                                                                   chain):
    consortium.setInitialPolicy(make_policy(min_submissions=2, mode=1, reveal=REVEAL_SECONDS),
                                {"from": operator})
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(MODEL_HASH, CID, deadline, 2, {"from": aggregator_account})
    commit(consortium, members, 1, count=3)
    pass_time(chain, deadline)
    reveal(consortium, members, 1, count=2)
    pass_time(chain, deadline + REVEAL_SECONDS)
    consortium.closeRound(1, {"from": aggregator_account})
    record = consortium.getRound(1)
    assert (record["commits"], record["submissions"]) == (3, 2)
    assert consortium.verifyCommitment(1, members[2], UPDATE_HASH) == 0  # not submitted
    with brownie.reverts(error("FlaggedNonSubmitter", 1, 2)):
        consortium.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID, [0b100],
                                 {"from": aggregator_account})
    consortium.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID, [0b11],
                             {"from": aggregator_account})
    assert consortium.getRound(1)["status"] == FINALIZED


def test_commit_and_reveal_gas_within_target(consortium, cr_round, members,
                                             aggregator_account, chain):
    """From a member's second round: commit + reveal <= 100,000 gas together."""
    round_id, deadline, _ = cr_round
    commit(consortium, members, round_id, count=2)
    pass_time(chain, deadline)
    reveal(consortium, members, round_id, count=2)
    consortium.closeRound(round_id, {"from": aggregator_account})
    consortium.finalizeRound(round_id, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(RESULT_HASH, CID, deadline, 1, {"from": aggregator_account})
    value = commitment(members[0], 2, OTHER_HASH, SALTS[3])
    committed = consortium.commitUpdate(2, value, {"from": members[0]}).gas_used
    pass_time(chain, deadline)
    revealed = consortium.revealUpdate(2, OTHER_HASH, CID, SALTS[3],
                                       {"from": members[0]}).gas_used
    assert committed + revealed <= 100_000
