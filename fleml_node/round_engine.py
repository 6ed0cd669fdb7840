"""The round policy: one function decides a round, one function re-checks the decision.

Everything a round decides is here and nowhere else: which submissions are accepted, which are
rejected and why, what the defense sees, how its flags become the on-chain bitmap, the new
global model and the round report. The aggregator node (:mod:`fleml_node.aggregator`), the
audit (:mod:`fleml_node.audit`) and the in-memory simulator (:mod:`fleml_node.simulate`) all
call :meth:`RoundEngine.decide` or :meth:`RoundEngine.verify`, so an audit applies exactly the
aggregator's rules and the simulator's numbers come from the policy the nodes run.

This module knows nothing about chains or IPFS. Its input is what the chain and IPFS yielded:
per member the committed hash, the CID and the fetched bytes, or the reason they could not be
fetched (:class:`Submission`). Whatever a member puts on chain is that member's problem, never
the round's: a missing, malformed or unparseable object, bytes that do not hash to the
commitment, wrong shapes, another round's payload, NaN or absurd norms each reject that member
with a reason, and the round goes on.

Rejection rules, in order (the first that applies is the reason):

``unavailable``  the node could not fetch the object although its own IPFS daemon is healthy
                 (missing, a directory, a malformed CID, too large);
``tampered``     the bytes do not hash to the member's on-chain commitment;
``invalid``      the bytes are not an update for this round of this model (not FLEML
                 safetensors, another kind or round, wrong names or shapes, non-float32,
                 NaN/Inf, or an L2 norm above :data:`MAX_UPDATE_NORM`);
``copied``       the update's metadata names another member than the one who committed it
                 (a member re-submitting someone else's hash and CID: free-riding).
"""

from __future__ import annotations

import contextlib
import platform
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from fleml_node import __version__
from fleml_node.defense import Defense, RoundContext, make_defense, replay
from fleml_node.learning import flatten, get_params, local_train, make_generator, unflatten
from fleml_node.learning.params import ParamSpec
from fleml_node.storage import (
    InvalidPayload,
    MalformedPayload,
    content_hash,
    decode_tensors,
    encode_report,
    encode_tensors,
)
from fleml_node.storage.compression import Codec, UpdateEncoder, decode_update
from fleml_node.task import TaskConfig

REPORT_FORMAT = "fleml-round-report/1"
SAMPLE_CLAIM_CAP = 4  # claimed sample counts above 4x the round's median are clipped to it
MAX_SAMPLE_CLAIM = 2**31  # larger or non-integer claims count as 1
# An update whose L2 norm (in float64) exceeds this is no training step; values that large
# also overflow the float32 statistics the defenses compute, so it is rejected on receipt.
MAX_UPDATE_NORM = 1e6
# Defenses whose aggregate depends only on the updates, sample counts and their parameters:
# the audit re-runs them. FLEML and FLTrust also read the aggregator's validation data and
# learned state, which the audit does not hold (yet): their coefficients are checked for
# admissibility and exact effect.
STATELESS_DEFENSES = ("fedavg", "krum", "multikrum", "median", "trimmedmean")


def encode_update(update: dict[str, Tensor], round_id: int, num_samples: int,
                  member: str, encoder: UpdateEncoder | None = None) -> bytes:
    """A member's update as the bytes it publishes (the one encoding every member uses).

    The metadata names the round and the member (its address), so the bytes, and the hash
    committed on chain, are bound to their author: another member who commits the same hash
    is rejected as a copier. ``encoder`` applies the task's compression
    (:mod:`fleml_node.storage.compression`); None is dense float32 (compression ``none``).

    Raises
    ------
    NonFiniteValues
        If the update holds NaN or an infinity (the member's own training diverged).
    """
    extra = {"num_samples": int(num_samples), "member": member}
    if encoder is not None:
        return encoder.encode(update, round_id, extra)
    return encode_tensors(update, kind="update", round=round_id, extra=extra)


def encode_validation(x: Tensor, y: Tensor) -> bytes:
    """The consortium's validation set as the bytes committed on chain and put on IPFS.

    Labels travel as float32 (exact for any class index below 2**24): FLEML's safetensors
    payloads hold float32 tensors only.
    """
    return encode_tensors({"x": x.float().contiguous(), "y": y.float().contiguous()},
                          kind="validation", round=0)


