"""Abandoning rounds: who may, when, and what the next round builds on."""

import brownie
import pytest

from .conftest import (
    CID,
    CR_POLICY,
    GRACE_SECONDS,
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

OPEN, CLOSED, FINALIZED, ABANDONED = 1, 2, 3, 4
OTHER_MODEL = "0x" + "66" * 32


def open_plain(consortium, aggregator_account, chain, model=MODEL_HASH, quorum=2):
    deadline = now(chain) + ROUND_SECONDS
    tx = consortium.openRound(model, CID, deadline, quorum, {"from": aggregator_account})
    return tx.return_value, deadline


def test_operator_abandons_at_any_time(consortium, operator, open_round):
    tx = consortium.abandonRound(open_round, {"from": operator})
    assert tx.events["RoundAbandoned"] == {"roundId": open_round, "by": operator}
    assert consortium.getRound(open_round)["status"] == ABANDONED


def test_operator_abandons_a_closed_round(consortium, operator, closed_round):
    consortium.abandonRound(closed_round, {"from": operator})
    assert consortium.getRound(closed_round)["status"] == ABANDONED


@pytest.mark.parametrize("who", ["aggregator", "outsider", "member"])
def test_anyone_abandons_after_deadline_plus_grace(consortium, aggregator_account, outsider,
                                                   members, chain, who):
    caller = {"aggregator": aggregator_account, "outsider": outsider, "member": members[0]}[who]
    round_id, deadline = open_plain(consortium, aggregator_account, chain, quorum=1)
    consortium.submitUpdate(round_id, UPDATE_HASH, CID, {"from": members[0]})
    assert consortium.abandonableAfter(round_id) == deadline + GRACE_SECONDS
    with brownie.reverts(error("GracePeriodNotOver", round_id, deadline + GRACE_SECONDS)):
        consortium.abandonRound(round_id, {"from": caller})
    next_block_at(deadline + GRACE_SECONDS)  # the last second of the grace period
    with brownie.reverts(error("GracePeriodNotOver", round_id, deadline + GRACE_SECONDS)):
        consortium.abandonRound(round_id, {"from": caller})
    next_block_at(deadline + GRACE_SECONDS + 1)
    tx = consortium.abandonRound(round_id, {"from": caller})
    assert tx.events["RoundAbandoned"]["by"] == caller


def test_a_closed_round_at_its_minimum_waits_for_the_grace_period(consortium, closed_round,
                                                                  outsider, chain):
    deadline = consortium.getRound(closed_round)["deadline"]
    with brownie.reverts(error("GracePeriodNotOver", closed_round, deadline + GRACE_SECONDS)):
        consortium.abandonRound(closed_round, {"from": outsider})
    pass_time(chain, deadline + GRACE_SECONDS)
    consortium.abandonRound(closed_round, {"from": outsider})


def test_a_round_below_its_minimum_after_the_deadline_is_abandonable_at_once(
        consortium, operator, aggregator_account, members, outsider, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=2), {"from": operator})
    round_id, deadline = open_plain(consortium, aggregator_account, chain)
    consortium.submitUpdate(round_id, UPDATE_HASH, CID, {"from": members[0]})
    next_block_at(deadline)  # it may still reach 2 until the deadline, inclusive
    with brownie.reverts(error("GracePeriodNotOver", round_id, deadline + GRACE_SECONDS)):
        consortium.abandonRound(round_id, {"from": outsider})
    next_block_at(deadline + 1)
    consortium.closeRound(round_id, {"from": aggregator_account})
    with brownie.reverts(error("BelowMinimumSubmissions", round_id, 1, 2)):
        consortium.finalizeRound(round_id, RESULT_HASH, CID, REPORT_HASH, CID, [],
                                 {"from": aggregator_account})
    consortium.abandonRound(round_id, {"from": outsider})
    assert consortium.getRound(round_id)["status"] == ABANDONED


def test_an_open_round_below_its_minimum_after_the_deadline_is_abandonable(
        consortium, operator, aggregator_account, outsider, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=1), {"from": operator})
    round_id, deadline = open_plain(consortium, aggregator_account, chain)
    pass_time(chain, deadline)
    consortium.abandonRound(round_id, {"from": outsider})


