"""--device: the CPU default is the same arithmetic as before; bad names fail clearly."""

import pytest
import torch

from fleml_node.learning import TrainConfig, build_model, get_params, local_train, make_generator
from fleml_node.learning.runtime import device_info, resolve_device


def test_resolve_device_default_and_auto():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert device_info("cpu")["device"] == "cpu"


@pytest.mark.parametrize("bad", ["gpu0", "tpu", ""])
def test_resolve_device_rejects_unknown(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_resolve_device_rejects_absent_cuda():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def test_explicit_cpu_device_is_bitwise_the_default():
    model = build_model("mnist", 0)
    params = get_params(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (40,), generator=gen)
    config = TrainConfig(batch_size=8)
    a, _ = local_train(build_model("mnist", 0), params, x, y, config, make_generator(1, 2))
    b, _ = local_train(build_model("mnist", 0), params, x, y, config, make_generator(1, 2),
                       device="cpu")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(t.device.type == "cpu" for t in b.values())
