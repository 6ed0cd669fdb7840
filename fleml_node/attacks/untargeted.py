"""Untargeted poisoning: random labels (data) and sign flipping / Gaussian noise (model).

* :class:`RandomLabelAttack` relabels a fraction of the local samples with a uniformly drawn
  *wrong* class (the "label flipping / random label" data poisoning used as a baseline by
  Fang et al. 2020, "Local Model Poisoning Attacks to Byzantine-Robust Federated Learning").
* :class:`SignFlipAttack` sends ``-scale * update`` (the sign-flipping attack evaluated by
  Damaskinos et al. 2018 and Li et al. 2019, RSA; also in Fang et al. 2020).
* :class:`GaussianNoiseAttack` adds ``N(0, scale^2)`` noise to every coordinate of the update,
  or with ``replace=True`` sends pure noise (the Gaussian Byzantine worker of Blanchard et
  al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fleml_node.attacks.base import Attack, check_fraction, check_labels, choose


@dataclass(frozen=True)
class RandomLabelAttack(Attack):
    """Give ``round(fraction * N)`` random local samples a uniformly drawn wrong label.

    Parameters
    ----------
    fraction : float, default 1.0
        Share of the local samples to relabel, in [0, 1].
    num_classes : int, default 10
        Number of classes; new labels are drawn among the ``num_classes - 1`` others.
    """

    name: ClassVar[str] = "random_label"
    fraction: float = 1.0
    num_classes: int = 10

    def __post_init__(self) -> None:
        check_fraction(self.fraction)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValueError(f"num_classes must be an integer, got {self.num_classes!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def poison_data(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Return ``x`` and a copy of ``y`` with the chosen labels replaced by wrong ones."""
        check_labels(y, self.num_classes)
        chosen = choose(len(y), self.fraction, generator)
        offsets = torch.randint(1, self.num_classes, (len(chosen),), generator=generator)
        y = y.clone()
        y[chosen] = (y[chosen] + offsets) % self.num_classes
        return x, y


def _check_scale(scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")


@dataclass(frozen=True)
class SignFlipAttack(Attack):
    """Send ``-scale * update``.

    Parameters
    ----------
    scale : float, default 1.0
        Positive magnitude multiplier.
    """

    name: ClassVar[str] = "sign_flip"
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_scale(self.scale)

    def poison_update(
        self, update: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Return the negated, scaled update."""
        return {name: t * -self.scale for name, t in update.items()}


@dataclass(frozen=True)
class GaussianNoiseAttack(Attack):
    """Add (or, with ``replace``, send only) i.i.d. ``N(0, scale^2)`` noise.

    Parameters
    ----------
    scale : float, default 1.0
        Standard deviation of the noise per coordinate.
    replace : bool, default False
        Send pure noise instead of ``update + noise``.
    """

    name: ClassVar[str] = "gaussian_noise"
    scale: float = 1.0
    replace: bool = False

    def __post_init__(self) -> None:
        _check_scale(self.scale)
        if not isinstance(self.replace, bool):
            raise ValueError(f"replace must be a bool, got {self.replace!r}")

    def poison_update(
        self, update: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Return the noisy (or pure-noise) update, in the order of ``update``."""
        out = {}
        for name, t in update.items():
            noise = torch.randn(t.shape, generator=generator, dtype=t.dtype) * self.scale
            out[name] = noise if self.replace else t + noise
        return out
