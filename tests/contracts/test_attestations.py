"""Attestations and acceptance: who may attest, k passes accept, silence accepts after the
window, k fails let the round be rejected, and the next round builds on the last accepted
result."""

import brownie
import pytest

from .conftest import (
    CID,
    MODEL_HASH,
    REPORT_HASH,
    ROUND_SECONDS,
    UPDATE_HASH,
    error,
    make_policy,
    next_block_at,
    now,
    pass_time,
)

FINALIZED, ABANDONED, REJECTED = 3, 4, 5
WINDOW = 3600
AUDIT_HASH = "0x" + "55" * 32
AUDIT_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
K2 = make_policy(attestations=2, window=WINDOW)


def result(i):
    return "0x" + f"{0xA0 + i:064x}"


def play(consortium, aggregator_account, members, model, value):
    """Open on `model`, one member submits, close, finalize with result(value); the round id."""
    tx = consortium.openRound(model, CID, now(brownie.chain) + ROUND_SECONDS, 1,
                              {"from": aggregator_account})
    round_id = tx.return_value
    consortium.submitUpdate(round_id, UPDATE_HASH, CID, {"from": members[0]})
    consortium.closeRound(round_id, {"from": aggregator_account})
    consortium.finalizeRound(round_id, result(value), CID, REPORT_HASH, CID, [],
                             {"from": aggregator_account})
    return round_id


@pytest.fixture
def k2(FlemlConsortium, operator, aggregator_account, members):
    """A consortium whose policy requires 2 attestations in a 1-hour window."""
    contract = FlemlConsortium.deploy({"from": operator})
    contract.setAggregator(aggregator_account, {"from": operator})
    for i, member in enumerate(members):
        contract.admitMember(member, f"member-{i}", {"from": operator})
    contract.setInitialPolicy(K2, {"from": operator})
    return contract


def counts(consortium, round_id):
    """(passes, fails) as plain ints."""
    return tuple(int(n) for n in consortium.attestations(round_id))


def attest(consortium, round_id, member, passed):
    return consortium.attestRound(round_id, passed, AUDIT_HASH, AUDIT_CID, {"from": member})


# -- the policy --------------------------------------------------------------------------
@pytest.mark.parametrize("attestations, window, expected", [
    (5, WINDOW, ("InvalidAttestationPolicy", 5, WINDOW, 4, 30 * 86400)),
    (2, 0, ("InvalidAttestationPolicy", 2, 0, 4, 30 * 86400)),
    (0, WINDOW, ("InvalidAttestationPolicy", 0, WINDOW, 4, 30 * 86400)),
    (2, 30 * 86400 + 1, ("InvalidAttestationPolicy", 2, 30 * 86400 + 1, 4, 30 * 86400)),
])
def test_attestation_policy_is_validated(consortium, operator, attestations, window, expected):
    policy = make_policy(attestations=attestations, window=window)
    with brownie.reverts(error(*expected)):
        consortium.setInitialPolicy(policy, {"from": operator})
    with brownie.reverts(error(*expected)):
        consortium.schedulePolicy(policy, {"from": operator})


def test_k_may_equal_the_active_members(consortium, operator):
    policy = make_policy(attestations=4, window=60)
    consortium.setInitialPolicy(policy, {"from": operator})
    assert tuple(consortium.policy()) == policy


def test_a_round_copies_k_and_the_window(k2, aggregator_account, members, chain):
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    record = k2.getRound(round_id)
    finalized_at = chain[-1].timestamp
    assert record["attestationsRequired"] == 2
    assert record["attestationWindow"] == WINDOW
    assert record["attestationDeadline"] == finalized_at + WINDOW


# -- who may attest ----------------------------------------------------------------------
def test_attest_records_the_verdict(k2, aggregator_account, members):
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    tx = attest(k2, round_id, members[1], True)
    assert tx.events["RoundAttested"] == {"roundId": round_id, "member": members[1],
                                          "pass": True, "auditHash": AUDIT_HASH,
                                          "auditCid": AUDIT_CID}
    attest(k2, round_id, members[2], False)
    assert counts(k2, round_id) == (1, 1)
    assert k2.hasAttested(round_id, members[1]) and k2.hasAttested(round_id, members[2])
    assert not k2.hasAttested(round_id, members[0])
    assert not k2.hasAttested(round_id, aggregator_account)
    record = k2.getRound(round_id)
    assert (record["passes"], record["fails"]) == (1, 1)


