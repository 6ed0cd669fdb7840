"""Local training: loss goes down, update semantics, reproducibility, attacks, runtime helpers."""

import math

import pytest
import torch

from fleml_node.attacks import LabelFlipAttack, SignFlipAttack
from fleml_node.learning.models import build_model
from fleml_node.learning.params import apply_update, get_params, set_params
from fleml_node.learning.runtime import configure_threads, derive_seed, make_generator
from fleml_node.learning.train import TrainConfig, local_train


@pytest.fixture(scope="module")
def tiny_problem():
    """200 noisy 28x28 images; each class is a bright horizontal band at its own rows."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 10
    x = torch.randn(200, 1, 28, 28, generator=g) * 0.3
    for c in range(10):
        x[y == c, :, 2 * c + 4 : 2 * c + 6, :] += 2.0
    return x, y


def test_training_lowers_loss(tiny_problem):
    x, y = tiny_problem
    model = build_model("mnist", seed=0)
    global_params = get_params(model)
    config = TrainConfig(epochs=3, batch_size=20, lr=0.05, momentum=0.9)
    update, stats = local_train(model, global_params, x, y, config, make_generator(0))
    assert stats.loss_after < 0.5 * stats.loss_before
    assert stats.samples == 200 and stats.epochs == 3 and stats.steps == 30
    assert stats.seconds > 0
    # the update is exactly new - global
    trained = get_params(model)
    assert all(torch.equal(update[k], trained[k] - global_params[k]) for k in update)
    assert list(update) == list(global_params)


def test_adam_and_last_partial_batch(tiny_problem):
    x, y = tiny_problem
    model = build_model("mnist", seed=0)
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-3, optimizer="adam")
    _, stats = local_train(model, get_params(model), x, y, config, make_generator(0))
    assert stats.steps == 2 * math.ceil(200 / 64)
    assert stats.loss_after < stats.loss_before


def test_same_seed_gives_bitwise_equal_update(tiny_problem):
    x, y = tiny_problem
    model = build_model("mnist", seed=1)
    global_params = get_params(model)
    frozen = {k: v.clone() for k, v in global_params.items()}
    config = TrainConfig(batch_size=16, lr=0.05, momentum=0.5, loss_eval_samples=0)
    u1, s1 = local_train(model, global_params, x, y, config, make_generator(9, 2, 3))
    u2, _ = local_train(model, global_params, x, y, config, make_generator(9, 2, 3))
    u3, _ = local_train(model, global_params, x, y, config, make_generator(9, 2, 4))
    assert all(torch.equal(u1[k], u2[k]) for k in u1)
    assert not all(torch.equal(u1[k], u3[k]) for k in u1)
    assert all(torch.equal(global_params[k], frozen[k]) for k in frozen)  # input untouched
    assert s1.loss_before is None and s1.loss_after is None


def test_loss_eval_subset(tiny_problem):
    x, y = tiny_problem
    model = build_model("mnist", seed=0)
    gp = get_params(model)
    _, full = local_train(model, gp, x, y, TrainConfig(), make_generator(0))
    _, part = local_train(model, gp, x, y, TrainConfig(loss_eval_samples=50), make_generator(0))
    assert part.loss_before != full.loss_before
    assert part.loss_before == pytest.approx(full.loss_before, rel=0.2)


def test_attacks_are_applied(tiny_problem):
    x, y = tiny_problem
    model = build_model("mnist", seed=2)
    gp = get_params(model)
    config = TrainConfig(batch_size=50)
    honest, _ = local_train(model, gp, x, y, config, make_generator(1))
    flipped, _ = local_train(
        model, gp, x, y, config, make_generator(1), attack=SignFlipAttack(scale=2.0)
    )
    assert all(torch.equal(flipped[k], honest[k] * -2.0) for k in honest)
    poisoned, _ = local_train(model, gp, x, y, config, make_generator(1), LabelFlipAttack())
    assert not all(torch.equal(poisoned[k], honest[k]) for k in honest)
    # the round trip through apply_update reproduces the trained model
    set_params(model, apply_update(gp, honest))


def test_input_validation(tiny_problem):
    x, y = tiny_problem
    model = build_model("mnist", seed=0)
    gp = get_params(model)
    with pytest.raises(ValueError, match="int64"):
        local_train(model, gp, x, y.int(), TrainConfig(), make_generator(0))
    with pytest.raises(ValueError, match="at least one"):
        local_train(model, gp, x[:0], y[:0], TrainConfig(), make_generator(0))
    with pytest.raises(ValueError, match="order"):
        local_train(model, dict(reversed(gp.items())), x, y, TrainConfig(), make_generator(0))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig(optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_runtime_seeds_and_threads(monkeypatch):
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, 2, 3), derive_seed(1, 3, 2), derive_seed(1, 2), derive_seed(2)}) == 4
    assert 0 <= derive_seed(7) < 2**63
    a, b = make_generator(4, 1), make_generator(4, 1)
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1)
    previous = torch.get_num_threads()
    try:
        monkeypatch.setenv("FLEML_TORCH_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("FLEML_TORCH_THREADS", "many")
        with pytest.raises(ValueError, match="FLEML_TORCH_THREADS"):
            configure_threads()
    finally:
        torch.set_num_threads(previous)
