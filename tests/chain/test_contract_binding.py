"""fleml_node.chain against a real anvil: transactions, decoded reverts, event following."""

import pytest
from eth_account import Account

from fleml_node.chain.contract import ChainError, Consortium, RoundStatus, connect, load_account
from fleml_node.chain.deployment import load_record
from fleml_node.chain.events import EventFollower, bloom_contains

from .conftest import future

H1, H2, H3 = (bytes([i]) * 32 for i in (1, 2, 3))
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_round_through_the_binding(as_account, keys):
    agg, member = as_account(1), as_account(2)
    agg.open_round(H1, CID, future(), 1)
    member.submit_update(1, H2, CID)
    assert member.get_round(1).submissions == 1
    assert member.latest_commitment(member.account.address) == (1, H2)
    agg.close_round(1)
    agg.finalize_round(1, H2, CID, H3, CID, [0b1])
    info = agg.get_round(1)
    assert info.status is RoundStatus.FINALIZED and info.result_hash == H2
    assert agg.verify_result(1, H2, H3)
    assert agg.is_flagged(1, Account.from_key(keys[2]).address)


def test_reverts_are_decoded_from_custom_errors(as_account):
    agg, member = as_account(1), as_account(2)
    with pytest.raises(ChainError, match=r"openRound reverted: NotAggregator\(account=0x"):
        member.open_round(H1, CID, future(), 1)
    agg.open_round(H1, CID, future(), 2)
    member.submit_update(1, H2, CID)
    with pytest.raises(ChainError, match=r"AlreadySubmitted\(roundId=1, member=0x"):
        member.submit_update(1, H2, CID)
    with pytest.raises(ChainError, match=r"QuorumNotReached\(roundId=1, submissions=1, quorum=2"):
        agg.close_round(1)


def test_read_only_binding_refuses_to_send(deployed):
    w3, record = deployed
    with pytest.raises(ChainError, match="read-only"):
        Consortium(w3, record).close_round(1)


def test_wrong_chain_or_missing_contract_is_reported(deployed, tmp_path):
    w3, record = deployed
    other = tmp_path / "other.json"
    text = record.path.read_text().replace(f'"chain_id": {record.chain_id}', '"chain_id": 5')
    other.write_text(text)
    with pytest.raises(ChainError, match="is for chain 5"):
        Consortium(w3, load_record(other))
    gone = tmp_path / "gone.json"
    gone.write_text(record.path.read_text().replace(record.address,
                                                    "0x" + "12" * 20))
    with pytest.raises(ChainError, match="no contract at"):
        Consortium(w3, load_record(gone))


def test_unreachable_chain_and_missing_key_are_clear(monkeypatch):
    with pytest.raises(ChainError, match="cannot reach the chain at http://127.0.0.1:9"):
        connect("http://127.0.0.1:9", timeout=2)
    monkeypatch.delenv("FLEML_PRIVATE_KEY", raising=False)
    with pytest.raises(ChainError, match="no signing key"):
        load_account()
    monkeypatch.setenv("FLEML_PRIVATE_KEY", "not-a-key")
    with pytest.raises(ChainError, match="not a valid private key"):
        load_account()


