"""FLEML and the six baselines as Flower strategies (Flower 1.42's message-based API).

Which API: Flower 1.42 ships two strategy APIs. ``flwr.serverapp.strategy.Strategy``
(``configure_train`` / ``aggregate_train`` over :class:`~flwr.app.Message` replies, driven by a
``ServerApp`` whose ``@app.main()`` calls ``strategy.start(grid=...)``) is the one its
documentation presents as current; ``flwr.server.strategy.Strategy`` (``aggregate_fit`` over
``ClientProxy``/``FitRes``) is the legacy API kept for older apps. :class:`DefenseStrategy`
implements the message-based one: it subclasses Flower's message-based ``FedAvg`` for node
sampling, message construction and client-side evaluation, and replaces ``aggregate_train``
with the project's round policy.

What ``aggregate_train`` does, in the order :class:`fleml_node.round_engine.RoundEngine` does it:

1. every reply names its **stable client id** (ConfigRecord ``"fleml"``, key ``"client-id"``;
   :func:`fleml_node.flower.client.train_reply` builds such replies). Flower's node ids change
   from run to run and replies arrive in any order, while FLEML keeps a history per client, so
   the round is formed over the clients **sorted by that id**, and the node id is never used;
2. each reply is screened like a member's submission: an error reply, a missing or repeated
   id, arrays whose names, shapes or dtype differ from the global model's, NaN/Inf, or an update
   norm above :data:`~fleml_node.round_engine.MAX_UPDATE_NORM` reject that client with a reason;
3. the accepted updates (float32, ``local - global`` when the client sent its trained weights,
   or the update itself when it sent one under the record key ``"update"``) go through the
   defense from the project's registry (:func:`fleml_node.defense.make_defense`) with the same
   round context as the nodes: sample counts capped at 4x their median, the server-side
   validation data (FLEML's look-ahead, FLTrust's root update), the model template, the round
   number and the seed, under the same deterministic execution settings;
4. the new global model is ``global + aggregate``, bit for bit what RoundEngine computes.

The defense object lives as long as the strategy, so FLEML's learned state (meta-weights,
per-client history) carries over from round to round; :meth:`DefenseStrategy.state_dict` and
:meth:`~DefenseStrategy.load_state_dict` checkpoint it. Each round's report (the defense's JSON
report: flags, reasons, coefficients, scores; plus the rejected replies and why) is appended to
``strategy.reports`` and summarised in the MetricRecord the round returns, which Flower logs
and keeps in ``Result.train_metrics_clientapp``: ``fleml-accepted``, ``fleml-flagged``,
``fleml-rejected`` (counts), and per client ``fleml-flag/<id>`` (1 flagged, 0 accepted),
``fleml-coefficient/<id>`` (linear methods) and ``fleml-rejected/<id>`` (1).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import Tensor, nn

from fleml_node.defense import REGISTRY, Defense, RoundContext, make_defense
from fleml_node.learning import TrainConfig, flatten, get_params, local_train, make_generator
from fleml_node.learning.params import ParamSpec, unflatten
from fleml_node.round_engine import (
    MAX_SAMPLE_CLAIM,
    MAX_UPDATE_NORM,
    capped_counts,
    execution_settings,
)

log = logging.getLogger(__name__)

FLEML_RECORD = "fleml"  # the reply's ConfigRecord holding the client id
CLIENT_ID = "client-id"
UPDATE_RECORD = "update"  # an ArrayRecord under this key holds the update, not the weights
ROOT_STREAM = 10**6  # the random stream of the server's own update (RoundEngine's)


@dataclass
class RoundReport:
    """What the strategy decided in one round."""

    round: int
    accepted: list[str]  # sorted client ids the defense saw
    flagged: list[str]
    rejected: dict[str, str]  # client id (or "node <id>" without one) -> reason
    coefficients: dict[str, float | None]
    defense: dict[str, Any] | None  # the defense's JSON report (None: nothing to aggregate)
    aggregate: Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "accepted": self.accepted, "flagged": self.flagged,
                "rejected": self.rejected, "coefficients": self.coefficients,
                "defense": self.defense}


def arrays_to_params(arrays: ArrayRecord) -> dict[str, Tensor]:
    """An ArrayRecord as named float32 tensors, in its order (copies)."""
    return {k: torch.from_numpy(v.numpy().copy()) for k, v in arrays.items()}


def params_to_arrays(params: dict[str, Tensor]) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in params.items()})


class DefenseStrategy(FedAvg):
    """A Flower strategy that aggregates with a defense of the project's registry.

    Parameters
    ----------
    defense
        A registry name (``fleml``, ``fedavg``, ``krum``, ``multikrum``, ``median``,
        ``trimmedmean``, ``fltrust``) or a :class:`~fleml_node.defense.Defense` instance.
    model
        Template of the global model (its state dict order lays out the flat vectors); FLEML's
        look-ahead and FLTrust's root update run on it.
    validation
        The server's small clean validation set ``(x, y)``; FLEML falls back to its
        documented no-validation behaviour without it, FLTrust needs it.
    train
        How FLTrust's server update is trained on ``validation`` (default: the project's
        :class:`~fleml_node.learning.TrainConfig`).
    seed
        Seed of the defense's randomness and of the server update's stream.
    defense_params
        Constructor parameters of the defense, when ``defense`` is a name.
    **fedavg_kwargs
        Flower's FedAvg sampling options (``fraction_train``, ``min_train_nodes``,
        ``fraction_evaluate``, ``weighted_by_key`` (default ``"num-examples"``), ...).
    """

    def __init__(self, defense: str | Defense = "fleml", *, model: nn.Module,
                 validation: tuple[Tensor, Tensor] | None = None,
                 train: TrainConfig | None = None, seed: int = 0,
                 defense_params: dict[str, Any] | None = None,
                 on_round: Callable[[RoundReport], None] | None = None,
                 **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        if isinstance(defense, Defense):
            if defense_params:
                raise ValueError("defense_params apply only when defense is a name")
            self.defense = defense
        else:
            self.defense = make_defense(defense, **(defense_params or {}))
        if not isinstance(model, nn.Module):
            raise TypeError("model must be a torch.nn.Module (the global model's template)")
        self.model = model
        self.spec = ParamSpec.from_named(get_params(model))
        if validation is not None:
            x, y = validation
            if len(x) != len(y) or len(y) == 0:
                raise ValueError("validation must be (x, y) with as many labels as inputs")
        self.validation = validation
        self.train = train or TrainConfig()
        self.seed = seed
        self.on_round = on_round
        self.reports: list[RoundReport] = []
        self._sent: dict[int, dict[str, Tensor]] = {}

    @classmethod
    def for_task(cls, task: Any, defense: str | Defense = "fleml",
                 **kwargs: Any) -> DefenseStrategy:
        """A strategy for one of the project's tasks (:class:`fleml_node.task.TaskConfig`):
        its model, its validation split, its training settings and seed, as RoundEngine has."""
        from fleml_node.task import validation_data

        kwargs.setdefault("validation", validation_data(task))
        return cls(defense, model=task.initial_model(), train=task.train, seed=task.seed,
                   **kwargs)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        """The defense's learned state (None for stateless defenses)."""
        return self.defense.state_dict() if hasattr(self.defense, "state_dict") else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.defense.load_state_dict(state)

    def summary(self) -> None:
        super().summary()
        log.info("defense %s %s", self.defense.name, self.defense.params())

    # -- Flower's hooks ---------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        # the global model this round's updates are relative to
        self._sent = {server_round: arrays_to_params(arrays)}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if server_round not in self._sent:
            raise RuntimeError(f"round {server_round}: aggregate_train before configure_train")
        report, new_params, metric_contents = self.aggregate_round(
            server_round, self._sent[server_round], replies)
        metrics = self._metrics(report, metric_contents)
        if new_params is None:
            return None, metrics
        return params_to_arrays(new_params), metrics

    # -- the round ----------------------------------------------------------------------------
    def aggregate_round(self, server_round: int, base: dict[str, Tensor],
                        replies: Iterable[Message]
                        ) -> tuple[RoundReport, dict[str, Tensor] | None, list[Any]]:
        """Screen the replies, run the defense over the accepted clients sorted by id, and
        return the round's report, the new global parameters (None when no client was
        accepted) and the accepted replies' contents (for metric aggregation)."""
        if tuple(base) != tuple(self.spec.names):
            raise ValueError("the global arrays do not match the model template's state dict")
        rejected: dict[str, str] = {}
        candidates: dict[str, list[tuple[Tensor, int, Any]]] = {}
        for msg in replies:
            cid, reason, row, claim = self._screen(msg, base)
            if reason:
                rejected[cid] = reason
                continue
            candidates.setdefault(cid, []).append((row, claim, msg.content))
        accepted: list[tuple[str, Tensor, int, Any]] = []
        for cid in sorted(candidates):
            if len(candidates[cid]) > 1:
                rejected[cid] = f"invalid: {len(candidates[cid])} replies name this client id"
                continue
            row, claim, content = candidates[cid][0]
            accepted.append((cid, row, claim, content))
        if not accepted:
            report = RoundReport(server_round, [], [], rejected, {}, None)
            self._finish(report)
            return report, None, []
        ids = [a[0] for a in accepted]
        updates = torch.stack([a[1] for a in accepted])
        base_flat = flatten(base)
        with execution_settings():
            result = self.defense.aggregate(updates, self._context(
                server_round, base, ids, capped_counts([a[2] for a in accepted])))
        new_params = unflatten(base_flat + result.update, self.spec)
        report = RoundReport(server_round, ids, sorted(result.flagged_ids), rejected,
                             {c.client_id: c.coefficient for c in result.clients},
                             result.to_dict(), result.update)
        self._finish(report)
        return report, new_params, [a[3] for a in accepted]

    def _screen(self, msg: Message, base: dict[str, Tensor]
                ) -> tuple[str, str, Tensor | None, int]:
        """(client id, reason or "", flat float32 update, claimed samples) for one reply."""
        node = f"node {msg.metadata.src_node_id}"
        if msg.has_error():
            return node, f"error: {msg.error.reason}", None, 0
        content = msg.content
        fleml = content.config_records.get(FLEML_RECORD)
        cid = fleml.get(CLIENT_ID) if fleml is not None else None
        if not isinstance(cid, str) or not cid:
            return node, (f"invalid: no stable client id (ConfigRecord {FLEML_RECORD!r}, key "
                          f"{CLIENT_ID!r})"), None, 0
        if len(content.array_records) != 1:
            return cid, "invalid: expected exactly one ArrayRecord", None, 0
        (key, arrays), = content.array_records.items()
        if list(arrays.keys()) != list(base):
            return cid, "invalid: the arrays' names differ from the global model's", None, 0
        rows = []
        for name, array in arrays.items():
            value = array.numpy()
            if value.dtype.name != "float32" or tuple(value.shape) != tuple(base[name].shape):
                return cid, (f"invalid: {name} is {value.dtype.name}{list(value.shape)}, "
                             f"expected float32{list(base[name].shape)}"), None, 0
            local = torch.from_numpy(value.copy()).reshape(-1)
            rows.append(local if key == UPDATE_RECORD else local - base[name].reshape(-1))
        flat = torch.cat(rows)
        if not torch.isfinite(flat).all():
            return cid, "invalid: the update holds NaN or Inf", None, 0
        norm = torch.linalg.vector_norm(flat.double()).item()
        if not norm <= MAX_UPDATE_NORM:
            return cid, f"invalid: update norm {norm:.3g} exceeds {MAX_UPDATE_NORM:g}", None, 0
        return cid, "", flat, self._claim(content)

    def _claim(self, content: Any) -> int:
        """The sample count a client claims (weighted_by_key), if plausible, else 1."""
        for record in content.metric_records.values():
            claim = record.get(self.weighted_by_key)
            if isinstance(claim, float) and claim.is_integer():
                claim = int(claim)
            if isinstance(claim, int) and not isinstance(claim, bool) \
                    and 1 <= claim <= MAX_SAMPLE_CLAIM:
                return claim
        return 1

    def _context(self, round_id: int, base: dict[str, Tensor], ids: list[str],
                 counts: list[int]) -> RoundContext:
        self.model.load_state_dict(base)
        x_val, y_val = self.validation if self.validation is not None else (None, None)
        return RoundContext(client_ids=ids, sample_counts=counts, round_number=round_id,
                            global_params=flatten(base), model=self.model, x_val=x_val,
                            y_val=y_val, root_update=lambda: self._root_update(base, round_id),
                            seed=self.seed)

    def _root_update(self, base: dict[str, Tensor], round_id: int) -> Tensor:
        if self.validation is None:
            raise ValueError(f"defense {self.defense.name!r} needs the server's validation data")
        update, _ = local_train(copy.deepcopy(self.model), base, self.validation[0],
                                self.validation[1], self.train,
                                make_generator(self.seed, round_id, ROOT_STREAM))
        return flatten(update)

    def _finish(self, report: RoundReport) -> None:
        self.reports.append(report)
        log.info("round %d: %s accepted %d, flagged %s, rejected %s", report.round,
                 self.defense.name, len(report.accepted), report.flagged,
                 sorted(report.rejected))
        if self.on_round is not None:
            self.on_round(report)

    def _metrics(self, report: RoundReport, contents: list[Any]) -> MetricRecord:
        metrics = MetricRecord()
        usable = [c for c in contents if self._aggregatable(c)]
        if usable:
            try:
                metrics = self.train_metrics_aggr_fn(usable, self.weighted_by_key)
            except Exception as exc:  # noqa: BLE001 - clients' own metrics are best effort
                log.warning("round %d: client metrics not aggregated: %s", report.round, exc)
        flagged = set(report.flagged)
        metrics["fleml-accepted"] = len(report.accepted) - len(flagged)
        metrics["fleml-flagged"] = len(flagged)
        metrics["fleml-rejected"] = len(report.rejected)
        for cid in report.accepted:
            metrics[f"fleml-flag/{cid}"] = int(cid in flagged)
            coefficient = report.coefficients.get(cid)
            if coefficient is not None:
                metrics[f"fleml-coefficient/{cid}"] = float(coefficient)
        for cid in report.rejected:
            metrics[f"fleml-rejected/{cid}"] = 1
        return metrics

    def _aggregatable(self, content: Any) -> bool:
        records = list(content.metric_records.values())
        return len(records) == 1 and isinstance(records[0].get(self.weighted_by_key),
                                                (int, float))


