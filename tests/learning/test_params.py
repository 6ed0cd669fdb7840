"""Flat, ordered, named parameters: get/set, ParamSpec text form, flatten/unflatten, deltas."""

import pytest
import torch
from torch import nn

from fleml_node.learning.models import build_model
from fleml_node.learning.params import (
    ParamSpec,
    apply_update,
    flatten,
    get_params,
    params_delta,
    set_params,
    unflatten,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.out = nn.Linear(2, 1, bias=False)


def test_get_params_order_dtype_and_copy():
    model = build_model("mnist", seed=0)
    params = get_params(model)
    assert list(params) == list(model.state_dict())
    for t in params.values():
        assert t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu"
        assert not t.requires_grad
    before = model.state_dict()["classifier.3.bias"].clone()
    params["classifier.3.bias"].add_(1.0)
    assert torch.equal(model.state_dict()["classifier.3.bias"], before)


def test_get_params_refuses_batchnorm_counter():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="num_batches_tracked"):
        get_params(model)


def test_flatten_unflatten_round_trip_is_bitwise():
    model = build_model("cifar10", seed=3)
    params = get_params(model)
    spec = ParamSpec.from_named(params)
    vec = flatten(params)
    assert vec.shape == (spec.numel,) and vec.dtype == torch.float32
    back = unflatten(vec, spec)
    assert list(back) == list(params)
    assert all(torch.equal(back[k], params[k]) for k in params)
    back[spec.names[0]].zero_()
    assert not torch.equal(vec[: spec.sizes[0]], torch.zeros(spec.sizes[0]))


def test_flatten_order_follows_names():
    named = {"b": torch.tensor([1.0, 2.0]), "a": torch.tensor([[3.0]])}
    assert flatten(named).tolist() == [1.0, 2.0, 3.0]


def test_unflatten_rejects_wrong_length_and_rank():
    spec = ParamSpec(("w",), ((2, 2),))
    with pytest.raises(ValueError, match="4"):
        unflatten(torch.zeros(5), spec)
    with pytest.raises(ValueError, match="1-D"):
        unflatten(torch.zeros(2, 2), spec)


def test_spec_json_is_canonical_and_round_trips():
    spec = ParamSpec.from_model(Tiny())
    text = spec.to_json()
    assert text == (
        '{"format":"fleml-paramspec/1","dtype":"float32","params":'
        '[["fc.weight",[2,3]],["fc.bias",[2]],["out.weight",[1,2]]]}'
    )
    assert ParamSpec.from_json(text) == spec
    assert spec.numel == 6 + 2 + 2
    with pytest.raises(ValueError, match="format"):
        ParamSpec.from_json('{"params": []}')
    with pytest.raises(ValueError, match="dtype"):
        ParamSpec.from_json(text.replace("float32", "float16"))


def test_spec_check_detects_order_and_shape():
    spec = ParamSpec(("a", "b"), ((1,), (2,)))
    spec.check({"a": torch.zeros(1), "b": torch.zeros(2)})
    with pytest.raises(ValueError, match="order"):
        spec.check({"b": torch.zeros(2), "a": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        spec.check({"a": torch.zeros(1), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="unique"):
        ParamSpec(("a", "a"), ((1,), (1,)))


def test_set_params_loads_and_validates():
    src, dst = build_model("mnist", seed=1), build_model("mnist", seed=2)
    set_params(dst, get_params(src))
    assert all(
        torch.equal(a, b)
        for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True)
    )
    params = get_params(src)
    params["classifier.3.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        set_params(dst, params)
    params.pop("classifier.3.bias")
    with pytest.raises(ValueError, match="missing"):
        set_params(dst, params)


def test_delta_and_apply_update_are_inverse():
    old = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    new = {"w": torch.tensor([1.5, 1.0]), "b": torch.tensor([0.0])}
    delta = params_delta(new, old)
    assert delta["w"].tolist() == [0.5, -1.0] and delta["b"].tolist() == [-0.5]
    again = apply_update(old, delta)
    assert all(torch.equal(again[k], new[k]) for k in new)
    assert apply_update(old, delta, scale=2.0)["w"].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError):
        apply_update(old, {"w": torch.zeros(2)})
