"""Colluding model poisoning: a coalition crafts its updates from the round's updates.

The attacks of the robust-aggregation literature (ALIE, IPM, Min-Max, Min-Sum, and the
adaptive attack on FLEML) are not per-client: the malicious clients pool what they know of the
round and send updates computed from it.  A :class:`CoalitionAttack` is therefore called once
per round, after every member has trained, by the simulator
(:func:`fleml_node.simulate.run_memory`):

``craft(benign, own_honest, generator, context) -> Tensor[m x d]``

* ``benign`` (``k x d``): the flat updates of the round's honest clients;
* ``own_honest`` (``m x d``): the updates the ``m`` coalition members obtained by training
  honestly on their own data;
* ``generator``: the coalition's seeded random stream for this round;
* ``context``: :class:`CoalitionContext`, public facts of the round (federation size, global
  model, the committed validation set, the task seed).

What the coalition may look at is the attack's ``knowledge`` field:

``"omniscient"``
    it sees the round's benign updates (the strongest, "full knowledge" threat model of
    Shejwalkar and Houmansadr 2021; Fang et al. 2020);
``"own"``
    it sees only its own honest updates and uses them as the estimate of the benign ones
    (the threat model of Baruch et al. 2019, "partial knowledge").

:meth:`CoalitionAttack.craft` enforces it: the subclass's :meth:`CoalitionAttack.forge`
receives the observed set, which is ``benign`` or ``own_honest`` according to ``knowledge``.
Coalition members train on clean data; their per-client :meth:`poison_update` refuses to run,
so a node that is not driven by the coalition-aware simulator (chain mode, a real
``fleml-node client``) fails loudly instead of silently sending honest updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fleml_node.attacks.base import Attack

KNOWLEDGE = ("omniscient", "own")


@dataclass(frozen=True)
class CoalitionContext:
    """Public facts of a round that a coalition may use.

    Parameters
    ----------
    round_id : int
        The round.
    num_clients : int
        Members of the federation (``n``; public on chain).
    global_params : Tensor, optional
        Flat global parameters the round trains from, ``[d]``.
    model : torch.nn.Module, optional
        A model of the task's architecture (lays out the flat vectors).
    x_val, y_val : Tensor, optional
        The consortium's committed validation set (visible to all members).
    seed : int
        The task seed (public; FLEML seeds its per-round sampling with it).
    defense : str, optional
        The aggregator's defense (public: the task names it).
    defense_params : mapping, optional
        The published parameters of the aggregator's defense.
    """

    round_id: int
    num_clients: int
    global_params: Tensor | None = None
    model: nn.Module | None = None
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    seed: int = 0
    defense: str | None = None
    defense_params: Mapping[str, Any] | None = None


def check_knowledge(knowledge: str) -> None:
    """Raise ``ValueError`` unless ``knowledge`` is one of :data:`KNOWLEDGE`."""
    if knowledge not in KNOWLEDGE:
        raise ValueError(f"knowledge must be one of {KNOWLEDGE}, got {knowledge!r}")


def check_positive(value: float, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")


def mean_std(observed: Tensor) -> tuple[Tensor, Tensor]:
    """Coordinate-wise mean and (unbiased) standard deviation of the rows, in float64.

    With a single row the standard deviation is 0 (one sample has no spread).
    """
    x = observed.to(torch.float64)
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=1) if x.shape[0] > 1 else torch.zeros_like(mean)
    return mean, std


@dataclass(frozen=True)
class CoalitionAttack(Attack):
    """Base of the colluding attacks: :meth:`craft` the coalition's updates once per round.

    Parameters
    ----------
    knowledge : {"omniscient", "own"}, default "omniscient"
        What the coalition sees of the round (see the module docstring).
    """

    name: ClassVar[str] = "coalition"
    knowledge: str = "omniscient"

    def __post_init__(self) -> None:
        check_knowledge(self.knowledge)

    def poison_update(
        self, update: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Refuse: a coalition attack needs the round's updates, see :meth:`craft`."""
        raise RuntimeError(
            f"attack {self.name!r} is a colluding attack: its updates are crafted once per "
            "round from the round's updates (CoalitionAttack.craft), which only the in-memory "
            "simulator does (fleml-node simulate --mode memory)"
        )

    def craft(
        self,
        benign: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext | None = None,
    ) -> Tensor:
        """The coalition's updates for this round.

        Parameters
        ----------
        benign : Tensor
            The honest clients' flat updates, ``k x d`` (ignored with ``knowledge="own"``).
        own_honest : Tensor
            The coalition members' honestly trained flat updates, ``m x d``, ``m >= 1``.
        generator : torch.Generator
            The coalition's random stream for the round.
        context : CoalitionContext, optional
            Public facts of the round; by default only ``num_clients = k + m`` is known.

        Returns
        -------
        Tensor
            ``m x d``, one update per member in the order of ``own_honest``, dtype of
            ``own_honest``.

        Raises
        ------
        ValueError
            Shapes that do not fit, non-finite inputs, or nothing observed.
        """
        for what, t in (("benign", benign), ("own_honest", own_honest)):
            if not isinstance(t, Tensor) or t.dim() != 2 or not t.is_floating_point():
                raise ValueError(f"{what} must be a floating 2-D tensor [rows x d]")
        m, d = own_honest.shape
        if m < 1 or d < 1:
            raise ValueError("the coalition needs at least one member and one coordinate")
        if benign.shape[1] != d:
            raise ValueError(f"benign updates have {benign.shape[1]} coordinates, own {d}")
        if not (bool(torch.isfinite(benign).all()) and bool(torch.isfinite(own_honest).all())):
            raise ValueError("the updates must be finite")
        observed = benign if self.knowledge == "omniscient" else own_honest
        if observed.shape[0] == 0:
            raise ValueError("an omniscient coalition needs at least one benign update")
        if context is None:
            context = CoalitionContext(round_id=0, num_clients=benign.shape[0] + m)
        out = self.forge(observed, own_honest, generator, context)
        if out.shape != (m, d) or not bool(torch.isfinite(out).all()):
            raise RuntimeError(
                f"{self.name} produced a non-finite or mis-shaped {tuple(out.shape)} update")
        return out.to(own_honest.dtype)

    def forge(
        self,
        observed: Tensor,
        own_honest: Tensor,
        generator: torch.Generator,
        context: CoalitionContext,
    ) -> Tensor:
        """Compute the ``m x d`` malicious updates from the observed updates (subclasses)."""
        raise NotImplementedError


def repeat_rows(vector: Tensor, m: int) -> Tensor:
    """``m`` copies of a ``[d]`` vector as an ``m x d`` tensor."""
    return vector.unsqueeze(0).expand(m, -1).clone()
