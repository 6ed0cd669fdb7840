"""Attestations, acceptance, rejection and the validation set through the web3.py bindings."""

import time

import pytest
from eth_account import Account

from fleml_node.chain.contract import (
    Consortium,
    ContractReverted,
    Policy,
    RoundStatus,
    connect,
)
from fleml_node.devnet.consortium import deploy_local_consortium

from .conftest import future

H1, H2, H3, V = (bytes([i]) * 32 for i in (1, 2, 3, 9))
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
K2 = Policy(attestations_required=2, attestation_window_seconds=600)


@pytest.fixture
def k2(anvil, keys, tmp_path):
    """A consortium requiring 2 attestations, with a validation set: (operator, agg, members)."""
    w3 = connect(anvil.url)
    record = deploy_local_consortium(w3, keys, 4, tmp_path / "k2.json", policy=K2,
                                     validation=(V, CID))

    def bind(index):
        return Consortium(w3, record, Account.from_key(keys[index]))

    return bind(0), bind(1), [bind(i) for i in range(2, 6)]


def play(agg, member, model, result):
    r = agg.current_round() + 1
    agg.open_round(model, CID, future(), 1)
    member.submit_update(r, H3, CID)
    agg.close_round(r)
    agg.finalize_round(r, result, CID, H3, CID, [])
    return r


def test_policy_and_validation_set(k2):
    operator, agg, _ = k2
    assert agg.policy() == K2
    assert agg.validation_set() == (V, CID)
    assert agg.pending_validation_set() is None
    assert Policy.from_tuple((1, 2, 3, 0, 0, 0, 4)) == Policy(1, 2, 3, 0, grace_seconds=4)


def test_accept_by_passes_then_reject_by_fails(k2):
    operator, agg, members = k2
    first = play(agg, members[0], H1, H2)
    assert agg.round_validation_hash(first) == V
    assert not agg.is_accepted(first) and agg.last_accepted_round() == 0
    assert agg.last_finalized_round() == first
    with pytest.raises(ContractReverted, match="PreviousRoundNotAccepted"):
        agg.open_round(H1, CID, future(), 1)
    members[1].attest_round(first, True, H3, CID)
    assert not members[2].has_attested(first, members[2].account.address)
    members[2].attest_round(first, True, H3, CID)
    assert agg.attestations(first) == (2, 0)
    assert agg.has_attested(first, members[2].account.address)
    assert agg.is_accepted(first) and agg.last_accepted_round() == first
    with pytest.raises(ContractReverted, match="AlreadyAttested"):
        members[1].attest_round(first, False, H3, CID)
    info = agg.get_round(first)
    assert (info.attestations_required, info.passes, info.fails) == (2, 2, 0)
    assert info.attestation_window == 600 and info.attestation_deadline > 0

    second = play(agg, members[0], agg.base_model_hash(), H3)
    members[1].attest_round(second, False, H1, CID)
    members[3].attest_round(second, False, H1, CID)
    operator.reject_round(second)
    assert agg.get_round(second).status is RoundStatus.REJECTED
    assert agg.last_accepted_round() == first and agg.base_model_hash() == H2
    assert agg.last_finalized_round() == second


def test_set_validation_set_is_scheduled_after_round_one(k2):
    operator, agg, members = k2
    play(agg, members[0], H1, H2)
    operator.set_validation_set(H1, CID)
    digest, cid, from_round, from_time = operator.pending_validation_set()
    assert (digest, cid, from_round) == (H1, CID, 4)
    assert from_time >= int(time.time()) + 24 * 3600 - 60
    assert operator.validation_set() == (V, CID)
