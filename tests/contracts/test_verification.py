"""Views an auditor uses to check commitments and results with nothing but the chain."""

from .conftest import (
    CID,
    MODEL_HASH,
    REPORT_HASH,
    RESULT_HASH,
    ROUND_SECONDS,
    UPDATE_HASH,
    now,
)
from .test_rounds import finalize

ZERO = "0x" + "00" * 32
NOT_SUBMITTED, MATCHES, DIFFERS, SUPERSEDED = range(4)


def test_verify_commitment(consortium, closed_round, members, outsider):
    assert consortium.verifyCommitment(closed_round, members[0], UPDATE_HASH) == MATCHES
    assert consortium.verifyCommitment(closed_round, members[0], MODEL_HASH) == DIFFERS
    assert consortium.verifyCommitment(closed_round, members[3], UPDATE_HASH) == NOT_SUBMITTED
    assert consortium.verifyCommitment(closed_round, outsider, ZERO) == NOT_SUBMITTED
    assert consortium.verifyCommitment(closed_round + 1, members[0], UPDATE_HASH) \
        == NOT_SUBMITTED
    assert consortium.verifyCommitment(0, members[3], ZERO) == NOT_SUBMITTED
    assert list(consortium.latestCommitment(members[3])) == [0, ZERO]


def test_older_commitments_are_in_events(
    consortium, closed_round, members, aggregator_account, chain
):
    finalize(consortium, closed_round, aggregator_account)
    consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                         {"from": aggregator_account})
    consortium.submitUpdate(2, MODEL_HASH, CID, {"from": members[0]})
    assert consortium.verifyCommitment(2, members[0], MODEL_HASH) == MATCHES
    assert consortium.verifyCommitment(closed_round, members[1], UPDATE_HASH) == MATCHES
    # storage holds member 0's round-2 commitment now: round 1's is in the events
    assert consortium.verifyCommitment(closed_round, members[0], UPDATE_HASH) == SUPERSEDED
    logs = consortium.events.get_sequence(0, event_type="UpdateSubmitted")
    first = [log.args for log in logs if log.args.roundId == closed_round
             and log.args.member == members[0]]
    assert len(first) == 1 and "0x" + first[0].updateHash.hex() == UPDATE_HASH


def test_verify_result_only_after_finalization(consortium, closed_round, aggregator_account):
    assert not consortium.verifyResult(closed_round, RESULT_HASH, REPORT_HASH)
    finalize(consortium, closed_round, aggregator_account)
    assert consortium.verifyResult(closed_round, RESULT_HASH, REPORT_HASH)
    assert not consortium.verifyResult(closed_round, RESULT_HASH, MODEL_HASH)
    assert not consortium.verifyResult(closed_round, MODEL_HASH, REPORT_HASH)


def test_is_flagged_needs_a_finalized_round_and_a_known_member(
    consortium, closed_round, aggregator_account, members, outsider
):
    assert not consortium.isFlagged(closed_round, members[0])
    finalize(consortium, closed_round, aggregator_account, [0b1])
    assert consortium.isFlagged(closed_round, members[0])
    assert not consortium.isFlagged(closed_round, outsider)
    assert not consortium.isFlagged(99, members[0])


def test_flagged_bit_follows_a_removed_members_index(
    consortium, closed_round, aggregator_account, members, operator
):
    consortium.removeMember(members[1], {"from": operator})
    finalize(consortium, closed_round, aggregator_account, [0b10])
    assert consortium.isFlagged(closed_round, members[1])
