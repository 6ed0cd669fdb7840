"""Protocol version 2 through the web3.py bindings: policy, commit-reveal, abandonment."""

import time

import pytest
from eth_account import Account

from fleml_node.chain.contract import (
    PROTOCOL_VERSION,
    ChainError,
    CommitmentStatus,
    Consortium,
    ContractReverted,
    PendingPolicy,
    Policy,
    RoundStatus,
    SubmissionMode,
    commitment_of,
    connect,
    new_salt,
)
from fleml_node.devnet.consortium import DEFAULT_POLICY, deploy_local_consortium

from .conftest import future

H1, H2, H3 = (bytes([i]) * 32 for i in (1, 2, 3))
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
CR = Policy(mode=SubmissionMode.COMMIT_REVEAL, reveal_seconds=300, grace_seconds=30)


def travel(w3, seconds):
    """Move the chain's clock `seconds` past the later of its head and the wall clock."""
    start = max(w3.eth.get_block("latest")["timestamp"], int(time.time()))
    w3.provider.make_request("evm_setNextBlockTimestamp", [start + seconds])
    w3.provider.make_request("evm_mine", [])


@pytest.fixture
def cr_deployed(anvil, keys, tmp_path):
    """A consortium deployed in commit-reveal mode (2 members)."""
    w3 = connect(anvil.url)
    record = deploy_local_consortium(w3, keys, 2, tmp_path / "cr.json", policy=CR)
    return w3, record


def bind(w3, record, keys, index):
    return Consortium(w3, record, Account.from_key(keys[index]))


def test_version_and_default_policy(as_account):
    reader = as_account(2)
    assert reader.version() == PROTOCOL_VERSION == 2
    reader.check_version()
    assert reader.policy() == DEFAULT_POLICY == Policy()
    assert reader.pending_policy() is None
    assert reader.last_finalized_round() == 0
    assert reader.base_model_hash() == bytes(32)


def test_round_info_has_the_v2_fields(as_account):
    agg = as_account(1)
    deadline = agg.now() + 600
    agg.open_round(H1, CID, deadline, 2)
    info = agg.get_round(1)
    assert (info.min_submissions, info.mode, info.reveal_deadline, info.commits,
            info.grace_seconds) == (1, SubmissionMode.PLAIN, 0, 0, 60)
    assert info.abandonable_after == deadline + 60 == agg.abandonable_after(1)


def test_schedule_policy_and_read_it_back(as_account, deployed):
    w3, _ = deployed
    operator = as_account(0)
    as_account(1).open_round(H1, CID, future(), 1)
    with pytest.raises(ContractReverted, match=r"RoundsAlreadyStarted\(currentRound=1\)"):
        operator.set_initial_policy(CR)
    stricter = Policy(min_submissions=2)
    receipt = operator.schedule_policy(stricter)
    when = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert operator.pending_policy() == PendingPolicy(stricter, 4, when + 24 * 3600)
    assert operator.policy() == DEFAULT_POLICY
    with pytest.raises(ContractReverted, match=r"InvalidMinimumSubmissions"):
        operator.schedule_policy(Policy(min_submissions=1, min_submissions_bps=5000))


def test_commitment_of_is_computed_like_the_contract(as_account):
    reader = as_account(2)
    for i in range(3):
        salt = new_salt()
        member = Account.create().address
        expected = reader.contract.functions.commitmentOf(member, i + 1, H2, salt).call()
        assert commitment_of(member, i + 1, H2, salt) == bytes(expected)
        assert reader.commitment_of(member.lower(), i + 1, H2, salt) == bytes(expected)


def test_commit_reveal_round_through_the_bindings(cr_deployed, keys):
    w3, record = cr_deployed
    agg, m0, m1 = (bind(w3, record, keys, i) for i in (1, 2, 3))
    assert m0.policy() == CR
    agg.open_round(H1, CID, agg.now() + 100, 2)
    info = agg.get_round(1)
    assert info.mode is SubmissionMode.COMMIT_REVEAL
    assert info.reveal_deadline == info.deadline + 300 == info.submission_end
    salts = [new_salt(), new_salt()]
    for member, salt in zip((m0, m1), salts, strict=True):
        member.commit_update(1, member.commitment_of(member.account.address, 1, H2, salt))
    assert m0.latest_commit(m0.account.address)[0] == 1
    assert agg.get_round(1).commits == 2
    with pytest.raises(ContractReverted, match=r"WrongSubmissionMode\(roundId=1, mode=1\)"):
        m0.submit_update(1, H2, CID)
    with pytest.raises(ContractReverted, match=r"RevealNotOpen"):
        m0.reveal_update(1, H2, CID, salts[0])
    travel(w3, 101)
    with pytest.raises(ContractReverted, match=r"CommitmentMismatch"):
        m0.reveal_update(1, H2, CID, salts[1])
    for member, salt in zip((m0, m1), salts, strict=True):
        member.reveal_update(1, H2, CID, salt)
    assert m0.verify_commitment(1, m0.account.address, H2) is CommitmentStatus.MATCHES
    assert m0.verify_commitment(1, agg.account.address, H2) is CommitmentStatus.NOT_SUBMITTED
    agg.close_round(1)  # every commitment revealed, quorum reached: early
    agg.finalize_round(1, H3, CID, H3, CID, [0b10])
    assert agg.get_round(1).status is RoundStatus.FINALIZED
    assert agg.last_finalized_round() == 1 and agg.base_model_hash() == H3


def test_abandon_through_the_bindings(as_account, deployed):
    w3, _ = deployed
    agg, operator, member = as_account(1), as_account(0), as_account(2)
    agg.open_round(H1, CID, agg.now() + 100, 1)
    with pytest.raises(ContractReverted, match=r"GracePeriodNotOver\(roundId=1"):
        member.abandon_round(1)
    member.submit_update(1, H2, CID)
    travel(w3, 100 + 60 + 1)
    member.abandon_round(1)  # anyone, after the deadline and the grace period
    assert agg.get_round(1).status is RoundStatus.ABANDONED
    agg.open_round(H1, CID, agg.now() + 100, 1)  # round 1's model again: nothing finalized
    operator.abandon_round(2)
    assert agg.get_round(2).status is RoundStatus.ABANDONED


def test_check_version_refuses_another_protocol(as_account, monkeypatch):
    reader = as_account(2)
    monkeypatch.setattr(Consortium, "version", lambda self: 1)
    with pytest.raises(ChainError, match="speaks protocol 1"):
        reader.check_version()
