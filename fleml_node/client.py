"""The member's node: react to `RoundOpened`, train locally, publish and commit the update.

For each round the chain announces, the client fetches the global model by CID, checks its
bytes against the hash the aggregator committed, trains on its local data, puts the update on
IPFS and sends ``submitUpdate(round, sha256(bytes), cid)`` from its own account before the
deadline. It does one update per round: the chain refuses a second one, and a restarted client
asks the chain whether it already submitted before doing any work. A round whose deadline has
passed is skipped with a log line.

Failures come in two kinds (:mod:`fleml_node.retry`). An outage of our chain RPC or IPFS daemon
is waited out with capped backoff, however long it lasts; the event cursor only moves past
handled events, so nothing is lost. A failure that repeating cannot mend (the aggregator's
model does not match its commitment, our own training produced NaN/Inf, the contract refuses
the submission) skips that round with one log line, and the node keeps following the chain.

In a consortium whose policy asks for commit-reveal, the client commits
``keccak256(member, round, sha256(bytes), salt)`` before the deadline, keeps the update on its
own disk, and publishes it on IPFS and reveals hash, CID and salt only in the reveal window
after the deadline, so no member can copy or adapt to another's update before committing.

A simulated malicious member is the same node with an attack configured; nothing else differs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from fleml_node.attacks import Attack
from fleml_node.chain.contract import (
    Consortium,
    ContractReverted,
    RoundStatus,
    SubmissionMode,
    commitment_of,
    new_salt,
    tx_hash,
)
from fleml_node.chain.events import ChainEvent, EventFollower, LogWatch
from fleml_node.learning import ParamSpec, get_params, local_train, make_generator
from fleml_node.retry import Backoff, is_transient
from fleml_node.round_engine import encode_update
from fleml_node.storage import (
    HashMismatch,
    InvalidPayload,
    IpfsStore,
    content_hash,
    decode_tensors,
)
from fleml_node.storage.compression import UpdateEncoder
from fleml_node.task import TaskConfig

log = logging.getLogger(__name__)


@dataclass
class ClientRoundStats:
    """What one round cost this client, for progress lines and benchmarks."""

    round_id: int
    status: str  # submitted | committed (until revealed) | skipped-late | skipped-done | failed
    samples: int = 0
    loss_before: float | None = None
    loss_after: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    gas_used: int = 0
    transaction: str = ""
    reason: str = ""


class ClientNode:
    """One consortium member.

    Parameters
    ----------
    consortium
        Contract binding with the member's signing account.
    store
        IPFS access.
    follower
        Event follower with this node's own state file.
    task
        The federation's task (model and training hyper-parameters).
    x, y
        Local training data.
    client_index
        Stable number of this client for its random stream (its member index works).
    attack
        A poisoning attack for simulated malicious members, else None.
    margin_seconds
        Do not start training when fewer seconds than this remain before the deadline.
    audit_rounds
        Audit every finalized round and attest the verdict on chain (``client --audit``).
    train_lock
        Held around local training. A simulation stepping many members in one process on
        threads passes one lock to all of them: their training runs one at a time, as in the
        simulator's memory mode, while their IPFS and chain work overlaps.
    """

    def __init__(self, consortium: Consortium, store: IpfsStore, follower: EventFollower,
                 task: TaskConfig, x: Tensor, y: Tensor, client_index: int,
                 attack: Attack | None = None, margin_seconds: float = 0.0,
                 audit_rounds: bool = False,
                 train_lock: contextlib.AbstractContextManager[Any] | None = None) -> None:
        if consortium.account is None:
            raise ValueError("a client needs a signing account")
        self.consortium = consortium
        self.store = store
        self.follower = follower
        self.task = task
        self.x, self.y = x, y
        self.client_index = client_index
        self.attack = attack
        self.margin_seconds = margin_seconds
        self.audit_rounds = audit_rounds
        self.train_lock = train_lock if train_lock is not None else contextlib.nullcontext()
        self.address = consortium.account.address
        self.model = task.initial_model()
        self.spec = ParamSpec.from_named(get_params(self.model))
        # the task's update compression; a top-k residual is kept beside the event cursor
        self.encoder = UpdateEncoder.for_task(
            task, client_index, follower.state_file.with_suffix(".residual.safetensors"))
        self.history: list[ClientRoundStats] = []
        follower.only({"RoundOpened", "RoundFinalized"})  # what `handle` acts on
        consortium.check_version()  # a node speaks one protocol: refuse another contract

    def poll_once(self) -> int:
        """Handle new confirmed events, then a reveal that is due; returns events handled."""
        handled = self.follower.poll(self.handle)
        self.reveal_if_due()
        return handled

    def run(self, poll_interval: float = 1.0, max_rounds: int | None = None,
            backoff: Backoff | None = None, use_filter: bool = True) -> None:
        """Follow the chain until stopped (Ctrl-C) or `max_rounds` updates are submitted.

        Polls when the node's log filter reports new consortium logs, and at least every
        `poll_interval` seconds (only then on a node without log filters, or with
        `use_filter` False; see :class:`~fleml_node.chain.events.LogWatch`).
        A poll that fails for a transient reason (RPC or IPFS down) is retried with capped
        backoff for as long as the outage lasts; other errors are bugs and propagate.
        """
        log.info("client %s following consortium %s", self.address, self.consortium.address)
        backoff = backoff or Backoff(base=poll_interval)
        watch = LogWatch(self.consortium, poll_interval, use_filter)
        while True:
            try:
                watch.wait()
                self.poll_once()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                time.sleep(backoff.failed("client poll", exc))
                continue
            backoff.succeeded("client poll")
            done = [s for s in self.history if s.status == "submitted"]
            if max_rounds is not None and len(done) >= max_rounds:
                return

    def handle(self, event: ChainEvent) -> bool:
        """React to one contract event; True when it acted (the follower saves its cursor)."""
        if event.name == "RoundFinalized" and self.audit_rounds:
            self.audit_and_attest(event.args["roundId"])
            return True
        if event.name != "RoundOpened":
            return False
        stats = self.take_part(event.args["roundId"], bytes(event.args["modelHash"]),
                               event.args["modelCid"], int(event.args["deadline"]))
        self.history.append(stats)
        return True

    def take_part(self, round_id: int, model_hash: bytes, model_cid: str,
                  deadline: int) -> ClientRoundStats:
        """Do this member's part of a round, once; safe to call again after a crash."""
        started = time.perf_counter()
        last_round, info, now = self.consortium.member_round_view(self.address, round_id)
        if last_round == round_id:
            log.info("round %d: already submitted, nothing to do", round_id)
            return ClientRoundStats(round_id, "skipped-done")
        if info.status is not RoundStatus.OPEN or now + self.margin_seconds > deadline:
            log.info("round %d: skipped, %s", round_id,
                     "closed" if info.status is not RoundStatus.OPEN else "deadline passed")
            return ClientRoundStats(round_id, "skipped-late")

        stats = ClientRoundStats(round_id, "submitted", samples=int(self.y.numel()))
        try:
            if info.mode is SubmissionMode.COMMIT_REVEAL:
                self._train_and_commit(stats, model_hash, model_cid)
            else:
                self._train_and_submit(stats, model_hash, model_cid, deadline)
        except (HashMismatch, InvalidPayload, ContractReverted) as exc:
            # repeating cannot mend these: skip the round, keep following the chain
            log.warning("round %d: skipped: %s", round_id, exc)
            stats.status, stats.reason = "failed", str(exc)
        # everything this round cost the member, its reads of the round included
        stats.seconds["total"] = time.perf_counter() - started
        return stats

    def _train(self, stats: ClientRoundStats, model_hash: bytes, model_cid: str) -> bytes:
        """Fetch and check the global model, train on it, and encode the update."""
        t0 = time.perf_counter()
        data = self.store.get(model_cid, expected_hash=model_hash)
        stats.bytes_down = len(data)
        payload = decode_tensors(data, expected_kind="model", expected_spec=self.spec)
        t_fetched = time.perf_counter()
        generator = make_generator(self.task.seed, stats.round_id, self.client_index)
        with self.train_lock:
            t1 = time.perf_counter()  # time spent waiting for the lock is nobody's cost
            update, train_stats = local_train(self.model, payload.tensors, self.x, self.y,
                                              self.task.train, generator, attack=self.attack)
            t2 = time.perf_counter()
        stats.loss_before, stats.loss_after = train_stats.loss_before, train_stats.loss_after
        # refuses NaN/Inf; names this member, so nobody else can submit these bytes as theirs
        blob = encode_update(update, stats.round_id, stats.samples, self.address, self.encoder)
        stats.seconds = {"fetch": t_fetched - t0, "train": t2 - t1,
                         "encode": time.perf_counter() - t2}
        if t1 - t_fetched > 0.001:  # waited for the simulation's shared training lock
            stats.seconds["train_queue"] = t1 - t_fetched
        return blob

    def _train_and_submit(self, stats: ClientRoundStats, model_hash: bytes, model_cid: str,
                          deadline: int) -> None:
        round_id = stats.round_id
        blob = self._train(stats, model_hash, model_cid)
        t2 = time.perf_counter()
        digest, cid = self.publish_update(round_id, blob)
        stats.bytes_up = len(blob)
        t3 = time.perf_counter()
        if self.consortium.now() > deadline:
            log.info("round %d: skipped, deadline passed during training", round_id)
            stats.status = "skipped-late"
            return
        receipt = self.consortium.submit_update(round_id, digest, cid)
        stats.gas_used = int(receipt["gasUsed"])
        stats.transaction = tx_hash(receipt)
        stats.seconds.update(publish=t3 - t2, chain=time.perf_counter() - t3)
        log.info("round %d: submitted update %s (%d samples, loss %.3f -> %.3f, %.1fs training)",
                 round_id, cid, stats.samples, stats.loss_before or float("nan"),
                 stats.loss_after or float("nan"), stats.seconds["train"])

    # -- commit-reveal ---------------------------------------------------------------------
    # The update stays on this machine until the reveal window: nobody can copy it or adapt to
    # it before committing. The bytes and the salt are kept on disk, so a node restarted
    # between its commitment and the reveal still reveals.
    @property
    def _pending_file(self) -> Path:
        return self.follower.state_file.with_suffix(".reveal.json")

    def _train_and_commit(self, stats: ClientRoundStats, model_hash: bytes,
                          model_cid: str) -> None:
        round_id = stats.round_id
        if self.consortium.latest_commit(self.address)[0] == round_id:
            if self._pending_file.exists():
                stats.status = "committed"  # a restart: the reveal is still to come
            else:
                stats.status, stats.reason = "failed", "committed, but the salt was lost"
                log.warning("round %d: committed before a restart that lost the salt; "
                            "this round's update cannot be revealed", round_id)
            return
        blob = self._train(stats, model_hash, model_cid)
        digest, salt = content_hash(blob), new_salt()
        blob_file = self._pending_file.with_suffix(".safetensors")
        blob_file.write_bytes(blob)
        pending = {"contract": self.consortium.address, "round": round_id,
                   "hash": digest.hex(), "salt": salt.hex(), "blob": blob_file.name}
        tmp = self._pending_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pending))
        tmp.replace(self._pending_file)
        receipt = self.consortium.commit_update(round_id,
                                                commitment_of(self.address, round_id, digest,
                                                              salt))
        stats.status, stats.gas_used, stats.bytes_up = "committed", int(receipt["gasUsed"]), 0
        log.info("round %d: committed to update 0x%s (%d samples, %.1fs training); it is "
                 "published at the reveal", round_id, digest.hex(), stats.samples,
                 stats.seconds["train"])

    def reveal_if_due(self) -> None:
        """Publish and reveal the committed update once the round's reveal window is open."""
        if not self._pending_file.exists():
            return
        pending = json.loads(self._pending_file.read_text())
        round_id = int(pending["round"])
        info = self.consortium.get_round(round_id)
        now = self.consortium.now()
        if info.status is RoundStatus.OPEN and now <= info.deadline:
            return  # still the commit phase
        blob_file = self._pending_file.with_name(pending["blob"])
        if info.status is RoundStatus.OPEN and now <= info.reveal_deadline \
                and pending["contract"] == self.consortium.address:
            blob, digest = blob_file.read_bytes(), bytes.fromhex(pending["hash"])
            cid = self.store.put(blob)
            try:
                receipt = self.consortium.reveal_update(round_id, digest, cid,
                                                        bytes.fromhex(pending["salt"]))
            except ContractReverted as exc:
                log.warning("round %d: reveal refused: %s", round_id, exc)
                self._record_reveal(round_id, "failed", str(exc))
            else:
                log.info("round %d: revealed update %s (%s)", round_id, cid, tx_hash(receipt))
                self._record_reveal(round_id, "submitted", "", len(blob), receipt)
        else:
            log.warning("round %d: the reveal window passed before this node could reveal",
                        round_id)
            self._record_reveal(round_id, "skipped-late", "reveal window passed")
        self._pending_file.unlink()
        blob_file.unlink(missing_ok=True)

    def _record_reveal(self, round_id: int, status: str, reason: str, size: int = 0,
                       receipt: Any = None) -> None:
        stats = next((s for s in reversed(self.history) if s.round_id == round_id), None)
        if stats is None:  # committed by an earlier process
            stats = ClientRoundStats(round_id, status, samples=int(self.y.numel()))
            self.history.append(stats)
        stats.status, stats.reason, stats.bytes_up = status, reason, size
        if receipt is not None:
            stats.gas_used += int(receipt["gasUsed"])
            stats.transaction = tx_hash(receipt)

    def audit_and_attest(self, round_id: int) -> None:
        """Audit a finalized round as `fleml-node audit` does and attest the verdict, once."""
        from fleml_node.audit import attest, audit_round

        if self.consortium.has_attested(round_id, self.address):
            return
        verdict = audit_round(self.consortium, self.store, round_id)
        log.info("round %d: audit %s", round_id, verdict.verdict)
        try:
            attest(self.consortium, self.store, verdict)
        except ContractReverted as exc:
            log.warning("round %d: attestation refused: %s", round_id, exc)

    def publish_update(self, round_id: int, blob: bytes) -> tuple[bytes, str]:
        """Put the update's bytes on IPFS; returns the content hash to commit and the CID.

        Simulations and fault-injection tests replace this per node to make a member publish
        something other than what it commits.
        """
        return content_hash(blob), self.store.put(blob)