def test_the_aggregator_and_outsiders_cannot_attest(k2, aggregator_account, members, outsider,
                                                    operator):
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    with brownie.reverts(error("NotMember", aggregator_account)):
        attest(k2, round_id, aggregator_account, True)
    with brownie.reverts(error("NotMember", outsider)):
        attest(k2, round_id, outsider, True)
    k2.removeMember(members[3], {"from": operator})
    with brownie.reverts(error("NotMember", members[3])):
        attest(k2, round_id, members[3], True)


def test_once_per_member_per_round(k2, aggregator_account, members):
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    attest(k2, round_id, members[1], True)
    with brownie.reverts(error("AlreadyAttested", round_id, members[1])):
        attest(k2, round_id, members[1], False)
    assert counts(k2, round_id) == (1, 0)


def test_an_inconclusive_audit_is_on_record_and_counts_neither_way(k2, aggregator_account,
                                                                    members, outsider, chain):
    """An audit that could not fetch an object records that, once per member, under the same
    rules as a verdict; it neither accepts nor lets anyone reject the round."""
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    tx = k2.attestInconclusive(round_id, AUDIT_HASH, AUDIT_CID, {"from": members[1]})
    assert tx.events["RoundAuditInconclusive"] == {
        "roundId": round_id, "member": members[1], "auditHash": AUDIT_HASH,
        "auditCid": AUDIT_CID}
    assert "RoundAttested" not in tx.events
    assert counts(k2, round_id) == (0, 0) and k2.hasAttested(round_id, members[1])
    with brownie.reverts(error("AlreadyAttested", round_id, members[1])):
        attest(k2, round_id, members[1], False)
    attest(k2, round_id, members[2], True)
    with brownie.reverts(error("AlreadyAttested", round_id, members[2])):
        k2.attestInconclusive(round_id, AUDIT_HASH, AUDIT_CID, {"from": members[2]})
    with brownie.reverts(error("NotMember", aggregator_account)):
        k2.attestInconclusive(round_id, AUDIT_HASH, AUDIT_CID, {"from": aggregator_account})
    with brownie.reverts(error("NotMember", outsider)):
        k2.attestInconclusive(round_id, AUDIT_HASH, AUDIT_CID, {"from": outsider})
    with brownie.reverts(error("EmptyHash")):
        k2.attestInconclusive(round_id, "0x" + "00" * 32, AUDIT_CID, {"from": members[3]})
    with brownie.reverts(error("EmptyCid")):
        k2.attestInconclusive(round_id, AUDIT_HASH, "", {"from": members[3]})
    with brownie.reverts(error("UnknownRound", round_id + 1)):
        k2.attestInconclusive(round_id + 1, AUDIT_HASH, AUDIT_CID, {"from": members[3]})
    end = k2.getRound(round_id)["attestationDeadline"]
    pass_time(chain, end)
    with brownie.reverts(error("AttestationWindowClosed", round_id, end)):
        k2.attestInconclusive(round_id, AUDIT_HASH, AUDIT_CID, {"from": members[3]})
    # one pass of two needed and one inconclusive: accepted by silence when the window ends
    assert counts(k2, round_id) == (1, 0) and k2.isAccepted(round_id)


def test_only_finalized_rounds_are_attested(k2, aggregator_account, members, chain):
    with brownie.reverts(error("UnknownRound", 1)):
        attest(k2, 1, members[0], True)
    k2.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1, {"from": aggregator_account})
    with brownie.reverts(error("WrongRoundStatus", 1, 1, FINALIZED)):
        attest(k2, 1, members[0], True)
    k2.submitUpdate(1, UPDATE_HASH, CID, {"from": members[0]})
    k2.closeRound(1, {"from": aggregator_account})
    with brownie.reverts(error("WrongRoundStatus", 1, 2, FINALIZED)):
        attest(k2, 1, members[0], True)


