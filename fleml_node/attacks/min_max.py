"""Min-Max and Min-Sum (Shejwalkar and Houmansadr, NDSS 2021).

"Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated
Learning", Section IV-B, the aggregation-rule-agnostic attacks.  Every malicious client sends

    ``u_mal = mean(benign) + gamma * p``

with a perturbation vector ``p`` (the paper's three choices, all pointing against the benign
mean: ``unit_vec`` ``-mu / |mu|``, ``std`` ``-sigma`` (coordinate-wise standard deviation),
``sign`` ``-sign(mu)``) and the largest ``gamma`` such that

* **Min-Max**: ``max_i |u_mal - u_i| <= max_{i,j} |u_i - u_j|``: the malicious update is no
  farther from any benign update than the two farthest benign updates are from each other;
* **Min-Sum**: ``sum_i |u_mal - u_i|^2 <= max_i sum_j |u_i - u_j|^2``: its sum of squared
  distances to the benign updates is no larger than that of any benign update.

``gamma`` is found with the paper's search (Algorithm 1: start at ``gamma_init``, halve the
step, move up on success and down on failure until the step is below the tolerance), extended
by doubling ``gamma`` first while it succeeds, so the result is not capped at
``2 * gamma_init``.  Both constraints are convex in ``gamma`` (``{gamma >= 0}`` satisfying them
is an interval containing 0), so the bisection finds the largest feasible value.  Distances
are evaluated exactly and cheaply as quadratics in ``gamma``:
``|mu + gamma p - u_i|^2 = |mu - u_i|^2 + 2 gamma <mu - u_i, p> + gamma^2 |p|^2``.
The benign set is the observed one (``knowledge``: the round's benign updates or the
coalition's own honest ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

PERTURBATIONS = ("unit_vec", "std", "sign")
_MAX_STEPS = 200


def perturbation(observed: Tensor, kind: str) -> Tensor:
    """The paper's perturbation vector ``p`` (float64) of the observed updates.

    Parameters
    ----------
    observed : Tensor
        ``k x d`` updates.
    kind : {"unit_vec", "std", "sign"}
        ``-mu / |mu|``, ``-sigma`` or ``-sign(mu)``.
    """
    mean, std = mean_std(observed)
    if kind == "unit_vec":
        norm = float(torch.linalg.vector_norm(mean))
        return -mean / norm if norm > 0 else torch.zeros_like(mean)
    if kind == "std":
        return -std
    if kind == "sign":
        return -torch.sign(mean)
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {kind!r}")


def search_gamma(feasible: Callable[[float], bool], gamma_init: float, tolerance: float) -> float:
    """Largest ``gamma >= 0`` with ``feasible(gamma)``, for a feasible set ``[0, gamma*]``.

    Doubles from ``gamma_init`` while feasible, then bisects (the paper's halving search)
    until the bracket is narrower than ``tolerance`` times its upper end; returns the largest
    value found feasible (0 when none above 0 is).
    """
    lo, hi, steps = 0.0, gamma_init, 0
    while feasible(hi) and steps < _MAX_STEPS:
        lo, hi, steps = hi, 2 * hi, steps + 1
    if steps == _MAX_STEPS:
        return lo
    while hi - lo > tolerance * hi and steps < 2 * _MAX_STEPS:
        mid = (lo + hi) / 2
        if feasible(mid):
            lo = mid
        else:
            hi = mid
        steps += 1
    return lo


def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows, float64 ``k x k``."""
    x = x.to(torch.float64)
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2 * (x @ x.T)
    d2.fill_diagonal_(0.0)
    return d2.clamp(min=0.0)


@dataclass(frozen=True)
class _OptimizedAttack(CoalitionAttack):
    """Shared search of Min-Max and Min-Sum; subclasses give :meth:`_constraint`.

    Parameters
    ----------
    knowledge : {"omniscient", "own"}, default "omniscient"
        Whose updates form the benign set.
    perturbation : {"unit_vec", "std", "sign"}, default "std"
        The perturbation vector (see the module docstring).
    gamma_init : float, default 10.0
        Starting point of the search (the paper's value).
    tolerance : float, default 1e-5
        Relative width at which the search stops.
    """

    name: ClassVar[str] = "optimized"
    perturbation: str = "std"
    gamma_init: float = 10.0
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(
                f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}"
            )
        check_positive(self.gamma_init, "gamma_init")
        check_positive(self.tolerance, "tolerance")
        if self.tolerance >= 1:
            raise ValueError(f"tolerance must be below 1, got {self.tolerance!r}")

    def _constraint(
        self, a: Tensor, b: Tensor, c: float, d2: Tensor
    ) -> Callable[[float], bool]:
        raise NotImplementedError

    def gamma(self, observed: Tensor) -> tuple[float, Tensor, Tensor]:
        """``(gamma, mean, p)`` for the observed updates (``gamma = 0`` when ``p = 0``)."""
        x = observed.to(torch.float64)
        mean = x.mean(dim=0)
        p = perturbation(x, self.perturbation)
        c = float(p @ p)
        if c == 0.0:
            return 0.0, mean, p
        diff = mean[None, :] - x
        a = (diff * diff).sum(dim=1)  # |mu - u_i|^2
        b = diff @ p  # <mu - u_i, p>
        feasible = self._constraint(a, b, c, squared_distances(x))
        return search_gamma(feasible, self.gamma_init, self.tolerance), mean, p

    def forge(
        self,
        observed: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext,
    ) -> Tensor:
        """``m`` copies of ``mean + gamma * p``."""
        gamma, mean, p = self.gamma(observed)
        return repeat_rows(mean + gamma * p, own_honest.shape[0])


@dataclass(frozen=True)
class MinMaxAttack(_OptimizedAttack):
    """Min-Max: largest ``gamma`` with ``max_i |u_mal - u_i| <= max_ij |u_i - u_j|``.

    Parameters: those of :class:`_OptimizedAttack`.
    """

    name: ClassVar[str] = "min_max"

    def _constraint(self, a: Tensor, b: Tensor, c: float, d2: Tensor) -> Callable[[float], bool]:
        bound = float(d2.max())
        return lambda g: float((a + 2 * g * b + g * g * c).max()) <= bound


@dataclass(frozen=True)
class MinSumAttack(_OptimizedAttack):
    """Min-Sum: largest ``gamma`` with ``sum_i |u_mal - u_i|^2 <= max_i sum_j |u_i - u_j|^2``.

    Parameters: those of :class:`_OptimizedAttack`.
    """

    name: ClassVar[str] = "min_sum"

    def _constraint(self, a: Tensor, b: Tensor, c: float, d2: Tensor) -> Callable[[float], bool]:
        bound = float(d2.sum(dim=1).max())
        k = a.numel()
        sa, sb = float(a.sum()), float(b.sum())
        return lambda g: sa + 2 * g * sb + k * g * g * c <= bound
