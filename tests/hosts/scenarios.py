"""Fault scenarios across hosts, shared by tests/hosts/test_faults.py and benchmarks/faults.py.

Each scenario runs a real federation on a :class:`tests.hosts.world.World` (3 members, FedAvg,
120 MNIST samples each), injects one fault at a chosen step of a round, lets the nodes run to
their end and returns an :class:`Outcome` measured from the chain (what the observer host
reads) and the clock:

* ``rounds_lost``: planned rounds that did not finalize (abandoned, or never reached);
* ``finalized_twice``: rounds with more than one ``RoundFinalized`` event;
* ``updates_lost``: member updates missing from rounds where the fault did not exclude that
  member on purpose (the member whose link is cut across a deadline misses that round by
  design, as the contract's deadline says);
* ``recovered_s``: seconds from the end of the fault (link restored, process restarted) to the
  affected node's next effect on the chain (its next update, the round's finalization, the
  next round opening); measured by polling every 0.25 s, never asserted.

The tests assert behaviour on the outcome; the benchmark tabulates it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fleml_node.chain.contract import RoundStatus
from fleml_node.chain.events import round_events

from .world import LabFederation, World

DEFENSE = ["--defense", "fedavg", "--no-evaluate"]
STEPS = ("open", "submit", "close", "finalize")


@dataclass
class Outcome:
    fault: str
    when: str
    rounds: int
    finalized: list[int] = field(default_factory=list)
    rounds_lost: int = 0
    finalized_twice: int = 0
    updates_lost: int = 0
    recovered_s: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    statuses: dict[int, str] = field(default_factory=dict)
    precondition: bool = True  # the fault hit the step it was meant for

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(fed: LabFederation, outcome: Outcome, excused: dict[int, set[str]]) -> Outcome:
    """Fill the chain-side counts of ``outcome``; ``excused[r]``: members allowed to miss r."""
    everyone = {fed.member(i) for i in range(fed.world.members)}
    for r in range(1, outcome.rounds + 1):
        if fed.reader.current_round() < r:
            outcome.rounds_lost += 1
            outcome.statuses[r] = "NONE"
            continue
        status = fed.status(r)
        outcome.statuses[r] = status.name
        events = round_events(fed.reader, r)
        finals = len(events.get("RoundFinalized", []))
        if finals > 1:
            outcome.finalized_twice += 1
        if status is RoundStatus.FINALIZED:
            outcome.finalized.append(r)
        else:
            outcome.rounds_lost += 1
        expected = everyone - excused.get(r, set())
        outcome.updates_lost += len(expected - fed.submitters(r))
    return outcome


def wait_time(fed: LabFederation, what: str, predicate: Callable[[], bool],
              timeout: float = 300) -> float:
    """Wait like ``fed.wait_until`` and return the monotonic time it became true."""
    fed.wait_until(what, predicate, timeout=timeout, interval=0.25)
    return time.monotonic()


def finalize_count(fed: LabFederation, r: int) -> int:
    return len(round_events(fed.reader, r).get("RoundFinalized", []))


def member_missing(fed: LabFederation, i: int, r: int) -> bool:
    return fed.member(i) not in fed.submitters(r)


def start_members(fed: LabFederation, rounds: int, faults: dict[int, str] | None = None,
                  max_rounds: dict[int, int] | None = None, wait: bool = True) -> list:
    faults, max_rounds = faults or {}, max_rounds or {}
    clients = [fed.client(i, "--max-rounds", str(max_rounds.get(i, rounds)),
                          fault=faults.get(i)) for i in range(fed.world.members)]
    if wait:  # everyone bound and loaded before round 1 opens
        fed.wait_ready(*clients, timeout=300)
    return clients


def finish(fed: LabFederation, aggregator, clients, timeout: float = 400) -> None:
    fed.wait_exit(aggregator, timeout=timeout)
    for client in clients:
        fed.wait_exit(client, timeout=120)


# -- (a) a member's link cut mid-round, across the deadline ---------------------------------
def member_link_cut(world: World, fed: LabFederation, round_seconds: int = 40) -> Outcome:
    """Member 2's link is cut while it works on round 1 and restored once round 1 closed.

    Round 1 (quorum: every member) can then only close at its deadline, without member 2, and
    finalizes with the other two; member 2 resumes in round 2.
    """
    victim = world.members - 1
    host = world.member_hosts[victim]
    started = time.monotonic()
    out = Outcome("member link cut", "mid-round 1, until round 1 closed", rounds=2)
    clients = start_members(fed, 2, faults={victim: "slow-train:1=6"}, max_rounds={victim: 1})
    aggregator = fed.aggregator("--rounds", "2", "--round-seconds", str(round_seconds),
                                "--quorum", "0", *DEFENSE)
    fed.wait_log(clients[victim], "FAULT slow-train round 1", timeout=120)
    world.lab.cut(host)
    out.precondition = fed.status(1) is RoundStatus.OPEN and member_missing(fed, victim, 1)
    try:
        fed.wait_status(1, RoundStatus.CLOSED, timeout=round_seconds + 60)
    finally:
        world.lab.restore(host)
    restored = time.monotonic()
    member = fed.member(victim)
    back = wait_time(fed, f"member {victim} to submit in round 2",
                     lambda: fed.reader.current_round() >= 2 and member in fed.submitters(2))
    out.recovered_s = round(back - restored, 1)
    finish(fed, aggregator, clients)
    out.seconds = round(time.monotonic() - started, 1)
    return measure(fed, out, excused={1: {member}})


# -- (b) the aggregator's link cut between close and finalize -------------------------------
def aggregator_link_cut(world: World, fed: LabFederation, cut_seconds: float = 35) -> Outcome:
    """The aggregator's link is cut after round 1 closed and before its finalizeRound is sent
    (the aggregator holds 3 s there), for ``cut_seconds``; on reconnect it finalizes round 1
    exactly once and goes on to round 2.

    A cut shorter than the node's 30 s RPC timeout is ridden out by TCP alone (the request
    goes through when the link is back); a longer one makes the aggregator retry the whole
    step from the chain's state. ``notes`` says which happened.
    """
    started = time.monotonic()
    out = Outcome("aggregator link cut", f"round 1 between close and finalize, "
                  f"{cut_seconds:g} s", rounds=2)
    # the members are not waited for: round 1's window is long and closes at quorum
    clients = start_members(fed, 2, wait=False)
    aggregator = fed.aggregator("--rounds", "2", "--round-seconds", "240", "--quorum", "0",
                                *DEFENSE, fault="hold-before-finalize:1=3")
    fed.wait_log(aggregator, "FAULT hold-before-finalize round 1", timeout=300)
    world.lab.cut(world.aggregator)
    try:
        out.precondition = fed.status(1) is RoundStatus.CLOSED
        time.sleep(cut_seconds)
    finally:
        world.lab.restore(world.aggregator)
    restored = time.monotonic()
    done = wait_time(fed, "round 1 to finalize after the reconnect",
                     lambda: fed.status(1) is RoundStatus.FINALIZED)
    out.recovered_s = round(done - restored, 1)
    finish(fed, aggregator, clients)
    retried = "retrying until it works" in aggregator.log_text()
    out.notes.append("the aggregator retried the step after the reconnect" if retried else
                     "the pending request went through when the link came back (TCP)")
    out.seconds = round(time.monotonic() - started, 1)
    return measure(fed, out, excused={})
