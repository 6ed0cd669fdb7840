"""The round policy alone: rejection rules, decisions, bitmap and verification, no chain or IPFS."""

import pickle
import struct

import pytest
import torch

from fleml_node.defense import make_defense
from fleml_node.learning import TrainConfig, get_params
from fleml_node.round_engine import (
    MAX_UPDATE_NORM,
    RoundEngine,
    Submission,
    bitmap_indices,
    encode_update,
    flagged_bitmap,
    update_size_cap,
    verify_round,
)
from fleml_node.storage import NonFiniteValues, content_hash, encode_tensors
from fleml_node.task import TaskConfig

TASK = TaskConfig(dataset="mnist", seed=1, num_clients=4, validation_size=50,
                  train=TrainConfig(epochs=1, batch_size=16, lr=0.05))
ROUND = 3


@pytest.fixture(scope="module")
def base():
    return get_params(TASK.initial_model())


def small_update(base, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()}


def member(index):
    return f"0x{index:040x}"


def honest(base, index, seed=None, samples=100):
    blob = encode_update(small_update(base, seed if seed is not None else index), ROUND, samples,
                         member(index))
    return committed(index, blob)


def committed(index, blob):
    return Submission(member(index), index, content_hash(blob), f"cid{index}", blob)


def nan_bytes(blob):
    """A valid FLEML payload with its first float overwritten by NaN (as a cheater would)."""
    header = struct.unpack("<Q", blob[:8])[0]
    start = 8 + header
    return blob[:start] + struct.pack("<f", float("nan")) + blob[start + 4:]


def engine(method="fedavg"):
    return RoundEngine(TASK, make_defense(method))


def bad_inputs(base):
    """One member-chosen bad input per rejection rule; index -> (submission, reason prefix)."""
    good = {i: encode_update(small_update(base, i), ROUND, 100, member(i)) for i in (2, 6)}
    wrong_shapes = {k: torch.zeros(2, 2) for k in list(base)[:1]}
    extra = {**small_update(base, 1), "extra.weight": torch.zeros(3)}
    return {
        1: (Submission(member(1), 1, b"\x01" * 32, "bafymissing",
                       fetch_error="IPFS cat timed out"), "unavailable"),
        2: (Submission(member(2), 2, content_hash(good[2]), "cid2",
                       good[2][:-4] + b"\0\0\0\0"), "tampered"),
        3: (committed(3, b"\x00garbage" * 100), "invalid"),
        4: (committed(4, pickle.dumps({k: v.numpy() for k, v in base.items()})), "invalid"),
        5: (committed(5, encode_tensors(wrong_shapes, kind="update", round=ROUND)), "invalid"),
        6: (committed(6, nan_bytes(good[6])), "invalid"),
        7: (committed(7, encode_tensors(extra, kind="update", round=ROUND)), "invalid"),
        8: (committed(8, encode_update(small_update(base, 2), ROUND - 1, 100, member(8))),
            "invalid"),
        9: (committed(9, encode_tensors(base, kind="model", round=ROUND)), "invalid"),
        10: (committed(10, encode_update({k: torch.full_like(v, MAX_UPDATE_NORM)
                                          for k, v in base.items()}, ROUND, 100, member(10))),
         "invalid: update norm"),
        12: (committed(12, honest(base, 0).blob), "copied"),
    }


def test_every_member_chosen_bad_input_rejects_that_member_only(base):
    cases = bad_inputs(base)
    subs = [honest(base, 0), *(sub for sub, _ in cases.values()), honest(base, 11)]
    outcome = engine().decide(ROUND, base, subs)
    by_index = {d.index: d for d in outcome.decisions}
    for index, (_, prefix) in cases.items():
        assert by_index[index].status == "rejected", index
        assert by_index[index].reason.startswith(prefix), (index, by_index[index].reason)
    assert [d.index for d in outcome.decisions if d.status != "rejected"] == [0, 11]
    assert outcome.bitmap_indices == sorted(cases)
    assert outcome.coefficients == {subs[0].member: 0.5, subs[-1].member: 0.5}


def test_reasons_say_what_is_wrong(base):
    cases = bad_inputs(base)
    outcome = engine().decide(ROUND, base, [sub for sub, _ in cases.values()])
    reason = {d.index: d.reason for d in outcome.decisions}
    assert "does not match the commitment" in reason[2]
    assert "header claims" in reason[3] and "header claims" in reason[4]  # pickle: not parsed
    assert "lacks tensors" in reason[5]
    assert "NaN/Inf" in reason[6]
    assert "unexpected tensors ['extra.weight']" in reason[7]
    assert "round 2, expected round 3" in reason[8]
    assert "is a 'model', expected a 'update'" in reason[9]
    assert "exceeds" in reason[10]
    assert f"names member {member(0)!r}, not its submitter" in reason[12]


def test_a_round_with_no_usable_update_keeps_the_base_model(base):
    cases = bad_inputs(base)
    outcome = engine().decide(ROUND, base, [cases[3][0], cases[6][0]])
    assert outcome.defense_report is None
    assert all(torch.equal(outcome.result_params[k], base[k]) for k in base)
    assert outcome.accepted == []


