"""FLEML: entropy-guided anomaly detection with meta-learned aggregation weights.

Implements the aggregator of "Entropy-guided meta-learning defense against data poisoning
attacks in blockchain-assisted federated learning" (Information Sciences, 2026,
doi:10.1016/j.ins.2026.123389). The paper states the ingredients (von Neumann entropy,
conditional entropy and mutual information to detect anomalous updates; a meta-learned
weighting function for the aggregation coefficients) but no formulas; this module fixes them.

One round, given updates ``u_i`` (``n x d``) and a :class:`~fleml_node.defense.base.RoundContext`:

1. **Norms and clipping.** ``|u_i|`` (float32 accumulation); with ``clip=True`` every update
   longer than ``clip_ratio`` (2) times the round's (lower) median norm is scaled down to it,
   ``k_i = min(1, clip_ratio * med / |u_i|)``: no client, flagged or not, contributes more
   than two median steps in magnitude. (Clipping to the median itself, ``clip_ratio=1``,
   shrank the benign top half of every round: 60.2% against 66.8% after 4 MNIST rounds
   without attack, seed 1; boosted updates are flagged by the magnitude test instead.)
2. **Signals** on ``sample_coords`` coordinates drawn without replacement from a generator
   seeded by ``(ctx.seed, ctx.round_number)`` (all coordinates when ``d`` is smaller), against
   the reference ``R`` = coordinate-wise (lower) median of those coordinates (:mod:`.entropy`
   documents the estimators):

   * ``cos_ref``      cosine of ``u_i`` to ``R`` (low = anomalous);
   * ``log_norm``     ``log(|u_i| / med)`` on all coordinates (high = anomalous; a short
     update is harmless once long ones are clipped, and small-data clients send short ones);
   * ``vne_loo``      von Neumann entropy change ``S(all) - S(all without i)`` of the cosine
     Gram matrix (high = anomalous);
   * ``cond_entropy`` ``H(U_i | R)`` (high = anomalous) and ``mutual_info`` ``I(U_i; R)``
     (low = anomalous), only with at least 256 compared coordinates (fewer cannot fill a 2-D
     histogram);
   * ``val_align`` (only with a validation set) cosine of ``u_i`` to the descent direction
     ``-grad L_val`` at the current global model on ``align_batch`` validation samples (low =
     anomalous). Unlike the others it sees the *effect* of an update;
   * ``peer_cos``     cosine of ``u_i`` to the closest *other* update, read off the same cosine
     Gram matrix as the von Neumann entropy (:func:`.entropy.closest_peer_cosine`); its
     oriented z-score ``z_peer`` is that of ``-log(1 - peer_cos)`` (a redundancy: high = a
     near-copy of another update, which also makes ``vne_loo`` negative).

3. **Anomaly score and flags.** Each signal becomes a robust z-score across the round,
   ``(x - median) / max(1.4826 MAD, 0.02)`` (0.02 in the signal's unit: cosine, log-ratio or
   nats; smaller differences are never anomalous), oriented so that positive = anomalous. The
   *shape* score is the mean of the positive parts of the five update-statistics z-scores
   (``z_cos``, ``z_norm``, ``z_vne``, ``z_ce``, ``z_mi``); with a validation set the anomaly
   score is the larger of the shape score and the positive part of ``z_val``. The score, its
   history (EMA over the client's rounds) and the z-scores feed the weights (step 4): a
   moderately unusual client loses weight, it is not accused.

   A client is **flagged** (weight exactly 0, and named in the round's on-chain bitmap) only on
   evidence that benign clients do not produce, however skewed their data
   (:meth:`FLEMLDefense._flag_tests`, threshold ``t = flag_threshold``, default 3):

   * *collusion*: ``peer_cos >= collusion_cos`` (0.98) and ``z_peer > t``: copies of one
     crafted vector (ALIE, IPM, Min-Max, Min-Sum send one vector from every member);
   * *magnitude*: ``|u_i| > norm_ratio * med`` (2) and ``z_norm > t``: boosted updates
     (scaling / model replacement, boosted backdoors, scaled sign flips);
   * *opposition*: ``cos_ref < 0``, ``z_cos > t`` and, with a validation set,
     ``val_align < 0``: updates against the consensus that also ascend the clean loss.

   The earlier rule (anomaly-score z above ``t`` and ``val_align <= 0``, with the smoothed
   score's z as a second test) is kept behind ``flag_score`` for the ablation: measured on
   Dirichlet 0.1 rounds without attack it flagged 5% of benign client-rounds, because a client
   whose data covers two or three classes is an outlier in shape and ascends the loss of the
   validation classes it lacks. If the tests would flag everybody (two identical clients), only
   the magnitude test is kept, and none when it too takes everyone.
4. **Meta-learned weights.** :class:`~fleml_node.defense.meta.MetaWeighter` maps each
   client's features (oriented z-scores, score, history; the claimed sample share only with
   ``sample_prior``) to a logit;
   coefficients are the softmax over non-flagged clients, flagged clients get exactly 0. With a
   validation set its parameters take ``meta_steps`` Adam steps on the one-step look-ahead loss
   ``CE(model(global + sum_i c_i(theta) k_i u_i), validation batch)`` (evaluated with
   ``torch.func.functional_call`` on the flat vector) plus ``kl_weight * KL(c || c_prior)``,
   before the final coefficients are computed. Without a validation set (or global parameters
   / model) the current ``theta`` is used as is: coefficients then come from the scores, the
   correction learned in earlier rounds, history and sample counts.
5. **Aggregate** ``sum_i (c_i k_i) u_i`` through :func:`~fleml_node.defense.base.weighted_sum`;
   the report stores the effective coefficients ``c_i k_i`` exactly, so replay needs nothing
   else. The per-client history (smoothed scores, EMA of shares) is then updated.

Everything is deterministic given the updates, the context, the aggregator's state and seeds;
:meth:`FLEMLDefense.state_dict` round-trips that state through JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fleml_node.learning.params import ParamSpec
from fleml_node.learning.runtime import make_generator

from .base import (
    AggregationResult,
    ClientReport,
    Defense,
    InvalidRoundError,
    RoundContext,
    register,
    robust_z,
    row_norms,
    validate_round,
)
from .entropy import (
    closest_peer_cosine,
    cosine_gram,
    leave_one_out_entropy,
    reference_information,
    von_neumann_entropy,
)
from .meta import FEATURE_CLIP, FEATURES, MetaWeighter

logger = logging.getLogger(__name__)

STATE_FORMAT = "fleml.defense.fleml-state/1"
_TINY = 1e-30
_LOG_CLIP = 20.0
_SAMPLE_SHARE_CLIP = 2.0
_SIGNAL_FLOOR = 0.02
_MICRO_BATCH = 64
_MIN_INFO_COORDS = 256
_MIN_DISTANCE = 1e-12
# feature name -> (signal, orientation): positive z = anomalous
_ORIENTED = {
    "z_cos": ("cos_ref", -1.0),
    "z_norm": ("log_norm", 1.0),
    "z_vne": ("vne_loo", 1.0),
    "z_ce": ("cond_entropy", 1.0),
    "z_mi": ("mutual_info", -1.0),
    "z_val": ("val_align", -1.0),
}


_ENTROPY_FEATURES = ("z_vne", "z_ce", "z_mi")

_FIELD_TYPES = {"float": float, "int": int, "bool": bool}


@dataclass(frozen=True)
class FLEMLConfig:
    """FLEML's parameters: the one place they are named, typed, defaulted and documented.

    The constructor of :class:`FLEMLDefense`, its :meth:`~FLEMLDefense.params` (which goes into
    every round report and the saved state) and ``--defense-param`` all read this class.

    Attributes
    ----------
    flag_threshold : float
        Robust z-score above which a signal is extreme in the flag tests (``z_norm``,
        ``z_cos``, ``z_peer``; and the anomaly score's with ``flag_score``).
    score_floor : float
        Smallest scale (in z units) of the anomaly score's robust z-score.
    sample_coords : int
        Coordinates used by the reference-based and entropy signals.
    bins : int
        Equal-frequency bins for conditional entropy and mutual information.
    clip : bool
        Clip updates to the round's median norm.
    meta_steps : int
        Look-ahead Adam steps per round (0 disables training).
    meta_batch : int
        Validation samples per look-ahead step.
    align_batch : int
        Validation samples of the alignment signal's gradient.
    lr : float
        Adam learning rate of the weighting MLP.
    hidden : int
        Hidden units of the weighting MLP.
    prior_scale : float
        Weight of the anomaly-score prior in the logits.
    ema : float
        Smoothing factor of the per-client history.
    seed : int
        Seed of the MLP's initial weights.
    sample_prior : bool
        Use the members' *claimed* sample counts: the log of each one's share (clipped to
        ``[-2, 2]`` around the round's median, so an inflated count gains at most ``e^2``
        times the median client's weight) becomes the ``log_sample_share`` feature and is
        added to the prior logits, as FedAvg weights by samples. Off by default: a count is a
        statistic the client reports about itself, which nobody can check, and FLEML's
        inputs are only the updates, the committed validation set and its published state
        (the feature is then 0 for everyone). Turn it on only where counts are attested.
    kl_weight : float
        Weight of ``KL(c || c_prior)`` in the look-ahead objective.
    norm_ratio : float
        Magnitude test: ``|u_i|`` must exceed ``norm_ratio`` times the round's median norm.
    collusion_cos : float
        Collusion test: cosine to the closest other update at or above which two updates are
        copies of one crafted vector (benign updates trained on different data never are).
    flag_collusion, flag_magnitude, flag_opposition : bool
        Which flag tests run (all by default; switching one off is the ablation).
    clip_ratio : float
        With ``clip``, updates are clipped to ``clip_ratio`` times the round's median norm.
    flag_score : bool
        Also flag by the earlier rule (anomaly-score z above ``flag_threshold`` and
        ``val_align <= 0``); off by default: it flags benign clients whose data covers few
        classes (measured: 5% of benign client-rounds at Dirichlet 0.1). Kept for the ablation.
    val_micro_batch : int
        Validation samples per forward/backward pass of the alignment gradient and the
        look-ahead steps (larger batches are accumulated over passes of this size). It bounds
        the activation memory: at 10 clients of the MNIST CNN the passes of 64 images outweigh
        the 8.3 MB of updates (peak 2.7x the updates' bytes; 16 gives 1.8x, benchmarks/
        defense_bench.py). The default, 64, keeps the numbers of every recorded FLEML result;
        another value gives the same gradients up to float rounding, so not bit for bit.
    entropy_signals : bool
        Let the von Neumann entropy, conditional entropy and mutual information z-scores
        (``z_vne``, ``z_ce``, ``z_mi``) into the anomaly score and the weights' features. They
        enter no flag test; off is their ablation (benchmarks/weighting_ablation.py).
    """

    flag_threshold: float = 3.0
    score_floor: float = 0.25
    sample_coords: int = 8192
    bins: int = 16
    clip: bool = True
    meta_steps: int = 2
    meta_batch: int = 64
    align_batch: int = 128
    lr: float = 0.05
    hidden: int = 4
    prior_scale: float = 0.3
    ema: float = 0.3
    seed: int = 0
    sample_prior: bool = False
    kl_weight: float = 1.0
    norm_ratio: float = 2.0
    collusion_cos: float = 0.98
    flag_collusion: bool = True
    flag_magnitude: bool = True
    flag_opposition: bool = True
    flag_score: bool = False
    clip_ratio: float = 2.0
    entropy_signals: bool = True
    val_micro_batch: int = 64

    def __post_init__(self) -> None:
        # Values from TOML, JSON or the command line may be ints where floats are meant
        # (flag_threshold=4); coercing keeps reports and saved states comparable by value.
        for f in fields(self):
            object.__setattr__(self, f.name, _FIELD_TYPES[f.type](getattr(self, f.name)))
        if not self.clip_ratio > 0:
            raise ValueError("clip_ratio must be > 0")
        if self.sample_coords < 2 or self.bins < 2 or self.meta_steps < 0 \
                or min(self.meta_batch, self.align_batch, self.val_micro_batch) < 1:
            raise ValueError(
                "sample_coords and bins must be >= 2, meta_steps >= 0, batches >= 1"
            )

    @classmethod
    def names(cls) -> list[str]:
        """The parameter names, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> FLEMLConfig:
        """Build a config from keyword parameters, refusing names FLEML does not have.

        Parameters
        ----------
        params : Mapping[str, Any]
            Any subset of the fields; the others keep their defaults.

        Returns
        -------
        FLEMLConfig

        Raises
        ------
        ValueError
            A name is not a parameter (the message names it and lists the valid ones), or a
            value is out of range.
        """
        unknown = sorted(set(params) - set(cls.names()))
        if unknown:
            raise ValueError(f"defense 'fleml' has no parameter(s) {unknown}; "
                             f"it accepts {cls.names()}")
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (JSON-ready), the inverse of :meth:`from_dict`."""
        return asdict(self)


@register
class FLEMLDefense(Defense):
    """Entropy-guided detection plus meta-learned weighting (see the module docstring).

    Parameters
    ----------
    config : FLEMLConfig, optional
        All parameters at once (see :class:`FLEMLConfig` for each one's meaning).
    **params
        Or any of :class:`FLEMLConfig`'s fields by keyword, e.g. ``FLEMLDefense(bins=8)``;
        unknown names raise :class:`ValueError`.
    """

    name = "fleml"

    def __init__(self, config: FLEMLConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ValueError("give FLEMLDefense either a config or keyword parameters, not both")
        self.config = config if config is not None else FLEMLConfig.from_dict(params)
        c = self.config
        self.weighter = MetaWeighter(c.hidden, c.lr, c.prior_scale, c.ema, c.seed, c.sample_prior)
        self.aggregations = 0

    def params(self) -> dict[str, Any]:
        """Constructor parameters (:meth:`FLEMLConfig.to_dict`)."""
        return self.config.to_dict()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (parameters, aggregation count, MLP, Adam, history)."""
        return {
            "format": STATE_FORMAT,
            "params": self.params(),
            "aggregations": self.aggregations,
            "meta": self.weighter.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises
        ------
        ValueError
            Unknown format, or the state was saved by an aggregator with other parameters.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a FLEML state (format {state.get('format')!r})")
        if dict(state["params"]) != self.params():
            raise ValueError(
                f"state parameters {state['params']} differ from this aggregator's {self.params()}"
            )
        self.aggregations = int(state["aggregations"])
        self.weighter.load_state_dict(state["meta"])

    def save_state(self, path: str | Path) -> None:
        """Write :meth:`state_dict` as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.state_dict(), sort_keys=True), encoding="utf-8")

    def load_state(self, path: str | Path) -> None:
        """Read a state written by :meth:`save_state`."""
        self.load_state_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ------------------------------------------------------------- aggregate
    def client_features(self, updates: Tensor, ctx: RoundContext | None = None) -> RoundFeatures:
        """What this defense measures about each client of a round, without aggregating.

        The same computation :meth:`aggregate` starts with (same sampled coordinates and
        validation batch for the same ``ctx``); the defense's state is neither read nor changed,
        so the history-based (smoothed) test is not included. Public so that analyses and the
        adaptive attack (:mod:`fleml_node.attacks.adaptive`) see FLEML's signals as they are.

        Parameters
        ----------
        updates : Tensor
            Shape ``[n, d]``, as for :meth:`aggregate`.
        ctx : RoundContext, optional
            As for :meth:`aggregate`; with a validation set ``val_align`` is included.

        Returns
        -------
        RoundFeatures
        """
        ctx = ctx if ctx is not None else RoundContext()
        updates, _ = validate_round(updates, ctx)
        return self._round_features(updates, ctx)

    def _round_features(self, updates: Tensor, ctx: RoundContext) -> RoundFeatures:
        n = updates.shape[0]
        gen = make_generator(ctx.seed, ctx.round_number)
        norms = row_norms(updates)
        median_norm = float(norms.median())
        if self.config.clip:
            bound = self.config.clip_ratio * median_norm
            clip = torch.where(norms > bound, bound / norms.clamp(min=_TINY), 1.0)
        else:
            clip = torch.ones(n, dtype=torch.float64)

        signals, vne_round = self._signals(updates, norms, median_norm, gen)
        lookahead = _Lookahead.build(ctx, gen) if ctx.has_validation else None
        if lookahead is not None:
            signals["val_align"] = lookahead.alignment(updates, norms, self.config.align_batch,
                                                       self.config.val_micro_batch)

        # oriented robust z-scores: positive = anomalous
        z = {
            key: sign * robust_z(signals[name], _SIGNAL_FLOOR)
            for key, (name, sign) in _ORIENTED.items()
            if name in signals
        }
        if not self.config.entropy_signals:
            for key in _ENTROPY_FEATURES:
                z.pop(key, None)
        score = torch.stack([v.clamp(min=0.0) for k, v in z.items() if k != "z_val"]).mean(dim=0)
        # redundancy: log(1 - closest peer cosine), low = a near-copy of another update
        z["z_peer"] = -robust_z(
            torch.log((1.0 - signals["peer_cos"]).clamp(min=_MIN_DISTANCE)), _SIGNAL_FLOOR)
        if "z_val" in z:
            score = torch.maximum(score, z["z_val"].clamp(min=0.0))
        score_z = robust_z(score, self.config.score_floor)
        return RoundFeatures(norms, median_norm, clip, signals, z, score, score_z, vne_round,
                             lookahead)

    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        n, d = updates.shape
        f = self._round_features(updates, ctx)
        norms, median_norm, clip, signals, vne_round, lookahead = (
            f.norms, f.median_norm, f.clip, f.signals, f.vne_round, f.lookahead)
        z, score, score_z = f.z, f.score, f.score_z
        used = list(z)
        smoothed = self.weighter.smoothed_scores(client_ids, score)
        smoothed_z = robust_z(smoothed, self.config.score_floor)
        tests = self._flag_tests(f, smoothed_z)
        flagged = torch.zeros(n, dtype=torch.bool)
        for fired in tests.values():
            flagged |= fired
        if bool(flagged.all()):
            # somebody must be aggregated: keep only the magnitude test (clipping bounds the
            # others' harm), and flag nobody when it too would take everyone
            flagged = tests.get("magnitude", torch.zeros(n, dtype=torch.bool)).clone()
            if bool(flagged.all()):
                flagged[:] = False
        active = ~flagged

        log_shares = self.weighter.log_past_shares(client_ids)
        columns = {
            **{k: z.get(k, torch.zeros(n, dtype=torch.float64)) for k in _ORIENTED},
            "score": score,
            "ema_score": smoothed,
            "log_ema_share": log_shares,
            "log_sample_share": (_log_sample_share(ctx, n) if self.config.sample_prior
                                 else torch.zeros(n, dtype=torch.float64)),
        }
        features = torch.stack([columns[k] for k in FEATURES], dim=1)
        features = features.clamp(-FEATURE_CLIP, FEATURE_CLIP)

        meta_losses: list[float] = []
        if lookahead is not None:
            meta_losses = [
                lookahead.train_step(
                    self.weighter, features, active, clip, updates,
                    self.config.meta_batch, self.config.kl_weight, self.config.val_micro_batch,
                )
                for _ in range(self.config.meta_steps)
            ]
        with torch.no_grad():
            weights = self.weighter.coefficients(features, active)
            logits = self.weighter.logits(features)
        effective = (weights * clip).tolist()

        clients = []
        for i, cid in enumerate(client_ids):
            feats = {k: float(v[i]) for k, v in signals.items()}
            feats.update(
                norm=float(norms[i]),
                clip_factor=float(clip[i]),
                weight=float(weights[i]),
                log_ema_share=float(log_shares[i]),
            )
            scores = {k: float(v[i]) for k, v in z.items()}
            scores.update(
                anomaly=float(score[i]),
                anomaly_z=float(score_z[i]),
                smoothed=float(smoothed[i]),
                smoothed_z=float(smoothed_z[i]),
                logit=float(logits[i]),
            )
            clients.append(
                ClientReport(
                    client_id=cid,
                    coefficient=effective[i],
                    flagged=bool(flagged[i]),
                    reason=(
                        self._reason(i, f, tests)
                        if bool(flagged[i])
                        else f"weight {float(weights[i]):.4f}"
                    ),
                    scores=scores,
                    features=feats,
                )
            )

        self.weighter.update_history(client_ids, smoothed.tolist(), (weights * n).tolist())
        self.aggregations += 1
        info = {
            "signals": used,
            "flag_threshold": self.config.flag_threshold,
            "flag_tests": {k: [client_ids[i] for i in range(n) if bool(v[i])]
                           for k, v in tests.items()},
            "median_norm": median_norm,
            "vne_round": vne_round,
            "sampled_coordinates": min(self.config.sample_coords, d),
            "validation": lookahead is not None,
            "meta_losses": meta_losses,
            "meta_params": self.weighter.n_params,
            "aggregations": self.aggregations,
        }
        logger.info(
            "FLEML round %d: flagged %s; look-ahead losses %s",
            ctx.round_number, [c.client_id for c in clients if c.flagged], meta_losses,
        )
        return self._linear_result(updates, clients, ctx, info)

    def _signals(
        self, updates: Tensor, norms: Tensor, median_norm: float, gen: torch.Generator
    ) -> tuple[dict[str, Tensor], float]:
        """Reference-, entropy- and norm-based signals (float64, ``[n]``) and the round's S."""
        d = updates.shape[1]
        if d > self.config.sample_coords:
            idx = torch.sort(torch.randperm(d, generator=gen)[: self.config.sample_coords]).values
            sample = updates.index_select(1, idx)
        else:
            sample = updates
        reference = torch.median(sample, dim=0).values
        denom = row_norms(sample) * float(torch.linalg.vector_norm(reference))
        dots = (sample @ reference).to(torch.float64)
        cos_ref = torch.where(denom > 0, dots / denom.clamp(min=_TINY), 0.0)
        gram = cosine_gram(sample)
        log_norm = torch.log((norms + _TINY) / (median_norm + _TINY)).clamp(-_LOG_CLIP, _LOG_CLIP)
        signals = {"cos_ref": cos_ref, "log_norm": log_norm, "vne_loo": leave_one_out_entropy(gram),
                   "peer_cos": closest_peer_cosine(gram)}
        if sample.shape[1] >= _MIN_INFO_COORDS:
            cond_entropy, mutual_info = reference_information(sample, reference, self.config.bins)
            signals.update(cond_entropy=cond_entropy, mutual_info=mutual_info)
        return signals, float(von_neumann_entropy(gram))

    def _flag_tests(self, f: RoundFeatures, smoothed_z: Tensor | None = None) -> dict[str, Tensor]:
        """The flag tests of a round, each a bool ``[n]`` (see the module docstring).

        * ``collusion``: the closest other update is a near-copy (``peer_cos >=
          collusion_cos``) and that redundancy is extreme for the round (``z_peer >
          flag_threshold``): a coalition sending one crafted vector (ALIE, IPM, Min-Max,
          Min-Sum). Benign updates trained on different samples are never copies.
        * ``magnitude``: ``|u_i| > norm_ratio * median`` and ``z_norm > flag_threshold``
          (boosted updates: scaling / model replacement, boosted backdoors, scaled sign flips).
        * ``opposition``: the update points against the round's consensus (``cos_ref < 0``,
          ``z_cos > flag_threshold``) and, with a validation set, ascends the clean loss
          (``val_align < 0``): sign flipping, reversed means.
        * ``score`` (only with ``flag_score``): the earlier rule, anomaly-score z (or, given
          ``smoothed_z``, the z of its EMA over the client's rounds) above ``flag_threshold``
          and ``val_align <= 0``.
        """
        c, t = self.config, self.config.flag_threshold
        sig, z = f.signals, f.z
        tests: dict[str, Tensor] = {}
        if c.flag_collusion:
            tests["collusion"] = (sig["peer_cos"] >= c.collusion_cos) & (z["z_peer"] > t)
        if c.flag_magnitude:
            tests["magnitude"] = (f.norms > c.norm_ratio * f.median_norm) & (z["z_norm"] > t)
        if c.flag_opposition:
            opposed = (sig["cos_ref"] < 0.0) & (z["z_cos"] > t)
            if "val_align" in sig:
                opposed &= sig["val_align"] < 0.0
            tests["opposition"] = opposed
        if c.flag_score:
            scored = f.score_z > t
            if smoothed_z is not None:
                scored = scored | (smoothed_z > t)
            if "val_align" in sig:
                scored &= sig["val_align"] <= 0.0
            tests["score"] = scored
        return tests

    def _reason(self, i: int, f: RoundFeatures, tests: dict[str, Tensor]) -> str:
        """Why client ``i`` was flagged: the tests that fired, with their figures."""
        sig, z = f.signals, f.z
        parts = []
        for name, fired in tests.items():
            if not bool(fired[i]):
                continue
            if name == "collusion":
                parts.append(f"collusion: closest peer cosine {float(sig['peer_cos'][i]):.4f}"
                             f" (z_peer={float(z['z_peer'][i]):.1f})")
            elif name == "magnitude":
                parts.append(f"magnitude: norm {float(f.norms[i]) / max(f.median_norm, _TINY):.2f}"
                             f" x median (z_norm={float(z['z_norm'][i]):.1f})")
            elif name == "opposition":
                detail = (f"cos_ref={float(sig['cos_ref'][i]):.3f} "
                          f"(z_cos={float(z['z_cos'][i]):.1f})")
                if "val_align" in sig:
                    detail += f", val_align={float(sig['val_align'][i]):.3f}"
                parts.append(f"opposition: {detail}")
            else:
                parts.append(f"anomaly z={float(f.score_z[i]):.1f}")
        return "; ".join(parts)


@dataclass
class RoundFeatures:
    """FLEML's per-client measurements of one round (:meth:`FLEMLDefense.client_features`).

    Attributes
    ----------
    norms : Tensor
        ``|u_i|``, float64 ``[n]``.
    median_norm : float
        The round's (lower) median norm.
    clip : Tensor
        Clipping factors ``k_i`` (all 1 with ``clip=False``).
    signals : dict of str to Tensor
        Raw signals by name (``cos_ref``, ``log_norm``, ``vne_loo``, ``cond_entropy``,
        ``mutual_info``, ``val_align``; the last three only when computed), float64 ``[n]``.
    z : dict of str to Tensor
        Oriented robust z-scores of the signals (positive = anomalous), by feature name.
    score, score_z : Tensor
        Anomaly score and its robust z-score (the current-round flag test).
    vne_round : float
        Von Neumann entropy of the round.
    """

    norms: Tensor
    median_norm: float
    clip: Tensor
    signals: dict[str, Tensor]
    z: dict[str, Tensor]
    score: Tensor
    score_z: Tensor
    vne_round: float
    lookahead: _Lookahead | None = None

    @property
    def orientation(self) -> dict[str, float]:
        """``signal name -> +1 / -1``: the sign that makes a signal's z-score anomalous."""
        out = {name: sign for name, sign in _ORIENTED.values() if name in self.signals}
        if "peer_cos" in self.signals:
            out["peer_cos"] = 1.0  # z_peer rises with it (a monotone transform)
        return out


class _Lookahead:
    """Validation-loss machinery of one round: alignment signal and look-ahead steps."""

    def __init__(
        self,
        model: nn.Module,
        global_params: Tensor,
        x_val: Tensor,
        y_val: Tensor,
        gen: torch.Generator,
    ) -> None:
        self.model = model
        self.spec = ParamSpec.from_model(model)
        self.global_params = global_params
        self.x_val = x_val
        self.y_val = y_val
        self.gen = gen

    @classmethod
    def build(cls, ctx: RoundContext, gen: torch.Generator) -> _Lookahead:
        """Check the validation inputs of a context with ``ctx.has_validation``.

        Raises
        ------
        InvalidRoundError
            Parameter count differs from ``global_params``, empty or mismatched validation
            set, or non-finite global parameters.
        """
        model, global_params, x_val, y_val = ctx.model, ctx.global_params, ctx.x_val, ctx.y_val
        if model is None or global_params is None or x_val is None or y_val is None:
            raise InvalidRoundError("look-ahead needs model, global_params, x_val and y_val")
        numel = ParamSpec.from_model(model).numel
        if numel != global_params.numel():
            raise InvalidRoundError(
                f"model has {numel} parameters, global_params {global_params.numel()}"
            )
        if x_val.shape[0] == 0 or y_val.shape[0] != x_val.shape[0]:
            raise InvalidRoundError("x_val and y_val must be non-empty with equal lengths")
        global_params = global_params.detach().to(torch.float32)
        if not bool(torch.isfinite(global_params).all()):
            raise InvalidRoundError("global_params has non-finite values")
        return cls(model, global_params, x_val, y_val, gen)

    def _batch(self, size: int) -> tuple[Tensor, Tensor]:
        """``size`` validation samples drawn without replacement (all when fewer)."""
        idx = torch.randperm(self.y_val.shape[0], generator=self.gen)[:size]
        return self.x_val[idx], self.y_val[idx]

    def _loss(self, flat: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        parts = torch.split(flat, list(self.spec.sizes))
        params = {
            name: part.view(shape)
            for name, shape, part in zip(self.spec.names, self.spec.shapes, parts, strict=True)
        }
        was_training = self.model.training
        self.model.eval()
        try:
            logits = functional_call(self.model, params, (xb,))
        finally:
            self.model.train(was_training)
        return F.cross_entropy(logits, yb)

    def _accumulated_grad(self, flat: Tensor, xb: Tensor, yb: Tensor,
                          micro: int) -> tuple[Tensor, Tensor]:
        """Gradient of the mean cross-entropy over ``(xb, yb)`` at ``flat`` (a leaf) and the
        loss, accumulated over passes of ``micro`` samples: the activation memory is that of
        one pass, whatever the batch."""
        grad = torch.zeros_like(flat)
        loss = torch.zeros((), dtype=flat.dtype)
        for start in range(0, yb.shape[0], micro):
            part = slice(start, start + micro)
            share = yb[part].shape[0] / yb.shape[0]
            piece = self._loss(flat, xb[part], yb[part]) * share
            (g,) = torch.autograd.grad(piece, flat)
            grad += g
            loss += piece.detach()
        return grad, loss

    def alignment(self, updates: Tensor, norms: Tensor, batch: int,
                  micro: int = _MICRO_BATCH) -> Tensor:
        """Cosine of each update to ``-grad L_val`` at the global parameters.

        The batch gradient is accumulated over micro-batches of ``micro`` samples, which
        bounds the activation memory whatever ``batch`` is.
        """
        xb, yb = self._batch(batch)
        flat = self.global_params.clone().requires_grad_(True)
        grad, _ = self._accumulated_grad(flat, xb, yb, micro)
        grad_norm = float(torch.linalg.vector_norm(grad, dtype=torch.float64))
        dots = -(updates @ grad).to(torch.float64)
        denom = norms * grad_norm
        return torch.where(denom > 0, dots / denom.clamp(min=_TINY), 0.0)

    def train_step(
        self,
        weighter: MetaWeighter,
        features: Tensor,
        active: Tensor,
        clip: Tensor,
        updates: Tensor,
        batch: int,
        kl_weight: float,
        micro: int = _MICRO_BATCH,
    ) -> float:
        """One Adam step of the weighting network on the look-ahead loss; returns the CE part.

        The objective is the validation cross-entropy at ``global + sum_i c_i k_i u_i`` plus
        ``kl_weight * KL(c || c_prior)``, where ``c_prior`` are the prior-only coefficients
        (``theta = 0``): the learned correction moves weight only as far as the validation
        batch pays for it, which keeps batch noise from concentrating the weights.
        """
        theta = weighter.theta.clone().requires_grad_(True)
        coefficients = weighter.coefficients(features, active, theta)
        prior = weighter.coefficients(features, active, torch.zeros_like(weighter.theta))
        kept = coefficients[active]
        kl = (kept * (torch.log(kept) - torch.log(prior[active]))).sum()
        step = (coefficients * clip).to(torch.float32) @ updates
        xb, yb = self._batch(batch)
        if yb.shape[0] <= micro:  # one pass (the default batches: the recorded numbers)
            loss = self._loss(self.global_params + step, xb, yb)
            (grad,) = torch.autograd.grad(loss + kl_weight * kl, theta)
        else:  # the loss gradient at the stepped parameters, in passes, then through the step
            stepped = self.global_params + step
            at = stepped.detach().requires_grad_(True)
            grad_at, loss = self._accumulated_grad(at, xb, yb, micro)
            (grad,) = torch.autograd.grad(stepped, theta, grad_outputs=grad_at,
                                          retain_graph=True)
            (grad_kl,) = torch.autograd.grad(kl_weight * kl, theta)
            grad = grad + grad_kl
        weighter.adam_update(grad)
        return float(loss.detach())


def _log_sample_share(ctx: RoundContext, n: int) -> Tensor:
    """``log(n_i / median n)`` clipped to ``[-2, 2]``; zeros without sample counts."""
    if ctx.sample_counts is None:
        return torch.zeros(n, dtype=torch.float64)
    counts = torch.tensor([float(c) for c in ctx.sample_counts], dtype=torch.float64)
    ratio = (counts + 1.0) / (counts.median() + 1.0)
    return torch.log(ratio).clamp(-_SAMPLE_SHARE_CLIP, _SAMPLE_SHARE_CLIP)
