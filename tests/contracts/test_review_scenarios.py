"""Each finding of the protocol-v2 security review (issue 10), reproduced as a test.

Every test here failed on protocol version 1: the transaction that attacked the consortium
went through. Now each attack reverts with a named error, or the consortium recovers.
"""

import brownie
from brownie import ZERO_ADDRESS

from .conftest import (
    CID,
    GRACE_SECONDS,
    MODEL_HASH,
    REPORT_HASH,
    RESULT_HASH,
    REVEAL_SECONDS,
    ROUND_SECONDS,
    UPDATE_HASH,
    WEEK,
    error,
    make_policy,
    next_block_at,
    now,
    pass_time,
)

OPEN, CLOSED, FINALIZED, ABANDONED = 1, 2, 3, 4
NOT_SUBMITTED, MATCHES, DIFFERS, SUPERSEDED = range(4)


def test_stall_a_far_deadline_is_refused(consortium, aggregator_account, chain):
    start = now(chain) + 5
    next_block_at(start)
    with brownie.reverts(error("DeadlineOutOfRange", 2**64 - 1, start + 1, start + WEEK)):
        consortium.openRound(MODEL_HASH, CID, 2**64 - 1, 1, {"from": aggregator_account})
    next_block_at(start + 1)
    millis = (start + 600) * 1000  # a deadline in milliseconds by mistake
    with brownie.reverts(error("DeadlineOutOfRange", millis, start + 2, start + 1 + WEEK)):
        consortium.openRound(MODEL_HASH, CID, millis, 1, {"from": aggregator_account})


def test_stall_a_lost_member_key_no_longer_bricks_the_consortium(consortium, operator,
                                                                 aggregator_account, members,
                                                                 outsider, chain):
    # quorum 4, one member's key lost, then that member removed: the round cannot reach its
    # quorum; after the deadline and the grace period anyone abandons it and rounds go on
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(MODEL_HASH, CID, deadline, 4, {"from": aggregator_account})
    for member in members[:3]:
        consortium.submitUpdate(1, UPDATE_HASH, CID, {"from": member})
    consortium.removeMember(members[3], {"from": operator})
    pass_time(chain, deadline + GRACE_SECONDS)
    consortium.abandonRound(1, {"from": outsider})
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 3,
                         {"from": aggregator_account})
    assert consortium.currentRound() == 2


def test_stall_replacing_the_aggregator_recovers_a_stuck_round(consortium, operator,
                                                               aggregator_account, members,
                                                               accounts, chain):
    # the aggregator vanishes mid-round: the operator abandons and appoints another
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 2,
                         {"from": aggregator_account})
    consortium.abandonRound(1, {"from": operator})
    successor = accounts[7]
    consortium.setAggregator(successor, {"from": operator})
    tx = consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 2,
                              {"from": successor})
    assert tx.events["RoundOpened"]["aggregator"] == successor


def test_skip_the_quorum_a_result_needs_the_minimum_submissions(consortium, operator,
                                                                aggregator_account, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=3), {"from": operator})
    start = now(chain) + 5
    next_block_at(start)
    with brownie.reverts(error("InvalidQuorum", 1, 3, 4)):
        consortium.openRound(MODEL_HASH, CID, start + 1, 1, {"from": aggregator_account})
    deadline = start + 2
    consortium.openRound(MODEL_HASH, CID, deadline, 3, {"from": aggregator_account})
    pass_time(chain, deadline)
    consortium.closeRound(1, {"from": aggregator_account})  # zero submissions
    with brownie.reverts(error("BelowMinimumSubmissions", 1, 0, 3)):
        consortium.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID, [],
                                 {"from": aggregator_account})
    assert not consortium.verifyResult(1, RESULT_HASH, REPORT_HASH)
    consortium.abandonRound(1, {"from": aggregator_account})  # below the minimum: at once
    assert consortium.baseModelHash() == MODEL_HASH  # no result to build on


