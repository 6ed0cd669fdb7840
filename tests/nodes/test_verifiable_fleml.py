"""The audit re-runs FLEML from what the aggregator published, and catches an aggregator that lies.

Each test runs real rounds on anvil + IPFS (nodes stepped in one process). The honest
aggregator's rounds pass with FLEML re-run bit for bit; an aggregator that doubles a member's
coefficient, flags a benign member, publishes a state other than the one it used, or publishes
a validation set other than the one it used, fails the audit with the check named.
"""

import pytest

from fleml_node.aggregator import AggregatorNode
from fleml_node.audit import attest, audit_round
from fleml_node.chain.events import round_events
from fleml_node.defense import make_defense
from fleml_node.defense.base import weighted_sum
from fleml_node.devnet.anvil import free_port
from fleml_node.explorer.data import Explorer
from fleml_node.round_engine import encode_validation
from fleml_node.storage import IpfsError, IpfsStore, content_hash
from fleml_node.task import validation_data

from .conftest import TASK
from .test_rounds_in_process import drive, make_clients

RERUN = ("fleml re-run from the committed validation set and state gives the reported flags, "
         "coefficients, aggregate and state")


def run(federation, tmp_path, rounds=1, tamper=None):
    aggregator = AggregatorNode(federation.bind(1), federation.store(), make_defense("fleml"),
                                TASK, until_round=rounds, round_seconds=600,
                                validation=validation_data(TASK))
    if tamper:
        tamper(aggregator)
    drive(aggregator, make_clients(federation, tmp_path), rounds)
    reader = federation.bind(None)
    return [audit_round(reader, federation.store(), r) for r in range(1, rounds + 1)]


def lie_in_aggregate(change):
    """Let the defense decide, then change its result and keep the report self-consistent."""

    def tamper(aggregator):
        honest = aggregator.defense.aggregate

        def aggregate(updates, ctx=None):
            result = honest(updates, ctx)
            change(result.clients)
            result.update = weighted_sum(updates, [c.coefficient for c in result.clients])
            return result

        aggregator.defense.aggregate = aggregate

    return tamper


def test_honest_fleml_rounds_are_rerun_bit_for_bit(federation, tmp_path):
    """The operator commits the validation set on chain before round 1. The aggregator starts
    holding an earlier set, as a process does after a scheduled change took effect: it fetches
    the set committed for the round by its CID, and the audit finds that set in the report."""
    x, y = validation_data(TASK)
    blob = encode_validation(x, y)
    federation.bind(0).set_validation_set(content_hash(blob), federation.store().put(blob))

    def stale_set(aggregator):
        earlier = (x + 0.5, y)
        aggregator.engine.validation = earlier
        aggregator._validation_hash = content_hash(encode_validation(*earlier))

    verdicts = run(federation, tmp_path, rounds=2, tamper=stale_set)
    for v in verdicts:
        assert v.verdict == "PASS", "\n".join(v.lines())
        assert v.checks[RERUN] == (True, "bit-for-bit")
        assert v.checks["the validation set is the one committed on chain for the round"] == \
            (True, "")
    assert verdicts[0].checks["defense state continues from a fresh defense (initial model)"][0]
    assert verdicts[1].checks["defense state continues from round 1, which it builds on"][0]


def test_a_doubled_coefficient_fails_the_rerun(federation, tmp_path, monkeypatch):
    """...and the failure names the software and CPU kernels of both runs (the report records
    the aggregator's: other vector kernels may round differently). The aggregator here says
    it ran on AVX512 kernels."""
    import fleml_node.round_engine as engine_module

    real = engine_module.execution_environment

    def double(clients):
        clients[0].coefficient *= 2

    def tamper(aggregator):
        lie_in_aggregate(double)(aggregator)
        monkeypatch.setattr(engine_module, "execution_environment",
                            lambda: {**real(), "cpu_capability": "AVX512"})
        step = aggregator.step

        def step_then_restore():
            did = step()
            if did == "done":
                monkeypatch.undo()  # the audit runs on this machine as it is
            return did

        aggregator.step = step_then_restore

    (verdict,) = run(federation, tmp_path, tamper=tamper)
    ok, detail = verdict.checks[RERUN]
    assert verdict.verdict == "FAIL" and ok is False and "coefficients differ" in detail
    # the report is self-consistent: only the re-run can tell
    assert verdict.checks["aggregation replays to the finalized model"][0]
    mine = real()
    assert detail.endswith(
        f"recorded run on torch {mine['torch']}, fleml_node {mine['fleml_node']}, "
        f"{mine['machine']} AVX512, this re-run on torch {mine['torch']}, fleml_node "
        f"{mine['fleml_node']}, {mine['machine']} {mine['cpu_capability']}")


def test_a_benign_member_flagged_at_will_fails_the_rerun(federation, tmp_path):
    def flag(clients):
        clients[1].flagged, clients[1].coefficient = True, 0.0
        clients[1].reasons = ["made up"]

    (verdict,) = run(federation, tmp_path, tamper=lie_in_aggregate(flag))
    ok, detail = verdict.checks[RERUN]
    assert ok is False and "flagged True in the report, False on re-run" in detail


