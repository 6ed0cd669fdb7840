"""The consortium's validation set: set at once before round 1, later under the policy delay,
and recorded for every round by the round it started at."""

import brownie
import pytest

from .conftest import (
    CID,
    MODEL_HASH,
    REPORT_HASH,
    RESULT_HASH,
    ROUND_SECONDS,
    UPDATE_HASH,
    error,
    now,
    pass_time,
)

DAY = 24 * 3600
ZERO = "0x" + "00" * 32
V1, V2, V3 = ("0x" + f"{0xB0 + i:064x}" for i in (1, 2, 3))
CID1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
CID2 = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def current(consortium):
    digest, cid = consortium.validationSet()
    return str(digest), str(cid)


def pending(consortium):
    digest, cid, from_round, from_time = consortium.pendingValidationSet()
    return str(digest), str(cid), int(from_round), int(from_time)


def run_round(consortium, aggregator_account, members):
    model = consortium.baseModelHash()
    model = MODEL_HASH if model == ZERO else model
    tx = consortium.openRound(model, CID, now(brownie.chain) + ROUND_SECONDS, 1,
                              {"from": aggregator_account})
    round_id = tx.return_value
    consortium.submitUpdate(round_id, UPDATE_HASH, CID, {"from": members[0]})
    consortium.closeRound(round_id, {"from": aggregator_account})
    consortium.finalizeRound(round_id, RESULT_HASH, CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    return round_id


def test_none_by_default(consortium):
    assert current(consortium) == (ZERO, "")
    assert pending(consortium) == (ZERO, "", 0, 0)
    assert consortium.roundValidationHash(1) == ZERO


def test_before_round_one_it_applies_at_once(consortium, operator, aggregator_account,
                                             members):
    tx = consortium.setValidationSet(V1, CID1, {"from": operator})
    assert tx.events["ValidationSetChanged"] == {"validationHash": V1, "validationCid": CID1,
                                                 "effectiveFromRound": 1}
    consortium.setValidationSet(V2, CID2, {"from": operator})  # a second thought: replaces it
    assert current(consortium) == (V2, CID2)
    assert pending(consortium) == (ZERO, "", 0, 0)
    run_round(consortium, aggregator_account, members)
    assert consortium.roundValidationHash(1) == V2
    assert consortium.roundValidationHash(2) == ZERO  # no such round yet


def test_only_the_operator(consortium, aggregator_account):
    with brownie.reverts(error("NotOperator", aggregator_account)):
        consortium.setValidationSet(V1, CID1, {"from": aggregator_account})


@pytest.mark.parametrize("digest, cid", [
    (V1, ""), (V1, "b" * 129), (ZERO, CID1),
])
def test_invalid_sets_are_refused(consortium, operator, digest, cid):
    with brownie.reverts(error("InvalidValidationSet", digest, len(cid))):
        consortium.setValidationSet(digest, cid, {"from": operator})


def test_a_later_change_waits_two_rounds_and_a_day(consortium, operator, aggregator_account,
                                                   members, chain):
    consortium.setValidationSet(V1, CID1, {"from": operator})
    run_round(consortium, aggregator_account, members)  # round 1
    tx = consortium.setValidationSet(V2, CID2, {"from": operator})
    scheduled_at = chain[tx.block_number].timestamp
    assert tx.events["ValidationSetChanged"]["effectiveFromRound"] == 4
    assert current(consortium) == (V1, CID1)
    assert pending(consortium) == (V2, CID2, 4, scheduled_at + DAY)
    for _ in range(3):  # rounds 2, 3 and (before the day is over) 4 keep V1
        run_round(consortium, aggregator_account, members)
    pass_time(chain, scheduled_at + DAY)
    assert current(consortium) == (V2, CID2)
    assert pending(consortium) == (ZERO, "", 0, 0)
    run_round(consortium, aggregator_account, members)  # round 5: the first with V2
    assert [consortium.roundValidationHash(r) for r in range(1, 7)] == [V1, V1, V1, V1, V2, ZERO]


def test_a_scheduled_change_is_replaced_and_can_clear_the_set(consortium, operator,
                                                              aggregator_account, members,
                                                              chain):
    consortium.setValidationSet(V1, CID1, {"from": operator})
    run_round(consortium, aggregator_account, members)
    consortium.setValidationSet(V2, CID2, {"from": operator})
    tx = consortium.setValidationSet(ZERO, "", {"from": operator})  # replaces V2, delay restarts
    assert tx.events["ValidationSetChanged"]["effectiveFromRound"] == 4
    assert pending(consortium)[:3] == (ZERO, "", 4)
    pass_time(chain, chain[-1].timestamp + DAY)
    for _ in range(3):
        run_round(consortium, aggregator_account, members)
    assert [consortium.roundValidationHash(r) for r in range(1, 5)] == [V1, V1, V1, ZERO]
    assert current(consortium) == (ZERO, "")
    # a change already in force for the next round stays in force when another is scheduled
    consortium.setValidationSet(V3, CID1, {"from": operator})
    pass_time(chain, chain[-1].timestamp + DAY)
    for _ in range(2):
        run_round(consortium, aggregator_account, members)
    consortium.setValidationSet(V1, CID1, {"from": operator})  # V3 is due for round 7
    assert current(consortium) == (V3, CID1)
    run_round(consortium, aggregator_account, members)
    assert consortium.roundValidationHash(7) == V3
    assert pending(consortium)[:3] == (V1, CID1, 9)