def test_skip_the_quorum_the_operator_cannot_lower_the_minimum_for_the_round_at_hand(
        consortium, operator, aggregator_account, members, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=3), {"from": operator})
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(MODEL_HASH, CID, deadline, 3, {"from": aggregator_account})
    consortium.submitUpdate(1, UPDATE_HASH, CID, {"from": members[0]})
    consortium.schedulePolicy(make_policy(min_submissions=1), {"from": operator})
    pass_time(chain, deadline + 2 * 24 * 3600)
    consortium.closeRound(1, {"from": aggregator_account})
    with brownie.reverts(error("BelowMinimumSubmissions", 1, 1, 3)):
        consortium.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID, [],
                                 {"from": aggregator_account})
    consortium.abandonRound(1, {"from": operator})
    # nor for the next round: the change waits for round 1 + 1 + 2
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 3,
                         {"from": aggregator_account})
    assert consortium.getRound(2)["minSubmissions"] == 3


def test_copying_a_commitment_does_not_reveal(consortium, operator, aggregator_account,
                                              members, chain):
    # the copier commits the honest member's commitment and reveals with its hash and salt:
    # a commitment binds its author's address, so the copy does not open
    consortium.setInitialPolicy(make_policy(mode=1, reveal=REVEAL_SECONDS), {"from": operator})
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(MODEL_HASH, CID, deadline, 1, {"from": aggregator_account})
    honest, copier = members[0], members[1]
    salt = "0x" + "99" * 32
    value = consortium.commitmentOf(honest, 1, UPDATE_HASH, salt)
    consortium.commitUpdate(1, value, {"from": honest})
    consortium.commitUpdate(1, value, {"from": copier})
    pass_time(chain, deadline)
    consortium.revealUpdate(1, UPDATE_HASH, CID, salt, {"from": honest})
    with brownie.reverts(error("CommitmentMismatch", 1, copier)):
        consortium.revealUpdate(1, UPDATE_HASH, CID, salt, {"from": copier})
    assert consortium.getRound(1)["submissions"] == 1


def test_copying_after_a_reveal_is_too_late(consortium, operator, aggregator_account, members,
                                            chain):
    # updates appear (on IPFS and in UpdateSubmitted) only after the commit deadline: a late
    # member who wants to copy or adapt to them can no longer commit
    consortium.setInitialPolicy(make_policy(mode=1, reveal=REVEAL_SECONDS), {"from": operator})
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(MODEL_HASH, CID, deadline, 1, {"from": aggregator_account})
    salt = "0x" + "99" * 32
    consortium.commitUpdate(1, consortium.commitmentOf(members[0], 1, UPDATE_HASH, salt),
                            {"from": members[0]})
    pass_time(chain, deadline)
    consortium.revealUpdate(1, UPDATE_HASH, CID, salt, {"from": members[0]})
    late = consortium.commitmentOf(members[1], 1, UPDATE_HASH, salt)
    with brownie.reverts(error("DeadlinePassed", 1, deadline)):
        consortium.commitUpdate(1, late, {"from": members[1]})
    with brownie.reverts(error("WrongSubmissionMode", 1, 1)):
        consortium.submitUpdate(1, UPDATE_HASH, CID, {"from": members[1]})


def test_flag_anyone_a_non_submitter_cannot_be_flagged(consortium, closed_round,
                                                       aggregator_account):
    # members 0 and 1 submitted; member 3 did not
    with brownie.reverts(error("FlaggedNonSubmitter", closed_round, 3)):
        consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [0b1001],
                                 {"from": aggregator_account})


def test_flag_anyone_a_member_admitted_after_the_close_cannot_be_flagged(
        consortium, closed_round, operator, aggregator_account, outsider):
    consortium.admitMember(outsider, "late", {"from": operator})  # index 4
    with brownie.reverts(error("FlaggedNonSubmitter", closed_round, 4)):
        consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [0b10000],
                                 {"from": aggregator_account})
    consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [0b11],
                             {"from": aggregator_account})


def test_flag_anyone_a_submitter_of_an_earlier_round_cannot_be_flagged(
        consortium, closed_round, aggregator_account, members, chain):
    consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                         {"from": aggregator_account})
    consortium.submitUpdate(2, UPDATE_HASH, CID, {"from": members[2]})
    consortium.closeRound(2, {"from": aggregator_account})
    with brownie.reverts(error("FlaggedNonSubmitter", 2, 0)):  # member 0 submitted in round 1
        consortium.finalizeRound(2, RESULT_HASH, CID, REPORT_HASH, CID, [0b101],
                                 {"from": aggregator_account})


