"""FLEML as deployed: an aggregator and four members, each a separate `fleml-node` process.

Every test runs on a fresh anvil chain with a freshly deployed consortium and the session's
IPFS daemon (see conftest.py). Nodes get their key only through ``FLEML_PRIVATE_KEY``, keep
their state in their own folder and talk to each other only through the contract and IPFS.
Faults are injected by `node_wrapper.py`, which runs the same CLI with one function replaced.

* `test_four_clients_and_an_aggregator_finish_two_audited_rounds`: the processes complete two
  rounds with every member's update, exit on their own, and `fleml-node audit` passes both.
* `test_tampered_update_is_rejected_flagged_on_chain_and_explained_by_the_audit`: a member
  whose IPFS bytes differ from its commitment is rejected by the aggregator, is in the round's
  flagged set on chain, and the audit still passes and says why that member was rejected.
  Soak only (`./fleml test -m soak`): tests/nodes/test_rounds_in_process.py runs the same
  policy and the same audit in one process in ~3 s, against ~33 s here.
* `test_client_killed_mid_round_misses_it_and_rejoins_the_next`: a client SIGKILLed while
  training does not stall the round (the aggregator closes it at the deadline without it);
  restarted on the same state folder, it resumes from its event cursor, sees round 1 is over,
  and takes part in round 2 (opened by a second aggregator run, which also shows the
  aggregator resuming from the chain after a clean stop).
* `test_aggregator_killed_between_close_and_finalize_is_finished_by_a_restart`: an aggregator
  that dies after closing a round leaves it CLOSED; a new aggregator process finishes that
  round from the chain and IPFS alone, goes on to the next, and both rounds pass the audit.
"""

from __future__ import annotations

import pytest

from fleml_node.chain.contract import RoundStatus
from fleml_node.chain.events import round_events

from .conftest import NUM_MEMBERS, Federation

pytestmark = pytest.mark.slow

ALL = range(NUM_MEMBERS)
# Rounds close at quorum (every member); the long window only matters if something hangs.
# Test accuracy is not evaluated: it would load the test set and cost seconds per round.
AGGREGATOR_OPTIONS = ["--rounds", "2", "--round-seconds", "180", "--no-evaluate"]


