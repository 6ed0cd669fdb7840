"""The weighting ablation's bookkeeping: which cells each variant runs and how gaps are
grouped (the numbers themselves come from the suite's cell runner, tested elsewhere)."""

from __future__ import annotations

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("weighting_ablation")


def test_variants_change_only_fleml_and_fedavg_runs_alone(ablation):
    spec = ablation.load_spec()
    fedavg = ablation._cells(spec, [0], ["none"], ["mnist"], "fedavg")
    no_prior = ablation._cells(spec, [0], ["none"], ["mnist"], "no_prior")
    default = ablation._cells(spec, [0], ["none"], ["mnist"], "default")
    assert [c.defenses for c in fedavg] == [("fedavg",)] * 2  # alpha 0.5 and 0.1
    assert all(c.defenses == ("fleml",) for c in no_prior + default)
    assert all(c.base["defense_params"] == {"fleml": {"prior_scale": 0.0}} for c in no_prior)
    # the default variant is the suite's own cell: no parameter is passed at all
    assert all("defense_params" not in c.base for c in default)
    assert len({c.key() for c in fedavg + no_prior + default}) == 6


def _pt(final, last2=None, fp=0):
    return {"final": final, "last2": final if last2 is None else last2, "per_round": [],
            "asr": None, "tp": 0, "fp": fp, "fn": 0}


def test_gaps_are_grouped_by_seed_set_and_alpha(ablation):
    a5, a1 = "mnist n=10 a=0.5 mal=- r=4 s=128", "mnist n=10 a=0.1 mal=- r=4 s=128"
    points = {
        "fedavg": {("mnist", a5, "none", 0): _pt(0.50), ("mnist", a5, "none", 2): _pt(0.60),
                   ("mnist", a1, "none", 3): _pt(0.40)},
        "default": {("mnist", a5, "none", 0): _pt(0.52), ("mnist", a5, "none", 2): _pt(0.54),
                    ("mnist", a1, "none", 3): _pt(0.44, fp=1),
                    ("mnist", a5, "label_flip", 0): _pt(0.30)},
        "no_prior": {("mnist", a5, "label_flip", 0): _pt(0.25)},
    }
    out = ablation.summarise(points)
    gaps = out["default"]["clean_gap_vs_fedavg"]
    assert gaps["tuning"]["final"]["mean"] == pytest.approx(2.0)
    assert gaps["reported"]["final"]["n"] == 2
    assert gaps["reported a=0.5"]["final"]["mean"] == pytest.approx(-6.0)
    assert gaps["reported a=0.1"]["final"]["mean"] == pytest.approx(4.0)
    assert out["default"]["flags"]["clean"]["fp"] == 1
    assert out["no_prior"]["attacked_vs_default"]["label_flip"]["mean"] == pytest.approx(-5.0)
    table = ablation.render({"summary": out, "tuning_seeds": [0, 1], "reported_seeds": [2, 3, 4]})
    assert "| default | - | +2.00 +- 0.00 (n=1) | -1.00 +- 5.00 (n=2) |" in table
    assert "label_flip" in table