def test_unbounded_cids_are_refused(consortium, open_round, members, aggregator_account, chain):
    huge = "b" * 50_000
    with brownie.reverts(error("CidTooLong", 50_000, 128)):
        consortium.submitUpdate(open_round, UPDATE_HASH, huge, {"from": members[0]})
    with brownie.reverts(error("CidTooLong", 129, 128)):
        consortium.submitUpdate(open_round, UPDATE_HASH, "b" * 129, {"from": members[0]})
    consortium.submitUpdate(open_round, UPDATE_HASH, "b" * 128, {"from": members[0]})
    consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[1]})
    consortium.closeRound(open_round, {"from": aggregator_account})
    with brownie.reverts(error("CidTooLong", 129, 128)):
        consortium.finalizeRound(open_round, RESULT_HASH, "b" * 129, REPORT_HASH, CID, [],
                                 {"from": aggregator_account})
    with brownie.reverts(error("CidTooLong", 129, 128)):
        consortium.finalizeRound(open_round, RESULT_HASH, CID, REPORT_HASH, "b" * 129, [],
                                 {"from": aggregator_account})
    consortium.finalizeRound(open_round, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    with brownie.reverts(error("CidTooLong", 129, 128)):
        consortium.openRound(RESULT_HASH, "b" * 129, now(chain) + ROUND_SECONDS, 1,
                             {"from": aggregator_account})


def test_roles_mix_the_aggregator_is_no_member(consortium, operator, aggregator_account,
                                               members):
    with brownie.reverts(error("MemberIsAggregator", aggregator_account)):
        consortium.admitMember(aggregator_account, "agg", {"from": operator})
    with brownie.reverts(error("AggregatorIsMember", members[0])):
        consortium.setAggregator(members[0], {"from": operator})
    # a removed member may become the aggregator, and then cannot be re-admitted
    consortium.removeMember(members[0], {"from": operator})
    consortium.setAggregator(members[0], {"from": operator})
    with brownie.reverts(error("MemberIsAggregator", members[0])):
        consortium.admitMember(members[0], "back", {"from": operator})
    assert consortium.aggregator() != ZERO_ADDRESS


def test_auditability_events_name_the_acting_aggregator(consortium, operator,
                                                        aggregator_account, members, accounts,
                                                        chain):
    opened = consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                                  {"from": aggregator_account})
    consortium.submitUpdate(1, UPDATE_HASH, CID, {"from": members[0]})
    successor = accounts[7]
    consortium.setAggregator(successor, {"from": operator})  # changes hands mid-round
    closed = consortium.closeRound(1, {"from": successor})
    finalized = consortium.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID, [],
                                         {"from": successor})
    assert opened.events["RoundOpened"]["aggregator"] == aggregator_account
    assert closed.events["RoundClosed"]["aggregator"] == successor
    assert finalized.events["RoundFinalized"]["aggregator"] == successor
    # hashes are indexed: an explorer filters a model's rounds by topic
    abi = {item["name"]: item for item in consortium.abi if item["type"] == "event"}
    indexed = {name: [i["name"] for i in abi[name]["inputs"] if i["indexed"]]
               for name in ("RoundOpened", "RoundFinalized", "RoundClosed", "UpdateSubmitted",
                            "UpdateCommitted", "RoundAbandoned")}
    assert indexed["RoundOpened"] == ["roundId", "modelHash", "aggregator"]
    assert indexed["RoundFinalized"] == ["roundId", "resultHash", "aggregator"]
    assert all(names[0] == "roundId" for names in indexed.values())


def test_auditability_did_not_submit_is_not_superseded(consortium, closed_round, members,
                                                       aggregator_account, chain):
    consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                         {"from": aggregator_account})
    consortium.submitUpdate(2, UPDATE_HASH, CID, {"from": members[0]})
    # member 3 never submitted: "did not submit", not a revert
    assert consortium.verifyCommitment(closed_round, members[3], UPDATE_HASH) == NOT_SUBMITTED
    assert consortium.verifyCommitment(2, members[1], UPDATE_HASH) == NOT_SUBMITTED
    # member 0's round-1 commitment was replaced in storage by its round-2 one
    assert consortium.verifyCommitment(closed_round, members[0], UPDATE_HASH) == SUPERSEDED
    assert consortium.verifyCommitment(2, members[0], UPDATE_HASH) == MATCHES
    assert consortium.verifyCommitment(closed_round, members[1], MODEL_HASH) == DIFFERS
