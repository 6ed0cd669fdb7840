"""Audit a finalized round from the chain and IPFS alone.

For round r the auditor reads the round's events and record from the chain (scanning only the
round's own blocks), fetches the report, the base and the new global model and every member's
update (concurrently; a member's missing object costs one IPFS timeout), and checks:

1. the report's bytes hash to the `reportHash` the chain holds, and so do the new and the base
   global models' bytes to `resultHash` and `modelHash`;
2. everything else with :func:`fleml_node.round_engine.verify_round`, the same rules the
   aggregator's round engine applied: every member's status (a member whose object is
   unavailable, tampered or invalid must be rejected; any other must not be), the member
   indices, the flagged bitmap, the defense's clients, the re-run of stateless defenses and
   the bit-for-bit replay of the aggregate; round 1 must start from the task's initial model.

The report is only used as the claim being checked. What the audit cannot establish yet is that
a FLEML or FLTrust aggregator used its true validation data: their coefficients are checked for
admissibility and exact effect, not recomputed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fleml_node.chain.contract import Consortium, RoundStatus
from fleml_node.chain.events import round_events
from fleml_node.learning import ParamSpec
from fleml_node.round_engine import MemberCheck, update_size_cap, verify_round
from fleml_node.storage import IpfsStore, StorageError, decode_report, decode_tensors
from fleml_node.submissions import gather_submissions

log = logging.getLogger(__name__)


@dataclass
class RoundVerdict:
    """The audit of one round: per-member verdicts and round-level checks."""

    round_id: int
    members: list[MemberCheck] = field(default_factory=list)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.checks.values()) and all(m.ok for m in self.members)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks[name] = (ok, detail)
        return ok

    def lines(self) -> list[str]:
        out = [f"round {self.round_id}: {'PASS' if self.ok else 'FAIL'}"]
        for name, (ok, detail) in self.checks.items():
            out.append(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")
        for m in self.members:
            out.append(f"  member {m.index} {m.address}: {'ok' if m.ok else 'FAIL'} "
                       f"({m.status_in_report}) {m.detail}")
        return out


def audit_round(consortium: Consortium, store: IpfsStore, round_id: int) -> RoundVerdict:
    """Check round `round_id`; never raises for a failed check, only records it.

    Raises
    ------
    IpfsError, ChainError
        When the auditor's own IPFS daemon or chain RPC does not answer.
    """
    verdict = RoundVerdict(round_id)
    info = consortium.get_round(round_id)
    if not verdict.check("round is finalized", info.status is RoundStatus.FINALIZED,
                         f"status {info.status.name}"):
        return verdict
    events = round_events(consortium, round_id)
    opened, finalized = events["RoundOpened"][-1], events["RoundFinalized"][-1]
    try:
        report = decode_report(store.get(finalized.args["reportCid"],
                                          expected_hash=info.report_hash))
        verdict.check("report matches its commitment", True, finalized.args["reportCid"])
    except StorageError as exc:
        verdict.check("report matches its commitment", False, str(exc))
        return verdict
    try:
        base = decode_tensors(store.get(opened.args["modelCid"], expected_hash=info.model_hash),
                              expected_kind="model")
        result = decode_tensors(store.get(finalized.args["resultCid"],
                                          expected_hash=info.result_hash),
                                expected_kind="model",
                                expected_spec=ParamSpec.from_named(base.tensors))
        verdict.check("global models match their commitments", True)
    except StorageError as exc:
        verdict.check("global models match their commitments", False, str(exc))
        return verdict
    submissions = gather_submissions(consortium, store, events.get("UpdateSubmitted", []),
                                     max_bytes=update_size_cap(ParamSpec.from_named(base.tensors)))
    try:
        checked = verify_round(round_id, submissions, base.tensors, result.tensors, report,
                               finalized.args["flaggedBitmap"])
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        verdict.check("report is well-formed", False, f"{type(exc).__name__}: {exc}")
        return verdict
    for name, ok, detail in checked.checks:
        verdict.check(name, ok, detail)
    verdict.members = sorted(checked.members, key=lambda m: m.index)
    return verdict
