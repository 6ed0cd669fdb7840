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

3. FLEML and FLTrust, whose weights depend on a validation set and (FLEML) on learned state,
   are re-run from what the aggregator published with the report: the validation set and the
   defense's state before the round (each fetched by CID and checked against the hash the
   report gives), under the execution settings the report records (one torch thread,
   deterministic algorithms). Flags, coefficients, the aggregate and the state after the round
   must match bit for bit, and the state before the round must be the state after the
   previous finalized round (or a fresh one before any).

Each check passes, fails, or is inconclusive: an object the check needs could not be fetched
(the auditor's own daemon answers, but nobody provides it). Inconclusive is never a pass and
never a failure: an aggregator cannot have a round pass by hiding its inputs, nor can anyone
make an honest round fail by unpinning them. The report is only used as the claim being
checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fleml_node.chain.contract import Consortium, RoundStatus, tx_hash
from fleml_node.chain.events import round_events
from fleml_node.defense import make_defense
from fleml_node.history import base_round, published_state_after
from fleml_node.learning import ParamSpec
from fleml_node.round_engine import (
    STATELESS_DEFENSES,
    DefenseInputs,
    MemberCheck,
    decode_validation,
    encode_state,
    update_size_cap,
    verify_round,
)
from fleml_node.storage import (
    IpfsError,
    IpfsStore,
    StorageError,
    content_hash,
    decode_report,
    decode_tensors,
    encode_report,
)
from fleml_node.submissions import gather_submissions

log = logging.getLogger(__name__)


@dataclass
class RoundVerdict:
    """The audit of one round: per-member verdicts and round-level checks."""

    round_id: int
    members: list[MemberCheck] = field(default_factory=list)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """FAIL if any check failed, else INCONCLUSIVE if any could not be decided, else PASS."""
        results = [ok for ok, _ in self.checks.values()] + [m.ok for m in self.members]
        if False in results:
            return "FAIL"
        return "INCONCLUSIVE" if None in results else "PASS"

    @property
    def ok(self) -> bool:
        return self.verdict == "PASS"

    def check(self, name: str, ok: bool | None, detail: str = "") -> bool:
        self.checks[name] = (ok, detail)
        return ok is not False

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON: what `fleml-node audit --json` prints and attestations carry."""
        marks = {True: "PASS", False: "FAIL", None: "INCONCLUSIVE"}
        return {
            "round": self.round_id,
            "verdict": self.verdict,
            "checks": [{"name": name, "result": marks[ok], "detail": detail}
                       for name, (ok, detail) in self.checks.items()],
            "members": [{"index": m.index, "address": m.address, "committed_hash":
                         m.committed_hash, "status_in_report": m.status_in_report,
                         "result": marks[m.ok], "detail": m.detail} for m in self.members],
        }

    def lines(self) -> list[str]:
        out = [f"round {self.round_id}: {self.verdict}"]
        marks = {True: "ok", False: "FAIL", None: "??"}
        for name, (ok, detail) in self.checks.items():
            out.append(f"  [{marks[ok]}] {name}{': ' + detail if detail else ''}")
        for m in self.members:
            out.append(f"  member {m.index} {m.address}: {marks[m.ok]} "
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
    # a rejected round was finalized first: its result can be audited all the same
    if not verdict.check("round is finalized", info.status in (RoundStatus.FINALIZED,
                                                               RoundStatus.REJECTED),
                         f"status {info.status.name}"):
        return verdict
    events = round_events(consortium, round_id)
    opened, finalized = events["RoundOpened"][-1], events["RoundFinalized"][-1]
    try:
        report = decode_report(store.get(finalized.args["reportCid"],
                                          expected_hash=info.report_hash))
        verdict.check("report matches its commitment", True, finalized.args["reportCid"])
    except StorageError as exc:
        verdict.check("report matches its commitment", _fetch_failed(store, exc), str(exc))
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
        verdict.check("global models match their commitments", _fetch_failed(store, exc),
                      str(exc))
        return verdict
    submissions = gather_submissions(consortium, store, events.get("UpdateSubmitted", []),
                                     max_bytes=update_size_cap(ParamSpec.from_named(base.tensors)))
    try:
        inputs = _defense_inputs(consortium, store, round_id, report, verdict)
        checked = verify_round(round_id, submissions, base.tensors, result.tensors, report,
                               finalized.args["flaggedBitmap"], inputs)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        verdict.check("report is well-formed", False, f"{type(exc).__name__}: {exc}")
        return verdict
    for name, ok, detail in checked.checks:
        verdict.check(name, ok, detail)
    verdict.members = sorted(checked.members, key=lambda m: m.index)
    return verdict


def _fetch_failed(store: IpfsStore, exc: StorageError) -> None | bool:
    """A check's result when an object the aggregator committed could not be had: None
    (inconclusive) when nobody provides it, False when what is provided is not what was
    committed (other bytes, an unparseable payload or CID, an object over the limits).
    Raises when the auditor's own IPFS daemon is down: the audit cannot run, and does not
    judge the round."""
    if isinstance(exc, IpfsError):
        if not store.is_available():
            raise exc
        return None
    return False


def _defense_inputs(consortium: Consortium, store: IpfsStore, round_id: int,
                    report: dict[str, Any], verdict: RoundVerdict) -> DefenseInputs | None:
    """Fetch what a learned defense read (validation set, state before), and check the state
    continues from the previous finalized round. None for methods that read neither."""
    defense = report.get("defense")
    if defense is None or defense["method"] in STATELESS_DEFENSES:
        return None
    # What the defense read must be named in the report: leaving an input out is the
    # aggregator's doing, and would otherwise make the re-run merely inconclusive.
    fresh = make_defense(defense["method"], **defense["params"]).state_dict()
    stateful = bool(fresh)
    named = {"the validation set": report.get("validation")}
    if stateful:
        named["the state before the round"] = report.get("defense_state", {}).get("before")
        named["the state after the round"] = report.get("defense_state", {}).get("after")
    absent = [what for what, ref in named.items() if not ref]
    if not verdict.check(f"the report publishes what {defense['method']} read", not absent,
                         "missing: " + ", ".join(absent) if absent else ""):
        return DefenseInputs(missing="the report does not publish " + ", ".join(absent))
    committed = consortium.round_validation_hash(round_id)
    if committed != bytes(32):
        same = report["validation"]["hash"] == "0x" + committed.hex()
        verdict.check("the validation set is the one committed on chain for the round",
                      same, "" if same else f"report names {report['validation']['hash']}, "
                                            f"chain committed 0x{committed.hex()}")
    try:
        ref = report["validation"]
        validation = decode_validation(store.get(ref["cid"], expected_hash=ref["hash"]))
        state = None
        if stateful:
            before = report["defense_state"]["before"]
            state = decode_report(store.get(before["cid"], expected_hash=before["hash"]))
    except StorageError as exc:
        ok = _fetch_failed(store, exc)
        verdict.check("published defense inputs match the report", ok, str(exc))
        return DefenseInputs(missing=("an input of the defense cannot be fetched: "
                                      if ok is None else "published inputs are not what the "
                                      "report says: ") + str(exc))
    if stateful:
        expected, source, why = _previous_state_hash(consortium, store, round_id, fresh)
        starts = report["defense_state"]["before"]["hash"]
        verdict.check("defense state continues from " + source,
                      None if expected is None else starts == expected,
                      why if expected is None else "" if starts == expected
                      else f"report starts from {starts}, {source} ended at {expected}")
    return DefenseInputs(validation, state)


def _previous_state_hash(consortium: Consortium, store: IpfsStore, round_id: int,
                         fresh: dict[str, Any]) -> tuple[str | None, str, str]:
    """The hash of the state the round must start from (None when it cannot be had), where it
    comes from, and why it cannot be had: the state after the round it builds on
    (fleml_node.history), or a fresh one over the initial model."""
    base = base_round(consortium, round_id)
    if base:
        try:
            found = published_state_after(consortium, store, base)
        except StorageError as exc:
            # unavailable, or bytes that are not what round `base` committed (its own audit
            # fails then): either way this round's start cannot be decided here
            _fetch_failed(store, exc)  # raises when our own daemon is down
            return None, f"round {base}, which it builds on", \
                f"round {base}'s report or state cannot be had: {exc}"
        if found:
            return found[0], f"round {base}, which it builds on", ""
    # the aggregator starts from `fresh` (the defense's initial state) before any round, and
    # after a round that published no state (a stateless defense), as
    # AggregatorNode._restore_base_state does
    source = f"a fresh defense (round {base} published no state)" if base \
        else "a fresh defense (initial model)"
    return "0x" + content_hash(encode_state(fresh)).hex(), source, ""


def attest(consortium: Consortium, store: IpfsStore, verdict: RoundVerdict) -> str:
    """Publish the verdict on IPFS and record it on chain from a member's key; returns the
    transaction hash.

    PASS and FAIL go to `attestRound`. An INCONCLUSIVE verdict goes to `attestInconclusive`:
    on record for everyone to see, counted neither way. Counted as a failure it would let
    anyone frame an honest aggregator by unpinning an input; counted as a pass it would let an
    aggregator escape the check by hiding one (leaving an input out of the report is a FAIL).
    """
    blob = encode_report(verdict.to_dict())
    cid = store.put(blob)
    if verdict.verdict == "INCONCLUSIVE":
        receipt = consortium.attest_inconclusive(verdict.round_id, content_hash(blob), cid)
    else:
        receipt = consortium.attest_round(verdict.round_id, verdict.ok, content_hash(blob),
                                          cid)
    log.info("round %d: attested %s (audit %s)", verdict.round_id, verdict.verdict, cid)
    return tx_hash(receipt)