def test_commit_reveal_round_abandonable_after_reveal_deadline_plus_grace(
        consortium, operator, aggregator_account, members, outsider, chain):
    consortium.setInitialPolicy(CR_POLICY, {"from": operator})
    round_id, deadline = open_plain(consortium, aggregator_account, chain, quorum=1)
    salt = "0x" + "88" * 32
    consortium.commitUpdate(round_id, consortium.commitmentOf(members[0], round_id, UPDATE_HASH,
                                                              salt), {"from": members[0]})
    after = deadline + REVEAL_SECONDS + GRACE_SECONDS
    assert consortium.abandonableAfter(round_id) == after
    next_block_at(deadline + 1)
    consortium.revealUpdate(round_id, UPDATE_HASH, CID, salt, {"from": members[0]})
    next_block_at(after)  # the minimum of 1 is met: the round may still be finalized
    with brownie.reverts(error("GracePeriodNotOver", round_id, after)):
        consortium.abandonRound(round_id, {"from": outsider})
    next_block_at(after + 1)
    consortium.abandonRound(round_id, {"from": outsider})


def test_commit_reveal_round_without_enough_commitments_is_abandonable_after_the_deadline(
        consortium, operator, aggregator_account, members, outsider, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=2, mode=1, reveal=REVEAL_SECONDS),
                                {"from": operator})
    round_id, deadline = open_plain(consortium, aggregator_account, chain)
    consortium.commitUpdate(round_id, "0x" + "77" * 32, {"from": members[0]})
    next_block_at(deadline + 1)
    consortium.abandonRound(round_id, {"from": outsider})


def test_abandon_reverts(consortium, operator, closed_round, aggregator_account):
    with brownie.reverts(error("UnknownRound", 5)):
        consortium.abandonRound(5, {"from": operator})
    consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    with brownie.reverts(error("RoundNotAbandonable", closed_round, FINALIZED)):
        consortium.abandonRound(closed_round, {"from": operator})


def test_an_abandoned_round_is_done(consortium, operator, open_round, members,
                                    aggregator_account):
    consortium.abandonRound(open_round, {"from": operator})
    with brownie.reverts(error("RoundNotAbandonable", open_round, ABANDONED)):
        consortium.abandonRound(open_round, {"from": operator})
    with brownie.reverts(error("WrongRoundStatus", open_round, ABANDONED, OPEN)):
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": members[0]})
    with brownie.reverts(error("WrongRoundStatus", open_round, ABANDONED, OPEN)):
        consortium.closeRound(open_round, {"from": aggregator_account})
    with brownie.reverts(error("WrongRoundStatus", open_round, ABANDONED, CLOSED)):
        consortium.finalizeRound(open_round, RESULT_HASH, CID, REPORT_HASH, CID, [],
                                 {"from": aggregator_account})
    assert not consortium.verifyResult(open_round, RESULT_HASH, REPORT_HASH)


def test_next_round_builds_on_the_last_finalized_model(consortium, operator, closed_round,
                                                       aggregator_account, chain):
    consortium.finalizeRound(closed_round, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    round_id, _ = open_plain(consortium, aggregator_account, chain, model=RESULT_HASH, quorum=1)
    consortium.abandonRound(round_id, {"from": operator})
    assert consortium.lastFinalizedRound() == closed_round
    assert consortium.baseModelHash() == RESULT_HASH
    with brownie.reverts(error("ModelNotPreviousResult", OTHER_MODEL, RESULT_HASH)):
        open_plain(consortium, aggregator_account, chain, model=OTHER_MODEL)
    round_id, _ = open_plain(consortium, aggregator_account, chain, model=RESULT_HASH)
    assert round_id == 3


def test_before_any_result_rounds_retry_round_ones_model(consortium, operator, open_round,
                                                         aggregator_account, chain):
    assert consortium.baseModelHash() == MODEL_HASH
    consortium.abandonRound(open_round, {"from": operator})
    assert consortium.lastFinalizedRound() == 0
    with brownie.reverts(error("ModelNotPreviousResult", OTHER_MODEL, MODEL_HASH)):
        open_plain(consortium, aggregator_account, chain, model=OTHER_MODEL)
    assert open_plain(consortium, aggregator_account, chain)[0] == 2


def test_base_model_before_the_first_round_is_any(consortium):
    assert consortium.baseModelHash() == "0x" + "00" * 32
    assert consortium.abandonableAfter(1) == 0


def test_abandon_gas_within_target(consortium, operator, open_round):
    assert consortium.abandonRound(open_round, {"from": operator}).gas_used <= 50_000
