"""IPM, inner-product manipulation (Xie, Koyejo and Gupta, UAI 2020).

"Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation."  The
colluding clients send

    ``u_mal = -epsilon * mean(benign updates)``,

so that the inner product of the aggregate with the true mean update becomes negative
(descent turns into ascent) once the robust rule lets enough of ``u_mal`` through: a small
``epsilon`` (the paper uses 0.1 against Krum and median) keeps the malicious updates close to
the benign cluster, a large one (the paper's 100 against the mean) dominates plain averaging.
The mean is taken over the observed updates (``knowledge``: the round's benign updates or the
coalition's own honest ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fleml_node.attacks.coalition import (
    CoalitionAttack,
    CoalitionContext,
    check_positive,
    repeat_rows,
)


@dataclass(frozen=True)
class IPMAttack(CoalitionAttack):
    """Every member sends ``-epsilon * mean`` of the observed updates.

    Parameters
    ----------
    knowledge : {"omniscient", "own"}, default "omniscient"
        Whose updates give the mean.
    epsilon : float, default 0.5
        Positive scale of the reversed mean.
    """

    name: ClassVar[str] = "ipm"
    epsilon: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.epsilon, "epsilon")

    def forge(
        self,
        observed: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext,
    ) -> Tensor:
        """``m`` copies of ``-epsilon * mean`` (float64 arithmetic)."""
        mean = observed.to(torch.float64).mean(dim=0)
        return repeat_rows(-self.epsilon * mean, own_honest.shape[0])
