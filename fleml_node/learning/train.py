"""Client-side local training: global parameters and local tensors in, update and stats out.

This is the local step of FedAvg (McMahan et al. 2017): starting from the global model, run
``epochs`` passes of mini-batch SGD (or Adam, Kingma and Ba 2015) over the client's samples
and return the update ``delta = new - global`` as named tensors
(:mod:`fleml_node.learning.params`).

The data pipeline is tensor-only: the client's samples are preloaded tensors, each epoch
draws one permutation from the client's ``torch.Generator`` and mini-batches are gathered
by indexing, with no ``DataLoader`` or worker processes.  With the same global parameters,
data, config and generator state, the update is bitwise reproducible (on the same machine
and thread count).

An :class:`~fleml_node.attacks.base.Attack` attached to a malicious client poisons the
local samples before training and the update after it, drawing from the same generator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fleml_node.attacks.base import Attack
from fleml_node.learning.params import NamedTensors, ParamSpec, get_params, params_delta, set_params
from fleml_node.learning.runtime import resolve_device

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
EVAL_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one local training run.

    Parameters
    ----------
    epochs : int, default 1
        Passes over the local samples.
    batch_size : int, default 32
        Mini-batch size (the last batch of an epoch may be smaller).
    lr : float, default 0.05
        Learning rate.
    optimizer : {"sgd", "adam"}, default "sgd"
        Local optimiser, created fresh for every run (no state carried across rounds).
    momentum : float, default 0.0
        SGD momentum (ignored by Adam, which must leave it at 0).
    weight_decay : float, default 0.0
        L2 penalty.
    loss_eval_samples : int or None, default None
        Samples used to measure ``loss_before`` / ``loss_after`` (evenly spaced over the
        local set).  ``None`` uses all of them (exact, about two forward passes of extra
        work); ``0`` skips both measurements (the stats then hold ``None``).
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    loss_eval_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not isinstance(self.lr, int | float) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.momentum, int | float) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.optimizer == "adam" and self.momentum != 0:
            raise ValueError("momentum applies to sgd only; leave it at 0 for adam")
        if not isinstance(self.weight_decay, int | float) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        les = self.loss_eval_samples
        if les is not None and (isinstance(les, bool) or not isinstance(les, int) or les < 0):
            raise ValueError(f"loss_eval_samples must be None or an integer >= 0, got {les!r}")


@dataclass(frozen=True)
class TrainStats:
    """What a local training run reports.

    Attributes
    ----------
    samples : int
        Local samples trained on (the FedAvg weight).
    steps : int
        Optimiser steps taken.
    epochs : int
        Epochs run.
    loss_before, loss_after : float or None
        Mean cross-entropy on the (possibly poisoned) local samples before and after
        training, or ``None`` when disabled by ``TrainConfig.loss_eval_samples = 0``.
    seconds : float
        Wall-clock time of the whole call.
    """

    samples: int
    steps: int
    epochs: int
    loss_before: float | None
    loss_after: float | None
    seconds: float

    def to_dict(self) -> dict[str, float | int | None]:
        """Return the stats as a JSON-ready dict."""
        return asdict(self)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _mean_loss(model: nn.Module, x: Tensor, y: Tensor, limit: int | None) -> float | None:
    if limit == 0:
        return None
    if limit is not None and limit < len(y):
        idx = torch.linspace(0, len(y) - 1, limit).round().to(torch.int64)
        x, y = x[idx], y[idx]
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(y), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            total += float(F.cross_entropy(logits, y[start : start + EVAL_BATCH], reduction="sum"))
    return total / len(y)


def local_train(
    model: nn.Module,
    global_params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    attack: Attack | None = None,
    device: str | torch.device | None = None,
) -> tuple[NamedTensors, TrainStats]:
    """Train from ``global_params`` on local samples and return the update.

    Parameters
    ----------
    model : torch.nn.Module
        Scratch model of the right architecture; its parameters are overwritten.
    global_params : mapping of str to Tensor
        The global model, in the model's ``state_dict`` order (see ``get_params``).
    x : Tensor
        float32 local images ``N x C x H x W``, N >= 1.
    y : Tensor
        int64 local labels ``N``.
    config : TrainConfig
        Hyper-parameters.
    generator : torch.Generator
        The client's random stream (shuffling and poisoning), e.g. from
        :func:`fleml_node.learning.runtime.make_generator` ``(seed, round, client)``.
    attack : Attack, optional
        Poisoning applied to the local data before and to the update after training.
    device : str or torch.device, optional
        Where to train (:func:`~fleml_node.learning.runtime.resolve_device`; default the CPU).
        Shuffling and poisoning still draw from ``generator`` on the CPU, so only the
        arithmetic moves; the update comes back as CPU tensors.  The model is moved there
        and left there.

    Returns
    -------
    update : dict of str to Tensor
        ``new - global`` (poisoned if an attack says so), float32, in the same order.
    stats : TrainStats
        Samples, steps, losses before/after and seconds.
    """
    started = time.perf_counter()
    if x.dim() != 4 or x.dtype != torch.float32:
        raise ValueError(f"x must be float32 N x C x H x W, got {x.dtype} {tuple(x.shape)}")
    if y.dim() != 1 or y.dtype != torch.int64 or len(y) != len(x):
        raise ValueError(
            f"y must be int64 with one label per image, got {y.dtype} {tuple(y.shape)}"
        )
    if len(y) == 0:
        raise ValueError("a client needs at least one local sample to train")
    ParamSpec.from_model(model).check(global_params, "global_params")

    dev = resolve_device(device)
    if dev.type != "cpu":
        model.to(dev)
    set_params(model, global_params)
    if attack is not None:
        x, y = attack.poison_data(x, y, generator)
    if dev.type != "cpu":
        x, y = x.to(dev), y.to(dev)
    loss_before = _mean_loss(model, x, y, config.loss_eval_samples)

    model.train()
    optimizer = _make_optimizer(model, config)
    n, steps = len(y), 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size].to(x.device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            steps += 1

    loss_after = _mean_loss(model, x, y, config.loss_eval_samples)
    update = params_delta(get_params(model), {k: v.cpu() for k, v in global_params.items()})
    if attack is not None:
        update = attack.poison_update(update, generator)
    stats = TrainStats(
        samples=n,
        steps=steps,
        epochs=config.epochs,
        loss_before=loss_before,
        loss_after=loss_after,
        seconds=time.perf_counter() - started,
    )
    logger.debug("local training: %s", stats)
    return update, stats
