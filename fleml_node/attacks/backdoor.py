"""Backdoor attack: pixel-pattern trigger with optional model-replacement scaling.

Following Bagdasaryan et al. (2020), "How To Backdoor Federated Learning" (AISTATS), and
the pixel-pattern triggers of Gu et al. (2017), "BadNets": a malicious client stamps a small
pattern (a square or a plus) near an image corner on a fraction of its local samples and
relabels them as the target class.  With ``scale = gamma > 1`` it also boosts its update
(model replacement: ``gamma * (X - G)``, with ``gamma ~ n / eta`` to survive averaging).

Trigger pixels are written in the same value space as the images.  Loaders of
:mod:`fleml_node.learning.datasets` standardise images, so pass ``value=dataset.white`` to
get a full-intensity (white) trigger.  :func:`stamp_trigger` stamps test images to measure
the attack success rate (:func:`fleml_node.learning.evaluate.attack_success_rate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from fleml_node.attacks.base import Attack, check_fraction, check_labels, choose

PATTERNS = ("square", "plus")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class Trigger:
    """A pixel pattern in a ``size x size`` box at ``margin`` pixels from a corner.

    Parameters
    ----------
    pattern : {"square", "plus"}, default "square"
        Fill the whole box, or only its middle row and column.
    size : int, default 3
        Side of the box in pixels.
    corner : {"top_left", "top_right", "bottom_left", "bottom_right"}, default "bottom_right"
        Corner the box is placed in.
    margin : int, default 1
        Distance in pixels between the box and the image border.
    value : float or sequence of float, default 1.0
        Pixel value (one for all channels, or one per channel), in the images' value space.
    """

    pattern: str = "square"
    size: int = 3
    corner: str = "bottom_right"
    margin: int = 1
    value: float | tuple[float, ...] = 1.0

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.corner not in CORNERS:
            raise ValueError(f"corner must be one of {CORNERS}, got {self.corner!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive integer, got {self.size!r}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int) or self.margin < 0:
            raise ValueError(f"margin must be a non-negative integer, got {self.margin!r}")
        if isinstance(self.value, Sequence):
            if not self.value or not all(isinstance(v, int | float) for v in self.value):
                raise ValueError(f"value must be a number or non-empty numbers, got {self.value!r}")
            object.__setattr__(self, "value", tuple(float(v) for v in self.value))
        elif isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ValueError(f"value must be a number or a sequence of numbers, got {self.value!r}")

    def mask(self, height: int, width: int) -> Tensor:
        """Return the bool ``height x width`` mask of the trigger pixels."""
        need = self.size + self.margin
        if need > height or need > width:
            raise ValueError(
                f"a {self.size}-pixel trigger at margin {self.margin} does not fit a "
                f"{height}x{width} image"
            )
        top = self.margin if self.corner.startswith("top") else height - self.margin - self.size
        left = self.margin if self.corner.endswith("left") else width - self.margin - self.size
        box = torch.zeros(self.size, self.size, dtype=torch.bool)
        if self.pattern == "square":
            box[:] = True
        else:
            box[self.size // 2, :] = True
            box[:, self.size // 2] = True
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[top : top + self.size, left : left + self.size] = box
        return mask


def stamp_trigger(x: Tensor, trigger: Trigger) -> Tensor:
    """Return a copy of images ``x`` (``N x C x H x W``) with the trigger stamped on each.

    Parameters
    ----------
    x : Tensor
        Floating-point images.
    trigger : Trigger
        The pattern; a per-channel ``value`` must have ``C`` entries.

    Returns
    -------
    Tensor
        New tensor; trigger pixels set to ``trigger.value``, all others unchanged.
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be floating N x C x H x W, got {x.dtype} {tuple(x.shape)}")
    channels = x.shape[1]
    value = torch.tensor(trigger.value, dtype=x.dtype).reshape(-1)
    if value.numel() not in (1, channels):
        raise ValueError(f"trigger value has {value.numel()} entries for {channels} channels")
    mask = trigger.mask(x.shape[2], x.shape[3])
    out = x.clone()
    out[:, :, mask] = value.reshape(1, -1, 1).expand(len(x), channels, int(mask.sum()))
    return out


@dataclass(frozen=True)
class BackdoorAttack(Attack):
    """Stamp the trigger on a fraction of local samples, relabel them, optionally scale.

    Parameters
    ----------
    target_class : int, default 0
        Label given to triggered samples.
    fraction : float, default 0.2
        Share of the local samples poisoned (chosen uniformly), in [0, 1].
    trigger : Trigger or mapping, default Trigger()
        The pattern; a mapping (e.g. from a JSON config) is passed to ``Trigger(**mapping)``.
    scale : float, default 1.0
        Model-replacement factor ``gamma`` applied to the update (1 = plain data poisoning).
    num_classes : int, default 10
        Number of classes.
    """

    name: ClassVar[str] = "backdoor"
    target_class: int = 0
    fraction: float = 0.2
    trigger: Trigger = field(default_factory=Trigger)
    scale: float = 1.0
    num_classes: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValueError(f"num_classes must be an integer, got {self.num_classes!r}")
        if isinstance(self.target_class, bool) or not isinstance(self.target_class, int):
            raise ValueError(f"target_class must be an integer, got {self.target_class!r}")
        if not 0 <= self.target_class < self.num_classes:
            raise ValueError(f"target_class must lie in 0..{self.num_classes - 1}")
        check_fraction(self.fraction)
        self._check_scale()
        if isinstance(self.trigger, Mapping):
            object.__setattr__(self, "trigger", Trigger(**self.trigger))
        elif not isinstance(self.trigger, Trigger):
            raise ValueError(f"trigger must be a Trigger or a mapping, got {self.trigger!r}")

    def _check_scale(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise ValueError(f"scale must be a number, got {self.scale!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale!r}")

    def stamp(self, x: Tensor) -> Tensor:
        """Stamp this attack's trigger on images (for attack-success-rate evaluation)."""
        return stamp_trigger(x, self.trigger)

    def poison_data(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Return copies of ``x``, ``y`` with the chosen samples triggered and relabelled."""
        check_labels(y, self.num_classes)
        if x.dim() != 4 or len(x) != len(y):
            raise ValueError("x must be N x C x H x W with one label per image")
        chosen = choose(len(y), self.fraction, generator)
        x, y = x.clone(), y.clone()
        x[chosen] = stamp_trigger(x[chosen], self.trigger)
        y[chosen] = self.target_class
        return x, y

    def poison_update(
        self, update: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Return ``scale * update`` (model replacement when ``scale > 1``)."""
        if self.scale == 1:
            return dict(update)
        return {name: t * self.scale for name, t in update.items()}