def decode_validation(blob: bytes) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`encode_validation`, validating what another party published.

    Raises
    ------
    InvalidPayload
        If the bytes are no validation set (kind, tensors, non-integral labels).
    """
    payload = decode_tensors(blob, expected_kind="validation")
    if set(payload.tensors) != {"x", "y"}:
        raise MalformedPayload("a validation set holds exactly the tensors x and y")
    x, y = payload.tensors["x"], payload.tensors["y"]
    if y.ndim != 1 or x.shape[0] != y.shape[0] or not torch.equal(y, y.round()) \
            or bool((y < 0).any()):
        raise MalformedPayload("validation labels must be one non-negative integer per input")
    return x, y.long()


def encode_state(state: dict[str, Any]) -> bytes:
    """A defense's learned state as canonical JSON: the bytes whose hash the report carries."""
    return encode_report(state)


EXECUTION_SETTINGS = {"torch_threads": 1, "deterministic_algorithms": True}


def execution_environment() -> dict[str, str]:
    """The software and CPU a defense ran on, as the round report records them."""
    return {"torch": torch.__version__, "fleml_node": __version__,
            "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


@contextlib.contextmanager
def execution_settings() -> Iterator[dict[str, Any]]:
    """Run a defense so that anyone with the same inputs gets the same bits.

    One torch thread (reductions split over threads round differently) and deterministic
    algorithms; yields what the round report records (with the software versions and the CPU
    kernels torch dispatches to: other vector kernels may round differently), and restores
    the caller's settings afterwards.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(EXECUTION_SETTINGS["torch_threads"])
    torch.use_deterministic_algorithms(EXECUTION_SETTINGS["deterministic_algorithms"])
    try:
        yield {**EXECUTION_SETTINGS, **execution_environment()}
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def update_size_cap(spec: ParamSpec) -> int:
    """The most bytes an update of this model can take: its float32 values and a header.

    The header (names, shapes, offsets, metadata) is a few hundred bytes per tensor; 64 KiB
    plus 512 bytes per tensor leaves room for any honest one. Nodes fetch members' objects
    with this cap, so an oversized object costs a bounded read.
    """
    return 4 * spec.numel + 2**16 + 512 * len(spec.names)


def claimed_samples(extra: dict[str, Any]) -> int:
    """The sample count a member claims in its update's metadata, if it is plausible, else 1."""
    claim = extra.get("num_samples", 1)
    if isinstance(claim, bool) or not isinstance(claim, int) or not 1 <= claim <= MAX_SAMPLE_CLAIM:
        return 1
    return claim


def capped_counts(claims: list[int]) -> list[int]:
    """Claims clipped to SAMPLE_CLAIM_CAP times their median, in integers."""
    cap = SAMPLE_CLAIM_CAP * int(statistics.median_low(claims))
    return [min(c, cap) for c in claims]


def flagged_bitmap(indices: Sequence[int], member_slots: int) -> list[int]:
    """Member indices as the contract's bitmap: bit i of word i // 256, no trailing zeros."""
    words = [0] * ((member_slots + 255) // 256)
    for index in indices:
        words[index // 256] |= 1 << (index % 256)
    while words and words[-1] == 0:
        words.pop()
    return words


def bitmap_indices(words: Sequence[int]) -> set[int]:
    """The member indices whose bits are set in a bitmap."""
    return {w * 256 + b for w, word in enumerate(words) for b in range(256) if (word >> b) & 1}


@dataclass(frozen=True)
class Submission:
    """One member's committed update, as the node found it.

    Parameters
    ----------
    member
        The member's address (the defense's client id).
    index
        The member's index in the consortium (its bit in the flagged bitmap).
    update_hash
        The 32-byte content hash the member committed on chain.
    update_cid
        The CID it committed ("" where there is no IPFS, as in the in-memory simulator).
    blob
        The bytes fetched for that CID, or None when they could not be fetched.
    fetch_error
        Why the bytes could not be fetched (set exactly when ``blob`` is None).
    """

    member: str
    index: int
    update_hash: bytes
    update_cid: str = ""
    blob: bytes | None = None
    fetch_error: str | None = None

    def __post_init__(self) -> None:
        if (self.blob is None) == (self.fetch_error is None):
            raise ValueError("a submission has either its bytes or the reason they are missing")


class Committed(Protocol):
    """What a round report lists of a member's submission (a :class:`Submission` has it)."""

    member: str
    update_hash: bytes
    update_cid: str


@dataclass
class MemberDecision:
    """What the round decided for one member."""

    member: str
    index: int
    status: str  # accepted | flagged | rejected
    reason: str = ""
    coefficient: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.member, "index": self.index,
                               "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class Screened:
    """The first half of a round: submissions checked, before the defense runs."""

    decisions: list[MemberDecision]
    accepted: list[str]
    updates: Tensor | None  # [n_accepted, d] float32, in member-index order
    claims: list[int]


class DecisionsView:
    """Who was accepted, rejected (with the reason) and flagged, from a round's decisions."""

    decisions: list[MemberDecision]

    @property
    def accepted(self) -> list[str]:
        return [d.member for d in self.decisions if d.status != "rejected"]

    @property
    def rejected(self) -> dict[str, str]:
        return {d.member: d.reason for d in self.decisions if d.status == "rejected"}

    @property
    def flagged(self) -> list[str]:
        return [d.member for d in self.decisions if d.status == "flagged"]

    @property
    def coefficients(self) -> dict[str, float | None]:
        return {d.member: d.coefficient for d in self.decisions if d.status != "rejected"}


@dataclass
class RoundOutcome(DecisionsView):
    """Everything the policy decided for a round; the node only publishes and commits it."""

    round_id: int
    decisions: list[MemberDecision]
    defense_report: dict[str, Any] | None
    aggregate: Tensor
    result_params: dict[str, Tensor]
    bitmap_indices: list[int]
    updates: Tensor | None = field(default=None, repr=False)
    # the defense's learned state before and after the round (None for stateless methods),
    # and the execution settings it ran under: what an auditor needs to re-run it
    state_before: dict[str, Any] | None = field(default=None, repr=False)
    state_after: dict[str, Any] | None = field(default=None, repr=False)
    execution: dict[str, Any] = field(default_factory=dict)

    def bitmap(self, member_slots: int) -> list[int]:
        return flagged_bitmap(self.bitmap_indices, member_slots)

    def report(self, task: TaskConfig, base_model: dict[str, str],
               result_model: dict[str, str], submissions: Sequence[Committed],
               chain: dict[str, Any] | None = None,
               inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """The round report: the claim an auditor checks (chain fields only where there is one).

        Parameters
        ----------
        base_model, result_model
            ``{"hash": "0x...", "cid": "..."}`` of the model the round trained on and of the
            new global model.
        submissions
            The round's submissions, for their committed hashes and CIDs.
        chain
            ``{"consortium": address, "chain_id": id}``; None in the in-memory simulator.
        inputs
            Where the defense's other inputs are published, ``{"validation": {"hash", "cid"},
            "defense_state": {"before": {"hash", "cid"}, "after": {"hash", "cid"}}}``, so an
            auditor can re-run it; None where nothing is published.
        """
        committed = {s.member: s for s in submissions}
        members = []
        for decision in self.decisions:
            entry = decision.to_dict()
            sub = committed[decision.member]
            entry["update_hash"] = "0x" + sub.update_hash.hex()
            entry["update_cid"] = sub.update_cid
            members.append(entry)
        return {
            "format": REPORT_FORMAT,
            "round": self.round_id,
            "consortium": (chain or {}).get("consortium"),
            "chain_id": (chain or {}).get("chain_id"),
            "task": task.to_dict(),
            "base_model": base_model,
            "result_model": result_model,
            "members": members,
            "defense": self.defense_report,
            "execution": self.execution,
            **(inputs or {}),
        }


def unavailable(fetch_error: str) -> str:
    """The rejection reason of an update that could not be fetched although our own IPFS
    daemon answers."""
    return f"unavailable: {fetch_error}"


def sort_verdicts(verdicts: Iterable[tuple[str, int, str, Any, int]]
                  ) -> tuple[list[MemberDecision], list[str], list[Any], list[int]]:
    """The round's decisions from per-member verdicts ``(member, index, reason, values,
    claimed samples)``, a reason of "" meaning accepted: the decisions in member-index order,
    and the accepted members with their values and claims in that order. The engine's
    `screen` and the aggregator's `UpdateCollector` (whose values are matrix rows) share it."""
    decisions, accepted, values, claims = [], [], [], []
    for member, index, reason, value, claim in sorted(verdicts, key=lambda v: v[1]):
        if reason:
            decisions.append(MemberDecision(member, index, "rejected", reason))
            continue
        decisions.append(MemberDecision(member, index, "accepted"))
        accepted.append(member)
        values.append(value)
        claims.append(claim)
    return decisions, accepted, values, claims


class RoundEngine:
    """The round policy for one federation task and one defense.

    Parameters
    ----------
    task
        The federation's task; fixes the model and the training hyper-parameters.
    defense
        The aggregation method; stateful methods (FLEML) learn across :meth:`decide` calls.
    validation
        The aggregator's clean data ``(x, y)``: FLEML's look-ahead and FLTrust's root data.
    """

    def __init__(self, task: TaskConfig, defense: Defense,
                 validation: tuple[Tensor, Tensor] | None = None) -> None:
        self.task = task
        self.defense = defense
        self.validation = validation
        self.model = task.initial_model()
        self.spec = ParamSpec.from_named(get_params(self.model))

    # -- deciding ------------------------------------------------------------------------
    def screen(self, round_id: int, submissions: Sequence[Submission]) -> Screened:
        """Apply the rejection rules to every submission (see the module docstring)."""
        decisions, accepted, rows, claims = sort_verdicts(
            (sub.member, sub.index, *self._check(round_id, sub)) for sub in submissions)
        if len(set(accepted)) != len(accepted):
            raise ValueError("a member appears twice among the round's submissions")
        return Screened(decisions, accepted, torch.stack(rows) if rows else None, claims)

    def _check(self, round_id: int, sub: Submission) -> tuple[str, Tensor | None, int]:
        if sub.blob is None:
            return unavailable(sub.fetch_error), None, 0
        return self.check(round_id, sub.member, sub.update_hash, sub.blob)

    def check(self, round_id: int, member: str, update_hash: bytes, blob: bytes,
              out: Tensor | None = None) -> tuple[str, Tensor | None, int]:
        """The rejection rules after ``unavailable`` for one member's fetched bytes.

        Returns ``(reason, flat, claimed samples)``: ``reason`` is "" for an accepted update,
        whose values ``flat`` holds as one float32 vector. With ``out`` (a float32 vector of
        the model's size, e.g. a row of a preallocated matrix) the values are written there and
        ``flat`` is ``out``: the aggregator checks updates as they arrive without holding a
        second copy. The verdict depends only on the arguments, so it may be computed before
        the round closes and applied at the close.
        """
        digest = content_hash(blob)
        if digest != update_hash:
            return (f"tampered: content hash 0x{digest.hex()} does not match the commitment "
                    f"0x{update_hash.hex()}"), None, 0
        try:
            payload = decode_update(blob, Codec.of(self.task), expected_round=round_id,
                                    expected_spec=self.spec)
        except InvalidPayload as exc:
            return f"invalid: {exc}", None, 0
        author = payload.extra.get("member")
        if not isinstance(author, str) or author.lower() != member.lower():
            return f"copied: the update names member {author!r}, not its submitter", None, 0
        if out is None:
            flat = flatten(payload.tensors)
        else:  # the same values flatten() gives, written in place
            flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float32)
                              for t in payload.tensors.values()], out=out)
        extra = payload.extra
        del payload  # the decoded tensors: only the row is kept
        norm = torch.linalg.vector_norm(flat.double()).item()
        if not norm <= MAX_UPDATE_NORM:
            return f"invalid: update norm {norm:.3g} exceeds {MAX_UPDATE_NORM:g}", None, 0
        return "", flat, claimed_samples(extra)

    def decide(self, round_id: int, base: dict[str, Tensor],
               submissions: Sequence[Submission]) -> RoundOutcome:
        """Decide round `round_id` on the base model `base` from the members' submissions.

        Stateful defenses update their state; a caller that may fail before committing the
        result takes :meth:`defense_state` first and restores it on failure.
        """
        return self.decide_screened(round_id, base, self.screen(round_id, submissions))

    def decide_screened(self, round_id: int, base: dict[str, Tensor],
                        screened: Screened) -> RoundOutcome:
        """:meth:`decide` on submissions already screened (the audit screens them once)."""
        screened = Screened([MemberDecision(d.member, d.index, d.status, d.reason)
                             for d in screened.decisions], screened.accepted,
                            screened.updates, screened.claims)
        base_flat = flatten(base)
        decisions = screened.decisions
        state_before, execution = self.defense_state(), {}
        if screened.updates is None:
            aggregate, defense_report = torch.zeros_like(base_flat), None
        else:
            with execution_settings() as execution:
                result = self.defense.aggregate(screened.updates, self._context(
                    round_id, base, screened.accepted, capped_counts(screened.claims)))
            aggregate, defense_report = result.update, result.to_dict()
            by_id = {c.client_id: c for c in result.clients}
            for d in decisions:
                if d.status == "accepted":
                    client = by_id[d.member]
                    d.coefficient = client.coefficient
                    if client.flagged:
                        d.status = "flagged"
        result_params = unflatten(base_flat + aggregate, self.spec)
        return RoundOutcome(
            round_id, decisions, defense_report, aggregate, result_params,
            bitmap_indices=[d.index for d in decisions if d.status != "accepted"],
            updates=screened.updates, state_before=state_before,
            state_after=self.defense_state(), execution=execution)

    def _context(self, round_id: int, base: dict[str, Tensor], ids: list[str],
                 counts: list[int]) -> RoundContext:
        self.model.load_state_dict(base)
        x_val, y_val = self.validation if self.validation else (None, None)
        return RoundContext(client_ids=ids, sample_counts=counts, round_number=round_id,
                            global_params=flatten(base), model=self.model, x_val=x_val,
                            y_val=y_val, root_update=lambda: self._root_update(base, round_id),
                            seed=self.task.seed)

    def _root_update(self, base: dict[str, Tensor], round_id: int) -> Tensor:
        """The aggregator's own update on its clean data (FLTrust's server update)."""
        if self.validation is None:
            raise ValueError("this defense needs the aggregator's validation data")
        update, _ = local_train(self.task.initial_model(), base, self.validation[0],
                                self.validation[1], self.task.train,
                                make_generator(self.task.seed, round_id, 10**6))
        return flatten(update)

    def defense_state(self) -> dict[str, Any] | None:
        """The defense's learned state (None for stateless methods)."""
        return self.defense.state_dict() if hasattr(self.defense, "state_dict") else None

    def restore_defense(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.defense.load_state_dict(state)


# -- verifying ---------------------------------------------------------------------------------
# (name, verdict, detail): True passed, False failed, None inconclusive (an input the check
# needs could not be had: never a pass, never a failure)
Check = tuple[str, bool | None, str]


@dataclass(frozen=True)
class DefenseInputs:
    """What re-running a learned defense (FLEML, FLTrust) needs besides the updates.

    Parameters
    ----------
    validation
        The committed validation set ``(x, y)``, or None when it could not be had.
    state_before
        The defense's published state before the round (None for stateless methods).
    missing
        Why an input could not be fetched; the re-run is then inconclusive.
    """

    validation: tuple[Tensor, Tensor] | None = None
    state_before: dict[str, Any] | None = None
    missing: str = ""


@dataclass
class MemberCheck:
    """The audit's view of one member: what the policy says against what the report says."""

    address: str
    index: int
    committed_hash: str
    status_in_report: str
    ok: bool | None  # None: inconclusive (the update cannot be fetched here)
    detail: str


@dataclass
class Verification:
    """The result of re-checking a round's report against its inputs."""

    checks: list[Check] = field(default_factory=list)
    members: list[MemberCheck] = field(default_factory=list)

    def add(self, name: str, ok: bool | None, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        return ok is not False


def verify_round(round_id: int, submissions: Sequence[Submission], base: dict[str, Tensor],
                 result: dict[str, Tensor], report: dict[str, Any], bitmap: Sequence[int],
                 inputs: DefenseInputs | None = None) -> Verification:
    """Re-check a round's report with the same rules :meth:`RoundEngine.decide` applies.

    Parameters
    ----------
    round_id
        The round.
    submissions
        Every committed submission of the round, with the bytes the auditor fetched.
    base, result
        The base and the finalized global model (already checked against their hashes).
    report
        The round report (already checked against its hash): the claim being verified.
    bitmap
        The flagged bitmap the round was finalized with.
    inputs
        The committed validation set and the published defense state before the round, for
        FLEML and FLTrust, which are then re-run bit for bit; without them their coefficients
        are only checked for admissibility and the re-run is inconclusive.

    Returns
    -------
    Verification
        One entry per check; a failed check never raises.
    """
    out = Verification()
    task = task_from_report(report["task"])
    defense_report = report.get("defense")
    method = defense_report["method"] if defense_report else "fedavg"
    params = defense_report["params"] if defense_report else {}
    engine = RoundEngine(task, make_defense(method, **params))
    if round_id == 1:
        # later rounds are chained on chain: each opens on the previous round's result
        out.add("round 1 starts from the task's initial model",
                torch.equal(flatten(get_params(task.initial_model())), flatten(base)))

    by_member = {e["address"]: e for e in report["members"]}
    committed = {s.member: s for s in submissions}
    _check_listing(out, report["members"], by_member, committed)
    screened = engine.screen(round_id, submissions)
    out.members = [_member_check(d, committed[d.member], by_member) for d in screened.decisions]
    claimed = {committed[a].index for a, e in by_member.items()
               if e.get("status") in ("flagged", "rejected") and a in committed}
    on_chain = bitmap_indices(bitmap)
    out.add("flagged bitmap matches the report", on_chain == claimed,
            f"chain {sorted(on_chain)}, report {sorted(claimed)}")
    expected = _expected_model(out, engine, round_id, screened, defense_report, by_member,
                               flatten(base))
    if defense_report is not None and defense_report["method"] not in STATELESS_DEFENSES:
        _rerun_learned(out, task, round_id, base, screened, report, inputs)
    if expected is not None:
        result_flat = flatten(result)
        same = torch.equal(expected, result_flat)
        diff = 0.0 if same else (expected - result_flat).abs().max().item()
        out.add("aggregation replays to the finalized model", same,
                "bit-for-bit" if same else f"max abs difference {diff:.3g}")
    return out


def _check_listing(out: Verification, entries: list[dict[str, Any]],
                   by_member: dict[str, dict[str, Any]], committed: dict[str, Submission]) -> None:
    """The report lists every committed submission once, under its on-chain index."""
    out.add("report lists exactly the committed submissions, once each",
            len(by_member) == len(entries) and sorted(by_member) == sorted(committed),
            f"{len(committed)} on chain, {len(entries)} in report")
    wrong_index = [a for a, e in by_member.items()
                   if a in committed and e.get("index") != committed[a].index]
    out.add("report's member indices are the chain's", not wrong_index,
            f"wrong for {wrong_index}" if wrong_index else "")


def _member_check(decision: MemberDecision, sub: Submission,
                  by_member: dict[str, dict[str, Any]]) -> MemberCheck:
    """The rules' verdict on one member against the status the report gives it."""
    status = by_member.get(decision.member, {}).get("status", "missing")
    if decision.status == "rejected" and decision.reason.startswith("unavailable") \
            and status in ("accepted", "flagged"):
        # the aggregator had the bytes, the auditor cannot get them: nobody can tell who is
        # right, and unpinning an update must not frame an honest aggregator
        ok: bool | None = None
        detail = decision.reason + "; the report used it: inconclusive"
    elif decision.status == "rejected":
        ok = status == "rejected"
        detail = decision.reason + ("; rightly rejected" if ok else "; yet the aggregator used it")
    else:
        ok = status in ("accepted", "flagged")
        detail = "commitment matches" + ("" if ok else f", but the report says {status}")
    return MemberCheck(decision.member, decision.index, "0x" + sub.update_hash.hex(), status,
                       ok, detail)


def _expected_model(out: Verification, engine: RoundEngine, round_id: int, screened: Screened,
                    defense_report: dict[str, Any] | None,
                    by_member: dict[str, dict[str, Any]], base_flat: Tensor) -> Tensor | None:
    """The global model the report implies (None when a check already failed fatally)."""
    if defense_report is None:
        ok = out.add("no verified update was left out", screened.updates is None,
                     f"{len(screened.accepted)} verified updates, no aggregation reported")
        return base_flat if ok else None
    clients = defense_report["clients"]
    order = [c["client_id"] for c in clients]
    unfetched = [d.member for d in screened.decisions if d.member in order
                 and d.status == "rejected" and d.reason.startswith("unavailable")]
    if unfetched:
        out.add("aggregation replays to the finalized model", None,
                f"{len(unfetched)} update(s) the report used cannot be fetched here")
        return None
    if not out.add("report's clients are the verified updates", order == screened.accepted,
                   f"{len(order)} in report, {len(screened.accepted)} verified"):
        return None
    mismatched = [c["client_id"] for c in clients
                  if c["flagged"] != (by_member[c["client_id"]]["status"] == "flagged")]
    out.add("flags agree between members and the defense", not mismatched,
            f"disagree for {mismatched}" if mismatched else "")
    method, updates = defense_report["method"], screened.updates
    if method in STATELESS_DEFENSES:
        rerun = engine.defense.aggregate(updates, RoundContext(
            client_ids=order, sample_counts=capped_counts(screened.claims),
            round_number=round_id))
        out.add(f"{method} re-run from the updates gives the reported aggregate",
                torch.equal(rerun.update, replay(updates, defense_report)))
    else:
        bad = [c["client_id"] for c in clients if c["coefficient"] is not None and (
            float.fromhex(c["coefficient_hex"]) < 0
            or (c["flagged"] and float.fromhex(c["coefficient_hex"]) != 0))]
        out.add("coefficients are admissible (>= 0, zero when flagged)", not bad,
                f"not for {bad}" if bad else "")
    try:
        return base_flat + replay(updates, defense_report)
    except (ValueError, KeyError, TypeError) as exc:
        out.add("aggregation replays to the finalized model", False,
                f"report cannot be replayed: {exc}")
        return None


def _rerun_learned(out: Verification, task: TaskConfig, round_id: int, base: dict[str, Tensor],
                   screened: Screened, report: dict[str, Any],
                   inputs: DefenseInputs | None) -> None:
    """Re-run FLEML or FLTrust from the committed inputs and compare every bit it decided."""
    claimed = report["defense"]
    name = (f"{claimed['method']} re-run from the committed validation set and state gives "
            "the reported flags, coefficients, aggregate and state")
    if inputs is None or inputs.missing or inputs.validation is None:
        out.add(name, None, inputs.missing if inputs and inputs.missing
                else "the report publishes no validation set or defense state to re-run from")
        return
    engine = RoundEngine(task, make_defense(claimed["method"], **claimed["params"]),
                         inputs.validation)
    try:
        engine.restore_defense(inputs.state_before)
    except (ValueError, KeyError, TypeError) as exc:
        out.add(name, False, f"the published state cannot be loaded: {exc}")
        return
    rerun = engine.decide_screened(round_id, base, screened)
    mine = {d.member: d for d in rerun.decisions if d.status != "rejected"}
    problems, worst = [], 0.0
    for client in claimed["clients"]:
        decision = mine.get(client["client_id"])
        if decision is None:
            problems.append(f"{client['client_id']} not aggregated on re-run")
            continue
        if (decision.status == "flagged") != client["flagged"]:
            problems.append(f"{client['client_id']} flagged {client['flagged']} in the report, "
                            f"{decision.status == 'flagged'} on re-run")
        if client["coefficient"] is not None and decision.coefficient is not None \
                and float.fromhex(client["coefficient_hex"]) != decision.coefficient:
            worst = max(worst, abs(float.fromhex(client["coefficient_hex"])
                                   - decision.coefficient))
    if worst:
        problems.append(f"coefficients differ by up to {worst:.3g}")
    if rerun.defense_report and rerun.defense_report["aggregate_sha256"] != \
            claimed["aggregate_sha256"]:
        problems.append("the aggregate differs")
    after = report.get("defense_state", {}).get("after", {}).get("hash")
    if rerun.state_after is not None and after != \
            "0x" + content_hash(encode_state(rerun.state_after)).hex():
        problems.append("the state after the round differs from the published one")
    if problems:
        mine = {**EXECUTION_SETTINGS, **execution_environment()}
        recorded = {k: (report.get("execution") or {}).get(k) for k in mine}
        if recorded != mine:  # a re-run elsewhere may round differently: say where it ran
            problems.append("recorded run on " + _environment(recorded) + ", this re-run on "
                            + _environment(mine))
    out.add(name, not problems, "; ".join(problems) or "bit-for-bit")


def _environment(env: dict[str, Any]) -> str:
    settings = "" if all(env.get(k) == v for k, v in EXECUTION_SETTINGS.items()) else \
        f" ({env.get('torch_threads')} torch threads, deterministic algorithms " \
        f"{env.get('deterministic_algorithms')})"
    return (f"torch {env.get('torch')}, fleml_node {env.get('fleml_node')}, "
            f"{env.get('machine')} {env.get('cpu_capability')}{settings}")


def task_from_report(task: dict[str, Any]) -> TaskConfig:
    """The :class:`TaskConfig` a round report records."""
    from fleml_node.learning import TrainConfig

    fields = dict(task)
    return TaskConfig(**{**fields, "train": TrainConfig(**fields["train"])})
