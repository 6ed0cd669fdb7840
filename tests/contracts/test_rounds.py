"""The round state machine: open, submit, close, finalize, and every revert path."""

import brownie
import pytest

from .conftest import (
    CID,
    GRACE_SECONDS,
    MODEL_HASH,
    REPORT_HASH,
    RESULT_HASH,
    ROUND_SECONDS,
    UPDATE_HASH,
    error,
    make_policy,
    next_block_at,
    now,
    pass_time,
)

OPEN, CLOSED, FINALIZED = 1, 2, 3
OTHER_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def pass_deadline(chain, deadline):
    """Mine a block later than `deadline` (anvil's clock, not brownie's, is what counts)."""
    pass_time(chain, deadline)


def finalize(consortium, round_id, aggregator_account, bitmap=()):
    return consortium.finalizeRound(
        round_id, RESULT_HASH, CID, REPORT_HASH, OTHER_CID, list(bitmap),
        {"from": aggregator_account},
    )


def test_open_round(consortium, aggregator_account, chain):
    deadline = now(chain) + ROUND_SECONDS
    tx = consortium.openRound(MODEL_HASH, CID, deadline, 3, {"from": aggregator_account})
    assert tx.return_value == 1
    assert tx.events["RoundOpened"] == {
        "roundId": 1,
        "modelHash": MODEL_HASH,
        "aggregator": aggregator_account,
        "modelCid": CID,
        "deadline": deadline,
        "quorum": 3,
        "minSubmissions": 1,
        "mode": 0,
        "revealDeadline": 0,
    }
    assert consortium.currentRound() == 1
    assert list(consortium.getRound(1)) == [MODEL_HASH, "0x" + "00" * 32, "0x" + "00" * 32,
                                            deadline, 3, 0, OPEN, tx.block_number,
                                            1, 0, 0, 0, 0, GRACE_SECONDS, 0, 0, 0, 0]


def test_each_round_records_the_block_that_opened_it(consortium, closed_round,
                                                    aggregator_account, chain):
    opened = consortium.getRound(closed_round)[7]
    assert opened > 0 and chain[opened].transactions  # the block holding openRound
    finalize(consortium, closed_round, aggregator_account)
    assert consortium.getRound(closed_round)[7] == opened  # closing and finalizing keep it
    chain.mine(5)
    tx = consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                              {"from": aggregator_account})
    assert consortium.getRound(2)[7] == tx.block_number > opened
    assert consortium.getRound(3)[7] == 0


def test_open_round_reverts(consortium, aggregator_account, outsider, chain):
    deadline = now(chain) + ROUND_SECONDS
    with brownie.reverts(error('NotAggregator', outsider)):
        consortium.openRound(MODEL_HASH, CID, deadline, 1, {"from": outsider})
    with brownie.reverts(error('EmptyHash')):
        consortium.openRound("0x" + "00" * 32, CID, deadline, 1, {"from": aggregator_account})
    with brownie.reverts(error('EmptyCid')):
        consortium.openRound(MODEL_HASH, "", deadline, 1, {"from": aggregator_account})
    with brownie.reverts(error('InvalidQuorum', 0, 1, 4)):
        consortium.openRound(MODEL_HASH, CID, deadline, 0, {"from": aggregator_account})
    with brownie.reverts(error('InvalidQuorum', 5, 1, 4)):
        consortium.openRound(MODEL_HASH, CID, deadline, 5, {"from": aggregator_account})
    past = now(chain) - 1
    with brownie.reverts(revert_pattern=f"DeadlineOutOfRange: {past}, \\d+, \\d+"):
        consortium.openRound(MODEL_HASH, CID, past, 1, {"from": aggregator_account})


def test_next_round_waits_for_finalization(consortium, closed_round, aggregator_account, chain):
    deadline = now(chain) + ROUND_SECONDS
    with brownie.reverts(error('PreviousRoundNotFinalized', 1)):
        consortium.openRound(MODEL_HASH, CID, deadline, 1, {"from": aggregator_account})
    finalize(consortium, closed_round, aggregator_account)
    tx = consortium.openRound(RESULT_HASH, CID, deadline, 1, {"from": aggregator_account})
    assert tx.return_value == 2
    assert consortium.currentRound() == 2


def test_a_round_trains_on_the_previous_result(consortium, closed_round, aggregator_account,
                                               chain):
    finalize(consortium, closed_round, aggregator_account)
    with brownie.reverts(error('ModelNotPreviousResult', MODEL_HASH, RESULT_HASH)):
        consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                             {"from": aggregator_account})


