"""The federation's learning task, as every node of a consortium sees it.

Members and the aggregator agree on a task: the dataset family (which fixes the model
architecture), a seed for the initial model, the local training hyper-parameters, and, when
members simulate their local data from a public dataset, how that dataset is split. The split
reserves a small clean validation set for the aggregator (FLEML's meta-learning and FLTrust's
root data) before dealing the rest to the members, so the aggregator never sees member data.

A member with data of its own gives a safetensors file with tensors ``x`` (float32 images,
``N x C x H x W``, already normalised like the dataset) and ``y`` (int64 labels) instead.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from fleml_node.learning import (
    ImageDataset,
    TrainConfig,
    build_model,
    dirichlet_partition,
    iid_partition,
    load_dataset,
)
from fleml_node.learning.datasets import DATASETS

log = logging.getLogger(__name__)

PARTITIONS = ("dirichlet", "iid")
# Nodes log each round's local loss before and after training; measuring it on an evenly
# spaced subset keeps that from costing two full extra passes over the local data.
LOSS_EVAL_SAMPLES = 128


@dataclass(frozen=True)
class TaskConfig:
    """What every node of the federation agrees on.

    Attributes
    ----------
    dataset : str
        A key of :data:`~fleml_node.learning.datasets.DATASETS`; fixes the model architecture.
    seed : int
        Seed of the initial model, the data split and every client's random stream.
    num_clients : int
        Members the public dataset is split over (simulated local data).
    partition : str
        One of :data:`PARTITIONS`: ``dirichlet`` (label skew, see ``alpha``) or ``iid``.
    alpha : float
        Dirichlet concentration; smaller is more skewed.
    validation_size : int
        Clean training samples reserved for the aggregator before the split.
    max_client_samples : int
        Cap on each client's share (a seeded subset), 0 for no cap; keeps simulations short.
    train : TrainConfig
        Local training hyper-parameters.
    compression : str
        How members encode their updates (:data:`fleml_node.storage.compression.ENCODINGS`:
        ``none`` dense float32, ``fp16``, ``int8``, ``topk``); the aggregator and auditors
        decode with it and refuse any other.
    topk_fraction : float
        Share of an update's entries a ``topk`` member sends each round, in (0, 1].
    """

    dataset: str = "mnist"
    seed: int = 0
    num_clients: int = 10
    partition: str = "dirichlet"
    alpha: float = 0.5
    validation_size: int = 500
    max_client_samples: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    compression: str = "none"
    topk_fraction: float = 0.1

    def __post_init__(self) -> None:
        from fleml_node.storage.compression import Codec

        Codec(self.compression, self.topk_fraction)  # raises ValueError naming what is wrong
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {DATASETS}")
        if self.partition not in PARTITIONS:
            raise ValueError(f"unknown partition {self.partition!r}; choose one of {PARTITIONS}")
        if self.num_clients < 1:
            raise ValueError("num_clients must be >= 1")
        if self.alpha <= 0:
            raise ValueError("alpha must be > 0")
        if self.validation_size < 0 or self.max_client_samples < 0:
            raise ValueError("validation_size and max_client_samples must be >= 0")

    def initial_model(self) -> torch.nn.Module:
        """The round-0 global model: the dataset's architecture, seeded."""
        return build_model(self.dataset, seed=self.seed)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("dataset", "seed", "num_clients", "partition",
                                               "alpha", "validation_size",
                                               "max_client_samples", "compression",
                                               "topk_fraction")}
        out["train"] = dict(vars(self.train))
        return out


@functools.lru_cache(maxsize=4)
def load_task_dataset(name: str) -> ImageDataset:
    """The dataset, loaded once per process (several simulated nodes share it)."""
    return load_dataset(name)


@dataclass(frozen=True)
class FederationSplit:
    """Index sets of the training split: the aggregator's validation set and each client's."""

    validation: Tensor
    clients: list[Tensor]


@functools.lru_cache(maxsize=8)
def _split(task: TaskConfig) -> FederationSplit:
    data = load_task_dataset(task.dataset)
    n = data.y_train.numel()
    gen = torch.Generator().manual_seed(task.seed)
    order = torch.randperm(n, generator=gen)
    validation = order[: task.validation_size].sort().values
    rest = order[task.validation_size:].sort().values
    if task.partition == "iid":
        parts = iid_partition(rest.numel(), task.num_clients, seed=task.seed)
    else:
        parts = dirichlet_partition(data.y_train[rest], task.num_clients, task.alpha,
                                    seed=task.seed)
    clients = [rest[p] for p in parts]
    if task.max_client_samples:
        clients = [c[torch.randperm(c.numel(), generator=gen)[:task.max_client_samples]].sort()
                   .values for c in clients]
    return FederationSplit(validation, clients)


def federation_split(task: TaskConfig) -> FederationSplit:
    """The deterministic split every node computes from the same task."""
    return _split(task)


def client_data(task: TaskConfig, index: int | None = None,
                data_file: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """A member's local training data: its own file, or its share of the public dataset."""
    if data_file:
        return load_data_file(data_file)
    if index is None or not 0 <= index < task.num_clients:
        raise ValueError(f"client index must be in 0..{task.num_clients - 1} (got {index}); "
                         f"or give a data file")
    data = load_task_dataset(task.dataset)
    idx = federation_split(task).clients[index]
    return data.x_train[idx], data.y_train[idx]


def validation_data(task: TaskConfig) -> tuple[Tensor, Tensor]:
    """The aggregator's small clean validation set."""
    data = load_task_dataset(task.dataset)
    idx = federation_split(task).validation
    return data.x_train[idx], data.y_train[idx]


def test_data(task: TaskConfig) -> tuple[Tensor, Tensor]:
    data = load_task_dataset(task.dataset)
    return data.x_test, data.y_test


def load_data_file(path: str | Path) -> tuple[Tensor, Tensor]:
    """Read a member's own data (safetensors with ``x`` float32 and ``y`` int64)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ValueError(f"{path} is not a safetensors file: {exc}") from exc
    x, y = tensors.get("x"), tensors.get("y")
    if x is None or y is None:
        raise ValueError(f"{path} must hold tensors 'x' (images) and 'y' (labels)")
    if x.dtype != torch.float32 or x.dim() != 4 or y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"{path}: x must be float32 N x C x H x W and y int64 N")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{path}: x and y must hold the same, non-zero number of samples")
    if not torch.isfinite(x).all():
        raise ValueError(f"{path}: x holds NaN or Inf")
    return x, y
