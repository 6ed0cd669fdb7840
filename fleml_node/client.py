"""The member's node: react to `RoundOpened`, train locally, publish and commit the update.

For each round the chain announces, the client fetches the global model by CID, checks its
bytes against the hash the aggregator committed, trains on its local data, puts the update on
IPFS and sends ``submitUpdate(round, sha256(bytes), cid)`` from its own account before the
deadline. It does one update per round: the chain refuses a second one, and a restarted client
asks the chain whether it already submitted before doing any work. A round whose deadline has
passed is skipped with a log line.

A simulated malicious member is the same node with an attack configured; nothing else differs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import requests
from torch import Tensor

from fleml_node.attacks import Attack
from fleml_node.chain.contract import ChainError, Consortium, RoundStatus
from fleml_node.chain.events import ChainEvent, EventFollower
from fleml_node.learning import ParamSpec, get_params, local_train, make_generator
from fleml_node.storage import (
    IpfsStore,
    StorageError,
    content_hash,
    decode_tensors,
    encode_tensors,
)
from fleml_node.task import TaskConfig

log = logging.getLogger(__name__)

# Reverts after which submitting again cannot succeed: the node moves on to the next round.
FINAL_REVERTS = ("AlreadySubmitted", "DeadlinePassed", "WrongRoundStatus", "NotMember",
                 "UnknownRound")


@dataclass
class ClientRoundStats:
    """What one round cost this client, for progress lines and benchmarks."""

    round_id: int
    status: str  # submitted | skipped-late | skipped-done | failed
    samples: int = 0
    loss_before: float | None = None
    loss_after: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    gas_used: int = 0
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
    """

    def __init__(self, consortium: Consortium, store: IpfsStore, follower: EventFollower,
                 task: TaskConfig, x: Tensor, y: Tensor, client_index: int,
                 attack: Attack | None = None, margin_seconds: float = 0.0) -> None:
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
        self.address = consortium.account.address
        self.model = task.initial_model()
        self.spec = ParamSpec.from_named(get_params(self.model))
        self.history: list[ClientRoundStats] = []

    def poll_once(self) -> int:
        """Handle new confirmed events; returns how many were handled."""
        return self.follower.poll(self.handle)

    def run(self, poll_interval: float = 1.0, max_rounds: int | None = None,
            max_failures: int = 10) -> None:
        """Follow the chain until stopped (Ctrl-C) or the limits given are reached.

        A failed poll (RPC or IPFS hiccup) is retried after `poll_interval`: the event cursor
        only moves past handled events, so nothing is lost. After `max_failures` failures in
        a row the last error is raised.
        """
        log.info("client %s following consortium %s", self.address, self.consortium.address)
        failures = 0
        while True:
            try:
                self.poll_once()
                failures = 0
            except (ChainError, StorageError, requests.RequestException) as exc:
                failures += 1
                if failures >= max_failures:
                    raise
                log.warning("poll failed (%d of %d): %s; retrying", failures, max_failures, exc)
            done = [s for s in self.history if s.status == "submitted"]
            if max_rounds is not None and len(done) >= max_rounds:
                return
            time.sleep(poll_interval)

    def handle(self, event: ChainEvent) -> bool:
        """React to one contract event; True when it acted (the follower saves its cursor)."""
        if event.name != "RoundOpened":
            return False
        stats = self.take_part(event.args["roundId"], bytes(event.args["modelHash"]),
                               event.args["modelCid"], int(event.args["deadline"]))
        self.history.append(stats)
        return True

    def take_part(self, round_id: int, model_hash: bytes, model_cid: str,
                  deadline: int) -> ClientRoundStats:
        """Do this member's part of a round, once; safe to call again after a crash."""
        last_round, _ = self.consortium.latest_commitment(self.address)
        if last_round == round_id:
            log.info("round %d: already submitted, nothing to do", round_id)
            return ClientRoundStats(round_id, "skipped-done")
        info = self.consortium.get_round(round_id)
        now = self.consortium.now()
        if info.status is not RoundStatus.OPEN or now + self.margin_seconds > deadline:
            log.info("round %d: skipped, %s", round_id,
                     "closed" if info.status is not RoundStatus.OPEN else "deadline passed")
            return ClientRoundStats(round_id, "skipped-late")

        stats = ClientRoundStats(round_id, "submitted", samples=int(self.y.numel()))
        t0 = time.perf_counter()
        data = self.store.get(model_cid, expected_hash=model_hash)
        stats.bytes_down = len(data)
        payload = decode_tensors(data, expected_kind="model", expected_spec=self.spec)
        global_params = payload.tensors
        t1 = time.perf_counter()
        generator = make_generator(self.task.seed, round_id, self.client_index)
        update, train_stats = local_train(self.model, global_params, self.x, self.y,
                                          self.task.train, generator, attack=self.attack)
        stats.loss_before, stats.loss_after = train_stats.loss_before, train_stats.loss_after
        t2 = time.perf_counter()
        blob = encode_tensors(update, kind="update", round=round_id,
                              extra={"num_samples": stats.samples})
        digest = content_hash(blob)
        cid = self.store.put(blob)
        stats.bytes_up = len(blob)
        t3 = time.perf_counter()
        if self.consortium.now() > deadline:
            log.info("round %d: skipped, deadline passed during training", round_id)
            stats.status = "skipped-late"
            return stats
        try:
            receipt = self.consortium.submit_update(round_id, digest, cid)
        except ChainError as exc:
            if not any(f"{name}(" in str(exc) for name in FINAL_REVERTS):
                raise  # transient (RPC, gas, nonce): the poll is retried, the round kept
            log.warning("round %d: submission refused: %s", round_id, exc)
            stats.status, stats.reason = "failed", str(exc)
            return stats
        t4 = time.perf_counter()
        stats.gas_used = int(receipt["gasUsed"])
        stats.seconds = {"fetch": t1 - t0, "train": t2 - t1, "publish": t3 - t2,
                         "chain": t4 - t3}
        log.info("round %d: submitted update %s (%d samples, loss %.3f -> %.3f, %.1fs training)",
                 round_id, cid, stats.samples, stats.loss_before or float("nan"),
                 stats.loss_after or float("nan"), stats.seconds["train"])
        return stats
