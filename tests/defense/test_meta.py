"""The meta-learned weighting function: prior, softmax support, Adam, history, state."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fleml_node.defense.meta import FEATURES, MetaWeighter


def _features(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(FEATURES), generator=gen, dtype=torch.float64)


def test_untrained_logits_are_the_prior() -> None:
    x = _features(5)
    w = MetaWeighter(hidden=4, prior_scale=2.0)
    assert w.n_params == len(FEATURES) + 4 * (len(FEATURES) + 2) == 58
    score = x[:, FEATURES.index("score")]
    share = x[:, FEATURES.index("log_sample_share")]
    assert torch.allclose(w.logits(x), -2.0 * score + share)
    no_counts = MetaWeighter(prior_scale=2.0, sample_prior=False)
    assert torch.allclose(no_counts.logits(x), -2.0 * score)


def test_coefficients_vanish_on_flagged_and_sum_to_one() -> None:
    x = _features(4)
    active = torch.tensor([True, False, True, True])
    c = MetaWeighter().coefficients(x, active)
    assert c[1].item() == 0.0
    assert float(c.sum()) == pytest.approx(1.0)
    logits = MetaWeighter().logits(x)[active]
    assert torch.allclose(c[active], torch.softmax(logits, dim=0))


def test_first_adam_step_moves_by_lr_against_the_gradient_sign() -> None:
    w = MetaWeighter(lr=0.1)
    before = w.theta.clone()
    grad = torch.zeros_like(before)
    grad[0], grad[5] = 3.0, -0.5
    w.adam_update(grad)
    delta = w.theta - before
    assert delta[0].item() == pytest.approx(-0.1, rel=1e-6)
    assert delta[5].item() == pytest.approx(0.1, rel=1e-6)
    assert delta[1].item() == 0.0 and w.adam_step == 1


def test_history_smoothing_and_shares() -> None:
    w = MetaWeighter(ema=0.5)
    assert w.smoothed_scores(["a", "b"], torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]
    w.update_history(["a", "b"], [1.0, 2.0], [2.0, 0.0])
    assert w.smoothed_scores(["a", "c"], torch.tensor([3.0, 5.0])).tolist() == [2.0, 5.0]
    assert w.log_past_shares(["a", "b", "c"]).tolist() == pytest.approx(
        [math.log(2.0), math.log(0.01), 0.0]
    )
    w.update_history(["a"], [2.0], [1.0])
    assert w.history["a"] == {"ema_score": 2.0, "ema_share": 1.5, "rounds": 2}


def test_state_round_trips_exactly_through_json() -> None:
    w = MetaWeighter(seed=3)
    w.adam_update(torch.linspace(-1, 1, w.n_params, dtype=torch.float64))
    w.update_history(["x", "y"], [0.1, 1 / 3], [0.7, 1.3])
    restored = MetaWeighter(seed=99)
    restored.load_state_dict(json.loads(json.dumps(w.state_dict())))
    for name in ("theta", "adam_m", "adam_v"):
        assert torch.equal(getattr(restored, name), getattr(w, name))
    assert restored.adam_step == 1 and restored.history == w.history
    with pytest.raises(ValueError, match="expected"):
        MetaWeighter(hidden=2).load_state_dict(w.state_dict())


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        MetaWeighter(hidden=0)
    with pytest.raises(ValueError):
        MetaWeighter(ema=0.0)