class FLEMLStrategy(DefenseStrategy):
    """FLEML (entropy anomaly detection + meta-learned weighting) as a Flower strategy."""

    def __init__(self, *, model: nn.Module, **kwargs: Any) -> None:
        super().__init__("fleml", model=model, **kwargs)

    @classmethod
    def for_task(cls, task: Any, defense: str | Defense = "fleml",
                 **kwargs: Any) -> DefenseStrategy:
        if defense != "fleml":
            raise ValueError("FLEMLStrategy runs the fleml defense; use DefenseStrategy")
        from fleml_node.task import validation_data

        kwargs.setdefault("validation", validation_data(task))
        return cls(model=task.initial_model(), train=task.train, seed=task.seed, **kwargs)


def _baseline(name: str, doc: str) -> type[DefenseStrategy]:
    def __init__(self: DefenseStrategy, *, model: nn.Module, **kwargs: Any) -> None:
        DefenseStrategy.__init__(self, name, model=model, **kwargs)

    def for_task(cls: type, task: Any, defense: str | Defense = name,
                 **kwargs: Any) -> DefenseStrategy:
        if defense != name:
            raise ValueError(f"{cls.__name__} runs the {name} defense; use DefenseStrategy")
        from fleml_node.task import validation_data

        kwargs.setdefault("validation", validation_data(task))
        return cls(model=task.initial_model(), train=task.train, seed=task.seed, **kwargs)

    return type(f"{REGISTRY[name].__name__.removesuffix('Defense')}Strategy",
                (DefenseStrategy,), {"__init__": __init__, "for_task": classmethod(for_task),
                                     "__doc__": doc, "__module__": __name__})