def test_a_published_state_other_than_the_one_used_fails(federation, tmp_path):
    def tamper(aggregator):
        real = aggregator._publish_inputs

        def publish(outcome):
            outcome.state_after = {**outcome.state_after, "aggregations": 99}
            return real(outcome)

        aggregator._publish_inputs = publish

    (verdict,) = run(federation, tmp_path, tamper=tamper)
    ok, detail = verdict.checks[RERUN]
    assert ok is False and "state after the round differs" in detail


def test_a_published_validation_set_other_than_the_one_used_fails(federation, tmp_path):
    def tamper(aggregator):
        real = aggregator._publish_inputs

        def publish(outcome):
            x, y = aggregator.engine.validation
            used = aggregator.engine.validation
            aggregator.engine.validation = (x + 0.5, y)  # what the report will point at
            try:
                return real(outcome)
            finally:
                aggregator.engine.validation = used

        aggregator._publish_inputs = publish

    (verdict,) = run(federation, tmp_path, tamper=tamper)
    assert verdict.checks[RERUN][0] is False, "\n".join(verdict.lines())


def test_unfetchable_inputs_make_the_rerun_inconclusive_never_a_pass(federation, tmp_path):
    def tamper(aggregator):
        real = aggregator._publish_inputs

        def publish(outcome):
            inputs = real(outcome)
            # a CID nobody provides (raw, sha256 of other bytes): the auditor cannot fetch it
            inputs["validation"] = {**inputs["validation"], "cid":
                                    "bafkreihctmsjysftvyjdj3eyfsvdatj6vzstkn2zrv2sx67mcb5ifcglei"}
            return inputs

        aggregator._publish_inputs = publish

    quick_stores(federation)
    (verdict,) = run(federation, tmp_path, tamper=tamper)
    ok, detail = verdict.checks[RERUN]
    assert ok is None and "cannot be fetched" in detail
    assert verdict.verdict == "INCONCLUSIVE"


UNPROVIDED = "bafkreihctmsjysftvyjdj3eyfsvdatj6vzstkn2zrv2sx67mcb5ifcglei"  # nobody holds it


def quick_stores(federation):
    """Stores that give up on an object after one 3 s try: an unprovided CID costs 3 s."""
    federation_store = federation.store

    def quick_store():
        store = federation_store()
        store.timeout, store.retries = 3, 0
        return store

    federation.store = quick_store


def test_inputs_the_report_leaves_out_fail_the_audit(federation, tmp_path):
    """Omitting the validation set or the state is the aggregator's doing: a failure, not a
    re-run that is merely inconclusive (which attestations would not count)."""
    def tamper(aggregator):
        aggregator._publish_inputs = lambda outcome: {}

    (verdict,) = run(federation, tmp_path, tamper=tamper)
    ok, detail = verdict.checks["the report publishes what fleml read"]
    assert ok is False and detail == ("missing: the validation set, the state before the "
                                      "round, the state after the round")
    assert verdict.verdict == "FAIL"


def test_what_nobody_provides_is_inconclusive_and_an_outage_of_our_own_daemon_raises(
        federation, tmp_path):
    """Round 1 names its state after the round by a CID nobody provides (its hash is right),
    round 3 its report: neither is a pass nor a failure. An auditor whose own daemon is down
    gets an error, not a verdict."""
    def tamper(aggregator):
        publish_inputs, publish_outcome = aggregator._publish_inputs, aggregator._publish_outcome

        def inputs(outcome):
            published = publish_inputs(outcome)
            if outcome.round_id == 1:
                after = published["defense_state"]["after"]
                published["defense_state"]["after"] = {**after, "cid": UNPROVIDED}
            return published

        def outcome(info, opened, round_outcome, received):
            published = publish_outcome(info, opened, round_outcome, received)
            return {**published, "report_cid": UNPROVIDED} if round_outcome.round_id == 3 \
                else published

        aggregator._publish_inputs, aggregator._publish_outcome = inputs, outcome

    quick_stores(federation)
    first, second, third = run(federation, tmp_path, rounds=3, tamper=tamper)
    assert first.verdict == "PASS", "\n".join(first.lines())  # its own inputs are all there
    ok, detail = second.checks["defense state continues from round 1, which it builds on"]
    assert ok is None and detail.startswith("round 1's report or state cannot be had")
    assert second.verdict == "INCONCLUSIVE", "\n".join(second.lines())
    assert third.checks["report matches its commitment"][0] is None
    assert third.verdict == "INCONCLUSIVE"
    # on record as inconclusive, counted neither way, and shown as such by the explorer
    member = federation.bind(2)
    attest(member, federation.store(), third)
    (event,) = round_events(member, 3)["RoundAuditInconclusive"]
    assert event.args["member"] == member.account.address
    assert member.attestations(3) == (0, 0) and member.has_attested(3, member.account.address)
    shown = Explorer(federation.bind(None), None).round(3)["attestations"]
    assert shown["inconclusive"] == 1 and shown["events"][0]["verdict"] == "INCONCLUSIVE"
    down = IpfsStore(f"/ip4/127.0.0.1/tcp/{free_port()}/http", timeout=3)
    with pytest.raises(IpfsError):
        audit_round(federation.bind(None), down, 3)

