"""Run the `fleml-node` CLI with one fault injected, for the integration tests.

Usage::

    python node_wrapper.py FAULT [fleml-node arguments ...]

The node is the real CLI (`fleml_node.cli.main`) in its own process; only the one function
named below is replaced before `main()` runs, so everything else (keys, chain, IPFS, the
event follower, the state folders) behaves as in production. Faults:

``tamper-put``
    Every object this node puts on IPFS has its last four bytes changed after the node
    hashed it, so what it stores differs from what it commits on chain (a member that
    tampers with its update, or an IPFS object swapped under a CID it announced).
``hang-in-training``
    The first local training prints ``FAULT hang-in-training`` and blocks for
    ever, so the test can SIGKILL the client while it is mid-round.
``crash-after-close``
    The aggregator prints ``FAULT crash-after-close round <r>`` and SIGKILLs itself when it
    is about to aggregate its first closed round: a crash between closing and finalizing.
``bad-update:R=KIND,...``
    A member that publishes a bad update in round R (its commitment is whatever the kind
    needs): ``missing`` (a CID nobody has), ``directory`` (a directory's CID), ``malformed``
    (a string that is no CID), ``tampered`` (bytes other than those committed), ``random``
    (random bytes), ``pickle`` (a pickled state dict), ``shapes`` (a wrong shape),
    ``nan`` (a NaN in the floats), ``oversized`` (more bytes than any update can take),
    ``extra`` (an additional tensor) or ``other-round`` (the next round's payload). Rounds
    not named are honest.
``silent:R,R,...``
    A member that goes silent in the rounds named: it sees them open and submits nothing.
``copy:I``
    A free-rider: instead of its own update it commits the hash and CID that member I
    submitted in the same round (waiting for it to appear on chain).
``lie:R=KIND,...``
    A dishonest aggregator, in round R: ``double`` doubles the first member's coefficient,
    ``flag`` flags the second member with a made-up reason (both keep the report and the
    model self-consistent), ``state`` publishes a defense state other than the one it used,
    ``validation`` publishes a validation set other than the one it used.
``slow-train:R=S,...``
    A member that, in round R, prints ``FAULT slow-train round R`` when it starts its part and
    waits S seconds before fetching the model and training (tests/hosts cuts its link then).
``hold-before-finalize:R=S,...``
    The aggregator prints ``FAULT hold-before-finalize round R`` and waits S seconds before it
    first sends round R's ``finalizeRound`` (retries go straight through): the window in which
    tests/hosts cuts its link between close and finalize.
``none``
    No fault (plain `fleml-node`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tamper_put() -> None:
    from fleml_node.storage.ipfs import IpfsStore

    real_put = IpfsStore.put

    def put(self: IpfsStore, data: bytes) -> str:
        _say(f"FAULT tamper-put: storing {len(data)} bytes with the last 4 changed")
        return real_put(self, data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))

    IpfsStore.put = put  # type: ignore[method-assign]


def hang_in_training() -> None:
    import fleml_node.client as client_module

    def local_train(*_args: Any, **_kwargs: Any) -> Any:
        _say("FAULT hang-in-training: blocked in local training")
        threading.Event().wait()

    client_module.local_train = local_train  # type: ignore[assignment]


def crash_after_close() -> None:
    from fleml_node.aggregator import AggregatorNode

    def aggregate_and_finalize(self: AggregatorNode, info: Any) -> None:
        _say(f"FAULT crash-after-close round {info.round_id}: SIGKILL before aggregating")
        os.kill(os.getpid(), signal.SIGKILL)

    AggregatorNode._aggregate_and_finalize = aggregate_and_finalize  # type: ignore[method-assign]


def _bad_payload(kind: str, client: Any, round_id: int, blob: bytes) -> tuple[bytes, str]:
    """(committed hash, committed CID) of a member publishing a bad update of this kind."""
    import hashlib
    import os
    import pickle
    import struct

    import torch
    from cid import make_cid

    from fleml_node.learning import get_params
    from fleml_node.learning.params import ParamSpec
    from fleml_node.round_engine import update_size_cap
    from fleml_node.storage import content_hash, encode_tensors

    store = client.store
    params = get_params(client.model)
    if kind == "missing":  # a valid CIDv1 (raw, sha256) of bytes nobody ever added
        digest = hashlib.sha256(os.urandom(64)).digest()
        raw = make_cid(1, "raw", bytes([0x12, 0x20]) + digest).encode("base32").decode()
        return content_hash(blob), raw
    if kind == "directory":
        folder = store._client.object.new("unixfs-dir")["Hash"]
        return content_hash(blob), make_cid(folder).to_v1().encode("base32").decode()
    if kind == "malformed":
        return content_hash(blob), "bafy" + "a" * 55
    if kind == "tampered":
        return content_hash(blob), store.put(blob[:-4] + bytes(b ^ 0xFF for b in blob[-4:]))
    if kind == "random":
        published = os.urandom(4096)
    elif kind == "pickle":
        published = pickle.dumps({k: v.numpy() for k, v in params.items()})
    elif kind == "shapes":
        name = next(iter(params))
        published = encode_tensors({name: torch.zeros(2, 2)}, kind="update", round=round_id)
    elif kind == "nan":
        start = 8 + struct.unpack("<Q", blob[:8])[0]
        published = blob[:start] + struct.pack("<f", float("nan")) + blob[start + 4:]
    elif kind == "oversized":
        published = os.urandom(update_size_cap(ParamSpec.from_named(params)) + 1)
    elif kind == "extra":
        tensors = {k: torch.zeros_like(v) for k, v in params.items()}
        tensors["extra.weight"] = torch.zeros(3)
        published = encode_tensors(tensors, kind="update", round=round_id)
    elif kind == "other-round":
        tensors = {k: torch.zeros_like(v) for k, v in params.items()}
        published = encode_tensors(tensors, kind="update", round=round_id + 1)
    else:
        raise SystemExit(f"unknown bad-update kind {kind!r}")
    return content_hash(published), store.put(published)


def bad_update(spec: str) -> None:
    from fleml_node.client import ClientNode

    plan = {int(r): kind for r, _, kind in (item.partition("=") for item in spec.split(","))}
    honest = ClientNode.publish_update

    def publish_update(self: ClientNode, round_id: int, blob: bytes) -> tuple[bytes, str]:
        kind = plan.get(round_id)
        if kind is None:
            return honest(self, round_id, blob)
        _say(f"FAULT bad-update round {round_id}: {kind}")
        return _bad_payload(kind, self, round_id, blob)

    ClientNode.publish_update = publish_update  # type: ignore[method-assign]


def silent(spec: str) -> None:
    from fleml_node.client import ClientNode, ClientRoundStats

    rounds = {int(r) for r in spec.split(",")}
    real = ClientNode.take_part

    def take_part(self: ClientNode, round_id: int, *args: Any) -> ClientRoundStats:
        if round_id in rounds:
            _say(f"FAULT silent round {round_id}")
            return ClientRoundStats(round_id, "skipped-late", reason="silent")
        return real(self, round_id, *args)

    ClientNode.take_part = take_part  # type: ignore[method-assign]


def copy_member(spec: str) -> None:
    import time

    from fleml_node.chain.events import round_events
    from fleml_node.client import ClientNode

    victim_index = int(spec)

    def publish_update(self: ClientNode, round_id: int, blob: bytes) -> tuple[bytes, str]:
        victim = self.consortium.member_at(victim_index)
        while True:
            for event in round_events(self.consortium, round_id).get("UpdateSubmitted", []):
                if event.args["member"] == victim:
                    _say(f"FAULT copy round {round_id}: committing member {victim_index}'s "
                         "update as this member's own")
                    return bytes(event.args["updateHash"]), event.args["updateCid"]
            time.sleep(0.2)

    ClientNode.publish_update = publish_update  # type: ignore[method-assign]


def lie(spec: str) -> None:
    from fleml_node.aggregator import AggregatorNode
    from fleml_node.defense.base import weighted_sum

    plan = {int(r): kind for r, _, kind in (item.partition("=") for item in spec.split(","))}
    real_init, real_publish = AggregatorNode.__init__, AggregatorNode._publish_inputs

    def init(self: AggregatorNode, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        honest = self.defense.aggregate

        def aggregate(updates: Any, ctx: Any = None) -> Any:
            result = honest(updates, ctx)
            kind = plan.get(ctx.round_number)
            if kind in ("double", "flag"):
                _say(f"FAULT lie round {ctx.round_number}: {kind}")
                client = result.clients[0 if kind == "double" else 1]
                if kind == "double":
                    client.coefficient *= 2
                else:
                    client.flagged, client.coefficient = True, 0.0
                result.update = weighted_sum(updates, [c.coefficient for c in result.clients])
            return result

        self.defense.aggregate = aggregate

    def publish_inputs(self: AggregatorNode, outcome: Any) -> Any:
        kind = plan.get(outcome.round_id)
        if kind == "state":
            _say(f"FAULT lie round {outcome.round_id}: publishing another state")
            outcome.state_after = {**outcome.state_after, "aggregations": 10**6}
        if kind == "validation":
            _say(f"FAULT lie round {outcome.round_id}: publishing another validation set")
            used = self.engine.validation
            self.engine.validation, self._validation_ref = (used[0] + 0.5, used[1]), None
            try:
                return real_publish(self, outcome)
            finally:
                self.engine.validation, self._validation_ref = used, None
        return real_publish(self, outcome)

    AggregatorNode.__init__ = init  # type: ignore[method-assign]
    AggregatorNode._publish_inputs = publish_inputs  # type: ignore[method-assign]


def slow_train(spec: str) -> None:
    import time

    from fleml_node.client import ClientNode

    plan = {int(r): float(s) for r, _, s in (item.partition("=") for item in spec.split(","))}
    real = ClientNode._train

    def train(self: ClientNode, stats: Any, *args: Any) -> Any:
        wait = plan.get(stats.round_id)
        if wait:
            _say(f"FAULT slow-train round {stats.round_id}: waiting {wait:g} s")
            time.sleep(wait)
        return real(self, stats, *args)

    ClientNode._train = train  # type: ignore[method-assign]


def hold_before_finalize(spec: str) -> None:
    import time

    from fleml_node.chain.contract import Consortium

    plan = {int(r): float(s) for r, _, s in (item.partition("=") for item in spec.split(","))}
    real = Consortium.finalize_round

    def finalize_round(self: Consortium, round_id: int, *args: Any, **kwargs: Any) -> Any:
        seconds = plan.pop(round_id, None)
        if seconds is not None:
            _say(f"FAULT hold-before-finalize round {round_id}: waiting {seconds:g} s")
            time.sleep(seconds)
        return real(self, round_id, *args, **kwargs)

    Consortium.finalize_round = finalize_round  # type: ignore[method-assign]


FAULTS = {"none": lambda: None, "tamper-put": tamper_put, "hang-in-training": hang_in_training,
          "crash-after-close": crash_after_close}


if __name__ == "__main__":
    fault, _, arg = sys.argv[1].partition(":") if len(sys.argv) > 1 else ("", "", "")
    if fault == "bad-update" and arg:
        bad_update(arg)
    elif fault == "silent" and arg:
        silent(arg)
    elif fault == "copy" and arg:
        copy_member(arg)
    elif fault == "lie" and arg:
        lie(arg)
    elif fault == "slow-train" and arg:
        slow_train(arg)
    elif fault == "hold-before-finalize" and arg:
        hold_before_finalize(arg)
    elif fault in FAULTS:
        FAULTS[fault]()
    else:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(FAULTS)},bad-update:R=KIND,...,"
                 "silent:R,...,copy:I,lie:R=KIND,...,slow-train:R=S,...,"
                 "hold-before-finalize:R=S,...}} "
                 "[fleml-node args ...]")
    from fleml_node.cli import main

    sys.argv = ["fleml-node", *sys.argv[2:]]
    main()
