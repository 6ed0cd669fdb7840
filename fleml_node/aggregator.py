"""The aggregator's node: open, close, aggregate with the defense, publish and finalize rounds.

The aggregator is not trusted: everything it decides is committed on chain and in the round
report on IPFS, so an auditor can re-run it (see :mod:`fleml_node.audit`). It holds no state
that the chain and IPFS do not also hold: even the defense's learned state (FLEML's weighting
network and client history) is restored before each aggregation from the report of the round
the new one builds on (:mod:`fleml_node.history`). Each call of
:meth:`AggregatorNode.step` reads the round's status from the chain and does the next thing:

* no round, or the last one finalized: publish the global model and open the next round;
* open: close it once the quorum is reached or the deadline has passed;
* closed: fetch every committed update (concurrently), let the round engine
  (:mod:`fleml_node.round_engine`, the one policy the audit and the simulator also apply)
  reject, defend and aggregate, publish the new global model and the round report, and
  finalize with the flagged set.

This class does only the I/O and the state machine around the engine.

So an aggregator killed at any point finishes the round on restart: a closed round is
aggregated again from the same inputs and the same saved defense state, and the defense is
deterministic, so the result is the same.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from eth_utils.abi import event_abi_to_log_topic
from torch import Tensor, nn

from fleml_node.chain.contract import (
    ChainError,
    Consortium,
    RoundInfo,
    RoundStatus,
    SubmissionMode,
    tx_hash,
)
from fleml_node.chain.events import ChainEvent, LogWatch, fetch_events, round_events
from fleml_node.defense import Defense
from fleml_node.defense.base import tensor_sha256
from fleml_node.history import base_round, published_state_after
from fleml_node.learning import get_params
from fleml_node.retry import Backoff, is_permanent, is_transient
from fleml_node.round_engine import (
    DecisionsView,
    MemberDecision,
    RoundEngine,
    RoundOutcome,
    Screened,
    decode_validation,
    encode_state,
    encode_validation,
    sort_verdicts,
    unavailable,
    update_size_cap,
)
from fleml_node.storage import (
    IpfsError,
    IpfsStore,
    content_hash,
    decode_tensors,
    encode_report,
    encode_tensors,
)
from fleml_node.storage.local import atomic_write
from fleml_node.submissions import fetch_member_object
from fleml_node.task import TaskConfig

log = logging.getLogger(__name__)


@dataclass
class RoundSummary(DecisionsView):
    """What the aggregator did in one round (kept locally for progress and benchmarks)."""

    round_id: int
    submissions: int
    decisions: list[MemberDecision]
    aggregate_sha256: str
    result_cid: str
    report_cid: str
    transactions: dict[str, str] = field(default_factory=dict)
    gas_used: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    matrix_bytes: int = 0  # the preallocated update matrix the round was verified into


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
    until_round
        Stop once this round number is finalized (an absolute round id, not a count).
    round_seconds
        Submission window of each round.
    quorum
        Submissions that close a round early; 0 means every active member.
    evaluate
        Optional ``model -> metrics`` called on each new global model (e.g. test accuracy).
    results_dir
        Optional folder for per-round results (:class:`RoundResults`: results.json and
        results.csv, as `fleml-node simulate` writes), rewritten after each finalized round.
    """

    def __init__(self, consortium: Consortium, store: IpfsStore, defense: Defense,
                 task: TaskConfig, until_round: int, round_seconds: int = 120,
                 quorum: int = 0, validation: tuple[Tensor, Tensor] | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 results_dir: str | os.PathLike[str] | None = None) -> None:
        if consortium.account is None:
            raise ValueError("the aggregator needs a signing account")
        if until_round < 1 or round_seconds < 1 or quorum < 0:
            raise ValueError("until_round and round_seconds must be >= 1, quorum >= 0")
        self.consortium = consortium
        self.store = store
        self.engine = RoundEngine(task, defense, validation)
        self.task = task
        self.until_round = until_round
        self.round_seconds = round_seconds
        self.quorum = quorum
        self.evaluate = evaluate
        self.model = task.initial_model()
        self.summaries: list[RoundSummary] = []
        self.abandoned: list[int] = []
        self._validation_ref: dict[str, str] | None = None  # published on first use
        self._validation_hash: bytes | None = None  # checked against the chain's
        self._state_before_ref: dict[str, str] | None = None  # published before deciding
        self.results = RoundResults(results_dir, consortium, defense, task) \
            if results_dir is not None else None
        self.consortium.check_version()
        self._check_validation_set()
        self._fresh_state = self.engine.defense_state()
        self.verify_workers = VERIFY_WORKERS
        self._collector: UpdateCollector | None = None
        self._indices: dict[str, int] = {}  # members' permanent indices, read once each
        self._published_base: tuple[bytes, dict[str, Tensor]] | None = None
        self._state_after_round = 0  # the round whose published state the engine now holds
        self._submitted_topic = "0x" + event_abi_to_log_topic(
            consortium.contract.events.UpdateSubmitted().abi).hex()

    @property
    def defense(self) -> Defense:
        return self.engine.defense

    # -- the state machine ---------------------------------------------------------------
    def step(self) -> str:
        """Do the next thing the chain's state calls for; returns what was done."""
        current = self.consortium.current_round()
        if current == 0:
            params = get_params(self.model)
            digest, cid, _ = self._publish_model(params, 0)
            self._published_base = (digest, {k: v.clone() for k, v in params.items()})
            self._open(1, digest, cid)
            return "opened"
        info = self.consortium.get_round(current)
        if info.status is RoundStatus.OPEN:
            self.watch(info)
            return self._progress(info)
        if info.status is RoundStatus.CLOSED:
            if info.submissions < info.min_submissions:  # closed by an earlier protocol step
                return self._abandon(info)
            self._aggregate_and_finalize(info)
            return "finalized"
        self._drop_collector()
        if info.status is RoundStatus.FINALIZED and not self.consortium.is_accepted(current):
            return "waiting"  # for the members' attestations, or the end of their window
        if current >= self.until_round:
            return "done"
        self._open(current + 1, self.consortium.base_model_hash(), self._base_model_cid())
        return "opened"

    def run(self, poll_interval: float = 1.0, on_step: Callable[[str], None] | None = None,
            backoff: Backoff | None = None, use_filter: bool = True) -> list[RoundSummary]:
        """Step until round `until_round` is finalized; never give up on an outage.

        While a round waits for submissions the node steps again when its log filter reports
        new consortium logs (each submission is then verified at once), and at least every
        `poll_interval` seconds (see :class:`~fleml_node.chain.events.LogWatch`).

        A transient failure (RPC or IPFS down, a receipt that did not come) is retried with
        capped backoff for as long as it lasts; the chain holds the round's state, so a retried
        step is safe. A permanent one (a revert) is logged once, and the node keeps reading
        the chain in case it changes (e.g. the operator restores this node's role).
        """
        backoff = backoff or Backoff(base=poll_interval)
        watch = LogWatch(self.consortium, poll_interval, use_filter)
        last_permanent = ""
        while True:
            try:
                did = self.step()
            except Exception as exc:
                if is_transient(exc):
                    time.sleep(backoff.failed("aggregator step", exc))
                    continue
                if not is_permanent(exc):
                    raise
                if str(exc) != last_permanent:
                    log.error("aggregator step refused, waiting for the chain to change: %s",
                              exc)
                    last_permanent = str(exc)
                time.sleep(poll_interval)
                continue
            backoff.succeeded("aggregator step")
            last_permanent = ""
            if on_step:
                on_step(did)
            if did == "done":
                return self.summaries
            if did == "waiting":
                watch.wait()

    # -- verifying updates as they arrive -----------------------------------------------
    @property
    def collector(self) -> UpdateCollector | None:
        """The open round's collector (None before a round is seen open, and after it)."""
        return self._collector

    def watch(self, info: RoundInfo | None = None) -> int:
        """Start verifying the open round's updates submitted since the last look.

        Reads the round's new `UpdateSubmitted` events (reveals, in commit-reveal mode) with
        one filtered log query and hands them to the round's :class:`UpdateCollector`, which
        fetches and checks them in the background. `step` calls it with the round it read;
        without `info` it looks only for the round `step` last saw open (two RPC calls, none
        when no block came), so a driver may call it often between other work. Returns the
        events seen this time.
        """
        collector = self._collector
        if info is not None:
            if info.status is not RoundStatus.OPEN:
                return 0
            collector = self._collector_for(info)
        elif collector is None:  # nothing open that we know of; `step` opens and reads rounds
            return 0
        head = self.consortium.w3.eth.block_number - self.consortium.profile.confirmations
        if head < collector.next_block:
            return 0
        round_id = collector.round_id
        topic = "0x" + round_id.to_bytes(32, "big").hex()
        found = [e for e in fetch_events(self.consortium, collector.next_block, head,
                                         topics=[self._submitted_topic, topic])
                 if e.args.get("roundId") == round_id]
        self._read_indices([e.args["member"] for e in found])
        collector.offer(found, self._indices.__getitem__)
        collector.next_block = head + 1
        return len(found)

    def _collector_for(self, info: RoundInfo) -> UpdateCollector:
        if self._collector is None or self._collector.round_id != info.round_id:
            return self._new_collector(info.round_id, info.opened_block
                                       or self.consortium.deployment.block_number)
        return self._collector

    def _new_collector(self, round_id: int, first_block: int) -> UpdateCollector:
        self._drop_collector()
        self._collector = UpdateCollector(
            round_id, self.engine, self.store, self.consortium.member_slots(),
            update_size_cap(self.engine.spec), self.verify_workers)
        self._collector.next_block = first_block
        return self._collector

    def _drop_collector(self) -> None:
        if self._collector is not None:
            self._collector.close()
            self._collector = None

    def _read_indices(self, members: list[str]) -> None:
        """Members' permanent indices (the contract never changes one), one batch for all."""
        missing = sorted({m for m in members if m not in self._indices})
        if missing:
            self._indices.update(self.consortium.member_indices(missing))

    # -- opening and closing -------------------------------------------------------------
    def _publish_model(self, params: dict[str, Tensor], round_id: int
                       ) -> tuple[bytes, str, bytes]:
        blob = encode_tensors(params, kind="model", round=round_id,
                              extra={"dataset": self.task.dataset})
        cid = self.store.put(blob)
        return content_hash(blob), cid, blob

    def _open(self, round_id: int, digest: bytes, cid: str) -> None:
        """Open a round within the policy: its duration range and its minimum submissions."""
        policy, active = self.consortium.policy(), self.consortium.active_members()
        minimum = policy.minimum_for(active)
        quorum = max(minimum, min(self.quorum or active, active))
        # a margin of 2 s each side: the opening block's time is a little after our clock's
        seconds = max(policy.min_round_seconds + 2,
                      min(self.round_seconds, policy.max_round_seconds - 2))
        receipt = self.consortium.open_round(digest, cid, self.consortium.now() + seconds,
                                             quorum)
        self._new_collector(round_id, int(receipt["blockNumber"]))
        log.info("round %d opened on model %s (%s mode, quorum %d, minimum %d, %d s)",
                 round_id, cid, policy.mode.name.lower().replace("_", "-"), quorum, minimum,
                 seconds)

    def _base_model_cid(self) -> str:
        """The CID of the model the next round builds on: the last accepted result, or, when
        no round was ever accepted, round 1's model (the chain holds only hashes)."""
        last = self.consortium.last_accepted_round()
        if last:
            return round_events(self.consortium, last)["RoundFinalized"][-1].args["resultCid"]
        return round_events(self.consortium, 1)["RoundOpened"][-1].args["modelCid"]

    def _progress(self, info: RoundInfo) -> str:
        """An open round: close it once it may close, abandon it once it cannot succeed."""
        now = self.consortium.now()
        if now > info.submission_end and info.submissions < info.min_submissions or (
                info.mode is SubmissionMode.COMMIT_REVEAL and now > info.deadline
                and info.commits < info.min_submissions):
            return self._abandon(info)  # the minimum can no longer be reached
        if info.mode is SubmissionMode.PLAIN:
            ready = info.submissions >= info.quorum or now > info.deadline
        else:  # early only when every commitment is revealed (the contract's rule)
            ready = now > info.reveal_deadline or (
                now > info.deadline and info.submissions >= info.quorum
                and info.submissions == info.commits)
        if not ready:
            return "waiting"
        self.consortium.close_round(info.round_id)
        log.info("round %d closed with %d submission(s)%s", info.round_id, info.submissions,
                 "" if info.submissions >= info.quorum else " after the deadline")
        return "closed"

    def _abandon(self, info: RoundInfo) -> str:
        """Give up a round below its minimum: the next one builds on the last finalized model."""
        self.consortium.abandon_round(info.round_id)
        self.abandoned.append(info.round_id)
        log.warning("round %d abandoned: %d submission(s), %d needed; the next round builds on "
                    "the last finalized model", info.round_id, info.submissions,
                    info.min_submissions)
        return "abandoned"

    # -- aggregation ---------------------------------------------------------------------
    def _aggregate_and_finalize(self, info: RoundInfo) -> None:
        r = info.round_id
        t0 = time.perf_counter()
        self._follow_validation_set(r)
        events = round_events(self.consortium, r)
        opened = events["RoundOpened"][-1]
        base = self._base_params(info, opened.args["modelCid"])
        submitted = events.get("UpdateSubmitted", [])
        self._read_indices([e.args["member"] for e in submitted])
        collector = self._collector_for(info)
        received, screened = collector.finish(submitted, self._indices.__getitem__)
        self._restore_base_state(r)
        self._publish_state_before(r)
        t1 = time.perf_counter()
        self._state_after_round = 0  # deciding changes the engine's state; only a finalized
        outcome = self.engine.decide_screened(r, base, screened)  # round makes it r's again
        for member, reason in outcome.rejected.items():
            log.warning("round %d: update of %s rejected: %s", r, member, reason)
        t2 = time.perf_counter()
        published = self._publish_outcome(info, opened, outcome, received)
        t3 = time.perf_counter()
        receipt = self.consortium.finalize_round(
            r, published["result_hash"], published["result_cid"], published["report_hash"],
            published["report_cid"], outcome.bitmap(self.consortium.member_slots()))
        t4 = time.perf_counter()
        self.model.load_state_dict(outcome.result_params)
        # the next round builds on this result once it is accepted (its hash says so)
        self._published_base = (published["result_hash"], outcome.result_params)
        self._state_after_round = r
        outcome.updates = None  # a view of the collector's matrix, released now
        matrix_bytes = collector.matrix.numel() * collector.matrix.element_size()
        self._drop_collector()
        self._summarize(outcome, received, published, receipt,
                        {"fetch_verify": t1 - t0, "defense": t2 - t1, "publish": t3 - t2,
                         "chain": t4 - t3})
        self.summaries[-1].matrix_bytes = matrix_bytes

    def _base_params(self, info: RoundInfo, cid: str) -> dict[str, Tensor]:
        """The round's base model: the one this process published for it, else from IPFS."""
        if self._published_base is not None and self._published_base[0] == info.model_hash:
            return self._published_base[1]
        return decode_tensors(self.store.get(cid, expected_hash=info.model_hash),
                              expected_kind="model", expected_spec=self.engine.spec).tensors

    def _publish_outcome(self, info: RoundInfo, opened: ChainEvent, outcome: RoundOutcome,
                         submissions: Sequence[Received]) -> dict[str, Any]:
        """Put the new global model and the round report on IPFS."""
        result_hash, result_cid, result_blob = self._publish_model(outcome.result_params,
                                                                   info.round_id)
        inputs = self._publish_inputs(outcome)
        report = outcome.report(
            self.task, base_model={"hash": "0x" + info.model_hash.hex(),
                                   "cid": opened.args["modelCid"]},
            result_model={"hash": "0x" + result_hash.hex(), "cid": result_cid},
            submissions=submissions,
            chain={"consortium": self.consortium.address,
                   "chain_id": self.consortium.deployment.chain_id},
            inputs=inputs)
        report_blob = encode_report(report)
        return {"result_hash": result_hash, "result_cid": result_cid,
                "report_hash": content_hash(report_blob),
                "report_cid": self.store.put(report_blob),
                "bytes_up": len(result_blob) + len(report_blob)}

    def _check_validation_set(self) -> None:
        """Refuse to run on validation data other than the consortium committed on chain."""
        committed, cid = self.consortium.validation_set()
        if committed == bytes(32):
            return
        if self.engine.validation is None:
            raise ChainError(f"the consortium committed a validation set ({cid}); give the "
                             f"aggregator that data")
        mine = content_hash(encode_validation(*self.engine.validation))
        if mine != committed:
            raise ChainError(f"this aggregator's validation data hashes to 0x{mine.hex()}, but "
                             f"the consortium committed 0x{committed.hex()} ({cid}): refusing "
                             f"to aggregate with other data")
        self._validation_hash = mine

    def _follow_validation_set(self, round_id: int) -> None:
        """Aggregate a round on the validation set it opened with: when a scheduled change
        took effect since this process checked its data, fetch the committed set by its CID
        (hash-checked) and use it from this round on."""
        committed = self.consortium.round_validation_hash(round_id)
        if committed in (bytes(32), self._validation_hash):
            return
        digest, cid = self.consortium.validation_set()
        if digest != committed:  # a later change already in force: rounds open in order
            raise ChainError(f"round {round_id} opened with validation set 0x{committed.hex()}, "
                             f"no longer the set in force (0x{digest.hex()})")
        self.engine.validation = decode_validation(self.store.get(cid, expected_hash=committed))
        self._validation_hash, self._validation_ref = committed, None
        log.info("round %d: validation set 0x%s (%s), as committed for the round", round_id,
                 committed.hex(), cid)

    def _publish_state_before(self, round_id: int) -> None:
        """Publish (pinned) the defense state the round starts from before deciding it; the
        report names it (`_publish_inputs`)."""
        state = self.engine.defense_state()
        self._state_before_ref = None if state is None else self._put(encode_state(state))
        if self._state_before_ref:
            log.info("round %d: the defense starts from state %s (%s)", round_id,
                     self._state_before_ref["hash"], self._state_before_ref["cid"])

    def _publish_inputs(self, outcome: RoundOutcome) -> dict[str, Any]:
        """Put what the defense read besides the updates on IPFS (pinned), for the audit to
        re-run it: the validation set and the defense's state before and after the round."""
        inputs: dict[str, Any] = {}
        if self.engine.validation is not None:
            if self._validation_ref is None:
                self._validation_ref = self._put(encode_validation(*self.engine.validation))
            inputs["validation"] = self._validation_ref
        if outcome.state_before is not None and outcome.state_after is not None:
            before = encode_state(outcome.state_before)
            published = self._state_before_ref
            if published is None or published["hash"] != "0x" + content_hash(before).hex():
                published = self._put(before)  # not what was published before deciding
            inputs["defense_state"] = {"before": published,
                                       "after": self._put(encode_state(outcome.state_after))}
        return inputs

    def _put(self, blob: bytes) -> dict[str, str]:
        return {"hash": "0x" + content_hash(blob).hex(), "cid": self.store.put(blob)}

    def _summarize(self, outcome: RoundOutcome, submissions: Sequence[Received],
                   published: dict[str, Any], receipt: Any, seconds: dict[str, float]) -> None:
        summary = RoundSummary(
            round_id=outcome.round_id, submissions=len(submissions),
            decisions=outcome.decisions, aggregate_sha256=tensor_sha256(outcome.aggregate),
            result_cid=published["result_cid"], report_cid=published["report_cid"],
            transactions={"finalizeRound": tx_hash(receipt)},
            gas_used={"finalizeRound": int(receipt["gasUsed"])}, seconds=seconds,
            bytes_down=sum(s.size for s in submissions),
            bytes_up=published["bytes_up"])
        if self.evaluate:
            summary.metrics = self.evaluate(self.model)
        self.summaries.append(summary)
        log.info("round %d finalized: %d accepted, %d rejected, %d flagged; model %s",
                 outcome.round_id, len(summary.accepted), len(summary.rejected),
                 len(summary.flagged), published["result_cid"])
        if self.results is not None:
            try:
                self.results.add(summary, receipt)
            except OSError as exc:  # the round is final on chain; the files are a convenience
                log.error("round %d: cannot write results to %s: %s", outcome.round_id,
                          self.results.directory, exc)

    # -- defense state -------------------------------------------------------------------
    def _restore_base_state(self, round_id: int) -> None:
        """Continue the defense from the round this one builds on (see fleml_node.history):
        the state its report published, or a fresh state over the initial model."""
        if self._fresh_state is None:
            return  # a stateless defense
        base = base_round(self.consortium, round_id)
        if base and base == self._state_after_round:
            # this process finalized the base round: the engine holds the very state that
            # round's report published (nothing from an earlier process is trusted)
            log.info("round %d: the defense continues from round %d", round_id, base)
            return
        found = published_state_after(self.consortium, self.store, base) if base else None
        self.engine.restore_defense(found[1] if found else self._fresh_state)
        log.info("round %d: the defense continues from %s", round_id,
                 f"round {base}" if found else "a fresh state")


