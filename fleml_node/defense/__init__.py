"""Robust aggregation for FLEML: tensors in, tensors out (no chain, no IPFS).

FLEML ("Entropy-guided meta-learning defense against data poisoning attacks in
blockchain-assisted federated learning", Information Sciences, 2026,
doi:10.1016/j.ins.2026.123389) and the baselines it is compared with, behind one interface:

>>> agg = make_defense("fleml")
>>> result = agg.aggregate(updates, RoundContext(client_ids=ids, global_params=g, ...))
>>> report_json = result.to_json()
>>> assert torch.equal(replay(updates, report_json), result.update)

=============  ==========================================  ========================
name           class                                       paper
=============  ==========================================  ========================
fedavg         :class:`.fedavg.FedAvgDefense`              McMahan et al. 2017
krum           :class:`.krum.KrumDefense`                  Blanchard et al. 2017
multikrum      :class:`.krum.MultiKrumDefense`             Blanchard et al. 2017
median         :class:`.median.MedianDefense`              Yin et al. 2018
trimmedmean    :class:`.trimmed_mean.TrimmedMeanDefense`   Yin et al. 2018
fltrust        :class:`.fltrust.FLTrustDefense`            Cao et al. 2021
fleml          :class:`.fleml.FLEMLDefense`                FLEML, Inf. Sci. 2026
=============  ==========================================  ========================
"""

from .base import (
    REGISTRY,
    AggregationResult,
    ClientReport,
    Defense,
    InvalidRoundError,
    RoundContext,
    make_defense,
    replay,
    verify,
    weighted_sum,
)
from .fedavg import FedAvgDefense
from .fleml import FLEMLConfig, FLEMLDefense
from .fltrust import FLTrustDefense
from .krum import KrumDefense, MultiKrumDefense
from .median import MedianDefense
from .metrics import DetectionMetrics, DetectionTracker, detection_metrics
from .trimmed_mean import TrimmedMeanDefense

__all__ = [
    "REGISTRY",
    "AggregationResult",
    "Defense",
    "ClientReport",
    "DetectionMetrics",
    "DetectionTracker",
    "FLEMLConfig",
    "FLEMLDefense",
    "FLTrustDefense",
    "FedAvgDefense",
    "InvalidRoundError",
    "KrumDefense",
    "MedianDefense",
    "MultiKrumDefense",
    "RoundContext",
    "TrimmedMeanDefense",
    "detection_metrics",
    "make_defense",
    "replay",
    "verify",
    "weighted_sum",
]
