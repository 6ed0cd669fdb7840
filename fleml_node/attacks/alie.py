"""ALIE, "A Little Is Enough" (Baruch, Baruch and Goldberg, NeurIPS 2019).

"A Little Is Enough: Circumventing Defenses For Distributed Learning."  The ``m`` colluding
clients of an ``n``-client federation estimate the coordinate-wise mean ``mu_j`` and standard
deviation ``sigma_j`` of the benign updates and all send

    ``p_j = mu_j - z * sigma_j``   for every coordinate ``j``,

a shift small enough to stay among the benign values of every coordinate (so median- and
distance-based rules keep it), yet consistent across rounds.  The paper's ``z`` (Algorithm 3)
is the largest shift for which enough benign clients lie farther from the mean than the
attackers: with ``s = floor(n / 2 + 1) - m`` "supporters" needed,

    ``z_max = Phi^-1((n - s) / n)``,

``Phi`` the standard normal CDF.  Here ``mu`` and ``sigma`` (unbiased) are taken over the
observed updates (the round's benign updates with ``knowledge="omniscient"``, the coalition's
own honest ones with ``knowledge="own"``, as in the paper); ``n`` is the federation size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import torch
from torch import Tensor

from fleml_node.attacks.coalition import (
    CoalitionAttack,
    CoalitionContext,
    check_positive,
    mean_std,
    repeat_rows,
)


def alie_z(n: int, m: int) -> float:
    """The paper's ``z_max = Phi^-1((n - s) / n)`` with ``s = floor(n / 2 + 1) - m``.

    Parameters
    ----------
    n : int
        Clients in the federation, ``>= 2``.
    m : int
        Malicious clients, ``1 <= m < n``.

    Raises
    ------
    ValueError
        ``s <= 0`` (the attackers are a majority: the formula gives an infinite ``z``), or
        ``n``, ``m`` out of range.
    """
    for what, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{what} must be an integer, got {v!r}")
    if n < 2 or not 1 <= m < n:
        raise ValueError(f"need n >= 2 and 1 <= m < n, got n={n}, m={m}")
    s = math.floor(n / 2 + 1) - m
    if s <= 0:
        raise ValueError(
            f"ALIE's z is unbounded when m >= floor(n/2)+1 (n={n}, m={m}); give z explicitly"
        )
    return NormalDist().inv_cdf((n - s) / n)


@dataclass(frozen=True)
class ALIEAttack(CoalitionAttack):
    """Every member sends ``mean - z * std`` of the observed updates.

    Parameters
    ----------
    knowledge : {"omniscient", "own"}, default "omniscient"
        Whose updates give the mean and standard deviation.
    z : float, optional
        The shift in standard deviations; default the paper's ``z_max`` for the federation's
        ``n`` and the coalition's ``m`` (:func:`alie_z`).
    """

    name: ClassVar[str] = "alie"
    z: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.z is not None:
            check_positive(self.z, "z")

    def z_for(self, n: int, m: int) -> float:
        """The shift used in an ``n``-client federation with ``m`` attackers."""
        return float(self.z) if self.z is not None else alie_z(n, m)

    def forge(
        self,
        observed: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext,
    ) -> Tensor:
        """``m`` copies of ``mean - z * std`` (float64 arithmetic)."""
        m = own_honest.shape[0]
        mean, std = mean_std(observed)
        return repeat_rows(mean - self.z_for(context.num_clients, m) * std, m)