# -- updates, verified as they arrive -----------------------------------------------------------
VERIFY_WORKERS = 4
"""Updates fetched and checked at the same time (each holds one update's bytes meanwhile)."""
REFETCH_SECONDS = 5.0
"""A fetch that failed before the close is tried again after this long (and at the close)."""


@dataclass
class Received:
    """One member's committed update as the aggregator found it (what the report lists).

    ``verdict`` is None until the bytes were fetched; then the round engine's reason ("" for an
    accepted update, whose values are row ``row`` of the collector's matrix). A failed fetch
    leaves it None and keeps ``fetch_error``: it is tried again, and only at the close does it
    become the ``unavailable`` rejection.
    """

    member: str
    index: int
    update_hash: bytes
    update_cid: str
    size: int = 0
    verdict: str | None = None
    claim: int = 0
    row: int = -1
    fetch_error: str = ""
    failed_at: float = 0.0


class UpdateCollector:
    """Fetch, hash-check and decode one round's updates while the round is still open.

    The aggregator hands it each `UpdateSubmitted` event as it sees it (in commit-reveal mode
    these are the reveals); a pool of `workers` threads fetches the object from IPFS (one
    client each, no retries inside), pins it, and runs the round engine's checks
    (:meth:`RoundEngine.check`), writing an accepted update's values straight into a row of one
    preallocated float32 matrix; the bytes are dropped right after. Memory is bounded by the
    matrix plus one update's bytes and decoded tensors per worker.

    Nothing is decided before the close: a fetch that fails is tried again later
    (`REFETCH_SECONDS`) and once more at the close (:meth:`finish`), and only what the close
    finds becomes the round's verdicts. A verdict on fetched bytes depends only on the bytes,
    the committed hash, the member and the round, so it is computed once. A new process starts
    with an empty collector: it trusts nothing from an earlier one and fetches everything again.
    """

    def __init__(self, round_id: int, engine: RoundEngine, store: IpfsStore, rows: int,
                 max_bytes: int, workers: int = VERIFY_WORKERS) -> None:
        self.round_id = round_id
        self.engine = engine
        self.store = store
        self.max_bytes = max_bytes
        self.matrix = torch.empty(max(1, rows), engine.spec.numel, dtype=torch.float32)
        self._free = list(range(self.matrix.shape[0]))
        self._extra: dict[int, Tensor] = {}  # rows beyond the matrix (members admitted late)
        self.entries: dict[str, Received] = {}
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stores: list[IpfsStore] = []
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                        thread_name_prefix=f"verify-r{round_id}")
        self.next_block = 0  # the first block whose events it has not seen

    # -- feeding -------------------------------------------------------------------------
    def offer(self, events: Sequence[ChainEvent], index_of: Callable[[str], int]) -> None:
        """Start verifying the updates these `UpdateSubmitted` events commit to (once each),
        and fetch again those whose earlier fetch failed a while ago."""
        for event in events:
            member = event.args["member"]
            digest, cid = bytes(event.args["updateHash"]), event.args["updateCid"]
            known = self.entries.get(member)
            if known is not None and (known.update_hash, known.update_cid) == (digest, cid):
                continue
            self.entries[member] = Received(member, index_of(member), digest, cid)
            self._start(member)
        for member in [m for m, f in self._running.items() if f.done()]:
            self._running.pop(member).result()  # a bug in a worker surfaces here
        now = time.monotonic()
        for member, entry in self.entries.items():
            if entry.verdict is None and member not in self._running \
                    and now - entry.failed_at >= REFETCH_SECONDS:
                self._start(member)

    def _start(self, member: str) -> None:
        entry = self.entries[member]
        self._running[member] = self._pool.submit(self._verify, entry)

    def _store(self) -> IpfsStore:
        if not hasattr(self._local, "store"):
            self._local.store = IpfsStore(self.store.api_addr, timeout=self.store.timeout,
                                          retries=0, max_bytes=self.store.max_bytes)
            with self._lock:
                self._stores.append(self._local.store)
        return self._local.store

    def _verify(self, entry: Received) -> None:
        store = self._store()
        try:
            blob, error = fetch_member_object(store, entry.update_cid, self.max_bytes)
        except IpfsError as exc:  # our own daemon: try again later
            entry.fetch_error, entry.failed_at = f"our IPFS daemon failed: {exc}", \
                time.monotonic()
            return
        if blob is None:
            entry.fetch_error, entry.failed_at = error or "", time.monotonic()
            return
        try:  # keep every update the round may use available to audits
            store.pin(entry.update_cid)
        except IpfsError as exc:
            log.warning("round %d: cannot pin %s yet: %s", self.round_id, entry.update_cid, exc)
        row = self._take_row()
        reason, _, claim = self.engine.check(self.round_id, entry.member, entry.update_hash,
                                             blob, out=self.row(row))
        entry.size, entry.claim, entry.fetch_error = len(blob), claim, ""
        if reason:
            self._give_row(row)
        else:
            entry.row = row
        entry.verdict = reason

    def _take_row(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop(0)
            row = self.matrix.shape[0] + len(self._extra)
            self._extra[row] = torch.empty(self.engine.spec.numel, dtype=torch.float32)
            return row

    def _give_row(self, row: int) -> None:
        with self._lock:
            if row < self.matrix.shape[0]:
                self._free.append(row)
                self._free.sort()

    def row(self, row: int) -> Tensor:
        return self.matrix[row] if row < self.matrix.shape[0] else self._extra[row]

    # -- the close -----------------------------------------------------------------------
    def finish(self, events: Sequence[ChainEvent], index_of: Callable[[str], int]
               ) -> tuple[list[Received], Screened]:
        """The round's verdicts once it is closed, from its complete `UpdateSubmitted` events.

        Waits for the fetches under way, fetches once more every update whose fetch failed or
        that was not seen yet, then applies the rules: a fetch failing now rejects its member
        as ``unavailable`` (our own daemon failing raises `IpfsError`, and the node retries).
        Returns the entries in member-index order and the screened round, whose update matrix
        is a view of the preallocated one (accepted rows moved into member-index order in
        place), so the defense gets exactly what :meth:`RoundEngine.screen` would stack.
        """
        members = {e.args["member"] for e in events}
        for member in [m for m in self.entries if m not in members]:
            self._drop(member)  # seen on a branch that a reorg removed
        self.offer(events, index_of)
        self._wait()
        retry = [m for m, e in self.entries.items() if e.verdict is None]
        for member in retry:
            self._start(member)
        self._wait()
        for member in retry:
            entry = self.entries[member]
            if entry.verdict is None:
                if entry.fetch_error.startswith("our IPFS daemon failed"):
                    raise IpfsError(entry.fetch_error)
                entry.verdict = unavailable(entry.fetch_error)
                log.warning("update of %s (%s) cannot be fetched: %s", member,
                            entry.update_cid, entry.fetch_error)
        ordered = sorted(self.entries.values(), key=lambda e: e.index)
        decisions, accepted, rows, claims = sort_verdicts(
            (e.member, e.index, e.verdict, e.row, e.claim) for e in ordered)
        return ordered, Screened(decisions, accepted, self._gather(rows), claims)

    def _gather(self, rows: list[int]) -> Tensor | None:
        """The given rows, in that order, as the first rows of the matrix (moved in place)."""
        if not rows:
            return None
        size = self.matrix.shape[0]
        if any(r >= size for r in rows) or len(rows) > size:
            return torch.stack([self.row(r) for r in rows])  # rare: more members than rows
        # a permutation of all rows whose first len(rows) entries are `rows`
        taken = set(rows)
        source = rows + [r for r in range(size) if r not in taken]
        done, scratch = [False] * size, torch.empty_like(self.matrix[0])
        for start in range(size):
            if done[start] or source[start] == start:
                done[start] = True
                continue
            scratch.copy_(self.matrix[start])
            position = start
            while True:  # position receives old row source[position]
                src = source[position]
                done[position] = True
                if src == start:
                    self.matrix[position].copy_(scratch)
                    break
                self.matrix[position].copy_(self.matrix[src])
                position = src
        for position, entry in enumerate(sorted(
                (e for e in self.entries.values() if not e.verdict), key=lambda e: e.index)):
            entry.row = position
        return self.matrix[:len(rows)]

    def settle(self) -> None:
        """Wait for the fetches under way (benchmarks and tests; the close waits anyway)."""
        self._wait()

    def _wait(self) -> None:
        for future in list(self._running.values()):
            future.result()
        self._running.clear()

    def _drop(self, member: str) -> None:
        future = self._running.pop(member, None)
        if future is not None:
            future.result()
        entry = self.entries.pop(member)
        if entry.row >= 0:
            self._give_row(entry.row)

    def close(self) -> None:
        """Stop the workers and release the matrix."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for store in self._stores:
            store.close()
        self.matrix = torch.empty(0)
        self._extra.clear()


class RoundResults:
    """An aggregator's per-round results in a folder, as `fleml-node simulate` writes them.

    ``results.json`` (the consortium, defense, task and machine, and one entry per round: the
    fields of :class:`fleml_node.simulate.RoundRecord` plus the round's result and report CIDs
    and finalizing transaction) and ``results.csv`` (simulate's columns). Both are rewritten
    whole and atomically (a temporary file renamed over the old one) after each finalized
    round, so a reader never sees half a file while the aggregator runs. A restarted
    aggregator appends to what the folder holds (a round finalized again replaces its entry);
    a folder holding another consortium's results is refused.

    Per round: ``accuracy`` and ``backdoor_asr`` are the evaluation's (empty without one),
    ``flagged`` the member indices not accepted, ``precision`` and ``recall`` are empty (only a
    simulation knows who is malicious), ``bytes_moved`` what the aggregator fetched and
    published, ``gas_used`` the gas of the round's own transactions (open, submissions,
    reveals, close, finalize) and ``seconds`` the chain time from the block that opened the
    round to the one that finalized it.
    """

    def __init__(self, directory: str | os.PathLike[str], consortium: Consortium,
                 defense: Defense, task: TaskConfig) -> None:
        from fleml_node.simulate import machine_info

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.consortium = consortium
        self.defense = defense.name
        chain = {"consortium": consortium.address, "chain_id": consortium.deployment.chain_id}
        path = self.directory / "results.json"
        previous: dict[str, Any] = {}
        if path.exists():
            try:
                previous = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path} is not readable results JSON ({exc}): give another "
                                 f"--results-dir") from exc
            found = {k: previous.get(k) for k in chain}
            if found != chain:
                raise ValueError(f"{path} holds results of consortium {found['consortium']} "
                                 f"on chain {found['chain_id']}, not this one: give another "
                                 f"--results-dir")
        self.rounds: list[dict[str, Any]] = list(previous.get("rounds", []))
        self.header = {**chain, "defense": self.defense, "task": task.to_dict(),
                       "machine": machine_info(),
                       "started": previous.get("started") or _utc(time.time())}

    def add(self, summary: RoundSummary, receipt: Any) -> dict[str, Any]:
        """Record a finalized round and rewrite both files; returns the round's entry."""
        from fleml_node.simulate import RoundRecord

        c = self.consortium
        events = round_events(c, summary.round_id)
        txs = {e.tx_hash for name, found in events.items()
               if name not in ("RoundAttested", "RoundRejected") for e in found}
        gas = sum(int(c.w3.eth.get_transaction_receipt(tx)["gasUsed"]) for tx in txs)
        opened = events["RoundOpened"][-1].block_number
        seconds = float(c.w3.eth.get_block(int(receipt["blockNumber"]))["timestamp"]
                        - c.w3.eth.get_block(opened)["timestamp"])
        decisions = sorted(summary.decisions, key=lambda d: d.index)
        record = RoundRecord(
            self.defense, summary.round_id, summary.metrics.get("accuracy"),
            summary.metrics.get("backdoor_asr"),
            sorted(d.index for d in decisions if d.status != "accepted"), None, None,
            summary.bytes_down + summary.bytes_up, gas, seconds,
            [{**d.to_dict(), "coefficient": d.coefficient} for d in decisions],
            summary.aggregate_sha256)
        entry = {**asdict(record), "result_cid": summary.result_cid,
                 "report_cid": summary.report_cid,
                 "finalize_tx": summary.transactions.get("finalizeRound"),
                 "finalized_block": int(receipt["blockNumber"])}
        self.rounds = sorted([r for r in self.rounds if r.get("round") != record.round]
                             + [entry], key=lambda r: r["round"])
        self._write()
        return entry

    def _write(self) -> None:
        from fleml_node.simulate import RoundRecord, write_csv

        data = {**self.header, "updated": _utc(time.time()), "rounds": self.rounds}
        atomic_write(self.directory / "results.json",
                     (json.dumps(data, indent=2) + "\n").encode())
        fields = RoundRecord.__dataclass_fields__
        records = [RoundRecord(**{k: v for k, v in r.items() if k in fields})
                   for r in self.rounds]
        tmp = self.directory / ".results.csv.tmp"
        write_csv(records, tmp)
        os.replace(tmp, self.directory / "results.csv")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
