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

5. the aggregate is the named method's: stateless methods (FedAvg, Krum, Multi-Krum, median,
   trimmed mean) are re-run from the updates; for FLEML and FLTrust, whose weights depend on
   the aggregator's private validation data and learned state, the coefficients must be
   admissible (non-negative, zero for flagged members);
6. round 1 starts from the task's initial model (later rounds are chained by the contract).

The report is only used as the claim being checked. What the audit cannot establish is that a
FLEML or FLTrust aggregator used its true validation data: the coefficients it reports are
checked for admissibility and exact effect, not recomputed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from fleml_node.aggregator import MAX_UPDATE_NORM, capped_counts, claimed_samples
from fleml_node.chain.contract import Consortium, RoundStatus
from fleml_node.chain.events import round_events
from fleml_node.defense import RoundContext, make_defense, replay
from fleml_node.learning import ParamSpec, TrainConfig, flatten, get_params
from fleml_node.storage import (
    HashMismatch,
    InvalidPayload,
    IpfsStore,
    StorageError,
    decode_report,
    decode_tensors,
)
from fleml_node.task import TaskConfig

# methods whose aggregate depends only on the updates, sample counts and their parameters
STATELESS_METHODS = ("fedavg", "krum", "multikrum", "median", "trimmedmean")

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
    try:
        _audit_finalized(consortium, store, round_id, info, events, verdict)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        verdict.check("report is well-formed", False, f"{type(exc).__name__}: {exc}")
    return verdict


def _audit_finalized(consortium: Consortium, store: IpfsStore, round_id: int, info: Any,
                     events: dict[str, Any], verdict: RoundVerdict) -> None:
    opened, finalized = events["RoundOpened"][-1], events["RoundFinalized"][-1]
    submissions = events.get("UpdateSubmitted", [])
    try:
        report = decode_report(store.get(finalized.args["reportCid"],
                                          expected_hash=info.report_hash))
        verdict.check("report matches its commitment", True, finalized.args["reportCid"])
    except StorageError as exc:
        verdict.check("report matches its commitment", False, str(exc))
        return
    try:
        base = decode_tensors(store.get(opened.args["modelCid"], expected_hash=info.model_hash),
                              expected_kind="model")
        spec = ParamSpec.from_named(base.tensors)
        result = decode_tensors(store.get(finalized.args["resultCid"],
                                          expected_hash=info.result_hash),
                                expected_kind="model", expected_spec=spec)
        verdict.check("global models match their commitments", True)
    except StorageError as exc:
        verdict.check("global models match their commitments", False, str(exc))
        return
    if round_id == 1:
        # later rounds are chained on chain: each opens on the previous round's result
        initial = flatten(get_params(task_from_report(report["task"]).initial_model()))
        verdict.check("round 1 starts from the task's initial model",
                      torch.equal(initial, flatten(base.tensors)))

    index_on_chain = {e.args["member"]: consortium.member_info(e.args["member"])[2]
                      for e in submissions}
    entries = report["members"]
    by_member = {entry["address"]: entry for entry in entries}
    verdict.check("report lists exactly the committed submissions, once each",
                  len(by_member) == len(entries)
                  and sorted(by_member) == sorted(index_on_chain),
                  f"{len(submissions)} on chain, {len(entries)} in report")
    wrong_index = [a for a, e in by_member.items() if e["index"] != index_on_chain.get(a)]
    verdict.check("report's member indices are the chain's", not wrong_index,
                  f"wrong for {wrong_index}" if wrong_index else "")

    accepted: dict[str, torch.Tensor] = {}
    claims: dict[str, int] = {}
    for event in submissions:
        member, digest = event.args["member"], bytes(event.args["updateHash"])
        status = by_member.get(member, {}).get("status", "missing")
        try:
            blob = store.get(event.args["updateCid"], expected_hash=digest)
            update = decode_tensors(blob, expected_kind="update", expected_round=round_id,
                                    expected_spec=spec)
            flat = flatten(update.tensors)
            norm = torch.linalg.vector_norm(flat.double()).item()
            if not norm <= MAX_UPDATE_NORM:
                raise InvalidPayload(f"update norm {norm:.3g} exceeds {MAX_UPDATE_NORM:g}")
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
            accepted[member] = flat
            claims[member] = claimed_samples(update.extra)
        verdict.members.append(MemberVerdict(member, index_on_chain[member], "0x" + digest.hex(),
                                             status, ok, detail))
    verdict.members.sort(key=lambda m: m.index)

    bitmap = finalized.args["flaggedBitmap"]
    on_chain = {w * 256 + b for w, word in enumerate(bitmap) for b in range(256)
                if (word >> b) & 1}
    claimed = {index_on_chain[a] for a, e in by_member.items()
               if e["status"] in ("flagged", "rejected") and a in index_on_chain}
    verdict.check("flagged bitmap matches the report", on_chain == claimed,
                  f"chain {sorted(on_chain)}, report {sorted(claimed)}")

    defense = report["defense"]
    base_flat, result_flat = flatten(base.tensors), flatten(result.tensors)
    if defense is None:
        if not verdict.check("no verified update was left out", not accepted,
                             f"{len(accepted)} verified updates, no aggregation reported"):
            return
        expected = base_flat
    else:
        clients = defense["clients"]
        order = [c["client_id"] for c in clients]
        if not verdict.check("report's clients are the verified updates",
                             len(order) == len(set(order)) and sorted(order) == sorted(accepted),
                             f"{len(order)} in report, {len(accepted)} verified"):
            return
        mismatched = [c["client_id"] for c in clients
                      if c["flagged"] != (by_member[c["client_id"]]["status"] == "flagged")]
        verdict.check("flags agree between members and the defense", not mismatched,
                      f"disagree for {mismatched}" if mismatched else "")
        updates = torch.stack([accepted[m] for m in order])
        _check_coefficients(defense, clients, updates,
                            capped_counts([claims[m] for m in order]), round_id, verdict)
        try:
            expected = base_flat + replay(updates, defense)
        except (ValueError, KeyError, TypeError) as exc:
            verdict.check("aggregation replays to the finalized model", False,
                          f"report cannot be replayed: {exc}")
            return
    same = torch.equal(expected, result_flat)
    diff = (expected - result_flat).abs().max().item() if not same else 0.0
    verdict.check("aggregation replays to the finalized model", same,
                  "bit-for-bit" if same else f"max abs difference {diff:.3g}")


