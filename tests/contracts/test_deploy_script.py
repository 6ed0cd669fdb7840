"""`brownie run deploy` and the admin scripts: the record they write is what nodes read."""

import json

import pytest

from fleml_node.chain.contract import Policy, SubmissionMode
from fleml_node.chain.deploy import load_artifact
from fleml_node.chain.deployment import CONTRACT_NAME, DeploymentError, load_record
from scripts import admin, deploy


@pytest.fixture
def record_path(tmp_path, monkeypatch):
    path = tmp_path / "deployment.json"
    monkeypatch.setenv("FLEML_DEPLOYMENT", str(path))
    return path


def test_deploy_writes_a_record_nodes_can_bind(record_path, monkeypatch, accounts, chain):
    monkeypatch.setenv("FLEML_AGGREGATOR", accounts[1].address)
    monkeypatch.setenv("FLEML_MEMBERS", f"{accounts[2].address}:hospital-a, "
                                        f"{accounts[3].address}:lab-b")
    consortium = deploy.main()
    record = load_record(record_path)
    assert record.chain_id == chain.id
    assert record.address == consortium.address
    assert record.block_number == consortium.tx.block_number
    assert {item.get("name") for item in record.abi} >= {"submitUpdate", "RoundFinalized"}
    assert consortium.aggregator() == accounts[1]
    assert consortium.memberInfo(accounts[3])[3] == "lab-b"
    assert json.loads(record_path.read_text())["compiler"]["evm_version"] == "cancun"
    assert Policy.from_tuple(consortium.policy()) == Policy()  # the documented defaults


def test_deploy_builds_for_the_profiles_evm_and_records_the_profile(record_path, monkeypatch,
                                                                    tmp_path, web3):
    profile = tmp_path / "london-chain.json"
    profile.write_text(json.dumps({"evm_version": "london", "confirmations": 2}))
    monkeypatch.setenv("FLEML_CHAIN_PROFILE", str(profile))
    consortium = deploy.main()
    record = load_record(record_path)
    assert record.profile.evm_version == "london" and record.profile.confirmations == 2
    assert record.profile.poa is False  # detected: the dev chain has no PoA extraData
    assert json.loads(record_path.read_text())["compiler"]["evm_version"] == "london"
    shipped = load_artifact(evm_version="london")["deployedBytecode"]
    assert web3.eth.get_code(consortium.address).hex().removeprefix("0x") == \
        shipped.removeprefix("0x")


def test_deploy_takes_the_initial_policy_from_the_environment(record_path, monkeypatch):
    monkeypatch.setenv("FLEML_POLICY", "min_submissions=2, mode=1, reveal_seconds=300")
    consortium = deploy.main()
    assert Policy.from_tuple(consortium.policy()) == Policy(
        min_submissions=2, mode=SubmissionMode.COMMIT_REVEAL, reveal_seconds=300)


def test_admin_schedules_a_policy_change_and_abandons(record_path, accounts, chain):
    consortium = deploy.main()
    admin.schedule_policy("min_submissions=3")
    pending, from_round, _ = consortium.pendingPolicy()
    assert Policy.from_tuple(pending) == Policy(min_submissions=3) and from_round == 3
    consortium.setAggregator(accounts[1], {"from": accounts[0]})
    consortium.admitMember(accounts[2], "m", {"from": accounts[0]})
    consortium.openRound("0x" + "11" * 32, "cid", chain.time() + 600, 1, {"from": accounts[1]})
    admin.abandon(1)
    assert consortium.getRound(1)["status"] == 4


def test_admin_sets_the_validation_set_and_rejects(record_path, accounts, chain, capsys):
    consortium = deploy.main()
    digest = "0x" + "99" * 32
    admin.set_validation_set(digest, "bafkvalidation")
    assert [str(v) for v in consortium.validationSet()] == [digest, "bafkvalidation"]
    consortium.setAggregator(accounts[1], {"from": accounts[0]})
    for i in (2, 3):
        consortium.admitMember(accounts[i], f"m{i}", {"from": accounts[0]})
    admin.schedule_policy("attestations_required=1,attestation_window_seconds=600")
    assert Policy.from_tuple(consortium.pendingPolicy()[0]).attestations_required == 1
    # before round 1 a scheduled change waits too; play the policy in force and reject by hand
    consortium.setInitialPolicy(Policy(attestations_required=1,
                                       attestation_window_seconds=600).as_tuple(),
                                {"from": accounts[0]})
    consortium.openRound("0x" + "11" * 32, "cid", chain.time() + 600, 1, {"from": accounts[1]})
    consortium.submitUpdate(1, "0x" + "22" * 32, "cid", {"from": accounts[2]})
    consortium.closeRound(1, {"from": accounts[1]})
    consortium.finalizeRound(1, "0x" + "33" * 32, "cid", "0x" + "44" * 32, "cid", [],
                             {"from": accounts[1]})
    consortium.attestRound(1, False, "0x" + "55" * 32, "cid", {"from": accounts[3]})
    admin.reject(1)
    assert consortium.getRound(1)["status"] == 5
    admin.show()
    assert "bafkvalidation" in capsys.readouterr().out


def test_a_bad_policy_item_is_refused():
    with pytest.raises(SystemExit, match="bad policy item 'quorum=3'"):
        admin.parse_policy("quorum=3")


def test_admin_scripts_act_on_the_recorded_contract(record_path, accounts, capsys):
    consortium = deploy.main()
    admin.set_aggregator(accounts[4].address)
    admin.admit(accounts[5].address, "bank-c")
    admin.admit(accounts[6].address, "bank-d")
    admin.remove(accounts[5].address)  # bank-d is left: rounds can still reach a minimum of 1
    admin.show()
    assert consortium.aggregator() == accounts[4]
    assert list(consortium.memberInfo(accounts[5])) == [True, False, 0, "bank-c"]
    assert "'bank-c' removed" in capsys.readouterr().out


def test_admin_refuses_a_removal_below_an_absolute_minimum(record_path, monkeypatch, accounts):
    """Below an absolute minimum no round opens, so no scheduled change could take effect."""
    monkeypatch.setenv("FLEML_MEMBERS", f"{accounts[2].address}:a, {accounts[3].address}:b")
    monkeypatch.setenv("FLEML_POLICY", "min_submissions=2")
    consortium = deploy.main()
    with pytest.raises(SystemExit, match="leaves 1 active member.*minimum of 2 submissions in "
                                         "force.*min_submissions=1"):
        admin.remove(accounts[3].address)
    assert consortium.activeMembers() == 2  # nothing was sent
    admin.remove(accounts[3].address, "force")
    assert consortium.activeMembers() == 1


def test_admin_refuses_a_contract_without_this_protocol(record_path, accounts, web3):
    deploy.main()
    record = json.loads(record_path.read_text())
    # init code deploying the one-byte runtime STOP: a contract that answers no call
    tx = web3.eth.send_transaction({"from": accounts[0].address,
                                    "data": "0x6001600c60003960016000f300"})
    stub = web3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    record["contracts"][CONTRACT_NAME]["address"] = stub
    record_path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"has no version\(\)"):
        admin.show()


def test_member_without_label_is_refused(record_path, accounts):
    consortium = deploy.main()
    with pytest.raises(SystemExit, match="needs a label"):
        admin.admit_members(consortium, accounts[0], accounts[6].address)


def test_missing_or_broken_record_is_a_clear_error(tmp_path):
    with pytest.raises(DeploymentError, match="no deployment record"):
        load_record(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"chain_id": 1}')
    with pytest.raises(DeploymentError, match="not a FLEML deployment record"):
        load_record(broken)
