"""The operator's policy: the initial one, delayed changes, validation, what rounds take."""

import brownie
import pytest

from .conftest import (
    CID,
    CR_POLICY,
    DEFAULT_POLICY,
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

DAY = 24 * 3600
ZERO_POLICY = (0,) * 9


def run_round(consortium, aggregator_account, members, model, submitters=1):
    """Open on `model`, `submitters` members submit, close at quorum, finalize; the round id."""
    tx = consortium.openRound(model, CID, now(brownie.chain) + ROUND_SECONDS, submitters,
                              {"from": aggregator_account})
    round_id = tx.return_value
    for member in members[:submitters]:
        consortium.submitUpdate(round_id, UPDATE_HASH, CID, {"from": member})
    consortium.closeRound(round_id, {"from": aggregator_account})
    consortium.finalizeRound(round_id, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    return round_id


def test_version_and_constants(consortium):
    assert consortium.version() == 2
    assert consortium.POLICY_DELAY_ROUNDS() == 2
    assert consortium.POLICY_DELAY_SECONDS() == DAY
    assert consortium.MAX_POLICY_SECONDS() == 30 * DAY
    assert consortium.MAX_CID_LENGTH() == 128


def test_no_round_before_a_policy(FlemlConsortium, operator, aggregator_account, members, chain):
    fresh = FlemlConsortium.deploy({"from": operator})
    fresh.setAggregator(aggregator_account, {"from": operator})
    fresh.admitMember(members[0], "m", {"from": operator})
    assert tuple(fresh.policy()) == ZERO_POLICY
    with brownie.reverts(error("PolicyNotSet")):
        fresh.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                        {"from": aggregator_account})
    with brownie.reverts(error("PolicyNotSet")):
        fresh.schedulePolicy(DEFAULT_POLICY, {"from": operator})
    tx = fresh.setInitialPolicy(DEFAULT_POLICY, {"from": operator})
    assert tx.events["PolicyScheduled"]["effectiveFromRound"] == 1
    assert tuple(tx.events["PolicyScheduled"]["policy"]) == DEFAULT_POLICY
    assert tuple(fresh.policy()) == DEFAULT_POLICY


def test_initial_policy_only_by_the_operator_before_round_one(consortium, operator,
                                                              aggregator_account, outsider,
                                                              chain):
    with brownie.reverts(error("NotOperator", outsider)):
        consortium.setInitialPolicy(CR_POLICY, {"from": outsider})
    consortium.setInitialPolicy(CR_POLICY, {"from": operator})  # again: still before round 1
    assert tuple(consortium.policy()) == CR_POLICY
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                         {"from": aggregator_account})
    with brownie.reverts(error("RoundsAlreadyStarted", 1)):
        consortium.setInitialPolicy(DEFAULT_POLICY, {"from": operator})


@pytest.mark.parametrize("policy, expected", [
    (make_policy(min_submissions=0, min_bps=0), ("InvalidMinimumSubmissions", 0, 0)),
    (make_policy(min_submissions=2, min_bps=5000), ("InvalidMinimumSubmissions", 2, 5000)),
    (make_policy(min_submissions=0, min_bps=10001), ("InvalidMinimumSubmissions", 0, 10001)),
    (make_policy(min_round=0), ("InvalidRoundDuration", 0, 7 * DAY, 30 * DAY)),
    (make_policy(min_round=100, max_round=99), ("InvalidRoundDuration", 100, 99, 30 * DAY)),
    (make_policy(max_round=30 * DAY + 1), ("InvalidRoundDuration", 1, 30 * DAY + 1, 30 * DAY)),
    (make_policy(mode=2), ("InvalidSubmissionMode", 2, 0, 30 * DAY)),
    (make_policy(mode=0, reveal=10), ("InvalidSubmissionMode", 0, 10, 30 * DAY)),
    (make_policy(mode=1, reveal=0), ("InvalidSubmissionMode", 1, 0, 30 * DAY)),
    (make_policy(mode=1, reveal=30 * DAY + 1),
     ("InvalidSubmissionMode", 1, 30 * DAY + 1, 30 * DAY)),
    (make_policy(grace=30 * DAY + 1), ("InvalidGracePeriod", 30 * DAY + 1, 30 * DAY)),
])
def test_invalid_policies_are_refused(consortium, operator, policy, expected):
    with brownie.reverts(error(*expected)):
        consortium.setInitialPolicy(policy, {"from": operator})
    with brownie.reverts(error(*expected)):
        consortium.schedulePolicy(policy, {"from": operator})


def test_schedule_policy_only_by_the_operator(consortium, aggregator_account):
    with brownie.reverts(error("NotOperator", aggregator_account)):
        consortium.schedulePolicy(DEFAULT_POLICY, {"from": aggregator_account})


