"""An adaptive attack on FLEML: push a harmful direction while every FLEML signal looks benign.

Adaptive attacks are the standard test of a robust aggregator (Carlini et al. 2019, "On
Evaluating Adversarial Robustness"; for federated learning, Shejwalkar and Houmansadr 2021
tailor their attacks to each rule, Fang et al. 2020 likewise).  This coalition knows FLEML
completely: its code, its published parameters, the task seed that fixes its per-round
sampling, and the committed validation set (visible to all members).  Each round it

1. takes a harmful unit direction ``p``: ``ipm`` ``-mu / |mu|`` (against the benign mean,
   Xie et al. 2020), ``alie`` ``-sigma / |sigma|`` (Baruch et al. 2019), or ``loss`` the
   ascent direction ``grad L_val / |grad L_val|`` of the whole validation set at the global
   model; with ``target="unsampled"`` (default) ``p`` is zeroed on the coordinates FLEML
   samples this round for its reference, entropy and peer signals (FLEML draws them from a
   generator seeded by the public task seed and the round, as its docstring states, so the
   coalition can draw the same ones), which leaves those signals untouched and the push to
   the norm and validation-alignment signals, which see every coordinate; with
   ``project=True`` (default; not for ``loss``) ``p`` is then made orthogonal to the
   validation gradient (whole validation set, at the global model), so the push barely moves
   FLEML's alignment signal, measured on a batch of the same set;
2. forms each member's candidate ``u_j = mu + beta_j * (h_j - mu) + lambda * s * p_j`` from
   the observed mean ``mu`` and its own honest update ``h_j`` (``beta_j = 1``: the member's
   honest update; a smaller ``beta_j`` pulls an outlying member towards the mean while the
   members stay distinct, as clients are), with ``s`` the median observed norm (so ``lambda``
   is in units of a typical update).  With ``split=True`` (default) the coordinates are dealt
   at random (the coalition's generator) into ``m`` blocks and member ``j`` pushes
   ``p_j = m * p`` on its block only: the members' pushes are orthogonal, so they do not make
   the members look alike, and together they add ``lambda * s * p`` per member on average,
   as a common push ``p_j = p`` (``split=False``) does;
3. evaluates FLEML's own per-client features on the round as FLEML will see it
   (:meth:`fleml_node.defense.fleml.FLEMLDefense.client_features` on the observed updates
   plus the candidates; with ``knowledge="own"`` the benign rows are stand-ins with the
   members' mean and spread, their honest updates mirrored through their mean, ``2 mu - h_j``,
   since the honest updates themselves would be near-copies of the candidates), and calls
   ``(beta, lambda)`` *feasible* when, for every member,

   * every oriented z-score (positive = anomalous: ``z_cos``, ``z_norm``, ``z_vne``, ``z_ce``,
     ``z_mi``, ``z_val``, and whatever else FLEML reports, e.g. a closest-peer similarity that
     exposes copies) and the anomaly score are at most the ``quantile`` of the benign rows'
     values, and
   * the validation alignment ``val_align`` (cosine to ``-grad L_val`` on FLEML's batch) is
     above ``min_align`` (positive: the update still looks like it descends the clean loss);

4. starts from ``beta_j = 1`` and, while some member fails at ``lambda = 0``, lowers the
   failing members' ``beta_j`` by :data:`SHRINK_STEP` (down to :data:`MIN_BETA`); then takes
   the largest feasible ``lambda`` in ``[0, max_strength]`` (doubling from
   ``max_strength / 2**steps``, then ``steps`` bisections) and sends those candidates.  When no
   shrinking makes ``lambda = 0`` feasible it sends its honest updates.

FLEML's per-client history (smoothed scores) is not modelled: the round-level features stay
inside the benign spread every round, so their averages do too.  Using FLEML's own feature
function means the attack follows FLEML's signals as they change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from fleml_node.attacks.coalition import CoalitionAttack, CoalitionContext, check_positive

log = logging.getLogger(__name__)

DIRECTIONS = ("ipm", "alie", "loss")
TARGETS = ("unsampled", "all")
SHRINK_STEP = 0.1  # how much of a failing member's own deviation is dropped per try
MIN_BETA = 0.2
_MICRO_BATCH = 256


@dataclass(frozen=True)
class FLEMLAdaptiveAttack(CoalitionAttack):
    """Largest push along a harmful direction that keeps FLEML's features benign-looking.

    Parameters
    ----------
    knowledge : {"omniscient", "own"}, default "omniscient"
        The benign updates, or the members' own honest ones as their estimate.
    direction : {"ipm", "alie", "loss"}, default "ipm"
        The harmful direction (see the module docstring).
    target : {"unsampled", "all"}, default "unsampled"
        Push only on the coordinates FLEML does not sample this round, or on all.
    project : bool, default True
        Remove from ``p`` its component along the validation gradient (ignored for ``loss``,
        which is that gradient).
    split : bool, default True
        Deal the coordinates into one block per member, each pushing on its own block.
    quantile : float, default 0.9
        Benign quantile every oriented z-score and the anomaly score must stay under, in (0, 1].
    min_align : float, default 0.0
        ``val_align`` must stay above this (in [-1, 1)).
    max_strength : float, default 8.0
        Largest ``lambda`` tried (in units of the median observed norm).
    steps : int, default 10
        Bisection steps (the search evaluates FLEML's features about ``2 * steps`` times).
    """

    name: ClassVar[str] = "fleml_adaptive"
    direction: str = "ipm"
    target: str = "unsampled"
    project: bool = True
    split: bool = True
    quantile: float = 0.9
    min_align: float = 0.0
    max_strength: float = 8.0
    steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        for flag in ("project", "split"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        check_positive(self.quantile, "quantile")
        if self.quantile > 1:
            raise ValueError(f"quantile must lie in (0, 1], got {self.quantile!r}")
        if isinstance(self.min_align, bool) or not isinstance(self.min_align, int | float) \
                or not -1 <= self.min_align < 1:
            raise ValueError(f"min_align must be a number in [-1, 1), got {self.min_align!r}")
        check_positive(self.max_strength, "max_strength")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")

    # -------------------------------------------------------------------- pieces
    def harmful_direction(self, observed: Tensor, context: CoalitionContext) -> Tensor:
        """The unit direction ``p`` (float32, ``[d]``); zero when it is undefined."""
        x = observed.to(torch.float64)
        if self.direction == "ipm":
            p = -x.mean(dim=0)
        elif self.direction == "alie":
            p = -(x.std(dim=0, correction=1) if x.shape[0] > 1 else torch.zeros_like(x[0]))
        else:
            p = validation_gradient(context).to(torch.float64)
        sampled = None
        if self.target == "unsampled":
            sampled = fleml_sampled_coordinates(context, p.numel())
            if sampled is not None:
                p = p.index_fill(0, sampled, 0.0)
        if self.project and self.direction != "loss" and context.model is not None:
            g = validation_gradient(context).to(torch.float64)
            if sampled is not None:  # project within the pushed coordinates
                g = g.index_fill(0, sampled, 0.0)
            gg = float(g @ g)
            if gg > 0:
                p = p - (float(p @ g) / gg) * g
        norm = float(torch.linalg.vector_norm(p))
        return (p / norm if norm > 0 else torch.zeros_like(p)).to(torch.float32)

    def pushes(self, p: Tensor, m: int, generator: torch.Generator) -> Tensor:
        """The members' push directions ``p_j``, ``m x d``: ``m * p`` on a random block each
        (``split``), or ``p`` for all."""
        p = p.to(torch.float64)
        if not self.split or m == 1:
            return p.unsqueeze(0).expand(m, -1)
        block = torch.randperm(p.numel(), generator=generator) % m
        owner = torch.zeros(m, p.numel(), dtype=torch.bool)
        owner[block, torch.arange(p.numel())] = True
        return torch.where(owner, m * p, 0.0)

    def candidates(self, observed: Tensor, own_honest: Tensor, pushes: Tensor, beta: Tensor,
                   strength: float) -> Tensor:
        """``mu + beta_j * (h_j - mu) + strength * s * p_j`` for every member (float32)."""
        x = observed.to(torch.float64)
        mu = x.mean(dim=0)
        scale = float(torch.linalg.vector_norm(x, dim=1).median())
        deviation = beta.to(torch.float64)[:, None] * (own_honest.to(torch.float64) - mu)
        out = mu + deviation + strength * scale * pushes
        return out.to(torch.float32)

    def check(self, features: Any, benign_rows: int) -> tuple[bool, dict[str, float], Tensor]:
        """Whether the rows after ``benign_rows`` pass; and each test's worst margin.

        Parameters
        ----------
        features : RoundFeatures
            :meth:`~fleml_node.defense.fleml.FLEMLDefense.client_features` of the round with
            the benign (or stand-in) rows first.
        benign_rows : int
            How many rows are benign.

        Returns
        -------
        ok : bool
        margins : dict of str to float
            Per test, ``min_j (limit - value_j)`` (the alignment's: ``min_j value_j -
            min_align``); passing means all >= 0 and the alignment's > 0.
        members_ok : Tensor
            bool, one per member row: whether that member passes every test.
        """
        margins: dict[str, float] = {}
        members_ok = torch.ones(features.score.shape[0] - benign_rows, dtype=torch.bool)
        for key, values in self.anomaly_values(features).items():
            limit = float(torch.quantile(values[:benign_rows], self.quantile))
            margins[key] = limit - float(values[benign_rows:].max())
            members_ok &= values[benign_rows:] <= limit
        align = features.signals.get("val_align")
        if align is not None:
            margins["val_align"] = float(align[benign_rows:].min()) - self.min_align
            members_ok &= align[benign_rows:] > self.min_align
        return bool(members_ok.all()), margins, members_ok

    @staticmethod
    def anomaly_values(features: Any) -> dict[str, Tensor]:
        """Every oriented z-score (positive = anomalous) and the anomaly score, float64."""
        out = {key: v.to(torch.float64) for key, v in features.z.items()}
        out["score"] = features.score.to(torch.float64)
        return out

    # -------------------------------------------------------------------- craft
    def forge(
        self,
        observed: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext,
    ) -> Tensor:
        """The candidates at the largest feasible strength (see the module docstring)."""
        return self.solve(observed, own_honest, generator, context).crafted

    def solve(
        self,
        observed: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext,
    ) -> AdaptivePlan:
        """Search ``beta`` and ``lambda`` (the module docstring's steps 1-4).

        Parameters are those of :meth:`forge`; returns the chosen updates with how they were
        chosen.
        """
        defense, round_context = _fleml(context)
        p = self.harmful_direction(observed, context)
        pushes = self.pushes(p, own_honest.shape[0], generator)
        k = observed.shape[0]
        reference = observed.to(torch.float32)
        if self.knowledge == "own":  # stand-ins that are not copies of the candidates
            reference = (2 * observed.to(torch.float64).mean(dim=0) - observed).to(torch.float32)

        def evaluate(beta: Tensor, strength: float) -> tuple[bool, Tensor, dict[str, float],
                                                              Tensor]:
            crafted = self.candidates(observed, own_honest, pushes, beta, strength)
            f = defense.client_features(torch.cat([reference, crafted]), round_context)
            ok, margins, members_ok = self.check(f, k)
            return ok, crafted, margins, members_ok

        beta = torch.ones(own_honest.shape[0], dtype=torch.float64)
        while True:
            ok, best, margins, members_ok = evaluate(beta, 0.0)
            if ok:
                break
            beta = torch.where(members_ok, beta, beta - SHRINK_STEP)
            if float(beta.min()) < MIN_BETA - 1e-9:
                log.info("fleml_adaptive round %d: no shrinking fits (%s); honest updates",
                         context.round_id, {k: round(v, 3) for k, v in margins.items()})
                return AdaptivePlan(own_honest.clone(), None, 0.0, margins, pushes)
        lo, hi = 0.0, self.max_strength / 2 ** self.steps
        pushing = float(p.abs().max()) > 0  # no direction (e.g. FLEML samples every coordinate)
        while pushing and hi <= self.max_strength:  # double while feasible
            ok, crafted, trial, _ = evaluate(beta, hi)
            if not ok:
                break
            lo, best, margins = hi, crafted, trial
            hi *= 2
        hi = min(hi, self.max_strength)
        for _ in range(self.steps if pushing else 0):  # bisect between success and failure
            if hi - lo <= 1e-3 * hi:
                break
            mid = (lo + hi) / 2
            ok, crafted, trial, _ = evaluate(beta, mid)
            if ok:
                lo, best, margins = mid, crafted, trial
            else:
                hi = mid
        log.info("fleml_adaptive round %d: beta %s, strength %.4g (x median norm), margins %s",
                 context.round_id, [round(float(b), 2) for b in beta], lo,
                 {k: round(v, 3) for k, v in margins.items()})
        return AdaptivePlan(best, beta.tolist(), lo, margins, pushes)


@dataclass(frozen=True)
class AdaptivePlan:
    """What :meth:`FLEMLAdaptiveAttack.solve` chose.

    Attributes
    ----------
    crafted : Tensor
        The members' updates, ``m x d``.
    beta : list of float or None
        Each member's kept share of its own deviation; None when it sent its honest update.
    strength : float
        ``lambda``, in units of the median observed norm (0: no push).
    margins : dict of str to float
        The feasibility margins of the chosen updates (:meth:`FLEMLAdaptiveAttack.check`).
    pushes : Tensor
        The members' push directions ``p_j``, ``m x d`` (float64).
    """

    crafted: Tensor
    beta: list[float] | None
    strength: float
    margins: dict[str, float]
    pushes: Tensor


def _fleml(context: CoalitionContext) -> tuple[Any, Any]:
    """FLEML with the published parameters, and the round context it will build (the
    per-client ids and sample counts do not enter the features)."""
    from fleml_node.defense import RoundContext, make_defense

    params = dict(context.defense_params or {}) if context.defense == "fleml" else {}
    defense = make_defense("fleml", **params)
    has_validation = (context.model is not None and context.global_params is not None
                      and context.x_val is not None and context.y_val is not None)

    if not has_validation:
        return defense, RoundContext(round_number=context.round_id, seed=context.seed)
    return defense, RoundContext(round_number=context.round_id, seed=context.seed,
                                 global_params=context.global_params, model=context.model,
                                 x_val=context.x_val, y_val=context.y_val)


def fleml_sampled_coordinates(context: CoalitionContext, d: int) -> Tensor | None:
    """The coordinates FLEML samples this round (None: it uses all ``d``).

    FLEML draws ``sample_coords`` coordinates without replacement from
    ``make_generator(seed, round)`` when ``d`` is larger (its module docstring, step 2).
    """
    from fleml_node.defense.fleml import FLEMLConfig
    from fleml_node.learning.runtime import make_generator

    params = dict(context.defense_params or {}) if context.defense == "fleml" else {}
    count = getattr(FLEMLConfig.from_dict(params), "sample_coords", None)
    if count is None or d <= count:
        return None
    gen = make_generator(context.seed, context.round_id)
    return torch.sort(torch.randperm(d, generator=gen)[:count]).values


def validation_gradient(context: CoalitionContext) -> Tensor:
    """``grad L_val`` (mean cross-entropy over the whole validation set) at the global model.

    Raises
    ------
    ValueError
        The context has no model, global parameters or validation set.
    """
    from fleml_node.learning.params import ParamSpec

    model, flat = context.model, context.global_params
    if model is None or flat is None or context.x_val is None or context.y_val is None:
        raise ValueError("direction='loss' needs the model, global parameters and validation set")
    spec = ParamSpec.from_model(model)
    if spec.numel != flat.numel():
        raise ValueError(f"model has {spec.numel} parameters, global_params {flat.numel()}")
    params = flat.detach().to(torch.float32).clone().requires_grad_(True)
    grad = torch.zeros_like(params)
    n = context.y_val.shape[0]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, _MICRO_BATCH):
            xb = context.x_val[start : start + _MICRO_BATCH]
            yb = context.y_val[start : start + _MICRO_BATCH]
            named = {
                name: part.view(shape)
                for name, shape, part in zip(spec.names, spec.shapes,
                                             torch.split(params, list(spec.sizes)), strict=True)
            }
            loss = F.cross_entropy(functional_call(model, named, (xb,)), yb, reduction="sum") / n
            (g,) = torch.autograd.grad(loss, params)
            grad += g
    finally:
        model.train(was_training)
    return grad