def assert_audit_passes(fed: Federation, *rounds: int) -> str:
    """`fleml-node audit` must exit 0 and say PASS for each round given; returns its output.

    One round is audited with ``--round r``; several with one call that audits every round.
    """
    done = fed.audit(rounds[0] if len(rounds) == 1 else None)
    passed = all(f"round {r}: PASS" in done.stdout for r in rounds)
    assert done.returncode == 0 and passed, fed.report(
        f"audit of rounds {list(rounds)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def test_four_clients_and_an_aggregator_finish_two_audited_rounds(federation: Federation):
    fed = federation
    # all at once: a client that starts after round 1 opened still finds it in the events
    clients = [fed.client(i, "--max-rounds", "2") for i in ALL]
    aggregator = fed.aggregator(*AGGREGATOR_OPTIONS)
    fed.wait_exit(aggregator, timeout=240)
    for client in clients:
        fed.wait_exit(client, timeout=60)

    assert "done: round 2 finalized" in aggregator.log_text(), fed.report("no done line")
    assert fed.reader.current_round() == 2
    everyone = {fed.member(i) for i in ALL}
    for r in (1, 2):
        assert fed.status(r) is RoundStatus.FINALIZED, fed.report(f"round {r} not finalized")
        assert fed.submitters(r) == everyone, fed.report(f"round {r} lacks submissions")
        assert fed.reader.get_round(r).quorum == NUM_MEMBERS
    for i in ALL:
        assert fed.reader.latest_commitment(fed.member(i))[0] == 2
    output = assert_audit_passes(fed, 1, 2)
    assert output.count("commitment matches") == 2 * NUM_MEMBERS, output


@pytest.mark.soak
def test_tampered_update_is_rejected_flagged_on_chain_and_explained_by_the_audit(
    federation: Federation,
):
    fed = federation
    cheat = 2
    clients = [fed.client(i, "--max-rounds", "1", fault="tamper-put" if i == cheat else None)
               for i in ALL]
    aggregator = fed.aggregator("--rounds", "1", "--round-seconds", "180", "--no-evaluate")
    fed.wait_exit(aggregator, timeout=240)
    for client in clients:
        fed.wait_exit(client, timeout=60)

    cheat_address = fed.member(cheat)
    assert "FAULT tamper-put" in clients[cheat].log_text(), fed.report("the fault did not run")
    assert fed.status(1) is RoundStatus.FINALIZED, fed.report("round 1 not finalized")
    assert fed.submitters(1) == {fed.member(i) for i in ALL}
    assert fed.reader.is_flagged(1, cheat_address), fed.report("the cheat is not flagged")
    assert f"update of {cheat_address} rejected: tampered" in aggregator.log_text(), \
        fed.report("the aggregator did not say why it rejected the cheat")

    output = assert_audit_passes(fed, 1)  # the aggregator did the right thing
    cheat_line = next((line for line in output.splitlines()
                       if f"member {cheat} {cheat_address}" in line), "")
    assert "(rejected)" in cheat_line and "does not match the commitment" in cheat_line \
        and "rightly rejected" in cheat_line, output
    assert output.count("commitment matches") == NUM_MEMBERS - 1, output


def test_client_killed_mid_round_misses_it_and_rejoins_the_next(federation: Federation):
    fed = federation
    victim_index = NUM_MEMBERS - 1
    steady = [fed.client(i, "--max-rounds", "2") for i in ALL if i != victim_index]
    victim = fed.client(victim_index, fault="hang-in-training", name="client3-killed")
    # round 1's window is short, so the clients must be up before the aggregator opens it
    fed.wait_ready(*steady, victim)
    # quorum 0 = every member, so round 1 can only close at its deadline without the victim
    first = fed.aggregator("--rounds", "1", "--round-seconds", "20", "--quorum", "0",
                           "--no-evaluate", name="aggregator-round1")
    fed.wait_log(victim, "FAULT hang-in-training")
    assert fed.status(1) is RoundStatus.OPEN, fed.report("round 1 is not open mid-training")
    victim.kill()

    fed.wait_status(1, RoundStatus.CLOSED, timeout=120)
    restarted = fed.client(victim_index, "--max-rounds", "1", name="client3-restarted")
    fed.wait_exit(first, timeout=120)
    # round 2 from a second aggregator run with a long window (it still closes at quorum), so
    # the restarted client's start-up time cannot make it miss the round
    second = fed.aggregator("--until-round", "2", "--round-seconds", "180", "--quorum", "0",
                            "--no-evaluate", name="aggregator-round2")
    fed.wait_exit(second, timeout=240)
    fed.wait_exit(restarted, timeout=60)
    for client in steady:
        fed.wait_exit(client, timeout=60)

    victim_address = fed.member(victim_index)
    others = {fed.member(i) for i in ALL if i != victim_index}
    round1 = fed.reader.get_round(1)
    assert round1.quorum == NUM_MEMBERS and round1.submissions == NUM_MEMBERS - 1
    closed = round_events(fed.reader, 1)["RoundClosed"][-1]
    assert closed.args["quorumReached"] is False, fed.report("round 1 closed at quorum?")
    assert fed.submitters(1) == others, fed.report("round 1 submissions")
    assert fed.submitters(2) == others | {victim_address}, fed.report("round 2 submissions")
    assert fed.reader.latest_commitment(victim_address)[0] == 2
    # resumed from its cursor: it handled round 1's opening again and saw that round was over
    assert "round 1: skipped" in restarted.log_text(), fed.report("round 1 not replayed")
    for r in (1, 2):
        assert fed.status(r) is RoundStatus.FINALIZED
    assert_audit_passes(fed, 1, 2)


def test_aggregator_killed_between_close_and_finalize_is_finished_by_a_restart(
    federation: Federation,
):
    fed = federation
    clients = [fed.client(i, "--max-rounds", "2") for i in ALL]
    crashed = fed.aggregator(*AGGREGATOR_OPTIONS, fault="crash-after-close",
                             name="aggregator-crashed", expected_rc=-9)
    fed.wait_exit(crashed, timeout=240)
    assert "FAULT crash-after-close round 1" in crashed.log_text(), fed.report("no crash")
    assert fed.status(1) is RoundStatus.CLOSED, fed.report("round 1 should be left CLOSED")

    restarted = fed.aggregator(*AGGREGATOR_OPTIONS, name="aggregator-restarted")
    fed.wait_exit(restarted, timeout=240)
    for client in clients:
        fed.wait_exit(client, timeout=60)

    assert "round 1 finalized" in restarted.log_text(), fed.report("restart did not finish 1")
    everyone = {fed.member(i) for i in ALL}
    for r in (1, 2):
        assert fed.status(r) is RoundStatus.FINALIZED, fed.report(f"round {r} not finalized")
        assert fed.submitters(r) == everyone
    assert_audit_passes(fed, 1, 2)