def test_flagging_a_member_that_does_not_exist_reverts(consortium, closed_round,
                                                        aggregator_account):
    with brownie.reverts(error('UnknownMemberFlagged', 1 << 4, 4)):
        finalize(consortium, closed_round, aggregator_account, [1 << 4])


def test_submit_update(consortium, open_round, members):
    tx = consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})
    assert tx.events["UpdateSubmitted"] == {
        "roundId": open_round,
        "member": members[0],
        "updateHash": UPDATE_HASH,
        "updateCid": CID,
    }
    assert list(consortium.latestCommitment(members[0])) == [open_round, UPDATE_HASH]
    assert consortium.getRound(open_round)[5] == 1


def test_submit_update_reverts(consortium, open_round, members, outsider, chain):
    with brownie.reverts(error('NotMember', outsider)):
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": outsider})
    with brownie.reverts(error('UnknownRound', 7)):
        consortium.submitUpdate(7, UPDATE_HASH, CID, {"from": members[0]})
    with brownie.reverts(error('EmptyHash')):
        consortium.submitUpdate(open_round, "0x" + "00" * 32, CID, {"from": members[0]})
    with brownie.reverts(error('EmptyCid')):
        consortium.submitUpdate(open_round, UPDATE_HASH, "", {"from": members[0]})
    consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})
    with brownie.reverts(error('AlreadySubmitted', open_round, members[0])):
        consortium.submitUpdate(open_round, MODEL_HASH, CID, {"from": members[0]})


def test_submit_after_deadline_reverts(consortium, open_round, members, chain):
    deadline = consortium.getRound(open_round)[3]
    pass_deadline(chain, deadline)
    with brownie.reverts(error('DeadlinePassed', open_round, deadline)):
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})


def test_close_at_quorum(consortium, open_round, members, aggregator_account):
    for member in members[:2]:
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": member})
    tx = consortium.closeRound(open_round, {"from": aggregator_account})
    assert tx.events["RoundClosed"] == {
        "roundId": open_round, "aggregator": aggregator_account, "submissions": 2,
        "quorumReached": True,
    }
    assert consortium.getRound(open_round)[6] == CLOSED


def test_close_below_quorum_waits_for_deadline(
    consortium, open_round, members, aggregator_account, chain
):
    consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})
    with brownie.reverts(error('QuorumNotReached', open_round, 1, 2)):
        consortium.closeRound(open_round, {"from": aggregator_account})
    pass_deadline(chain, consortium.getRound(open_round)[3])
    tx = consortium.closeRound(open_round, {"from": aggregator_account})
    assert tx.events["RoundClosed"] == {
        "roundId": open_round, "aggregator": aggregator_account, "submissions": 1,
        "quorumReached": False,
    }


def test_close_reverts(consortium, open_round, aggregator_account, outsider):
    with brownie.reverts(error('NotAggregator', outsider)):
        consortium.closeRound(open_round, {"from": outsider})
    with brownie.reverts(error('UnknownRound', 9)):
        consortium.closeRound(9, {"from": aggregator_account})


def test_nothing_after_close(consortium, closed_round, members, aggregator_account):
    with brownie.reverts(error('WrongRoundStatus', closed_round, CLOSED, OPEN)):
        consortium.submitUpdate(closed_round, UPDATE_HASH, CID, {"from": members[3]})
    with brownie.reverts(error('WrongRoundStatus', closed_round, CLOSED, OPEN)):
        consortium.closeRound(closed_round, {"from": aggregator_account})


def test_finalize(consortium, closed_round, aggregator_account, members):
    bitmap = [0b10]  # member 1 (members 0 and 1 submitted)
    tx = finalize(consortium, closed_round, aggregator_account, bitmap)
    event = tx.events["RoundFinalized"]
    assert [event[k] for k in ("roundId", "resultHash", "aggregator", "resultCid", "reportHash",
                               "reportCid")] \
        == [closed_round, RESULT_HASH, aggregator_account, CID, REPORT_HASH, OTHER_CID]
    assert list(event["flaggedBitmap"]) == bitmap
    record = consortium.getRound(closed_round)
    assert record[1] == RESULT_HASH and record[2] == REPORT_HASH and record[6] == FINALIZED
    assert [consortium.isFlagged(closed_round, m) for m in members] == [False, True, False, False]
    assert consortium.lastFinalizedRound() == closed_round


