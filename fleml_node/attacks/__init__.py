"""Data and model poisoning used by simulated malicious clients.

Every attack implements the :class:`~fleml_node.attacks.base.Attack` interface
(``poison_data(x, y, generator)`` and ``poison_update(update, generator)``) and is built by
name with :func:`make_attack`, e.g. ``make_attack("label_flip", mapping={7: 1})``.

Classes live in ``fleml_node.attacks.<module>``:

=====================  =============================================  ===============
name                   module.class                                   poisons
=====================  =============================================  ===============
``none``               ``base.Attack``                                nothing (honest)
``random_label``       ``untargeted.RandomLabelAttack``               data
``sign_flip``          ``untargeted.SignFlipAttack``                  update
``gaussian_noise``     ``untargeted.GaussianNoiseAttack``             update
``label_flip``         ``label_flip.LabelFlipAttack``                 data
``backdoor``           ``backdoor.BackdoorAttack``                    data (+ update)
``model_replacement``  ``model_replacement.ModelReplacementAttack``   data + update
``alie``               ``alie.ALIEAttack``                            coalition
``ipm``                ``ipm.IPMAttack``                              coalition
``min_max``            ``min_max.MinMaxAttack``                       coalition
``min_sum``            ``min_max.MinSumAttack``                       coalition
``fleml_adaptive``     ``adaptive.FLEMLAdaptiveAttack``               coalition
=====================  =============================================  ===============

Sources: ``model_replacement`` Bagdasaryan et al., AISTATS 2020 (``gamma * update``,
``gamma = n / eta``); ``alie`` Baruch et al., NeurIPS 2019 (``mean - z * std``); ``ipm`` Xie,
Koyejo and Gupta, UAI 2020 (``-epsilon * mean``); ``min_max`` / ``min_sum`` Shejwalkar and
Houmansadr, NDSS 2021 (``mean + gamma * p``, largest ``gamma`` inside the benign distances);
``fleml_adaptive`` knows FLEML and the validation set and pushes an IPM/ALIE/loss-ascent
direction only as far as FLEML's own per-client features stay inside the benign quantiles and
its validation alignment stays positive.

*Coalition* attacks (:class:`~fleml_node.attacks.coalition.CoalitionAttack`) collude: once per
round, after every member trained, :meth:`~fleml_node.attacks.coalition.CoalitionAttack.craft`
turns the round's updates into the coalition's (``knowledge="omniscient"``: it sees the benign
updates; ``"own"``: only its members' honest ones).  Only the in-memory simulator
(:func:`fleml_node.simulate.run_memory`) drives them; their per-client ``poison_update``
refuses to run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fleml_node.attacks.adaptive import FLEMLAdaptiveAttack
from fleml_node.attacks.alie import ALIEAttack, alie_z
from fleml_node.attacks.backdoor import BackdoorAttack, Trigger, stamp_trigger
from fleml_node.attacks.base import Attack
from fleml_node.attacks.coalition import KNOWLEDGE, CoalitionAttack, CoalitionContext
from fleml_node.attacks.ipm import IPMAttack
from fleml_node.attacks.label_flip import LabelFlipAttack
from fleml_node.attacks.min_max import MinMaxAttack, MinSumAttack
from fleml_node.attacks.model_replacement import ModelReplacementAttack
from fleml_node.attacks.untargeted import GaussianNoiseAttack, RandomLabelAttack, SignFlipAttack

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (
        Attack,
        RandomLabelAttack,
        SignFlipAttack,
        GaussianNoiseAttack,
        LabelFlipAttack,
        BackdoorAttack,
        ModelReplacementAttack,
        ALIEAttack,
        IPMAttack,
        MinMaxAttack,
        MinSumAttack,
        FLEMLAdaptiveAttack,
    )
}


def make_attack(name: str, **params: Any) -> Attack:
    """Build an attack by name.

    Parameters
    ----------
    name : str
        A key of :data:`ATTACKS`.
    **params
        The attack's fields (see its class), e.g. ``scale=10`` for ``"sign_flip"``.

    Returns
    -------
    Attack
        The configured, immutable attack.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    cls = ATTACKS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"attack {name!r} has no parameter(s) {unknown}; it accepts {allowed}")
    return cls(**params)


__all__ = [
    "ALIEAttack",
    "ATTACKS",
    "Attack",
    "BackdoorAttack",
    "CoalitionAttack",
    "CoalitionContext",
    "FLEMLAdaptiveAttack",
    "GaussianNoiseAttack",
    "IPMAttack",
    "KNOWLEDGE",
    "LabelFlipAttack",
    "MinMaxAttack",
    "MinSumAttack",
    "ModelReplacementAttack",
    "RandomLabelAttack",
    "SignFlipAttack",
    "Trigger",
    "alie_z",
    "make_attack",
    "stamp_trigger",
]