def test_fedavg_weights_follow_capped_sample_claims(base):
    subs = [honest(base, 0, samples=100), honest(base, 1, samples=300),
            honest(base, 2, samples=10**9)]  # claims above 4x the median are clipped to it
    outcome = engine().decide(ROUND, base, subs)
    assert [d.coefficient for d in outcome.decisions] == pytest.approx(
        [100 / 1600, 300 / 1600, 1200 / 1600])


def test_decisions_are_in_member_index_order_whatever_the_input_order(base):
    subs = [honest(base, 2), honest(base, 0), honest(base, 1)]
    outcome = engine().decide(ROUND, base, subs)
    assert [d.index for d in outcome.decisions] == [0, 1, 2]


def test_the_same_round_decides_the_same_bits_twice(base):
    subs = [honest(base, i) for i in range(4)]
    a = engine("fleml").decide(ROUND, base, subs)
    b = engine("fleml").decide(ROUND, base, subs)
    assert [(d.status, d.coefficient) for d in a.decisions] == \
        [(d.status, d.coefficient) for d in b.decisions]
    assert torch.equal(a.aggregate, b.aggregate)


def test_a_member_listed_twice_is_a_bug_not_a_decision(base):
    sub = honest(base, 0)
    with pytest.raises(ValueError, match="twice"):
        engine().decide(ROUND, base, [sub, sub])


def test_an_update_with_nan_cannot_be_encoded_by_its_member(base):
    update = small_update(base, 0)
    next(iter(update.values()))[0] = float("nan")
    with pytest.raises(NonFiniteValues):
        encode_update(update, ROUND, 10, member(0))


def test_bitmap_round_trips_and_has_no_trailing_zero_words():
    assert flagged_bitmap([0, 3, 300], 301) == [0b1001, 1 << 44]
    assert flagged_bitmap([], 600) == []
    assert bitmap_indices(flagged_bitmap([5, 256, 511], 512)) == {5, 256, 511}


def test_size_cap_fits_an_update_and_refuses_much_more(base):
    from fleml_node.learning.params import ParamSpec

    spec = ParamSpec.from_named(base)
    blob = encode_update(small_update(base, 0), ROUND, 1, member(0))
    assert len(blob) <= update_size_cap(spec) < len(blob) + 2**17


def report_of(outcome, subs):
    return outcome.report(TASK, {"hash": "0x", "cid": ""}, {"hash": "0x", "cid": ""}, subs)


def test_verification_passes_the_engines_own_decision(base):
    cases = bad_inputs(base)
    subs = [honest(base, 0), cases[2][0], cases[6][0], honest(base, 11)]
    outcome = engine().decide(ROUND, base, subs)
    checked = verify_round(ROUND, subs, base, outcome.result_params, report_of(outcome, subs),
                           flagged_bitmap(outcome.bitmap_indices, 12))
    assert all(ok for _, ok, _ in checked.checks), checked.checks
    assert all(m.ok for m in checked.members)


def test_verification_fails_a_report_that_accepts_a_tampered_update(base):
    cases = bad_inputs(base)
    subs = [honest(base, 0), cases[2][0]]
    outcome = engine().decide(ROUND, base, subs)
    report = report_of(outcome, subs)
    report["members"][1]["status"] = "accepted"
    checked = verify_round(ROUND, subs, base, outcome.result_params, report,
                           flagged_bitmap(outcome.bitmap_indices, 3))
    liar = next(m for m in checked.members if m.index == 2)
    assert not liar.ok and "yet the aggregator used it" in liar.detail
    assert not dict((n, ok) for n, ok, _ in checked.checks)["flagged bitmap matches the report"]


def test_verification_fails_a_model_that_is_not_the_aggregate(base):
    subs = [honest(base, 0), honest(base, 1)]
    outcome = engine().decide(ROUND, base, subs)
    skewed = {k: v + 1e-4 for k, v in outcome.result_params.items()}
    checked = verify_round(ROUND, subs, base, skewed, report_of(outcome, subs), [])
    name, ok, detail = checked.checks[-1]
    assert name == "aggregation replays to the finalized model" and not ok
    assert "max abs difference" in detail


def test_an_update_the_auditor_cannot_fetch_is_inconclusive_not_a_failure(base):
    """Unpinning an update after the round must not frame an honest aggregator."""
    subs = [honest(base, 0), honest(base, 1)]
    outcome = engine().decide(ROUND, base, subs)
    gone = Submission(subs[1].member, 1, subs[1].update_hash, "cid1",
                      fetch_error="IPFS cat timed out")
    checked = verify_round(ROUND, [subs[0], gone], base, outcome.result_params,
                           report_of(outcome, subs), [])
    member = next(m for m in checked.members if m.index == 1)
    assert member.ok is None and "inconclusive" in member.detail
    results = {name: ok for name, ok, _ in checked.checks}
    assert results["aggregation replays to the finalized model"] is None
    assert False not in results.values()
