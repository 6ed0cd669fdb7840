"""Faults across hosts: every node on its own network namespace, links cut, processes killed.

See tests/hosts/netns.py (the lab), world.py (placement) and scenarios.py (what each scenario
does and measures). CI runs the two link cuts; the rest are soak tests
(``./fleml test -m soak``) and the fault table (``./fleml bench faults``).

Assertions are about behaviour (rounds finalized, exactly once, every update that could be
there is there); recovery times are measured and reported by benchmarks/faults.py only.
"""

from __future__ import annotations

import pytest

from fleml_node.chain.contract import RoundStatus
from fleml_node.chain.events import round_events

from .scenarios import aggregator_link_cut, finalize_count, member_link_cut
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