def test_an_attestation_names_its_audit(k2, aggregator_account, members):
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    with brownie.reverts(error("EmptyHash")):
        k2.attestRound(round_id, True, "0x" + "00" * 32, AUDIT_CID, {"from": members[1]})
    with brownie.reverts(error("EmptyCid")):
        k2.attestRound(round_id, True, AUDIT_HASH, "", {"from": members[1]})
    with brownie.reverts(error("CidTooLong", 129, 128)):
        k2.attestRound(round_id, True, AUDIT_HASH, "b" * 129, {"from": members[1]})


def test_attestations_count_until_the_window_ends(k2, aggregator_account, members, chain):
    round_id = play(k2, aggregator_account, members, MODEL_HASH, 1)
    end = k2.getRound(round_id)["attestationDeadline"]
    next_block_at(end)
    attest(k2, round_id, members[1], False)  # at the deadline: inclusive
    next_block_at(end + 1)
    with brownie.reverts(error("AttestationWindowClosed", round_id, end)):
        attest(k2, round_id, members[2], False)


def test_without_k_attestations_are_a_record_at_any_time(consortium, aggregator_account,
                                                         members, chain):
    round_id = play(consortium, aggregator_account, members, MODEL_HASH, 1)
    assert consortium.isAccepted(round_id) and consortium.lastAcceptedRound() == round_id
    pass_time(chain, chain[-1].timestamp + 30 * 86400)
    attest(consortium, round_id, members[1], False)
    attest(consortium, round_id, members[2], False)
    assert counts(consortium, round_id) == (0, 2)
    assert consortium.isAccepted(round_id)
    with brownie.reverts(error("TooFewFailingAttestations", round_id, 2, 0)):
        consortium.rejectRound(round_id, {"from": consortium.operator()})


# -- acceptance --------------------------------------------------------------------------
def test_k_passes_accept_and_the_next_round_builds_on_it(k2, aggregator_account, members,
                                                        chain):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    assert not k2.isAccepted(first)
    assert k2.lastAcceptedRound() == 0 and k2.lastFinalizedRound() == first
    assert k2.baseModelHash() == MODEL_HASH  # nothing accepted: round 1's model
    with brownie.reverts(error("PreviousRoundNotAccepted", first, 0, 0, 2,
                               k2.getRound(first)["attestationDeadline"])):
        k2.openRound(result(1), CID, now(chain) + ROUND_SECONDS, 1, {"from": aggregator_account})
    attest(k2, first, members[1], True)
    assert not k2.isAccepted(first)
    attest(k2, first, members[2], True)
    assert k2.isAccepted(first) and k2.lastAcceptedRound() == first
    assert k2.baseModelHash() == result(1)
    second = play(k2, aggregator_account, members, result(1), 2)
    assert second == 2 and k2.lastAcceptedRound() == first and k2.isAccepted(first)


def test_silence_accepts_after_the_window(k2, aggregator_account, members, chain):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    attest(k2, first, members[1], False)  # one failing attestation of two needed
    end = k2.getRound(first)["attestationDeadline"]
    next_block_at(end)
    chain.mine()
    assert not k2.isAccepted(first)
    pass_time(chain, end)
    assert k2.isAccepted(first) and k2.lastAcceptedRound() == first
    assert k2.baseModelHash() == result(1)
    play(k2, aggregator_account, members, result(1), 2)


def test_k_fails_reject_and_the_next_round_builds_on_the_previous_accepted(
        k2, operator, aggregator_account, members, chain):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    attest(k2, first, members[1], True)
    attest(k2, first, members[2], True)
    second = play(k2, aggregator_account, members, result(1), 2)
    attest(k2, second, members[1], False)
    with brownie.reverts(error("TooFewFailingAttestations", second, 1, 2)):
        k2.rejectRound(second, {"from": operator})
    attest(k2, second, members[2], False)
    assert counts(k2, second) == (0, 2)
    pass_time(chain, k2.getRound(second)["attestationDeadline"])
    assert not k2.isAccepted(second)  # k fails: never accepted by default
    with brownie.reverts(error("PreviousRoundNotAccepted", second, 0, 2, 2,
                               k2.getRound(second)["attestationDeadline"])):
        k2.openRound(result(2), CID, now(chain) + ROUND_SECONDS, 1, {"from": aggregator_account})
    tx = k2.rejectRound(second, {"from": operator})
    assert tx.events["RoundRejected"] == {"roundId": second, "by": operator, "passes": 0,
                                          "fails": 2}
    assert k2.getRound(second)["status"] == REJECTED
    assert not k2.isAccepted(second)
    assert k2.lastAcceptedRound() == first and k2.lastFinalizedRound() == second
    assert k2.baseModelHash() == result(1)
    # the rejected result still verifies as what the aggregator committed
    assert k2.verifyResult(second, result(2), REPORT_HASH)
    with brownie.reverts(error("ModelNotPreviousResult", result(2), result(1))):
        k2.openRound(result(2), CID, now(chain) + ROUND_SECONDS, 1, {"from": aggregator_account})
    third = play(k2, aggregator_account, members, result(1), 3)
    assert k2.getRound(third)["modelHash"] == result(1)
    with brownie.reverts(error("WrongRoundStatus", second, REJECTED, FINALIZED)):
        attest(k2, second, members[3], True)


