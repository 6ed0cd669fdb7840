"""Whatever a member puts on chain is that member's problem, never the round's.

Four `fleml-node client` processes and one aggregator run four rounds; in each round members
0-2 publish a different bad update (every kind the round engine knows, eleven in all) and
member 3 stays honest. Every bad member must be rejected with its reason, every round must
finalize, and `fleml-node audit` must agree with the aggregator on each of them.
"""

from __future__ import annotations

import json

import pytest

from fleml_node.chain.contract import RoundStatus
from fleml_node.storage import IpfsStore, decode_report

from .conftest import NUM_MEMBERS, Federation

pytestmark = pytest.mark.slow

# round -> bad kind, per member 0..2 (member 3 is honest throughout)
PLAN = {
    0: {1: "missing", 2: "random", 3: "nan", 4: "extra"},
    1: {1: "directory", 2: "pickle", 3: "oversized", 4: "other-round"},
    2: {1: "malformed", 2: "tampered", 3: "shapes"},
}
# what the reason of each kind starts with (the round engine's rule)
RULE = {"missing": "unavailable", "directory": "unavailable", "malformed": "unavailable",
        "oversized": "unavailable", "tampered": "tampered", "random": "invalid",
        "pickle": "invalid", "shapes": "invalid", "nan": "invalid", "extra": "invalid",
        "other-round": "invalid"}
ROUNDS = 4


def test_every_bad_update_rejects_its_member_and_the_audit_agrees(federation: Federation):
    fed = federation
    fed.ipfs_timeout = 5  # a member's missing object costs the round one 5 s timeout
    clients = []
    for i in range(NUM_MEMBERS):
        plan = PLAN.get(i)
        fault = "bad-update:" + ",".join(f"{r}={k}" for r, k in plan.items()) if plan else None
        clients.append(fed.client(i, "--max-rounds", str(ROUNDS), fault=fault))
    aggregator = fed.aggregator("--rounds", str(ROUNDS), "--round-seconds", "240",
                                "--defense", "fedavg", "--no-evaluate")
    fed.wait_exit(aggregator, timeout=420)
    for client in clients:
        fed.wait_exit(client, timeout=60)

    store = IpfsStore(fed.ipfs_api, timeout=10)
    for r in range(1, ROUNDS + 1):
        assert fed.status(r) is RoundStatus.FINALIZED, fed.report(f"round {r} not finalized")
        info = fed.reader.get_round(r)
        report = decode_report(store.get(
            fed.round_event(r, "RoundFinalized").args["reportCid"],
            expected_hash=info.report_hash))
        by_address = {m["address"]: m for m in report["members"]}
        for i in range(NUM_MEMBERS):
            entry = by_address[fed.member(i)]
            kind = PLAN.get(i, {}).get(r)
            if kind is None:
                assert entry["status"] != "rejected", json.dumps(entry)
                continue
            assert entry["status"] == "rejected", (kind, entry)
            assert entry["reason"].startswith(RULE[kind]), (kind, entry["reason"])
            assert fed.reader.is_flagged(r, fed.member(i)), (r, kind)
        assert not fed.reader.is_flagged(r, fed.member(3))

    done = fed.audit(timeout=300)
    assert done.returncode == 0, fed.report(f"audit failed:\n{done.stdout}{done.stderr}")
    for r in range(1, ROUNDS + 1):
        assert f"round {r}: PASS" in done.stdout, done.stdout
    assert done.stdout.count("rightly rejected") == sum(len(p) for p in PLAN.values())