def test_finalize_reverts(consortium, open_round, members, aggregator_account, outsider):
    with brownie.reverts(error('WrongRoundStatus', open_round, OPEN, CLOSED)):
        finalize(consortium, open_round, aggregator_account)
    for member in members[:2]:
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": member})
    consortium.closeRound(open_round, {"from": aggregator_account})
    with brownie.reverts(error('NotAggregator', outsider)):
        finalize(consortium, open_round, outsider)
    with brownie.reverts(error('UnknownRound', 2)):
        finalize(consortium, 2, aggregator_account)
    with brownie.reverts(error('BitmapTooLong', 2, 1)):
        finalize(consortium, open_round, aggregator_account, [1, 1])
    with brownie.reverts(error('EmptyHash')):
        consortium.finalizeRound(open_round, "0x" + "00" * 32, CID, REPORT_HASH, CID, [],
                                 {"from": aggregator_account})
    with brownie.reverts(error('EmptyCid')):
        consortium.finalizeRound(open_round, RESULT_HASH, CID, REPORT_HASH, "", [],
                                 {"from": aggregator_account})


def test_finalized_round_never_changes(consortium, closed_round, aggregator_account, members):
    finalize(consortium, closed_round, aggregator_account, [1])
    before = consortium.getRound(closed_round)
    with brownie.reverts(error('WrongRoundStatus', closed_round, FINALIZED, CLOSED)):
        consortium.finalizeRound(closed_round, MODEL_HASH, CID, MODEL_HASH, CID, [2],
                                 {"from": aggregator_account})
    with brownie.reverts(error('WrongRoundStatus', closed_round, FINALIZED, OPEN)):
        consortium.closeRound(closed_round, {"from": aggregator_account})
    with brownie.reverts(error('WrongRoundStatus', closed_round, FINALIZED, OPEN)):
        consortium.submitUpdate(closed_round, UPDATE_HASH, CID, {"from": members[3]})
    assert consortium.getRound(closed_round) == before
    assert consortium.isFlagged(closed_round, members[0])


@pytest.mark.parametrize("caller_index", [0, 2])
def test_only_aggregator_finalizes(consortium, closed_round, accounts, caller_index):
    caller = accounts[caller_index]
    with brownie.reverts(error('NotAggregator', caller)):
        finalize(consortium, closed_round, caller)


def test_submit_exactly_at_the_deadline(consortium, open_round, members):
    deadline = consortium.getRound(open_round)[3]
    next_block_at(deadline)
    consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})
    next_block_at(deadline + 1)
    with brownie.reverts(error('DeadlinePassed', open_round, deadline)):
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[1]})


def test_close_below_quorum_exactly_at_the_deadline(consortium, open_round, members,
                                                    aggregator_account):
    deadline = consortium.getRound(open_round)[3]
    consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})
    next_block_at(deadline)
    with brownie.reverts(error('QuorumNotReached', open_round, 1, 2)):
        consortium.closeRound(open_round, {"from": aggregator_account})
    next_block_at(deadline + 1)
    consortium.closeRound(open_round, {"from": aggregator_account})


def test_previous_round_must_be_finalized_or_abandoned(consortium, open_round, operator,
                                                       aggregator_account, chain):
    with brownie.reverts(error('PreviousRoundNotFinalized', open_round)):
        consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                             {"from": aggregator_account})
    consortium.abandonRound(open_round, {"from": operator})
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                         {"from": aggregator_account})


def test_flagged_submitters_across_bitmap_words(FlemlConsortium, operator, aggregator_account,
                                                accounts, chain):
    """300 member slots: bits in the second word are checked too."""
    contract = FlemlConsortium.deploy({"from": operator})
    contract.setAggregator(aggregator_account, {"from": operator})
    submitters = {0: accounts[2], 257: accounts[3], 299: accounts[4]}
    for index in range(300):
        account = submitters.get(index)
        address = account.address if account else "0x" + f"{0x1000 + index:040x}"
        contract.admitMember(address, "m", {"from": operator})
    contract.setInitialPolicy(make_policy(max_round=3600, grace=0), {"from": operator})
    contract.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 3,
                       {"from": aggregator_account})
    for account in submitters.values():
        contract.submitUpdate(1, UPDATE_HASH, CID, {"from": account})
    contract.closeRound(1, {"from": aggregator_account})
    with brownie.reverts(error('FlaggedNonSubmitter', 1, 258)):
        contract.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID,
                               [1, (1 << 1) | (1 << 2)], {"from": aggregator_account})
    tx = contract.finalizeRound(1, RESULT_HASH, CID, REPORT_HASH, CID,
                                [1, (1 << 1) | (1 << 43)], {"from": aggregator_account})
    assert tx.status == 1
    assert [contract.isFlagged(1, a) for a in submitters.values()] == [True, True, True]
