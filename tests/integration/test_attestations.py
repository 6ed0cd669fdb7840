"""A lying aggregator is caught by the members' audits, and the consortium does not build on it.

Three `fleml-node client` processes, two of them auditing every finalized round (`--audit`),
and a FLEML aggregator. The operator commits the validation set on chain (made and published
with `fleml-node validation-set`); the aggregator fetches it by its CID. Round 1 is honest:
both audits pass and it is accepted. In rounds 2 to 5 the aggregator lies, one way each: it
doubles a member's coefficient, flags a benign member, publishes a defense state other than
the one it used, and publishes a validation set other than the one it used. The policy
requires two attestations (`attestationsRequired = 2`). After each lie both auditors attest
FAIL with the check named, the operator rejects the round, and the next round builds on the
last accepted model (round 1's result, FLEML's learned state included); round 6 is honest,
passes both audits and is accepted.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from eth_account import Account

from fleml_node.chain.contract import Consortium, Policy, RoundStatus, connect
from fleml_node.chain.deployment import load_record
from fleml_node.chain.events import round_events
from fleml_node.storage import IpfsStore, decode_report

pytestmark = pytest.mark.slow

LIES = {2: "double", 3: "flag", 4: "state", 5: "validation"}
LAST = 6
RERUN = "fleml re-run from the committed validation set and state"


def test_lying_aggregator_is_caught_attested_and_rejected(make_federation, tmp_path):
    fed = make_federation(3, Policy(min_round_seconds=1, max_round_seconds=3600,
                                    min_submissions=2, grace_seconds=5,
                                    attestations_required=2,
                                    attestation_window_seconds=3600))
    operator = Consortium(connect(fed.url), load_record(fed.record_path),
                          Account.from_key(fed.keys[0]))
    made = subprocess.run([*fed.node_cmd, "validation-set", str(tmp_path / "validation.st"),
                           "--create", *fed.task_args, "--ipfs-api", fed.ipfs_api],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    digest, cid = made.split("sha256 ")[1].split()[0], made.split("cid    ")[1].split()[0]
    operator.set_validation_set(bytes.fromhex(digest[2:]), cid)
    clients = [fed.client(i, *(["--audit"] if i < 2 else [])) for i in range(3)]
    fed.wait_ready(*clients)
    lies = ",".join(f"{r}={k}" for r, k in LIES.items())
    aggregator = fed.aggregator("--rounds", str(LAST), "--round-seconds", "120",
                                "--no-evaluate", fault=f"lie:{lies}")
    store = IpfsStore(fed.ipfs_api, timeout=10)
    fed.wait_until("round 1's two passing attestations",
                   lambda: fed.reader.attestations(1) == (2, 0), timeout=240)
    assert fed.reader.is_accepted(1) and fed.reader.round_validation_hash(1).hex() == digest[2:]
    for r in LIES:
        fed.wait_until(f"two failing attestations of round {r}",
                       lambda r=r: fed.reader.current_round() >= r
                       and fed.reader.attestations(r) == (0, 2), timeout=240)
        for i in range(2):
            event = next(e for e in round_events(fed.reader, r)["RoundAttested"]
                         if e.args["member"] == fed.member(i))
            audit = decode_report(store.get(event.args["auditCid"],
                                            expected_hash=bytes(event.args["auditHash"])))
            assert audit["verdict"] == "FAIL"
            failed = [c["name"] for c in audit["checks"] if c["result"] == "FAIL"]
            assert any(name.startswith(RERUN) for name in failed), (r, failed)
        operator.reject_round(r)
    fed.wait_exit(aggregator, timeout=300)

    for r in LIES:
        assert fed.reader.get_round(r).status is RoundStatus.REJECTED
    # every later round, the honest one included, trained on round 1's result: no lie was
    # built on, and the audit checks FLEML's state continued from round 1's as well
    first_result = fed.reader.get_round(1).result_hash
    for r in (*LIES, LAST):
        assert fed.reader.get_round(r).model_hash == first_result, r
    fed.wait_until("the honest round's two passing attestations",
                   lambda: fed.reader.attestations(LAST) == (2, 0), timeout=120)
    assert fed.reader.is_accepted(LAST)
    audit = json.loads(fed.audit(LAST, extra=("--json",)).stdout)[0]
    assert audit["verdict"] == "PASS", audit
    checks = {c["name"]: c["result"] for c in audit["checks"]}
    assert checks["defense state continues from round 1, which it builds on"] == "PASS"
    assert checks["the validation set is the one committed on chain for the round"] == "PASS"
