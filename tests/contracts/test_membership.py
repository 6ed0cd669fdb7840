"""Membership and roles: operator, aggregator, admission and removal, every revert path."""

import brownie
from brownie import ZERO_ADDRESS

from .conftest import CID, MODEL_HASH, ROUND_SECONDS, error, now


def test_deployer_is_operator(consortium, operator):
    assert consortium.operator() == operator
    assert consortium.pendingOperator() == ZERO_ADDRESS


def test_operator_transfer_takes_two_steps(consortium, operator, accounts):
    successor = accounts[7]
    tx = consortium.transferOperator(successor, {"from": operator})
    assert tx.events["OperatorTransferStarted"] == {
        "previousOperator": operator,
        "newOperator": successor,
    }
    assert consortium.operator() == operator
    tx = consortium.acceptOperator({"from": successor})
    assert tx.events["OperatorTransferred"] == {
        "previousOperator": operator,
        "newOperator": successor,
    }
    assert consortium.operator() == successor
    assert consortium.pendingOperator() == ZERO_ADDRESS
    with brownie.reverts(error('NotOperator', operator)):
        consortium.setAggregator(operator, {"from": operator})


def test_only_operator_starts_a_transfer(consortium, outsider):
    with brownie.reverts(error('NotOperator', outsider)):
        consortium.transferOperator(outsider, {"from": outsider})


def test_only_the_pending_operator_accepts(consortium, operator, outsider, accounts):
    consortium.transferOperator(accounts[7], {"from": operator})
    with brownie.reverts(error('NotPendingOperator', outsider)):
        consortium.acceptOperator({"from": outsider})


def test_accept_without_a_pending_transfer_reverts(consortium, operator):
    with brownie.reverts(error('NotPendingOperator', operator)):
        consortium.acceptOperator({"from": operator})


def test_set_aggregator(consortium, operator, aggregator_account, accounts):
    tx = consortium.setAggregator(accounts[8], {"from": operator})
    assert tx.events["AggregatorSet"] == {
        "previousAggregator": aggregator_account,
        "newAggregator": accounts[8],
    }
    assert consortium.aggregator() == accounts[8]


def test_set_aggregator_reverts(consortium, operator, outsider):
    with brownie.reverts(error('NotOperator', outsider)):
        consortium.setAggregator(outsider, {"from": outsider})
    with brownie.reverts(error('ZeroAddress')):
        consortium.setAggregator(ZERO_ADDRESS, {"from": operator})


def test_admit_member_assigns_permanent_indices(consortium, operator, members, outsider):
    assert consortium.memberSlots() == 4
    assert consortium.activeMembers() == 4
    for i, member in enumerate(members):
        assert consortium.isMember(member)
        assert list(consortium.memberInfo(member)) == [True, True, i, f"member-{i}"]
        assert consortium.memberAt(i) == member
    tx = consortium.admitMember(outsider, "lab-x", {"from": operator})
    assert tx.events["MemberAdmitted"] == {"member": outsider, "index": 4, "label": "lab-x"}
    assert consortium.memberSlots() == 5


def test_admit_member_reverts(consortium, operator, members, outsider):
    with brownie.reverts(error('NotOperator', outsider)):
        consortium.admitMember(outsider, "x", {"from": outsider})
    with brownie.reverts(error('AlreadyMember', members[0])):
        consortium.admitMember(members[0], "again", {"from": operator})
    with brownie.reverts(error('ZeroAddress')):
        consortium.admitMember(ZERO_ADDRESS, "nobody", {"from": operator})
    with brownie.reverts(error('InvalidLabel', 0, 64)):
        consortium.admitMember(outsider, "", {"from": operator})
    with brownie.reverts(error('InvalidLabel', 65, 64)):
        consortium.admitMember(outsider, "x" * 65, {"from": operator})


def test_remove_member_keeps_history(consortium, operator, members):
    tx = consortium.removeMember(members[1], {"from": operator})
    assert tx.events["MemberRemoved"] == {"member": members[1], "index": 1}
    assert not consortium.isMember(members[1])
    assert list(consortium.memberInfo(members[1])) == [True, False, 1, "member-1"]
    assert consortium.activeMembers() == 3
    assert consortium.memberSlots() == 4


def test_readmitted_member_keeps_its_index(consortium, operator, members):
    consortium.removeMember(members[1], {"from": operator})
    tx = consortium.admitMember(members[1], "member-1b", {"from": operator})
    assert tx.events["MemberAdmitted"]["index"] == 1
    assert list(consortium.memberInfo(members[1])) == [True, True, 1, "member-1b"]
    assert consortium.memberSlots() == 4
    assert consortium.activeMembers() == 4


def test_remove_member_reverts(consortium, operator, members, outsider):
    with brownie.reverts(error('NotOperator', outsider)):
        consortium.removeMember(members[0], {"from": outsider})
    with brownie.reverts(error('NotMember', outsider)):
        consortium.removeMember(outsider, {"from": operator})
    consortium.removeMember(members[0], {"from": operator})
    with brownie.reverts(error('NotMember', members[0])):
        consortium.removeMember(members[0], {"from": operator})


def test_removed_member_cannot_submit(consortium, operator, aggregator_account, members, chain):
    consortium.openRound(MODEL_HASH, CID, now(chain) + ROUND_SECONDS, 1,
                         {"from": aggregator_account})
    consortium.removeMember(members[0], {"from": operator})
    with brownie.reverts(error('NotMember', members[0])):
        consortium.submitUpdate(1, MODEL_HASH, CID, {"from": members[0]})