FedAvgStrategy = _baseline("fedavg", "FedAvg over sample counts capped at 4x their median.")
KrumStrategy = _baseline("krum", "Krum (Blanchard et al. 2017).")
MultiKrumStrategy = _baseline("multikrum", "Multi-Krum (Blanchard et al. 2017).")
MedianStrategy = _baseline("median", "Coordinate-wise median (Yin et al. 2018).")
TrimmedMeanStrategy = _baseline("trimmedmean", "Coordinate-wise trimmed mean (Yin et al. 2018).")
FLTrustStrategy = _baseline("fltrust", "FLTrust (Cao et al. 2021); needs validation data.")

_NAMED = {"fleml": FLEMLStrategy, "fedavg": FedAvgStrategy, "krum": KrumStrategy,
          "multikrum": MultiKrumStrategy, "median": MedianStrategy,
          "trimmedmean": TrimmedMeanStrategy, "fltrust": FLTrustStrategy}
# every defense of the registry has a strategy (one added later gets a generic one)
STRATEGIES: dict[str, type[DefenseStrategy]] = {
    name: _NAMED.get(name) or _baseline(name, f"The {name} defense as a Flower strategy.")
    for name in REGISTRY}


def make_strategy(name: str, **kwargs: Any) -> DefenseStrategy:
    """The strategy of a registry defense by name (``model=`` and the options above)."""
    key = name.lower()
    if key not in STRATEGIES:
        raise ValueError(f"unknown defense {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[key](**kwargs)
