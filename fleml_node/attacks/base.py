"""Common interface of the simulated attacks.

An attack is attached to one client.  :func:`fleml_node.learning.train.local_train` calls
:meth:`Attack.poison_data` on the client's local samples before training and
:meth:`Attack.poison_update` on the resulting update (``delta = new - global``) before it is
returned.  The defaults leave both untouched, so a data-poisoning attack overrides the first
and a model-poisoning attack the second.  All randomness comes from the ``torch.Generator``
passed in (the client's stream), so an attacked run is as reproducible as a clean one.
Inputs are never modified in place.

Attacks are frozen dataclasses: their fields are their configuration, and
:meth:`Attack.describe` gives a JSON-ready record of it for experiment logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


def check_fraction(value: float, what: str = "fraction") -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")


def check_labels(y: Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``y`` is a 1-D int64 tensor of labels below ``num_classes``."""
    if y.dim() != 1 or y.dtype != torch.int64:
        raise ValueError(f"labels must be a 1-D int64 tensor, got {y.dtype} {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")


def choose(n: int, fraction: float, generator: torch.Generator) -> Tensor:
    """Pick ``round(fraction * n)`` distinct indices of ``range(n)`` uniformly at random."""
    k = int(round(fraction * n))
    return torch.randperm(n, generator=generator)[:k]


@dataclass(frozen=True)
class Attack:
    """No-op attack; subclasses override :meth:`poison_data` and/or :meth:`poison_update`."""

    name: ClassVar[str] = "none"

    def poison_data(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Return the (possibly poisoned) local samples ``(x, y)``; inputs are not modified.

        Parameters
        ----------
        x : Tensor
            float32 images ``N x C x H x W``.
        y : Tensor
            int64 labels ``N``.
        generator : torch.Generator
            The client's random stream.
        """
        return x, y

    def poison_update(
        self, update: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Return the (possibly poisoned) update; the input is not modified.

        Parameters
        ----------
        update : mapping of str to Tensor
            The honest update ``new - global``, named and ordered.
        generator : torch.Generator
            The client's random stream.
        """
        return dict(update)

    def describe(self) -> dict[str, Any]:
        """Return ``{"name": ..., <field>: <value>, ...}`` with JSON-friendly values."""
        fields = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"name": self.name, **fields}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
