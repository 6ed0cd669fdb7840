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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fleml_node.chain.contract import (
    ChainError,
    Consortium,
    RoundInfo,
    RoundStatus,
    SubmissionMode,
    tx_hash,
)
from fleml_node.chain.events import ChainEvent, round_events
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
    Submission,
    encode_state,
    encode_validation,
    update_size_cap,
)
from fleml_node.storage import (
    IpfsStore,
    content_hash,
    decode_tensors,
    encode_report,
    encode_tensors,
)
from fleml_node.storage.local import atomic_write
from fleml_node.submissions import gather_submissions
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
        self.results = RoundResults(results_dir, consortium, defense, task) \
            if results_dir is not None else None
        self.consortium.check_version()
        self._check_validation_set()
        self._fresh_state = self.engine.defense_state()

    @property
    def defense(self) -> Defense:
        return self.engine.defense

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
            return self._progress(info)
        if info.status is RoundStatus.CLOSED:
            if info.submissions < info.min_submissions:  # closed by an earlier protocol step
                return self._abandon(info)
            self._aggregate_and_finalize(info)
            return "finalized"
        if info.status is RoundStatus.FINALIZED and not self.consortium.is_accepted(current):
            return "waiting"  # for the members' attestations, or the end of their window
        if current >= self.until_round:
            return "done"
        self._open(current + 1, self.consortium.base_model_hash(), self._base_model_cid())
        return "opened"

    def run(self, poll_interval: float = 1.0, on_step: Callable[[str], None] | None = None,
            backoff: Backoff | None = None) -> list[RoundSummary]:
        """Step until round `until_round` is finalized; never give up on an outage.

        A transient failure (RPC or IPFS down, a receipt that did not come) is retried with
        capped backoff for as long as it lasts; the chain holds the round's state, so a retried
        step is safe. A permanent one (a revert) is logged once, and the node keeps reading
        the chain in case it changes (e.g. the operator restores this node's role).
        """
        backoff = backoff or Backoff(base=poll_interval)
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
                time.sleep(poll_interval)

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
        self.consortium.open_round(digest, cid, self.consortium.now() + seconds, quorum)
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
        events = round_events(self.consortium, r)
        opened = events["RoundOpened"][-1]
        base = decode_tensors(self.store.get(opened.args["modelCid"],
                                             expected_hash=info.model_hash),
                              expected_kind="model", expected_spec=self.engine.spec)
        submissions = gather_submissions(self.consortium, self.store,
                                         events.get("UpdateSubmitted", []),
                                         max_bytes=update_size_cap(self.engine.spec))
        for sub in submissions:
            if sub.blob is not None:  # keep every update the round used available to audits
                self.store.pin(sub.update_cid)
        self._restore_base_state(r)
        t1 = time.perf_counter()
        outcome = self.engine.decide(r, base.tensors, submissions)
        for member, reason in outcome.rejected.items():
            log.warning("round %d: update of %s rejected: %s", r, member, reason)
        t2 = time.perf_counter()
        published = self._publish_outcome(info, opened, outcome, submissions)
        t3 = time.perf_counter()
        receipt = self.consortium.finalize_round(
            r, published["result_hash"], published["result_cid"], published["report_hash"],
            published["report_cid"], outcome.bitmap(self.consortium.member_slots()))
        t4 = time.perf_counter()
        self.model.load_state_dict(outcome.result_params)
        self._summarize(outcome, submissions, published, receipt,
                        {"fetch_verify": t1 - t0, "defense": t2 - t1, "publish": t3 - t2,
                         "chain": t4 - t3})

    def _publish_outcome(self, info: RoundInfo, opened: ChainEvent, outcome: RoundOutcome,
                         submissions: list[Submission]) -> dict[str, Any]:
        """Put the new global model and the round report on IPFS."""
        result_hash, result_cid, result_blob = self._publish_model(outcome.result_params,
                                                                   info.round_id)
        report = outcome.report(
            self.task, base_model={"hash": "0x" + info.model_hash.hex(),
                                   "cid": opened.args["modelCid"]},
            result_model={"hash": "0x" + result_hash.hex(), "cid": result_cid},
            submissions=submissions,
            chain={"consortium": self.consortium.address,
                   "chain_id": self.consortium.deployment.chain_id},
            inputs=self._publish_inputs(outcome))
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

    def _publish_inputs(self, outcome: RoundOutcome) -> dict[str, Any]:
        """Put what the defense read besides the updates on IPFS (pinned), for the audit to
        re-run it: the validation set and the defense's state before and after the round."""
        inputs: dict[str, Any] = {}
        if self.engine.validation is not None:
            if self._validation_ref is None:
                self._validation_ref = self._put(encode_validation(*self.engine.validation))
            inputs["validation"] = self._validation_ref
        if outcome.state_before is not None and outcome.state_after is not None:
            inputs["defense_state"] = {"before": self._put(encode_state(outcome.state_before)),
                                       "after": self._put(encode_state(outcome.state_after))}
        return inputs

    def _put(self, blob: bytes) -> dict[str, str]:
        return {"hash": "0x" + content_hash(blob).hex(), "cid": self.store.put(blob)}

    def _summarize(self, outcome: RoundOutcome, submissions: list[Submission],
                   published: dict[str, Any], receipt: Any, seconds: dict[str, float]) -> None:
        summary = RoundSummary(
            round_id=outcome.round_id, submissions=len(submissions),
            decisions=outcome.decisions, aggregate_sha256=tensor_sha256(outcome.aggregate),
            result_cid=published["result_cid"], report_cid=published["report_cid"],
            transactions={"finalizeRound": tx_hash(receipt)},
            gas_used={"finalizeRound": int(receipt["gasUsed"])}, seconds=seconds,
            bytes_down=sum(len(s.blob) for s in submissions if s.blob is not None),
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
        found = published_state_after(self.consortium, self.store, base) if base else None
        self.engine.restore_defense(found[1] if found else self._fresh_state)
        log.info("round %d: the defense continues from %s", round_id,
                 f"round {base}" if found else "a fresh state")


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