def test_a_rejected_first_round_sends_round_two_back_to_round_one_model(
        k2, operator, aggregator_account, members):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    attest(k2, first, members[1], False)
    attest(k2, first, members[2], False)
    k2.rejectRound(first, {"from": operator})
    assert k2.lastAcceptedRound() == 0 and k2.baseModelHash() == MODEL_HASH
    play(k2, aggregator_account, members, MODEL_HASH, 2)


def test_rejection_needs_k_fails_and_the_latest_round(k2, operator, aggregator_account,
                                                      members, chain):
    with brownie.reverts(error("UnknownRound", 1)):
        k2.rejectRound(1, {"from": operator})
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    attest(k2, first, members[1], False)
    with brownie.reverts(error("TooFewFailingAttestations", first, 1, 2)):
        k2.rejectRound(first, {"from": operator})
    attest(k2, first, members[2], True)
    attest(k2, first, members[3], True)  # accepted
    attest(k2, first, members[0], False)  # and disputed: the operator may still reject ...
    play(k2, aggregator_account, members, result(1), 2)
    with brownie.reverts(error("LaterRoundOpened", first, 2)):  # ... until a round builds on it
        k2.rejectRound(first, {"from": operator})
    assert k2.isAccepted(first)


def test_only_the_operator_rejects_during_the_window_or_an_accepted_round(
        k2, operator, aggregator_account, members, outsider, chain):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    end = k2.getRound(first)["attestationDeadline"]
    attest(k2, first, members[1], False)
    attest(k2, first, members[2], False)
    with brownie.reverts(error("RejectionReservedToOperator", first, end)):
        k2.rejectRound(first, {"from": outsider})
    pass_time(chain, end)
    # after the window, a round k members failed is stuck unless anyone may reject it
    k2.rejectRound(first, {"from": outsider})
    assert k2.getRound(first)["status"] == REJECTED
    with brownie.reverts(error("WrongRoundStatus", first, REJECTED, FINALIZED)):
        k2.rejectRound(first, {"from": operator})


def test_anyone_cannot_reject_an_accepted_disputed_round(k2, operator, aggregator_account,
                                                         members, outsider, chain):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    for member, passed in zip(members, (True, True, False, False), strict=True):
        attest(k2, first, member, passed)
    end = k2.getRound(first)["attestationDeadline"]
    pass_time(chain, end)
    with brownie.reverts(error("RejectionReservedToOperator", first, end)):
        k2.rejectRound(first, {"from": outsider})
    k2.rejectRound(first, {"from": operator})


def test_abandoned_rounds_never_count(k2, operator, aggregator_account, members, chain):
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    attest(k2, first, members[1], True)
    attest(k2, first, members[2], True)
    k2.openRound(result(1), CID, now(chain) + ROUND_SECONDS, 1, {"from": aggregator_account})
    k2.abandonRound(2, {"from": operator})
    assert k2.lastAcceptedRound() == first and k2.baseModelHash() == result(1)
    play(k2, aggregator_account, members, result(1), 3)
    assert not k2.isAccepted(2)


def test_k_is_the_policy_in_force_when_the_round_opened(k2, operator, aggregator_account,
                                                        members, chain):
    """Turning attestations off waits like any policy change: the round at hand keeps k."""
    first = play(k2, aggregator_account, members, MODEL_HASH, 1)
    k2.schedulePolicy(make_policy(), {"from": operator})
    assert k2.getRound(first)["attestationsRequired"] == 2
    assert not k2.isAccepted(first)
