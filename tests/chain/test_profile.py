"""Chain profiles on real anvil chains: detection, the artifact per EVM version, legacy fees,
receipts without status, and reading a profile from its name, a file or the record."""

from __future__ import annotations

import json
import threading
import time

import pytest
from eth_account import Account

from fleml_node.chain import contract
from fleml_node.chain.contract import Consortium, ContractReverted, connect, receipt_succeeded
from fleml_node.chain.deploy import deploy_consortium, load_artifact
from fleml_node.chain.deployment import load_record
from fleml_node.chain.profile import (
    BUILTIN_PROFILES,
    ChainProfile,
    ProfileError,
    detect,
    load_profile,
)
from fleml_node.devnet.anvil import LocalAnvil
from fleml_node.devnet.anvil import test_keys as anvil_keys
from fleml_node.devnet.consortium import deploy_local_consortium


def test_anvil_is_detected_as_a_cancun_eip1559_chain_without_poa(anvil) -> None:
    profile = detect(connect(anvil.url))
    assert (profile.evm_version, profile.fee_mode, profile.poa) == ("cancun", "eip1559", False)


def test_a_london_chain_gets_the_london_artifact_and_runs_rounds(tmp_path) -> None:
    with LocalAnvil(accounts=4, log_file=tmp_path / "anvil.log", hardfork="london") as node:
        w3 = connect(node.url)
        assert detect(w3).evm_version == "london"
        keys = anvil_keys(4)
        record = deploy_local_consortium(w3, keys, 2, tmp_path / "deployment.json")
        assert record.profile.evm_version == "london"
        code = w3.eth.get_code(record.address)
        assert code == bytes.fromhex(
            load_artifact(evm_version="london")["deployedBytecode"].removeprefix("0x"))
        written = json.loads(record.path.read_text())
        assert written["compiler"]["evm_version"] == "london"
        assert written["chain"]["evm_version"] == "london"
        # a cancun build does not even deploy here: PUSH0 is an invalid opcode before Shanghai
        with pytest.raises(Exception):  # noqa: B017,PT011 - the chain's error type varies
            deploy_consortium(w3, Account.from_key(keys[0]), tmp_path / "cancun.json",
                              profile=ChainProfile(evm_version="cancun"))


def test_legacy_fee_mode_sends_type_0_transactions(anvil, tmp_path) -> None:
    w3 = connect(anvil.url)
    keys = anvil_keys(4)
    legacy = ChainProfile("legacy-test", fee_mode="legacy")
    record = deploy_consortium(w3, Account.from_key(keys[0]), tmp_path / "d.json",
                               profile=legacy)
    assert load_record(record.path).profile.fee_mode == "legacy"
    operator = Consortium(w3, load_record(record.path), Account.from_key(keys[0]))
    receipt = operator.set_aggregator(Account.from_key(keys[1]).address)
    sent = w3.eth.get_transaction(receipt["transactionHash"])
    assert sent["type"] == 0 and sent["gasPrice"] > 0
    deploy_tx = w3.eth.get_transaction(json.loads(record.path.read_text())["contracts"][
        "FlemlConsortium"]["transaction"])
    assert deploy_tx["type"] == 0


def test_success_without_a_status_field_is_read_from_the_logs(deployed, keys) -> None:
    w3, record = deployed
    operator = Consortium(w3, record, Account.from_key(keys[0]))
    receipt = dict(operator.admit_member(Account.from_key(keys[7]).address, "late"))
    del receipt["status"]
    assert receipt_succeeded(w3, receipt, record.address)
    assert not receipt_succeeded(w3, {**receipt, "logs": []}, record.address)
    # a log of some other contract proves nothing about ours
    assert not receipt_succeeded(w3, receipt, Account.from_key(keys[1]).address)
    deployment = dict(w3.eth.get_transaction_receipt(
        json.loads(record.path.read_text())["contracts"]["FlemlConsortium"]["transaction"]))
    del deployment["status"]
    assert receipt_succeeded(w3, deployment, None)
    assert not receipt_succeeded(w3, {**deployment, "contractAddress":
                                      Account.from_key(keys[6]).address}, None)


def test_a_revert_is_still_a_revert(as_account, keys) -> None:
    with pytest.raises(ContractReverted, match="NotOperator"):
        as_account(3).admit_member(Account.from_key(keys[6]).address, "x")


def test_profiles_by_name_file_and_environment(tmp_path, monkeypatch) -> None:
    assert load_profile("clique") == BUILTIN_PROFILES["clique"]
    assert load_profile("clique").resolved and not load_profile("auto").resolved
    path = tmp_path / "consortium-chain.json"
    path.write_text(json.dumps({"evm_version": "london", "confirmations": 3,
                                "block_time": 5}))
    loaded = load_profile(path)
    assert (loaded.name, loaded.evm_version, loaded.confirmations) == \
        ("consortium-chain", "london", 3)
    monkeypatch.setenv("FLEML_CHAIN_PROFILE", str(path))
    assert load_profile() == loaded
    monkeypatch.delenv("FLEML_CHAIN_PROFILE")
    assert load_profile() == BUILTIN_PROFILES["auto"]


@pytest.mark.parametrize(("values", "message"), [
    ({"evm_version": "paris"}, "has no artifact"),
    ({"fee_mode": "free"}, "fee_mode must be one of"),
    ({"confirmations": -1}, "must be >= 0"),
    ({"confirmation": 2}, "unknown field"),
])
def test_a_bad_profile_is_refused_with_the_reason(tmp_path, values, message) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_an_unknown_profile_name_lists_the_builtins() -> None:
    with pytest.raises(ProfileError, match="anvil, hardhat, clique, auto"):
        load_profile("besu")


def _pending(w3, address) -> int:
    return w3.eth.get_transaction_count(address, "pending")


def test_a_transaction_dropped_from_the_pool_is_sent_again(tmp_path, monkeypatch) -> None:
    """As when a PoA sealer's block loses a fork and its transactions leave the pool."""
    monkeypatch.setattr(contract, "REBROADCAST_SECONDS", 1.0)
    with LocalAnvil(accounts=2, log_file=tmp_path / "anvil.log") as node:
        w3 = connect(node.url)
        w3.provider.make_request("evm_setAutomine", [False])
        sender, receiver = (Account.from_key(key) for key in anvil_keys(2))
        tx = {"to": receiver.address, "value": 1, "gas": 21_000, "chainId": w3.eth.chain_id}
        outcome: dict = {}
        worker = threading.Thread(target=lambda: outcome.update(
            receipt=contract.send_signed(w3, sender, tx, "legacy", 60, "transfer")))
        worker.start()
        _wait(lambda: _pending(w3, sender.address) == 1)
        w3.provider.make_request("anvil_dropAllTransactions", [])
        assert _pending(w3, sender.address) == 0
        _wait(lambda: _pending(w3, sender.address) == 1)  # sent again
        w3.provider.make_request("evm_mine", [])
        worker.join(30)
        assert outcome["receipt"]["status"] == 1
        assert w3.eth.get_transaction_count(sender.address) == 1


def _wait(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
