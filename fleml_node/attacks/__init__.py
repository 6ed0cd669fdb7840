"""Data and model poisoning used by simulated malicious clients.

Every attack implements the :class:`~fleml_node.attacks.base.Attack` interface
(``poison_data(x, y, generator)`` and ``poison_update(update, generator)``) and is built by
name with :func:`make_attack`, e.g. ``make_attack("label_flip", mapping={7: 1})``.

=================  =================================================  ====================
name               class                                              poisons
=================  =================================================  ====================
``none``           :class:`~fleml_node.attacks.base.Attack`           nothing (honest)
``random_label``   :class:`~fleml_node.attacks.untargeted.RandomLabelAttack`    data
``sign_flip``      :class:`~fleml_node.attacks.untargeted.SignFlipAttack`       update
``gaussian_noise`` :class:`~fleml_node.attacks.untargeted.GaussianNoiseAttack`  update
``label_flip``     :class:`~fleml_node.attacks.label_flip.LabelFlipAttack`      data
``backdoor``       :class:`~fleml_node.attacks.backdoor.BackdoorAttack`         data (+ update)
=================  =================================================  ====================
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fleml_node.attacks.backdoor import BackdoorAttack, Trigger, stamp_trigger
from fleml_node.attacks.base import Attack
from fleml_node.attacks.label_flip import LabelFlipAttack
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
    "ATTACKS",
    "Attack",
    "BackdoorAttack",
    "GaussianNoiseAttack",
    "LabelFlipAttack",
    "RandomLabelAttack",
    "SignFlipAttack",
    "Trigger",
    "make_attack",
    "stamp_trigger",
]
