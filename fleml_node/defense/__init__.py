"""Robust aggregation for FLEML: tensors in, tensors out (no chain, no IPFS).

FLEML ("Entropy-guided meta-learning defense against data poisoning attacks in
blockchain-assisted federated learning", Information Sciences, 2026,
doi:10.1016/j.ins.2026.123389) and the baselines it is compared with, behind one interface:

>>> agg = make_aggregator("fleml")
>>> result = agg.aggregate(updates, RoundContext(client_ids=ids, global_params=g, ...))
>>> report_json = result.to_json()
>>> assert torch.equal(replay(updates, report_json), result.update)

=============  ==========================================  ========================
name           class                                       paper
=============  ==========================================  ========================
fedavg         :class:`.fedavg.FedAvgAggregator`           McMahan et al. 2017
krum           :class:`.krum.KrumAggregator`               Blanchard et al. 2017
multikrum      :class:`.krum.MultiKrumAggregator`          Blanchard et al. 2017
median         :class:`.median.MedianAggregator`           Yin et al. 2018
trimmedmean    :class:`.trimmed_mean.TrimmedMeanAggregator` Yin et al. 2018
fltrust        :class:`.fltrust.FLTrustAggregator`         Cao et al. 2021
fleml          :class:`.fleml.FLEMLAggregator`             FLEML, Inf. Sci. 2026
=============  ==========================================  ========================
"""

from .base import (
    REGISTRY,
    AggregationResult,
    Aggregator,
    ClientReport,
    InvalidRoundError,
    RoundContext,
    make_aggregator,
    replay,
    verify,
    weighted_sum,
)
from .fedavg import FedAvgAggregator
from .fleml import FLEMLAggregator
from .fltrust import FLTrustAggregator
from .krum import KrumAggregator, MultiKrumAggregator
from .median import MedianAggregator
from .metrics import DetectionMetrics, DetectionTracker, detection_metrics
from .trimmed_mean import TrimmedMeanAggregator

__all__ = [
    "REGISTRY",
    "AggregationResult",
    "Aggregator",
    "ClientReport",
    "DetectionMetrics",
    "DetectionTracker",
    "FLEMLAggregator",
    "FLTrustAggregator",
    "FedAvgAggregator",
    "InvalidRoundError",
    "KrumAggregator",
    "MedianAggregator",
    "MultiKrumAggregator",
    "RoundContext",
    "TrimmedMeanAggregator",
    "detection_metrics",
    "make_aggregator",
    "replay",
    "verify",
    "weighted_sum",
]
