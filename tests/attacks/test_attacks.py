"""Attack effects on labels, images and updates, and the factory."""

import json

import pytest
import torch

from fleml_node.attacks import (
    ATTACKS,
    Attack,
    BackdoorAttack,
    GaussianNoiseAttack,
    LabelFlipAttack,
    RandomLabelAttack,
    SignFlipAttack,
    Trigger,
    make_attack,
    stamp_trigger,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def data():
    g = gen(1)
    x = torch.randn(100, 1, 8, 8, generator=g)
    y = torch.arange(100) % 10
    return x, y


@pytest.fixture
def update():
    g = gen(2)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


# --- untargeted ----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_random_label_fraction_and_range(data, fraction):
    x, y = data
    y_before = y.clone()
    x2, y2 = RandomLabelAttack(fraction=fraction).poison_data(x, y, gen())
    assert x2 is x and torch.equal(y, y_before)  # inputs untouched
    assert int((y2 != y).sum()) == round(fraction * len(y))  # every chosen label changes
    assert int(y2.min()) >= 0 and int(y2.max()) <= 9
    _, y3 = RandomLabelAttack(fraction=fraction).poison_data(x, y, gen())
    assert torch.equal(y2, y3)


def test_random_label_spreads_over_classes():
    y = torch.zeros(2000, dtype=torch.int64)
    _, y2 = RandomLabelAttack().poison_data(torch.zeros(2000, 1, 1, 1), y, gen())
    counts = torch.bincount(y2, minlength=10)
    assert counts[0] == 0 and bool((counts[1:] > 150).all())


def test_sign_flip_exact(update):
    out = SignFlipAttack(scale=3.0).poison_update(update, gen())
    assert list(out) == list(update)
    assert all(torch.equal(out[k], -3.0 * update[k]) for k in update)
    assert torch.equal(SignFlipAttack().poison_update(update, gen())["w"], -update["w"])
    with pytest.raises(ValueError, match="scale"):
        SignFlipAttack(scale=0)


def test_gaussian_noise_add_and_replace(update):
    big = {"w": torch.zeros(100_000)}
    noisy = GaussianNoiseAttack(scale=0.5).poison_update(big, gen())["w"]
    assert float(noisy.std()) == pytest.approx(0.5, rel=0.02)
    assert abs(float(noisy.mean())) < 0.01
    added = GaussianNoiseAttack(scale=0.5).poison_update(update, gen(3))
    replaced = GaussianNoiseAttack(scale=0.5, replace=True).poison_update(update, gen(3))
    assert all(torch.allclose(added[k] - update[k], replaced[k]) for k in update)
    again = GaussianNoiseAttack(scale=0.5).poison_update(update, gen(3))
    assert all(torch.equal(added[k], again[k]) for k in update)


# --- label flipping ------------------------------------------------------------------------


def test_label_flip_default_is_nine_minus_y(data):
    x, y = data
    _, y2 = LabelFlipAttack().poison_data(x, y, gen())
    assert torch.equal(y2, 9 - y)


def test_label_flip_single_pair(data):
    x, y = data
    attack = LabelFlipAttack.single_pair(7, 1)
    _, y2 = attack.poison_data(x, y, gen())
    assert torch.equal(y2[y == 7], torch.ones(10, dtype=torch.int64))
    assert torch.equal(y2[y != 7], y[y != 7])
    assert attack.mapping == {7: 1}
    with pytest.raises(ValueError, match="differ"):
        LabelFlipAttack.single_pair(3, 3)


def test_label_flip_fraction_and_config_keys(data):
    x, y = data
    attack = make_attack("label_flip", mapping={"7": "1", "5": 3}, fraction=0.5)
    assert attack.mapping == {5: 3, 7: 1}
    _, y2 = attack.poison_data(x, y, gen())
    changed = y2 != y
    assert int(changed.sum()) == 10  # half of the 20 eligible samples (ten 5s, ten 7s)
    assert bool(((y[changed] == 5) | (y[changed] == 7)).all())
    assert torch.equal(y2[changed], attack.table()[y[changed]])
    with pytest.raises(ValueError, match="outside"):
        LabelFlipAttack(mapping={1: 10})


# --- backdoor ------------------------------------------------------------------------------


def test_trigger_masks_hand_checked():
    square = Trigger(size=2, margin=1).mask(5, 5)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[2:4, 2:4] = True
    assert torch.equal(square, expected)
    plus = Trigger(pattern="plus", size=3, margin=0, corner="top_left").mask(4, 4)
    assert plus.int().tolist() == [[0, 1, 0, 0], [1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="fit"):
        Trigger(size=5, margin=1).mask(5, 5)
    with pytest.raises(ValueError, match="corner"):
        Trigger(corner="middle")


def test_stamp_sets_only_trigger_pixels():
    x = torch.randn(3, 3, 6, 6, generator=gen())
    trigger = Trigger(pattern="plus", size=3, corner="top_right", value=(1.0, 2.0, 3.0))
    out = stamp_trigger(x, trigger)
    mask = trigger.mask(6, 6)
    for c, v in enumerate((1.0, 2.0, 3.0)):
        assert bool((out[:, c][:, mask] == v).all())
    assert torch.equal(out[:, :, ~mask], x[:, :, ~mask])
    assert not torch.equal(out, x) and int(mask.sum()) == 5
    with pytest.raises(ValueError, match="channels"):
        stamp_trigger(x, Trigger(value=(1.0, 2.0)))


def test_backdoor_poisons_fraction(data):
    x, y = data
    attack = BackdoorAttack(target_class=2, fraction=0.25, trigger=Trigger(size=2, value=5.0))
    x2, y2 = attack.poison_data(x, y, gen())
    mask = attack.trigger.mask(8, 8)
    stamped = (x2[:, 0][:, mask] == 5.0).all(dim=1)
    assert int(stamped.sum()) == 25
    assert bool((y2[stamped] == 2).all())
    assert torch.equal(y2[~stamped], y[~stamped]) and torch.equal(x2[~stamped], x[~stamped])
    assert not bool((x[:, 0][:, mask] == 5.0).any())  # input untouched
    x3, _ = attack.poison_data(x, y, gen())
    assert torch.equal(x2, x3)


def test_backdoor_scaling_and_config(update):
    attack = make_attack("backdoor", scale=10, trigger={"pattern": "plus", "size": 3})
    assert attack.trigger == Trigger(pattern="plus", size=3)
    out = attack.poison_update(update, gen())
    assert all(torch.equal(out[k], update[k] * 10) for k in update)
    plain = BackdoorAttack().poison_update(update, gen())
    assert all(torch.equal(plain[k], update[k]) for k in update)
    with pytest.raises(ValueError, match="target_class"):
        BackdoorAttack(target_class=10)


# --- interface -----------------------------------------------------------------------------


def test_factory_and_describe(data, update):
    assert set(ATTACKS) == {
        "none",
        "random_label",
        "sign_flip",
        "gaussian_noise",
        "label_flip",
        "backdoor",
        "model_replacement",
        "alie",
        "ipm",
        "min_max",
        "min_sum",
        "fleml_adaptive",
    }
    honest = make_attack("none")
    x, y = data
    assert honest.poison_data(x, y, gen()) == (x, y)
    assert all(
        torch.equal(a, b)
        for a, b in zip(honest.poison_update(update, gen()).values(), update.values(), strict=True)
    )
    for name in ATTACKS:
        params = {"federation_size": 10} if name == "model_replacement" else {}
        record = make_attack(name, **params).describe()
        assert record["name"] == name
        json.dumps(record)
    assert make_attack("backdoor").describe()["trigger"]["pattern"] == "square"
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("nope")
    with pytest.raises(ValueError, match="no parameter"):
        make_attack("sign_flip", sigma=1.0)
    assert isinstance(make_attack("sign_flip", scale=2.0), Attack)
