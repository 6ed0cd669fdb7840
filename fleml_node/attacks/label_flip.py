"""Targeted label flipping: relabel source classes as chosen target classes.

The data-poisoning attack of Tolpegin et al. (2020), "Data Poisoning Attacks Against
Federated Learning Systems" (single source -> target pair, e.g. 7 -> 1 or 5 -> 3), and the
all-class flip ``y -> (C - 1) - y`` used by Fang et al. (2020), "Local Model Poisoning
Attacks to Byzantine-Robust Federated Learning".  The default is the all-class flip;
:meth:`LabelFlipAttack.single_pair` builds the one-pair variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from fleml_node.attacks.base import Attack, check_fraction, check_labels, choose


@dataclass(frozen=True)
class LabelFlipAttack(Attack):
    """Relabel samples of each source class ``s`` as ``mapping[s]``.

    Parameters
    ----------
    mapping : mapping of int to int, optional
        Source class -> target class.  Empty (the default) means ``y -> num_classes-1-y``
        for every class.  Keys may be strings of integers (e.g. from a JSON config).
    num_classes : int, default 10
        Number of classes.
    fraction : float, default 1.0
        Share of the eligible samples (those whose class is a source with a different
        target) to relabel, chosen uniformly.
    """

    name: ClassVar[str] = "label_flip"
    mapping: Mapping[int, int] = field(default_factory=dict)
    num_classes: int = 10
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValueError(f"num_classes must be an integer, got {self.num_classes!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        check_fraction(self.fraction)
        if not isinstance(self.mapping, Mapping):
            raise ValueError(f"mapping must be a mapping of class -> class, got {self.mapping!r}")
        mapping: dict[int, int] = {}
        for src, dst in self.mapping.items():
            try:
                s, d = int(src), int(dst)
            except (TypeError, ValueError):
                raise ValueError(
                    f"mapping entries must be integers, got {src!r}: {dst!r}"
                ) from None
            for c in (s, d):
                if not 0 <= c < self.num_classes:
                    raise ValueError(f"class {c} in mapping is outside 0..{self.num_classes - 1}")
            mapping[s] = d
        if not mapping:
            mapping = {c: self.num_classes - 1 - c for c in range(self.num_classes)}
        object.__setattr__(self, "mapping", dict(sorted(mapping.items())))

    @classmethod
    def single_pair(
        cls, source: int, target: int, num_classes: int = 10, fraction: float = 1.0
    ) -> LabelFlipAttack:
        """Flip only ``source`` to ``target`` (e.g. 7 -> 1)."""
        if source == target:
            raise ValueError(f"source and target must differ, got {source} -> {target}")
        return cls(mapping={source: target}, num_classes=num_classes, fraction=fraction)

    def table(self) -> Tensor:
        """Return the int64 lookup table ``new_label = table[old_label]``."""
        table = torch.arange(self.num_classes, dtype=torch.int64)
        for src, dst in self.mapping.items():
            table[src] = dst
        return table

    def poison_data(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Return ``x`` and a copy of ``y`` with the chosen eligible labels mapped."""
        check_labels(y, self.num_classes)
        table = self.table()
        eligible = torch.nonzero(table[y] != y).flatten()
        chosen = eligible[choose(len(eligible), self.fraction, generator)]
        y = y.clone()
        y[chosen] = table[y[chosen]]
        return x, y
