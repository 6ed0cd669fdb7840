"""The aggregator's node: open, close, aggregate with the defense, publish and finalize rounds.

The aggregator is not trusted: everything it decides is committed on chain and in the round
report on IPFS, so an auditor can replay it (see :mod:`fleml_node.audit`). It holds no state
that the chain does not also reflect, except the defense's learned state (FLEML's weighting
network and client history), which it saves after every finalized round. Each call of
:meth:`AggregatorNode.step` reads the round's status from the chain and does the next thing:

* no round, or the last one finalized: publish the global model and open the next round;
* open: close it once the quorum is reached or the deadline has passed;
* closed: fetch every committed update, reject those whose bytes do not match their
  commitment or do not parse, run the defense on the rest, publish the new global model and
  the round report, and finalize with the flagged set.

So an aggregator killed at any point finishes the round on restart: a closed round is
aggregated again from the same inputs and the same saved defense state, and the defense is
deterministic, so the result is the same.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import torch
from torch import Tensor, nn

from fleml_node.chain.contract import ChainError, Consortium, RoundInfo, RoundStatus
from fleml_node.chain.events import round_events
from fleml_node.defense import Defense, RoundContext
from fleml_node.learning import flatten, get_params, local_train, make_generator, unflatten
from fleml_node.learning.params import ParamSpec
from fleml_node.storage import (
    HashMismatch,
    IpfsRequestError,
    IpfsStore,
    IpfsUnavailable,
    StorageError,
    content_hash,
    decode_tensors,
    encode_report,
    encode_tensors,
)
from fleml_node.task import TaskConfig

log = logging.getLogger(__name__)

REPORT_FORMAT = "fleml-round-report/1"
SAMPLE_CLAIM_CAP = 4  # claimed sample counts above 4x the round's median are clipped to it
MAX_SAMPLE_CLAIM = 2**31  # larger or non-integer claims count as 1
# An update whose L2 norm (in float64) exceeds this is no training step; values that large
# also overflow the float32 statistics the defenses compute, so it is rejected on receipt.
MAX_UPDATE_NORM = 1e6


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


@dataclass
class RoundSummary:
    """What the aggregator did in one round (kept locally for progress and benchmarks)."""

    round_id: int
    submissions: int
    accepted: list[str]
    rejected: dict[str, str]
    flagged: list[str]
    coefficients: dict[str, float | None]
    result_cid: str
    report_cid: str
    gas_used: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


class AggregatorNode:
    """The consortium's aggregator.

    Parameters
    ----------
    consortium
        Contract binding with the aggregator's signing account.
    store
        IPFS access.
    defense
        The aggregation method (FLEML by default; any :class:`Defense`).
    task
        The federation's task; fixes the model and the validation data.
    validation
        The aggregator's small clean data set ``(x, y)``: FLEML's look-ahead and FLTrust's
        root data. None for methods that do not use it.
    state_dir
        Where the defense's state and cached global models are kept.
    until_round
        Stop once this round number is finalized (an absolute round id, not a count).
    round_seconds
        Submission window of each round.
    quorum
        Submissions that close a round early; 0 means every active member.
    evaluate
        Optional ``model -> metrics`` called on each new global model (e.g. test accuracy).
    """

    def __init__(self, consortium: Consortium, store: IpfsStore, defense: Defense,
                 task: TaskConfig, state_dir: Path, until_round: int, round_seconds: int = 120,
                 quorum: int = 0, validation: tuple[Tensor, Tensor] | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None) -> None:
        if consortium.account is None:
            raise ValueError("the aggregator needs a signing account")
        if until_round < 1 or round_seconds < 1 or quorum < 0:
            raise ValueError("until_round and round_seconds must be >= 1, quorum >= 0")
        self.consortium = consortium
        self.store = store
        self.defense = defense
        self.task = task
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.until_round = until_round
        self.round_seconds = round_seconds
        self.quorum = quorum
        self.validation = validation
        self.evaluate = evaluate
        self.model = task.initial_model()
        self.spec = ParamSpec.from_named(get_params(self.model))
        self.summaries: list[RoundSummary] = []
        # block that opened each round this process opened: event scans start there
        self._opened_at: dict[int, int] = {}
        self._load_defense_state()

    # -- the state machine ---------------------------------------------------------------
    def step(self) -> str:
        """Do the next thing the chain's state calls for; returns what was done."""
        current = self.consortium.current_round()
        if current == 0:
            digest, cid, _ = self._publish_model(get_params(self.model), 0)
            self._open(1, digest, cid)
            return "opened"
        info = self.consortium.get_round(current)
        if info.status is RoundStatus.OPEN:
            return self._maybe_close(info)
        if info.status is RoundStatus.CLOSED:
            # a failed attempt must not leave the defense having learned from this round
            snapshot = self._defense_snapshot()
            try:
                self._aggregate_and_finalize(info)
            except Exception:
                self._restore_defense(snapshot)
                raise
            return "finalized"
        if current >= self.until_round:
            return "done"
        self._open(current + 1, info.result_hash,
                   self._cid_of(current, "RoundFinalized", "resultCid"))
        return "opened"

    def run(self, poll_interval: float = 1.0, on_step: Callable[[str], None] | None = None,
            max_failures: int = 10) -> list[RoundSummary]:
        """Step until the configured number of rounds is finalized.

        A failed step (RPC or IPFS hiccup, a transaction refused) is retried after
        `poll_interval`; the chain holds the round's state, so retrying is safe. After
        `max_failures` failures in a row the last error is raised.
        """
        failures = 0
        while True:
            try:
                did = self.step()
            except (ChainError, StorageError, requests.RequestException) as exc:
                failures += 1
                if failures >= max_failures:
                    raise
                log.warning("step failed (%d of %d): %s; retrying", failures, max_failures, exc)
                time.sleep(poll_interval)
                continue
            failures = 0
            if on_step:
                on_step(did)
            if did == "done":
                return self.summaries
            if did == "waiting":
                time.sleep(poll_interval)

    # -- opening and closing -------------------------------------------------------------
    def _publish_model(self, params: dict[str, Tensor], round_id: int
                       ) -> tuple[bytes, str, bytes]:
        blob = encode_tensors(params, kind="model", round=round_id,
                              extra={"dataset": self.task.dataset})
        cid = self.store.put(blob)
        return content_hash(blob), cid, blob

    def _open(self, round_id: int, digest: bytes, cid: str) -> None:
        quorum = self.quorum or self.consortium.active_members()
        quorum = min(quorum, self.consortium.active_members())
        deadline = self.consortium.now() + self.round_seconds
        receipt = self.consortium.open_round(digest, cid, deadline, quorum)
        self._opened_at[round_id] = int(receipt["blockNumber"])
        log.info("round %d opened on model %s (quorum %d, %d s)", round_id, cid, quorum,
                 self.round_seconds)

    def _maybe_close(self, info: RoundInfo) -> str:
        if info.submissions < info.quorum and self.consortium.now() <= info.deadline:
            return "waiting"
        self.consortium.close_round(info.round_id)
        log.info("round %d closed with %d submission(s)%s", info.round_id, info.submissions,
                 "" if info.submissions >= info.quorum else " after the deadline")
        return "closed"

    # -- aggregation ---------------------------------------------------------------------
    def _aggregate_and_finalize(self, info: RoundInfo) -> None:
        r = info.round_id
        t0 = time.perf_counter()
        events = round_events(self.consortium, r, self._opened_at.get(r))
        base_blob = self._model_bytes(info.model_hash, r, "RoundOpened", "modelCid", events)
        base = decode_tensors(base_blob, expected_kind="model", expected_spec=self.spec)
        base_flat = flatten(base.tensors)

        index_of = {e.args["member"]: self.consortium.member_info(e.args["member"])[2]
                    for e in events.get("UpdateSubmitted", [])}
        submissions = sorted(events.get("UpdateSubmitted", []),
                             key=lambda e: index_of[e.args["member"]])
        accepted: list[tuple[str, Tensor, int]] = []
        rejected: dict[str, str] = {}
        bytes_down = 0
        members = []
        for event in submissions:
            member, digest = event.args["member"], bytes(event.args["updateHash"])
            cid = event.args["updateCid"]
            index = index_of[member]
            entry = {"address": member, "index": index, "update_hash": "0x" + digest.hex(),
                     "update_cid": cid}
            try:
                blob = self.store.get(cid, expected_hash=digest)
                bytes_down += len(blob)
                payload = decode_tensors(blob, expected_kind="update", expected_round=r,
                                         expected_spec=self.spec)
            except (IpfsUnavailable, IpfsRequestError):
                raise  # our own daemon is in trouble, not the member: retry the step later
            except HashMismatch as exc:
                rejected[member] = f"tampered: {exc}"
            except StorageError as exc:
                rejected[member] = f"invalid: {exc}"
            else:
                flat = flatten(payload.tensors)
                norm = torch.linalg.vector_norm(flat.double()).item()
                if not norm <= MAX_UPDATE_NORM:
                    rejected[member] = (f"invalid: update norm {norm:.3g} exceeds "
                                        f"{MAX_UPDATE_NORM:g}")
                else:
                    accepted.append((member, flat, claimed_samples(payload.extra)))
            entry["status"] = "rejected" if member in rejected else "accepted"
            if member in rejected:
                entry["reason"] = rejected[member]
                log.warning("round %d: update of %s rejected: %s", r, member, rejected[member])
            members.append(entry)
        t1 = time.perf_counter()

        if accepted:
            updates = torch.stack([u for _, u, _ in accepted])
            ids = [m for m, _, _ in accepted]
            counts = capped_counts([s for _, _, s in accepted])
            ctx = RoundContext(client_ids=ids, sample_counts=counts, round_number=r,
                               global_params=base_flat, model=self.model,
                               x_val=self.validation[0] if self.validation else None,
                               y_val=self.validation[1] if self.validation else None,
                               root_update=lambda: self._root_update(base.tensors, r),
                               seed=self.task.seed)
            result = self.defense.aggregate(updates, ctx)
            aggregate = result.update
            defense_report = result.to_dict()
            flagged = [c.client_id for c in result.clients if c.flagged]
            coefficients = {c.client_id: c.coefficient for c in result.clients}
        else:
            aggregate = torch.zeros_like(base_flat)
            defense_report, flagged, coefficients = None, [], {}
        for entry in members:
            if entry["address"] in flagged:
                entry["status"] = "flagged"
        new_flat = base_flat + aggregate
        new_params = unflatten(new_flat, self.spec)
        t2 = time.perf_counter()

        result_hash, result_cid, result_blob = self._publish_model(new_params, r)
        report = {
            "format": REPORT_FORMAT,
            "round": r,
            "consortium": self.consortium.address,
            "chain_id": self.consortium.deployment.chain_id,
            "task": self.task.to_dict(),
            "base_model": {"hash": "0x" + info.model_hash.hex(),
                           "cid": self._cid_of(r, "RoundOpened", "modelCid", events)},
            "result_model": {"hash": "0x" + result_hash.hex(), "cid": result_cid},
            "members": members,
            "defense": defense_report,
        }
        report_blob = encode_report(report)
        report_hash, report_cid = content_hash(report_blob), self.store.put(report_blob)
        bitmap = flagged_bitmap(
            [e["index"] for e in members if e["status"] in ("flagged", "rejected")],
            self.consortium.member_slots())
        t3 = time.perf_counter()
        # the state after round r is written before the round is finalized and becomes
        # current once it is: a crash in between neither loses it nor applies it twice
        self._write_defense_state(r, self._pending_file)
        receipt = self.consortium.finalize_round(r, result_hash, result_cid, report_hash,
                                                 report_cid, bitmap)
        t4 = time.perf_counter()
        if self._pending_file.exists():
            self._pending_file.replace(self._state_file)
        self.model.load_state_dict(new_params)
        summary = RoundSummary(
            round_id=r, submissions=len(submissions), accepted=[m for m, _, _ in accepted],
            rejected=rejected, flagged=flagged, coefficients=coefficients,
            result_cid=result_cid, report_cid=report_cid,
            gas_used={"finalizeRound": int(receipt["gasUsed"])},
            seconds={"fetch_verify": t1 - t0, "defense": t2 - t1, "publish": t3 - t2,
                     "chain": t4 - t3},
            bytes_down=bytes_down, bytes_up=len(result_blob) + len(report_blob),
        )
        if self.evaluate:
            summary.metrics = self.evaluate(self.model)
        self.summaries.append(summary)
        log.info("round %d finalized: %d accepted, %d rejected, %d flagged; model %s",
                 r, len(accepted), len(rejected), len(flagged), result_cid)

    def _root_update(self, base: dict[str, Tensor], round_id: int) -> Tensor:
        """The aggregator's own update on its clean data (FLTrust's server update)."""
        if self.validation is None:
            raise ValueError("this defense needs the aggregator's validation data")
        model = self.task.initial_model()
        update, _ = local_train(model, base, self.validation[0], self.validation[1],
                                self.task.train, make_generator(self.task.seed, round_id, 10**6))
        return flatten(update)

    # -- models on IPFS ------------------------------------------------------------------
    def _cid_of(self, round_id: int, event: str, arg: str,
                events: dict[str, Any] | None = None) -> str:
        found = (events or round_events(self.consortium, round_id,
                                        self._opened_at.get(round_id))).get(event)
        if not found:
            raise RuntimeError(f"round {round_id} has no {event} event on chain")
        return found[-1].args[arg]

    def _model_bytes(self, digest: bytes, round_id: int, event: str, arg: str,
                     events: dict[str, Any] | None = None) -> bytes:
        return self.store.get(self._cid_of(round_id, event, arg, events), expected_hash=digest)

    # -- defense state -------------------------------------------------------------------
    # FLEML learns across rounds. Its state is saved per round, tagged with the contract and
    # the round, as `defense_state.pending.json` before finalizing and renamed to
    # `defense_state.json` after; on start, a pending state is kept only if the chain shows
    # its round finalized.
    @property
    def _state_file(self) -> Path:
        return self.state_dir / "defense_state.json"

    @property
    def _pending_file(self) -> Path:
        return self.state_dir / "defense_state.pending.json"

    def _defense_snapshot(self) -> dict[str, Any] | None:
        return self.defense.state_dict() if hasattr(self.defense, "state_dict") else None

    def _restore_defense(self, snapshot: dict[str, Any] | None) -> None:
        if snapshot is not None:
            self.defense.load_state_dict(snapshot)

    def _write_defense_state(self, round_id: int, path: Path) -> None:
        state = self._defense_snapshot()
        if state is None:
            return
        record = {"contract": self.consortium.address, "round": round_id,
                  "method": self.defense.name, "state": state}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    def _load_defense_state(self) -> None:
        if not hasattr(self.defense, "load_state_dict"):
            return
        if self._pending_file.exists():
            pending = json.loads(self._pending_file.read_text())
            done = self.consortium.get_round(pending["round"]).status is RoundStatus.FINALIZED
            if done and pending["contract"] == self.consortium.address:
                self._pending_file.replace(self._state_file)
            else:
                self._pending_file.unlink()
        if not self._state_file.exists():
            return
        record = json.loads(self._state_file.read_text())
        if record.get("contract") != self.consortium.address or \
                record.get("method") != self.defense.name:
            log.warning("ignoring %s: it belongs to another consortium or method",
                        self._state_file)
            return
        self.defense.load_state_dict(record["state"])
        log.info("restored the defense's state after round %d", record["round"])

def flagged_bitmap(indices: list[int], member_slots: int) -> list[int]:
    """Member indices as the contract's bitmap: bit i of word i // 256."""
    words = [0] * ((member_slots + 255) // 256)
    for index in indices:
        words[index // 256] |= 1 << (index % 256)
    while words and words[-1] == 0:
        words.pop()
    return words