def _check_coefficients(defense: dict[str, Any], clients: list[dict[str, Any]],
                        updates: torch.Tensor, counts: list[int], round_id: int,
                        verdict: RoundVerdict) -> None:
    """Coefficients must be what the named method gives, or at least admissible.

    Stateless methods are re-run from the updates alone, so their coefficients must be
    exactly theirs. FLEML's and FLTrust's depend on data the auditor does not hold (the
    aggregator's validation set, FLEML's learned state), so for them the auditor checks what
    any honest result satisfies: no negative coefficient and no weight on a flagged client.
    """
    method = defense["method"]
    if method in STATELESS_METHODS:
        ids = [c["client_id"] for c in clients]
        rerun = make_defense(method, **defense["params"]).aggregate(
            updates, RoundContext(client_ids=ids, sample_counts=counts,
                                  round_number=round_id))
        verdict.check(f"{method} re-run from the updates gives the reported aggregate",
                      torch.equal(rerun.update, replay(updates, defense)))
        return
    bad = [c["client_id"] for c in clients if c["coefficient"] is not None and (
        float.fromhex(c["coefficient_hex"]) < 0
        or (c["flagged"] and float.fromhex(c["coefficient_hex"]) != 0))]
    verdict.check("coefficients are admissible (>= 0, zero when flagged)", not bad,
                  f"not for {bad}" if bad else "")


def task_from_report(task: dict[str, Any]) -> TaskConfig:
    fields = dict(task)
    return TaskConfig(**{**fields, "train": TrainConfig(**fields["train"])})
