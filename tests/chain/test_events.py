"""Event decoding through web3's public API, and round scans bounded by the round's own blocks."""

import ast
import logging
from itertools import pairwise
from pathlib import Path

from eth_account import Account

from fleml_node.chain.contract import (
    CommitmentStatus,
    Consortium,
    Policy,
    SubmissionMode,
    commitment_of,
    connect,
    new_salt,
    recorded_requests,
    tx_hash,
)
from fleml_node.chain.events import (
    MAX_BLOCK_RANGE,
    commitment_status,
    fetch_events,
    round_events,
)
from fleml_node.devnet.consortium import deploy_local_consortium

from .conftest import future

H1, H2, H3, H4 = (bytes([i]) * 32 for i in (1, 2, 3, 4))
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
OTHER_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def test_the_package_uses_no_private_web3_module():
    """Private modules (`web3._utils` ...) change without notice between web3 releases."""
    root = Path(__file__).resolve().parents[2]
    private = []
    for source in [*(root / "fleml_node").rglob("*.py"), *(root / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            private += [f"{source.relative_to(root)}: {name}" for name in names
                        if name.split(".")[0] in ("web3", "eth_utils", "eth_abi", "eth_account")
                        and any(part.startswith("_") for part in name.split(".")[1:])]
    assert private == []


def mine(w3, blocks, chunk=500):
    """Empty blocks, standing in for the rest of a busy chain. Mined `chunk` at a time: anvil
    slows down as the module's chain grows, and one request for 3,000 blocks ran past the
    30 s request timeout on a loaded CI machine."""
    while blocks > 0:
        w3.provider.make_request("anvil_mine", [hex(min(chunk, blocks))])
        blocks -= chunk


def run_round(agg, members, model):
    """One round: open on `model`, every member submits, close, finalize; the open receipt."""
    r = agg.current_round() + 1
    # mined blocks move the chain's clock ahead of the wall clock
    opened = agg.open_round(model, CID, agg.now() + 600, len(members))
    for i, member in enumerate(members):
        member.submit_update(r, bytes([16 + i]) * 32, OTHER_CID)
    agg.close_round(r)
    agg.finalize_round(r, H2, CID, H3, OTHER_CID, [0b10])
    return opened


def log_queries(requests):
    return [params[0] for method, params in requests if method == "eth_getLogs"]


def scanned(requests):
    """The block ranges of the eth_getLogs calls among `requests`, as (first, last) pairs."""
    return [(int(q["fromBlock"], 16), int(q["toBlock"], 16)) for q in log_queries(requests)]


def test_every_event_type_is_decoded(anvil, keys, tmp_path):
    """Every event the ABI declares, in one commit-reveal consortium's history."""
    w3 = connect(anvil.url)
    record = deploy_local_consortium(w3, keys, 4, tmp_path / "cr.json", policy=Policy(
        mode=SubmissionMode.COMMIT_REVEAL, reveal_seconds=300, attestations_required=1,
        attestation_window_seconds=600), validation=(H4, OTHER_CID))

    def as_account(index):
        return Consortium(w3, record, Account.from_key(keys[index]))

    operator, agg, member = as_account(0), as_account(1), as_account(2)
    new_operator = Account.from_key(keys[6]).address
    operator.contract.functions.transferOperator(new_operator).transact(
        {"from": operator.account.address})
    operator.contract.functions.acceptOperator().transact({"from": new_operator})
    as_account(6).remove_member(as_account(5).account.address)
    deadline = agg.now() + 100
    opened = agg.open_round(H1, CID, deadline, 1)
    salt = new_salt()
    commitment = commitment_of(member.account.address, 1, H4, salt)
    member.commit_update(1, commitment)
    w3.provider.make_request("evm_setNextBlockTimestamp", [deadline + 1])
    member.reveal_update(1, H4, OTHER_CID, salt)
    agg.close_round(1)
    finalized = agg.finalize_round(1, H2, CID, H3, OTHER_CID, [0b1])
    member.attest_round(1, True, H1, CID)  # k = 1: accepted
    as_account(3).attest_inconclusive(1, H3, OTHER_CID)  # counts neither way
    agg.open_round(H2, CID, agg.now() + 100, 1)
    as_account(6).abandon_round(2)
    deadline3 = agg.now() + 100
    agg.open_round(H2, CID, deadline3, 1)
    member.commit_update(3, commitment_of(member.account.address, 3, H4, salt))
    w3.provider.make_request("evm_setNextBlockTimestamp", [deadline3 + 1])
    member.reveal_update(3, H4, OTHER_CID, salt)
    agg.close_round(3)
    agg.finalize_round(3, H3, CID, H4, OTHER_CID, [])
    member.attest_round(3, False, H2, OTHER_CID)
    as_account(6).reject_round(3)

    events = fetch_events(Consortium(w3, record), record.block_number, w3.eth.block_number)
    names = {e.name for e in events}
    assert names == {item["name"] for item in record.abi if item["type"] == "event"}
    by_name = {e.name: e for e in events}  # the last of each name
    # rounds 1 and 2 for the round events; round 3 is only there to be rejected
    by_name.update({e.name: e for e in events if e.args.get("roundId") == 1})
    aggregator = agg.account.address
    first_open = [e for e in events if e.name == "RoundOpened"][0]
    assert first_open.args == {"roundId": 1, "modelHash": H1, "aggregator": aggregator,
                               "modelCid": CID, "deadline": deadline, "quorum": 1,
                               "minSubmissions": 1, "mode": 1, "revealDeadline": deadline + 300}
    assert by_name["UpdateCommitted"].args == {"roundId": 1, "member": member.account.address,
                                               "commitment": commitment}
    assert by_name["UpdateSubmitted"].args == {"roundId": 1, "member": member.account.address,
                                               "updateHash": H4, "updateCid": OTHER_CID}
    assert by_name["RoundClosed"].args == {"roundId": 1, "aggregator": aggregator,
                                           "submissions": 1, "quorumReached": True}
    assert by_name["RoundFinalized"].args == {"roundId": 1, "resultHash": H2,
                                              "aggregator": aggregator, "resultCid": CID,
                                              "reportHash": H3, "reportCid": OTHER_CID,
                                              "flaggedBitmap": [1]}
    assert by_name["RoundAbandoned"].args == {"roundId": 2, "by": new_operator}
    policy = by_name["PolicyScheduled"].args
    assert policy["effectiveFromRound"] == 1
    assert Policy.from_tuple(policy["policy"]) == Policy.from_tuple(
        (1, 604800, 1, 0, 1, 300, 60, 1, 600))
    assert by_name["ValidationSetChanged"].args == {"validationHash": H4,
                                                    "validationCid": OTHER_CID,
                                                    "effectiveFromRound": 1}
    assert [e.args for e in events if e.name == "RoundAttested"] == [
        {"roundId": 1, "member": member.account.address, "pass": True, "auditHash": H1,
         "auditCid": CID},
        {"roundId": 3, "member": member.account.address, "pass": False, "auditHash": H2,
         "auditCid": OTHER_CID}]
    assert by_name["RoundAuditInconclusive"].args == {
        "roundId": 1, "member": as_account(3).account.address, "auditHash": H3,
        "auditCid": OTHER_CID}
    assert by_name["RoundRejected"].args == {"roundId": 3, "by": new_operator, "passes": 0,
                                             "fails": 1}
    assert by_name["OperatorTransferred"].args == {"previousOperator": operator.account.address,
                                                   "newOperator": new_operator}
    assert by_name["MemberRemoved"].args == {"member": as_account(5).account.address,
                                             "index": 3}
    assert [e.args["label"] for e in events if e.name == "MemberAdmitted"] == [
        f"member-{i}" for i in range(4)]
    assert first_open.tx_hash == tx_hash(opened)
    assert first_open.block_number == opened["blockNumber"]
    assert by_name["RoundFinalized"].tx_hash == tx_hash(finalized)
    assert [(e.block_number, e.log_index) for e in events] == sorted(
        (e.block_number, e.log_index) for e in events)


def test_round_events_cover_an_abandoned_round(deployed, as_account):
    w3, record = deployed
    agg, operator, member = as_account(1), as_account(0), as_account(2)
    agg.open_round(H1, CID, agg.now() + 600, 1)
    member.submit_update(1, H4, OTHER_CID)
    operator.abandon_round(1)
    agg.open_round(H1, CID, agg.now() + 600, 1)
    events = round_events(Consortium(w3, record), 1)
    assert {name: len(found) for name, found in events.items()} == {
        "RoundOpened": 1, "UpdateSubmitted": 1, "RoundAbandoned": 1}


def test_opened_block_is_the_block_of_open_round(as_account):
    agg, members = as_account(1), [as_account(i) for i in (2, 3)]
    first = run_round(agg, members, H1)
    second = run_round(agg, members, H2)
    assert agg.get_round(1).opened_block == first["blockNumber"]
    assert agg.get_round(2).opened_block == second["blockNumber"]
    assert agg.get_round(3).opened_block == 0


def test_round_events_scan_only_the_rounds_blocks(deployed, as_account):
    w3, record = deployed
    agg, members = as_account(1), [as_account(i) for i in (2, 3)]
    model = H1
    for _ in range(3):
        mine(w3, 3000)  # more than one eth_getLogs range between rounds
        run_round(agg, members, model)
        model = H2
    reader = Consortium(w3, record)
    start, end = reader.get_round(2).opened_block, reader.get_round(3).opened_block

    with recorded_requests(w3) as requests:
        events = round_events(reader, 2)
    ranges = scanned(requests)
    # exactly the round's blocks, in eth_getLogs ranges of at most MAX_BLOCK_RANGE blocks
    assert ranges[0][0] == start and ranges[-1][1] == end
    assert all(b[0] == a[1] + 1 for a, b in pairwise(ranges))
    assert len(ranges) == -(-(end - start + 1) // MAX_BLOCK_RANGE) == 2
    assert {name: len(found) for name, found in events.items()} == {
        "RoundOpened": 1, "UpdateSubmitted": 2, "RoundClosed": 1, "RoundFinalized": 1}
    assert all(e.args["roundId"] == 2 for found in events.values() for e in found)

    # the latest round is scanned from its opening block to the head
    mine(w3, 10)
    with recorded_requests(w3) as requests:
        latest = round_events(reader, 3)
    assert scanned(requests) == [(end, w3.eth.block_number)]
    assert len(latest["UpdateSubmitted"]) == 2

    # a round that does not exist has no events and costs no log query
    with recorded_requests(w3) as requests:
        assert round_events(reader, 4) == {}
    assert log_queries(requests) == []


def test_round_events_keeps_explicit_bounds(deployed, as_account):
    w3, record = deployed
    agg, members = as_account(1), [as_account(i) for i in (2, 3)]
    opened = run_round(agg, members, H1)
    reader = Consortium(w3, record)
    with recorded_requests(w3) as requests:
        events = round_events(reader, 1, from_block=opened["blockNumber"])
    assert scanned(requests) == [(opened["blockNumber"], w3.eth.block_number)]
    assert len(events["UpdateSubmitted"]) == 2
    assert round_events(reader, 1, from_block=record.block_number,
                        to_block=opened["blockNumber"] - 1) == {}


def test_transactions_log_and_return_their_hash(as_account, caplog):
    agg = as_account(1)
    with caplog.at_level(logging.INFO, logger="fleml_node.chain.contract"):
        receipt = agg.open_round(H1, CID, future(), 1)
    digest = tx_hash(receipt)
    assert digest.startswith("0x") and len(digest) == 66
    assert agg.w3.eth.get_transaction(digest)["blockNumber"] == receipt["blockNumber"]
    assert (f"openRound sent: {digest} (block {receipt['blockNumber']}, "
            f"gas {receipt['gasUsed']})") in caplog.messages


def test_commitment_status_answers_for_past_rounds(as_account):
    """Storage holds each member's latest submission only: for an earlier round the contract
    answers Superseded, and the round's events tell whether and what the member submitted."""
    agg, m0, m1 = as_account(1), as_account(2), as_account(3)
    a0, a1 = m0.account.address, m1.account.address
    agg.open_round(H1, CID, agg.now() + 600, 1)
    m0.submit_update(1, H2, CID)  # m1 skips round 1
    agg.close_round(1)
    agg.finalize_round(1, H3, CID, H4, OTHER_CID, [])
    agg.open_round(H3, CID, agg.now() + 600, 2)
    m0.submit_update(2, H4, CID)
    m1.submit_update(2, H4, CID)
    assert agg.verify_commitment(1, a1, H2) is CommitmentStatus.SUPERSEDED  # did it submit?
    assert commitment_status(agg, 1, a1, H2) is CommitmentStatus.NOT_SUBMITTED
    assert agg.verify_commitment(1, a0, H2) is CommitmentStatus.SUPERSEDED
    assert commitment_status(agg, 1, a0, H2) is CommitmentStatus.MATCHES
    assert commitment_status(agg, 1, a0, H4) is CommitmentStatus.DIFFERS
    assert commitment_status(agg, 2, a1, H4) is CommitmentStatus.MATCHES  # storage answers
    assert commitment_status(agg, 2, agg.account.address, H4) is CommitmentStatus.NOT_SUBMITTED