def test_keystore_account(tmp_path, monkeypatch, keys):
    path = tmp_path / "key.json"
    import json
    path.write_text(json.dumps(Account.encrypt(keys[3], "pw")))
    monkeypatch.setenv("FLEML_KEYSTORE_PASSWORD", "pw")
    assert load_account(path).key.hex() == Account.from_key(keys[3]).key.hex()
    monkeypatch.setenv("FLEML_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(ChainError, match="wrong password"):
        load_account(path)


@pytest.mark.parametrize("content", [
    "{}", "[]", '"a string"', '{"address": "0x12", "version": 3}', '{"crypto": {}}',
    '{"crypto": {"mac": "00", "kdf": "scrypt"}, "version": 3}',
    '{"crypto": {"mac": "00", "kdf": "nope", "cipher": "x", "kdfparams": {}}, "version": 3}',
])
def test_a_file_that_is_not_a_keystore_is_a_one_line_error(tmp_path, monkeypatch, content):
    path = tmp_path / "key.json"
    path.write_text(content)
    monkeypatch.setenv("FLEML_KEYSTORE_PASSWORD", "pw")
    with pytest.raises(ChainError, match="is not an encrypted keystore") as caught:
        load_account(path)
    assert "\n" not in str(caught.value) and caught.value.__cause__ is None


def test_follower_handles_each_event_once_across_restarts(deployed, as_account, tmp_path):
    w3, record = deployed
    agg, member = as_account(1), as_account(2)
    state = tmp_path / "events.json"
    seen = []
    follower = EventFollower(Consortium(w3, record), state)
    follower.poll(lambda e: seen.append(e.name))
    assert seen.count("MemberAdmitted") == 4 and "AggregatorSet" in seen
    agg.open_round(H1, CID, future(), 1)
    member.submit_update(1, H2, CID)
    # a restarted follower resumes after the last handled block
    seen.clear()
    restarted = EventFollower(Consortium(w3, record), state)
    assert restarted.poll(lambda e: seen.append((e.name, e.args.get("roundId")))) == 2
    assert seen == [("RoundOpened", 1), ("UpdateSubmitted", 1)]
    assert restarted.poll(seen.append) == 0


def test_follower_waits_for_confirmations(deployed, as_account, tmp_path):
    w3, record = deployed
    follower = EventFollower(Consortium(w3, record), tmp_path / "s.json", confirmations=3)
    follower.poll(lambda e: None)
    as_account(1).open_round(H1, CID, future(), 1)
    opened = []

    def handle(event):
        if event.name == "RoundOpened":
            opened.append(event.block_number)

    follower.poll(handle)
    assert opened == []  # mined, but not yet 3 blocks deep
    for _ in range(3):
        w3.provider.make_request("evm_mine", [])
    follower.poll(handle)
    assert len(opened) == 1 and follower.last_block == w3.eth.block_number - 3


def test_a_failing_handler_does_not_advance_past_its_block(deployed, as_account, tmp_path):
    w3, record = deployed
    state = tmp_path / "s.json"
    follower = EventFollower(Consortium(w3, record), state)
    follower.poll(lambda e: None)
    as_account(1).open_round(H1, CID, future(), 1)

    def crash(event):
        raise RuntimeError("node died")

    with pytest.raises(RuntimeError):
        follower.poll(crash)
    names = []
    EventFollower(Consortium(w3, record), state).poll(lambda e: names.append(e.name))
    assert names == ["RoundOpened"]


def _reorg(w3, depth):
    """Replace the last `depth` blocks by empty ones (anvil's reorg; a sealer's fork does the
    same on a PoA chain)."""
    response = w3.provider.make_request("anvil_reorg", [depth, []])
    assert "error" not in response, response


def test_a_reorg_shorter_than_the_confirmations_never_reaches_the_handler(
        deployed, as_account, tmp_path):
    w3, record = deployed
    follower = EventFollower(Consortium(w3, record), tmp_path / "s.json", confirmations=3)
    follower.poll(lambda e: None)
    as_account(1).open_round(H1, CID, future(), 1)
    w3.provider.make_request("evm_mine", [])
    seen = []

    def handle(event):
        if event.args.get("roundId") is not None:
            seen.append(event.name)

    follower.poll(handle)
    _reorg(w3, 2)  # the block holding RoundOpened is replaced
    for _ in range(4):
        w3.provider.make_request("evm_mine", [])
    follower.poll(handle)
    assert seen == []
    assert Consortium(w3, record).current_round() == 0  # the round never happened


def test_a_deeper_reorg_is_detected_and_the_new_branch_handled(deployed, as_account, tmp_path,
                                                                 caplog):
    w3, record = deployed
    follower = EventFollower(Consortium(w3, record), tmp_path / "s.json", confirmations=0)
    follower.poll(lambda e: None)
    as_account(1).open_round(H1, CID, future(), 1)
    seen = []
    follower.poll(lambda e: seen.append(e.name))
    assert seen == ["RoundOpened"]  # with no confirmations it acted on a block that will vanish
    _reorg(w3, 1)
    as_account(1).open_round(H2, CID, future(), 1)  # the round, opened again on the new branch
    seen.clear()
    with caplog.at_level("WARNING"):
        follower.poll(lambda e: seen.append((e.name, e.args.get("modelHash"))))
    assert "a reorg deeper than 0 confirmation(s)" in caplog.text
    # the rewind re-handles earlier events too (handlers are idempotent), then the new round
    assert seen[-1] == ("RoundOpened", H2)
    assert ("MemberAdmitted", None) in seen


def test_a_chain_rolled_back_below_the_cursor_is_followed_again(deployed, as_account, tmp_path,
                                                                 caplog):
    """A chain node restored from an older state (anvil after a crash) is shorter than the
    follower's cursor: the follower rewinds instead of waiting for the chain to grow back."""
    w3, record = deployed
    follower = EventFollower(Consortium(w3, record), tmp_path / "s.json", confirmations=0)
    follower.poll(lambda e: None)
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    as_account(1).open_round(H1, CID, future(), 1)
    follower.poll(lambda e: None)
    w3.provider.make_request("evm_revert", [snapshot])
    seen = []
    with caplog.at_level("WARNING"):
        follower.poll(lambda e: seen.append(e.name))
    assert "handling events again" in caplog.text
    as_account(1).open_round(H2, CID, future(), 1)
    seen.clear()
    follower.poll(lambda e: seen.append((e.name, e.args.get("modelHash"))))
    assert seen == [("RoundOpened", H2)]


def test_logs_a_node_has_not_indexed_yet_are_waited_for(deployed, as_account, tmp_path,
                                                          monkeypatch):
    """@ethereumjs/client imports a block before it executes it, and answers eth_getLogs
    without its logs meanwhile; the block's header bloom already names the consortium, so the
    follower stops before that block instead of passing it."""
    w3, record = deployed
    follower = EventFollower(Consortium(w3, record), tmp_path / "s.json", confirmations=0)
    follower.poll(lambda e: None)
    as_account(1).open_round(H1, CID, future(), 1)
    opened_in = w3.eth.block_number
    honest = follower.fetch

    def unindexed(from_block, to_block, blocks=None):
        """The node's answer while it has not indexed `opened_in`: none of that block's logs."""
        seen_blocks: set[int] = set()
        found = honest(from_block, to_block, blocks=seen_blocks)
        if blocks is not None:
            blocks.update(seen_blocks - {opened_in})
        return [e for e in found if e.block_number != opened_in]

    monkeypatch.setattr(follower, "fetch", unindexed)
    seen = []
    assert follower.poll(lambda e: seen.append(e.name)) == 0
    assert follower.last_block == opened_in - 1  # not past the block whose logs are missing
    monkeypatch.setattr(follower, "fetch", honest)  # the node has executed the block
    follower.poll(lambda e: seen.append(e.name))
    assert seen == ["RoundOpened"]


def test_the_bloom_test_matches_the_chains_own_blooms(deployed, as_account):
    w3, record = deployed
    receipt = as_account(1).open_round(H1, CID, future(), 1)
    bloom = bytes(w3.eth.get_block(receipt["blockNumber"])["logsBloom"])
    assert bloom_contains(bloom, bytes.fromhex(record.address[2:]))
    assert not bloom_contains(bloom, bytes(20))
    assert not bloom_contains(bytes(256), bytes.fromhex(record.address[2:]))
