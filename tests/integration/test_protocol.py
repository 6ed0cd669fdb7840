"""Protocol v2 with real `fleml-node` processes: commit-reveal rounds, and a free-rider caught.

* Under a commit-reveal policy every member commits ``keccak256(member, round, hash, salt)``
  before the deadline and publishes and reveals its update only afterwards; the aggregator
  closes once every commitment is revealed, and the audit passes.
* Under plain submissions, a member that commits another member's hash and CID as its own
  (free-riding) is rejected as a copier, flagged on chain, and the audit agrees.
"""

from __future__ import annotations

import json

import pytest

from fleml_node.chain.contract import Policy, RoundStatus, SubmissionMode
from fleml_node.chain.events import round_events
from fleml_node.storage import IpfsStore, decode_report

pytestmark = pytest.mark.slow


def test_commit_reveal_rounds_publish_updates_only_after_the_deadline(make_federation):
    fed = make_federation(3, Policy(min_round_seconds=1, max_round_seconds=3600,
                                    min_submissions=2, mode=SubmissionMode.COMMIT_REVEAL,
                                    reveal_seconds=30, grace_seconds=5))
    clients = [fed.client(i, "--max-rounds", "1") for i in range(3)]
    fed.wait_ready(*clients)  # a short commit phase: members must be up when round 1 opens
    aggregator = fed.aggregator("--rounds", "1", "--round-seconds", "15", "--defense",
                                "fedavg", "--no-evaluate")
    fed.wait_exit(aggregator, timeout=240)
    for client in clients:
        fed.wait_exit(client, timeout=60)
    # one round: the property is per round, and each round costs ~30 s of commit/reveal windows
    info = fed.reader.get_round(1)
    assert info.status is RoundStatus.FINALIZED and info.mode is SubmissionMode.COMMIT_REVEAL
    assert info.commits == info.submissions == 3
    events = round_events(fed.reader, 1)
    assert len(events["UpdateCommitted"]) == 3
    for reveal in events["UpdateSubmitted"]:
        # revealed (and so published) only after the commit deadline
        block = fed.reader.w3.eth.get_block(reveal.block_number)
        assert block["timestamp"] > info.deadline
    for client in clients:
        log = client.log_text()
        assert log.index("round 1: committed") < log.index("round 1: revealed"), log
    audit = fed.audit()
    assert audit.returncode == 0, fed.report(f"audit:\n{audit.stdout}{audit.stderr}")


def test_a_member_committing_anothers_update_is_rejected_as_a_copier(make_federation):
    fed = make_federation(3)
    victim, copier = 0, 2
    clients = [fed.client(i, "--max-rounds", "1", fault=f"copy:{victim}" if i == copier
                          else None) for i in range(3)]
    aggregator = fed.aggregator("--rounds", "1", "--round-seconds", "120", "--defense",
                                "fleml", "--no-evaluate")
    fed.wait_exit(aggregator, timeout=240)
    for client in clients:
        fed.wait_exit(client, timeout=60)
    info = fed.reader.get_round(1)
    report = decode_report(IpfsStore(fed.ipfs_api).get(
        fed.round_event(1, "RoundFinalized").args["reportCid"], expected_hash=info.report_hash))
    status = {m["address"]: m for m in report["members"]}
    assert status[fed.member(copier)]["status"] == "rejected"
    assert status[fed.member(copier)]["reason"].startswith("copied")
    assert status[fed.member(victim)]["status"] != "rejected"
    assert fed.reader.is_flagged(1, fed.member(copier))
    assert not fed.reader.is_flagged(1, fed.member(victim))
    audit = fed.audit(1, extra=("--json",))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    (verdict,) = json.loads(audit.stdout)
    assert verdict["round"] == 1 and verdict["verdict"] == "PASS"
    copied = next(m for m in verdict["members"] if m["address"] == fed.member(copier))
    assert copied["result"] == "PASS" and copied["status_in_report"] == "rejected"
    assert copied["detail"].startswith("copied") and "rightly rejected" in copied["detail"]
    rerun = next(c for c in verdict["checks"] if c["name"].startswith("fleml re-run"))
    assert rerun["result"] == "PASS" and rerun["detail"] == "bit-for-bit"