def test_a_change_waits_two_rounds_and_a_day(consortium, operator, aggregator_account, members,
                                             chain):
    model = MODEL_HASH
    run_round(consortium, aggregator_account, members, model)  # round 1
    stricter = make_policy(min_submissions=3)
    tx = consortium.schedulePolicy(stricter, {"from": operator})
    event = tx.events["PolicyScheduled"]
    scheduled_at = chain[tx.block_number].timestamp
    assert event["effectiveFromRound"] == 4
    assert event["effectiveFromTime"] == scheduled_at + DAY
    assert tuple(event["policy"]) == stricter
    pending, from_round, from_time = consortium.pendingPolicy()
    assert (tuple(pending), from_round, from_time) == (stricter, 4, scheduled_at + DAY)
    assert tuple(consortium.policy()) == DEFAULT_POLICY
    # rounds 2 and 3 keep the old minimum, and so does round 4 before the day has passed
    for expected_round in (2, 3):
        assert run_round(consortium, aggregator_account, members, RESULT_HASH) == expected_round
        assert consortium.getRound(expected_round)["minSubmissions"] == 1
    tx = consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                              {"from": aggregator_account})
    assert consortium.getRound(4)["minSubmissions"] == 1
    consortium.abandonRound(4, {"from": operator})
    pass_time(chain, scheduled_at + DAY)
    assert tuple(consortium.policy()) == stricter
    assert tuple(consortium.pendingPolicy()[0]) == ZERO_POLICY
    with brownie.reverts(error("InvalidQuorum", 2, 3, 4)):
        consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 2,
                             {"from": aggregator_account})
    consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 3,
                         {"from": aggregator_account})
    assert consortium.getRound(5)["minSubmissions"] == 3


def test_time_alone_does_not_bring_a_change_forward(consortium, operator, aggregator_account,
                                                    members, chain):
    consortium.schedulePolicy(make_policy(min_submissions=2), {"from": operator})
    assert consortium.pendingPolicy()[1] == 3
    pass_time(chain, now(chain) + 2 * DAY)
    for round_id in (1, 2):
        run_round(consortium, aggregator_account, members,
                  MODEL_HASH if round_id == 1 else RESULT_HASH)
        assert consortium.getRound(round_id)["minSubmissions"] == 1
    assert consortium.policy()["minSubmissions"] == 2
    consortium.openRound(RESULT_HASH, CID, now(chain) + ROUND_SECONDS, 2,
                         {"from": aggregator_account})
    assert consortium.getRound(3)["minSubmissions"] == 2


def test_a_new_schedule_replaces_a_pending_one_and_restarts_the_delay(consortium, operator,
                                                                      chain):
    consortium.schedulePolicy(make_policy(min_submissions=2), {"from": operator})
    pass_time(chain, now(chain) + DAY // 2)
    tx = consortium.schedulePolicy(make_policy(min_submissions=4), {"from": operator})
    pending, from_round, from_time = consortium.pendingPolicy()
    assert pending["minSubmissions"] == 4
    assert from_time == chain[tx.block_number].timestamp + DAY and from_round == 3


def test_a_change_in_force_survives_a_later_schedule(consortium, operator, aggregator_account,
                                                     members, chain):
    consortium.schedulePolicy(make_policy(min_submissions=2), {"from": operator})
    run_round(consortium, aggregator_account, members, MODEL_HASH)
    run_round(consortium, aggregator_account, members, RESULT_HASH)
    pass_time(chain, now(chain) + DAY)
    assert consortium.policy()["minSubmissions"] == 2  # due for round 3, not yet applied
    consortium.schedulePolicy(make_policy(min_submissions=4), {"from": operator})
    assert consortium.policy()["minSubmissions"] == 2
    assert consortium.pendingPolicy()[1] == 5


@pytest.mark.parametrize("bps, minimum", [(1, 1), (2500, 1), (5000, 2), (5001, 3), (10000, 4)])
def test_fractional_minimum_rounds_up_over_active_members(consortium, operator,
                                                          aggregator_account, chain, bps,
                                                          minimum):
    consortium.setInitialPolicy(make_policy(min_submissions=0, min_bps=bps), {"from": operator})
    tx = consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 4,
                              {"from": aggregator_account})
    assert tx.events["RoundOpened"]["minSubmissions"] == minimum
    assert consortium.getRound(1)["minSubmissions"] == minimum


def test_the_minimum_is_fixed_when_the_round_opens(consortium, operator, aggregator_account,
                                                   members, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=0, min_bps=5000), {"from": operator})
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 2,
                         {"from": aggregator_account})
    consortium.removeMember(members[3], {"from": operator})
    consortium.removeMember(members[2], {"from": operator})
    assert consortium.getRound(1)["minSubmissions"] == 2


def test_an_absolute_minimum_above_the_members_blocks_opening(consortium, operator,
                                                              aggregator_account, chain):
    consortium.setInitialPolicy(make_policy(min_submissions=5), {"from": operator})
    with brownie.reverts(error("InvalidQuorum", 4, 5, 4)):
        consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 4,
                             {"from": aggregator_account})


def test_deadline_bounds_are_inclusive(consortium, operator, aggregator_account, chain):
    consortium.setInitialPolicy(make_policy(min_round=100, max_round=1000), {"from": operator})
    start = now(chain) + 10
    next_block_at(start)
    with brownie.reverts(error("DeadlineOutOfRange", start + 99, start + 100, start + 1000)):
        consortium.openRound(MODEL_HASH, CID, start + 99, 1, {"from": aggregator_account})
    next_block_at(start + 1)
    with brownie.reverts(error("DeadlineOutOfRange", start + 1002, start + 101, start + 1001)):
        consortium.openRound(MODEL_HASH, CID, start + 1002, 1, {"from": aggregator_account})
    next_block_at(start + 2)
    consortium.openRound(MODEL_HASH, CID, start + 1002, 1, {"from": aggregator_account})
    assert consortium.getRound(1)["deadline"] == start + 1002


def test_min_round_deadline_edge(consortium, operator, aggregator_account, chain):
    consortium.setInitialPolicy(make_policy(min_round=100, max_round=1000), {"from": operator})
    start = now(chain) + 10
    next_block_at(start)
    consortium.openRound(MODEL_HASH, CID, start + 100, 1, {"from": aggregator_account})
    assert consortium.getRound(1)["deadline"] == start + 100
