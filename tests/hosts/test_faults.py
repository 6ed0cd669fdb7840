"""Faults across hosts: every node on its own network namespace, links cut, processes killed.

See tests/hosts/netns.py (the lab), world.py (placement) and scenarios.py (what each scenario
does and measures). CI runs the member's link cut and a kill -9 + restart of the aggregator
between close and finalize; the rest are soak tests (``./fleml test -m soak``) and the fault
table (``sudo ./fleml bench faults``).

Assertions are about behaviour (rounds finalized, exactly once, every update that could be
there is there); recovery times are measured and reported by benchmarks/faults.py only.
"""

from __future__ import annotations

import pytest

from fleml_node.chain.contract import RoundStatus
from fleml_node.chain.events import round_events

from .scenarios import (
    STEPS,
    aggregator_kill_before_finalize,
    aggregator_link_cut,
    finalize_count,
    ipfs_outage,
    kill_restart,
    member_link_cut,
    sealer_stop,
)
from .world import LabFederation

pytestmark = pytest.mark.slow


def test_member_link_cut_mid_round_closes_at_deadline_and_member_resumes(
        lab_federation: LabFederation):
    fed = lab_federation
    out = member_link_cut(fed.world, fed)
    victim = fed.member(fed.world.members - 1)
    others = {fed.member(i) for i in range(fed.world.members - 1)}

    assert out.precondition, fed.report("the cut came too late: round 1 had the update")
    assert out.finalized == [1, 2], fed.report(f"rounds: {out.statuses}")
    closed = round_events(fed.reader, 1)["RoundClosed"][-1]
    assert closed.args["quorumReached"] is False, fed.report("round 1 closed at quorum?")
    assert fed.submitters(1) == others, fed.report("round 1: only the connected members")
    assert fed.submitters(2) == others | {victim}, fed.report("round 2: the member is back")
    assert out.finalized_twice == 0 and out.rounds_lost == 0 and out.updates_lost == 0, out


def test_aggregator_killed_between_close_and_finalize_restarts_and_finalizes_once(
        lab_federation: LabFederation):
    fed = lab_federation
    out = aggregator_kill_before_finalize(fed.world, fed)
    restarted = next(n for n in fed.nodes if n.name == "aggregator-restarted")

    assert out.precondition, fed.report("the kill was not between close and finalize")
    assert "round 1 finalized" in restarted.log_text(), fed.report("the restart did not "
                                                                    "finalize round 1")
    assert out.finalized == [1, 2], fed.report(f"rounds: {out.statuses}")
    for r in (1, 2):
        assert finalize_count(fed, r) == 1, fed.report(f"round {r}: not finalized exactly once")
        assert fed.submitters(r) == {fed.member(i) for i in range(fed.world.members)}
    assert out.rounds_lost == 0 and out.finalized_twice == 0 and out.updates_lost == 0, out


# -- soak: ./fleml test -m soak ------------------------------------------------------------
@pytest.mark.soak
def test_aggregator_link_cut_between_close_and_finalize_finalizes_once(
        lab_federation: LabFederation):
    fed = lab_federation
    out = aggregator_link_cut(fed.world, fed)

    assert out.precondition, fed.report("the cut was not between close and finalize")
    assert out.finalized == [1, 2], fed.report(f"rounds: {out.statuses}")
    for r in (1, 2):
        assert finalize_count(fed, r) == 1, fed.report(f"round {r} finalized twice")
        assert fed.status(r) is RoundStatus.FINALIZED
        assert fed.submitters(r) == {fed.member(i) for i in range(fed.world.members)}
    assert out.rounds_lost == 0 and out.updates_lost == 0, out


@pytest.mark.soak
@pytest.mark.parametrize("whose", ["member", "aggregator"])
def test_ipfs_daemon_down_30_seconds_mid_round_nothing_lost(lab_federation: LabFederation,
                                                            whose: str):
    fed = lab_federation
    out = ipfs_outage(fed.world, fed, whose)

    assert out.precondition, fed.report("the daemon stopped after round 1's updates came in")
    assert out.finalized == [1, 2], fed.report(f"rounds: {out.statuses}")
    assert out.updates_lost == 0 and out.finalized_twice == 0, fed.report(str(out))
    logs = "\n".join(node.log_text() for node in fed.nodes)
    assert "retrying" in logs, fed.report("nobody noticed the outage")


@pytest.mark.soak
@pytest.mark.parametrize("node", ["aggregator", "client", "chain", "ipfs"])
def test_kill_and_restart_at_each_step_of_a_round(lab_federation: LabFederation, node: str):
    fed = lab_federation
    outcomes = kill_restart(fed.world, fed, node)

    assert [o.when for o in outcomes] == list(STEPS), fed.report(str(outcomes[-1]))
    for out in outcomes:
        assert out.precondition, fed.report(f"{out.when}: the kill missed its step")
        assert out.rounds_lost == 0 and out.finalized_twice == 0, fed.report(str(out))
        assert out.updates_lost == 0, fed.report(str(out))


@pytest.mark.soak
def test_one_of_three_sealers_stopped_mid_round_the_federation_goes_on(
        poa_federation: LabFederation):
    fed = poa_federation
    out = sealer_stop(fed.world, fed)

    assert out.precondition, fed.report("the sealer stopped outside round 1")
    assert out.finalized == [1, 2], fed.report(f"rounds: {out.statuses}")
    assert out.updates_lost == 0 and out.finalized_twice == 0, fed.report(str(out))
