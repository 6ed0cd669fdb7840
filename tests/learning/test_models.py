"""Models: size, no buffers, shapes, deterministic initialisation without global RNG use."""

import pytest
import torch

from fleml_node.learning.models import build_model, count_parameters


@pytest.mark.parametrize(
    ("name", "shape", "max_params"),
    [
        ("mnist", (1, 28, 28), 300_000),
        ("fashion_mnist", (1, 28, 28), 300_000),
        ("cifar10", (3, 32, 32), 500_000),
    ],
)
def test_model_shapes_and_size(name, shape, max_params):
    model = build_model(name, seed=0)
    assert 10_000 < count_parameters(model) <= max_params
    assert list(model.buffers()) == []  # no BatchNorm statistics to aggregate
    assert model(torch.zeros(4, *shape)).shape == (4, 10)


def test_build_model_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = build_model("mnist", 5), build_model("mnist_cnn", 5), build_model("mnist", 6)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (_, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(ta, tb)
    assert not torch.equal(a.state_dict()["features.0.weight"], c.state_dict()["features.0.weight"])


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", 0)
