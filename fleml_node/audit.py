"""Audit a finalized round from the chain and IPFS alone.

For round r the auditor reads the round's events and record from the chain, then checks:

1. the round report's bytes hash to the `reportHash` the chain holds, and so do the new and
   the base global models' bytes to `resultHash` and `modelHash`;
2. every member's update on IPFS hashes to the commitment in its `UpdateSubmitted` event
   (a mismatch is tampering; the report must list that member as rejected);
3. the report lists exactly the committed submissions, and its flagged and rejected members
   are exactly the bits of the finalized bitmap;
4. replaying the aggregation from the report (the method, its parameters and its
   per-client coefficients) over the accepted updates, added to the base model, gives the
   finalized global model bit for bit.

Nothing here trusts the aggregator: its report is only used as the claim being checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from fleml_node.chain.contract import Consortium, RoundStatus
from fleml_node.chain.events import round_events
from fleml_node.defense import replay
from fleml_node.learning import ParamSpec, flatten
from fleml_node.storage import (
    HashMismatch,
    IpfsStore,
    StorageError,
    decode_report,
    decode_tensors,
)

log = logging.getLogger(__name__)


@dataclass
class MemberVerdict:
    address: str
    index: int
    committed_hash: str
    status_in_report: str
    ok: bool
    detail: str


@dataclass
class RoundVerdict:
    """The audit of one round: per-member verdicts and round-level checks."""

    round_id: int
    members: list[MemberVerdict] = field(default_factory=list)
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
    """Check round `round_id`; never raises for a failed check, only records it."""
    verdict = RoundVerdict(round_id)
    info = consortium.get_round(round_id)
    if not verdict.check("round is finalized", info.status is RoundStatus.FINALIZED,
                         f"status {info.status.name}"):
        return verdict
    events = round_events(consortium, round_id)
    opened, finalized = events["RoundOpened"][-1], events["RoundFinalized"][-1]
    submissions = events.get("UpdateSubmitted", [])

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

    by_member = {entry["address"]: entry for entry in report.get("members", [])}
    verdict.check("report lists exactly the committed submissions",
                  sorted(by_member) == sorted(e.args["member"] for e in submissions),
                  f"{len(submissions)} on chain, {len(by_member)} in report")
    accepted: dict[str, torch.Tensor] = {}
    for event in submissions:
        member, digest = event.args["member"], bytes(event.args["updateHash"])
        entry = by_member.get(member, {})
        status = entry.get("status", "missing")
        index = consortium.member_info(member)[2]
        try:
            blob = store.get(event.args["updateCid"], expected_hash=digest)
            update = decode_tensors(blob, expected_kind="update", expected_round=round_id,
                                    expected_spec=ParamSpec.from_named(base.tensors))
        except HashMismatch as exc:
            ok = status == "rejected"
            detail = f"bytes do not match the commitment ({exc}); " + (
                "rightly rejected" if ok else "yet the aggregator used it")
        except StorageError as exc:
            ok = status == "rejected"
            detail = f"unusable update ({exc}); " + ("rightly rejected" if ok else
                                                      "yet the aggregator used it")
        else:
            ok = status in ("accepted", "flagged")
            detail = "commitment matches" + ("" if ok else
                                             f", but the report says {status}")
            accepted[member] = flatten(update.tensors)
        verdict.members.append(MemberVerdict(member, index, "0x" + digest.hex(), status,
                                             ok, detail))

    verdict.members.sort(key=lambda m: m.index)
    slots = consortium.member_slots()
    on_chain = {i for i in range(slots)
                if (_bitmap_word(finalized.args["flaggedBitmap"], i) >> (i % 256)) & 1}
    claimed = {e["index"] for e in report.get("members", [])
               if e.get("status") in ("flagged", "rejected")}
    verdict.check("flagged bitmap matches the report", on_chain == claimed,
                  f"chain {sorted(on_chain)}, report {sorted(claimed)}")

    defense = report.get("defense")
    base_flat, result_flat = flatten(base.tensors), flatten(result.tensors)
    if defense is None:
        expected = base_flat
    else:
        order = [c["client_id"] for c in defense.get("clients", [])]
        if not verdict.check("report's clients are the verified updates",
                             sorted(order) == sorted(accepted),
                             f"{len(order)} in report, {len(accepted)} verified"):
            return verdict
        updates = torch.stack([accepted[m] for m in order])
        try:
            expected = base_flat + replay(updates, defense)
        except (ValueError, KeyError, TypeError) as exc:
            verdict.check("aggregation replays to the finalized model", False,
                          f"report cannot be replayed: {exc}")
            return verdict
    same = torch.equal(expected, result_flat)
    diff = (expected - result_flat).abs().max().item() if not same else 0.0
    verdict.check("aggregation replays to the finalized model", same,
                  "bit-for-bit" if same else f"max abs difference {diff:.3g}")
    return verdict


def _bitmap_word(bitmap: list[int], index: int) -> int:
    word = index // 256
    return bitmap[word] if word < len(bitmap) else 0
