"""Model replacement / scaling (Bagdasaryan et al., AISTATS 2020).

"How To Backdoor Federated Learning" (Bagdasaryan, Veit, Hua, Estrin and Shmatikov), Section
4: an attacker that wants the global model to become its backdoored model ``X`` submits

    ``L = gamma * (X - G) + G``,   i.e. the update ``gamma * (X - G)``,   ``gamma = n / eta``,

where ``n`` is the number of clients averaged and ``eta`` the server learning rate, so that
after averaging (``G + eta / n * sum_i (L_i - G)``) the benign updates' contribution is small
and the global model lands near ``X``.  Here ``X - G`` is the client's update after training on
backdoored data (:class:`~fleml_node.attacks.backdoor.BackdoorAttack`'s pixel trigger, a
fraction of the local samples relabelled to the target class); with ``fraction=0`` it is the
plain scaling attack on an honest update.  Per client: no collusion needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fleml_node.attacks.backdoor import BackdoorAttack


@dataclass(frozen=True)
class ModelReplacementAttack(BackdoorAttack):
    """Backdoor the local data, then send ``gamma * update``.

    Parameters
    ----------
    target_class, fraction, trigger, num_classes
        As for :class:`~fleml_node.attacks.backdoor.BackdoorAttack` (``fraction=0``: scale an
        honest update).
    scale : float, optional
        ``gamma``; default ``federation_size / server_lr`` (the paper's ``n / eta``).
    federation_size : int, optional
        ``n``, the clients averaged per round (the simulator fills in its client count).
    server_lr : float, default 1.0
        ``eta``, the server learning rate (1 for FedAvg).
    """

    name: ClassVar[str] = "model_replacement"
    scale: float | None = None  # type: ignore[assignment]
    federation_size: int | None = None
    server_lr: float = 1.0

    def _check_scale(self) -> None:
        if self.scale is not None:
            super()._check_scale()
        fs = self.federation_size
        if fs is not None and (isinstance(fs, bool) or not isinstance(fs, int) or fs < 1):
            raise ValueError(f"federation_size must be a positive integer, got {fs!r}")
        lr = self.server_lr
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not (
            math.isfinite(lr) and lr > 0
        ):
            raise ValueError(f"server_lr must be a positive number, got {lr!r}")
        if self.scale is None and fs is None:
            raise ValueError("model_replacement needs scale or federation_size (gamma = n / eta)")

    @property
    def gamma(self) -> float:
        """The boost factor: ``scale``, or ``federation_size / server_lr``."""
        if self.scale is not None:
            return float(self.scale)
        return float(self.federation_size) / float(self.server_lr)  # type: ignore[arg-type]

    def poison_update(
        self, update: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Return ``gamma * update``."""
        gamma = self.gamma
        return {name: t * gamma for name, t in update.items()}
