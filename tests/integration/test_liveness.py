"""No member can stall the consortium, and no result is built on too few updates.

A federation whose policy needs a minimum of submissions per result runs with real
`fleml-node` processes while members go silent: with enough members left, each round closes at
its deadline and finalizes; with too few, the aggregator abandons the round as soon as the
minimum is out of reach and opens the next one on the last finalized model, so the global
model never moves on a sub-minimum round; once the members are back, rounds finalize again.

CI runs a 3-member variant (minimum 2); the issue's 10-member scenario (minimum 6, four then
five members silent) runs with `./fleml test -m soak`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleml_node.chain.contract import Policy, RoundStatus

from .conftest import Federation


@dataclass(frozen=True)
class Scenario:
    members: int
    minimum: int
    rounds: int
    silent: dict[int, list[int]]  # member -> the rounds it stays silent in

    def submitters(self, round_id: int) -> int:
        return sum(round_id not in self.silent.get(i, []) for i in range(self.members))


# 3 members, minimum 2: round 2 with one silent finalizes at its deadline, rounds 3-4 with two
# silent are abandoned, rounds 5-6 finalize again
SMALL = Scenario(3, 2, 6, {1: [2, 3, 4], 2: [3, 4]})
# 10 members, minimum 6: four silent in rounds 1-5 (finalized after each deadline), a fifth
# silent too in rounds 6-7 (abandoned), everyone back in rounds 8-9
LARGE = Scenario(10, 6, 9, {**{i: [1, 2, 3, 4, 5, 6, 7] for i in range(6, 10)}, 5: [6, 7]})


def policy(scenario: Scenario) -> Policy:
    return Policy(min_round_seconds=1, max_round_seconds=3600, min_submissions=scenario.minimum,
                  grace_seconds=5)


def run_scenario(fed: Federation, scenario: Scenario, round_seconds: int) -> None:
    clients = []
    for i in range(scenario.members):
        plan = scenario.silent.get(i)
        fault = "silent:" + ",".join(map(str, plan)) if plan else None
        clients.append(fed.client(i, fault=fault))
    fed.wait_ready(*clients, timeout=300)  # rounds are short: everyone is up before round 1
    aggregator = fed.aggregator("--rounds", str(scenario.rounds), "--round-seconds",
                                str(round_seconds), "--defense", "fedavg", "--no-evaluate")
    fed.wait_exit(aggregator, timeout=60 + scenario.rounds * (round_seconds + 30))

    last_result = None
    for r in range(1, scenario.rounds + 1):
        info = fed.reader.get_round(r)
        enough = scenario.submitters(r) >= scenario.minimum
        expected = RoundStatus.FINALIZED if enough else RoundStatus.ABANDONED
        assert info.status is expected, fed.report(f"round {r}: {info.status.name}")
        assert info.min_submissions == scenario.minimum
        assert info.submissions == scenario.submitters(r), fed.report(f"round {r} submissions")
        if last_result is not None:
            # every round trains on the last finalized model: an abandoned one moves nothing
            assert info.model_hash == last_result, fed.report(f"round {r} trains elsewhere")
        if enough:
            last_result = info.result_hash
    assert "abandoned" in aggregator.log_text()
    audit = fed.audit(timeout=300)
    assert audit.returncode == 0, fed.report(f"audit:\n{audit.stdout}{audit.stderr}")
    assert "abandoned, skipped" in audit.stdout


@pytest.mark.slow
def test_three_members_minimum_two_abandon_and_recover(make_federation):
    run_scenario(make_federation(SMALL.members, policy(SMALL)), SMALL, round_seconds=12)


@pytest.mark.soak
def test_ten_members_minimum_six_four_then_five_silent(make_federation):
    run_scenario(make_federation(LARGE.members, policy(LARGE)), LARGE, round_seconds=20)
