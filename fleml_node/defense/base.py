"""Defense interface shared by FLEML and the baselines: round context, result, exact replay.

The contract follows the auditable aggregation step of FLEML ("Entropy-guided meta-learning
defense against data poisoning attacks in blockchain-assisted federated learning", Information
Sciences, 2026, doi:10.1016/j.ins.2026.123389): the aggregator node publishes a JSON report
next to the new global update, and anyone holding the same client updates recomputes the
aggregate bitwise from that report alone.

Two replay kinds exist:

``linear``
    The aggregate is ``sum_i c_i * u_i`` over the raw update rows, with the effective
    coefficients ``c_i`` stored in the report (``coefficient_hex``, ``float.hex`` of a float64,
    exact in any language). FedAvg, Krum, Multi-Krum, FLTrust and FLEML are linear: any
    normalisation or clipping is folded into ``c_i``. :func:`weighted_sum` is the only code
    path that forms such an aggregate, for ``aggregate()`` and ``replay()`` alike; it multiplies
    and adds in float64, one row at a time in report order, with separate IEEE operations
    (no fused multiply-add, no reduction whose order depends on the BLAS or thread count), and
    rounds to float32 once at the end.
``median`` / ``trimmedmean``
    The aggregate is recomputed from the parameters named in the report, with the same
    deterministic routines (see :mod:`fleml_node.defense.median` and
    :mod:`fleml_node.defense.trimmed_mean`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

REPORT_SCHEMA = "fleml.defense.report/1"


class InvalidRoundError(ValueError):
    """The updates or the round context cannot be aggregated.

    Attributes
    ----------
    bad_rows : list[int]
        Row indices of the offending updates (non-finite values); empty for other problems.
    """

    def __init__(self, message: str, bad_rows: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.bad_rows = list(bad_rows)


@dataclass(frozen=True)
class RoundContext:
    """What an aggregator may know about a round besides the update matrix.

    Every field is optional; methods that need one raise :class:`InvalidRoundError` when it is
    missing (FLTrust needs ``root_update``), or document their fallback (FLEML without a
    validation set).

    Parameters
    ----------
    client_ids : sequence of str, optional
        One unique id per update row (default ``"0"``, ``"1"``, ...). FLEML keys its per-client
        history on these ids.
    sample_counts : sequence of int, optional
        Local training samples per client, as reported by the clients (FedAvg weights).
    round_number : int
        Round index; seeds per-round randomness together with ``seed``.
    global_params : Tensor, optional
        Current flat global parameters, shape ``[d]`` (FLEML's look-ahead starts from here).
    model : torch.nn.Module, optional
        Template whose ``named_parameters()`` (in order) lay out the flat vectors.
    x_val, y_val : Tensor, optional
        The aggregator's small clean validation set (inputs, integer labels).
    root_update : Tensor or callable, optional
        FLTrust's server update ``g_0`` (shape ``[d]``) on its root dataset, or a zero-argument
        callable that computes it.
    seed : int
        Seed of all randomness used by the aggregator in this round.
    """

    client_ids: Sequence[str] | None = None
    sample_counts: Sequence[int] | None = None
    round_number: int = 0
    global_params: Tensor | None = None
    model: nn.Module | None = None
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    root_update: Tensor | Callable[[], Tensor] | None = None
    seed: int = 0

    @property
    def has_validation(self) -> bool:
        """Whether a model template, global parameters and a validation set are all present."""
        return (
            self.model is not None
            and self.global_params is not None
            and self.x_val is not None
            and self.y_val is not None
        )


@dataclass
class ClientReport:
    """What the aggregator decided about one client.

    Parameters
    ----------
    client_id : str
        The client's id.
    coefficient : float or None
        Effective coefficient of the client's raw update in the aggregate (linear methods;
        float64), ``None`` for median and trimmed mean.
    flagged : bool
        Whether the client was judged malicious and excluded.
    reason : str
        Short human-readable explanation of the decision.
    scores : dict
        Method scores (e.g. Krum score, FLTrust trust score, FLEML anomaly score).
    features : dict
        Inputs of the decision (norm, cosine to the reference, entropy signals, ...).
    """

    client_id: str
    coefficient: float | None = None
    flagged: bool = False
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``coefficient_hex`` is the exact value replay uses."""
        return {
            "client_id": self.client_id,
            "coefficient": self.coefficient,
            "coefficient_hex": None if self.coefficient is None else float(self.coefficient).hex(),
            "flagged": self.flagged,
            "reason": self.reason,
            "scores": {k: _json_float(v) for k, v in self.scores.items()},
            "features": {k: _json_float(v) for k, v in self.features.items()},
        }


@dataclass
class AggregationResult:
    """The new global update and the auditable report of how it was formed.

    Parameters
    ----------
    method : str
        Registry name of the aggregator.
    params : dict
        Constructor parameters of the aggregator (what replay needs for median and trimmed mean).
    update : Tensor
        Aggregated update, shape ``[d]``, float32; the new global is ``global + update``.
    clients : list of ClientReport
        One entry per update row, in row order.
    info : dict
        Method-level information (thresholds, look-ahead losses, ...).
    round_number : int
        The round this result belongs to.
    """

    method: str
    params: dict[str, Any]
    update: Tensor
    clients: list[ClientReport]
    info: dict[str, Any] = field(default_factory=dict)
    round_number: int = 0

    @property
    def coefficients(self) -> list[float | None]:
        """Effective coefficients in row order (``None`` for non-linear methods)."""
        return [c.coefficient for c in self.clients]

    @property
    def flagged_ids(self) -> list[str]:
        """Ids of the clients flagged in this round."""
        return [c.client_id for c in self.clients if c.flagged]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report, including the SHA-256 of the aggregate's float32 bytes."""
        return {
            "schema": REPORT_SCHEMA,
            "method": self.method,
            "params": self.params,
            "round_number": self.round_number,
            "n_clients": len(self.clients),
            "dim": int(self.update.numel()),
            "aggregate_sha256": tensor_sha256(self.update),
            "clients": [c.to_dict() for c in self.clients],
            "info": _json_tree(self.info),
        }

    def to_json(self, indent: int | None = None) -> str:
        """Serialize :meth:`to_dict` (strict JSON: no NaN or Infinity)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


class Defense(ABC):
    """Base class: validate the round, aggregate, and replay from a report.

    Subclasses set ``name`` (their registry key) and implement :meth:`_aggregate`.
    """

    name: ClassVar[str]

    def aggregate(self, updates: Tensor, ctx: RoundContext | None = None) -> AggregationResult:
        """Aggregate one round of client updates.

        Parameters
        ----------
        updates : Tensor
            Client updates (local minus global parameters), shape ``[n, d]``, floating point;
            converted to contiguous float32.
        ctx : RoundContext, optional
            Round information; defaults to an empty context.

        Returns
        -------
        AggregationResult
            The aggregated update ``[d]`` and the per-client report.

        Raises
        ------
        InvalidRoundError
            Empty round, non-finite rows (listed in ``bad_rows``), or a context whose lengths
            or shapes do not match the updates.
        """
        ctx = ctx if ctx is not None else RoundContext()
        updates, client_ids = validate_round(updates, ctx)
        result = self._aggregate(updates, client_ids, ctx)
        logger.debug(
            "%s round %d: %d clients, %d flagged",
            self.name, ctx.round_number, len(client_ids), len(result.flagged_ids),
        )
        return result

    @abstractmethod
    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        """Aggregate validated float32 updates (one row per id in ``client_ids``)."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor parameters, JSON-ready (stored in every report)."""

    @classmethod
    def replay(cls, updates: Tensor, report: Mapping[str, Any] | str | AggregationResult) -> Tensor:
        """Recompute an aggregate bitwise from the updates and a report.

        Parameters
        ----------
        updates : Tensor
            The same update rows, in the report's client order, shape ``[n, d]``.
        report : dict, str or AggregationResult
            The report (parsed JSON, JSON text, or the result object).

        Returns
        -------
        Tensor
            The aggregate, float32, shape ``[d]``.

        Raises
        ------
        InvalidRoundError
            The updates do not match the report (count, dimension, finiteness), or the report
            names another method than the class it is replayed with.
        """
        report = _as_report(report)
        method = report.get("method")
        if method not in REGISTRY:
            raise InvalidRoundError(f"report names an unknown method {method!r}")
        target = REGISTRY[method]
        if cls is not Defense and cls is not target:
            raise InvalidRoundError(f"{cls.__name__} cannot replay a {method!r} report")
        ids = [c["client_id"] for c in report["clients"]]
        updates, _ = validate_round(updates, RoundContext(client_ids=ids))
        if updates.shape[1] != report["dim"]:
            raise InvalidRoundError(
                f"updates have dimension {updates.shape[1]}, the report says {report['dim']}"
            )
        return target._replay(updates, report)

    @classmethod
    def _replay(cls, updates: Tensor, report: Mapping[str, Any]) -> Tensor:
        """Linear replay: the report's exact coefficients through :func:`weighted_sum`."""
        coefficients = [float.fromhex(c["coefficient_hex"]) for c in report["clients"]]
        return weighted_sum(updates, coefficients)

    def _linear_result(
        self,
        updates: Tensor,
        clients: list[ClientReport],
        ctx: RoundContext,
        info: dict[str, Any] | None = None,
    ) -> AggregationResult:
        """Build the result of a linear method from its client reports' coefficients."""
        coefficients = [float(c.coefficient) for c in clients]  # type: ignore[arg-type]
        return AggregationResult(
            method=self.name,
            params=self.params(),
            update=weighted_sum(updates, coefficients),
            clients=clients,
            info=info or {},
            round_number=ctx.round_number,
        )


REGISTRY: dict[str, type[Defense]] = {}


def register(cls: type[Defense]) -> type[Defense]:
    """Class decorator: add an aggregator to :data:`REGISTRY` under ``cls.name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"aggregator name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def make_defense(name: str, **params: Any) -> Defense:
    """Create a registered defense by name.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY` (case-insensitive); the CLI's ``--defense`` choices are
        the same keys.
    **params
        Constructor parameters of that defense.

    Returns
    -------
    Defense

    Raises
    ------
    ValueError
        Unknown name, or a parameter the defense does not have (the message names it).
    """
    key = name.lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown defense {name!r}; choose one of {sorted(REGISTRY)}")
    cls = REGISTRY[key]
    signature = inspect.signature(cls)
    # A constructor taking **params (FLEML) checks the names itself, against its config class.
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        accepted = [p for p in signature.parameters if p != "self"]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"defense {key!r} has no parameter(s) {unknown}; "
                             f"it accepts {accepted or 'none'}")
    return cls(**params)


def replay(updates: Tensor, report: Mapping[str, Any] | str | AggregationResult) -> Tensor:
    """Recompute the aggregate of any registered method from its report.

    See :meth:`Defense.replay` for parameters, return value and errors.
    """
    return Defense.replay(updates, report)


def verify(updates: Tensor, report: Mapping[str, Any] | str | AggregationResult) -> bool:
    """Whether replaying ``report`` on ``updates`` reproduces its ``aggregate_sha256``.

    Parameters
    ----------
    updates : Tensor
        Update rows in the report's client order, shape ``[n, d]``.
    report : dict, str or AggregationResult
        The published report.

    Returns
    -------
    bool
    """
    report = _as_report(report)
    return tensor_sha256(replay(updates, report)) == report["aggregate_sha256"]


def weighted_sum(updates: Tensor, coefficients: Sequence[float]) -> Tensor:
    """Exact, order-defined linear combination ``sum_i c_i * u_i``.

    Each row is widened to float64 (exact), multiplied by its float64 coefficient and added to
    a float64 accumulator, row by row in the given order; each step is one correctly rounded
    IEEE operation, so the result depends only on the inputs. Rows with coefficient 0 are
    skipped (adding ``0 * u`` never changes the accumulator). The sum is rounded to float32.

    Parameters
    ----------
    updates : Tensor
        Finite float32 updates, shape ``[n, d]``.
    coefficients : sequence of float
        One coefficient per row.

    Returns
    -------
    Tensor
        float32, shape ``[d]``.

    Raises
    ------
    InvalidRoundError
        Coefficient count differs from the row count, or a coefficient is not finite.
    """
    if len(coefficients) != updates.shape[0]:
        raise InvalidRoundError(
            f"{len(coefficients)} coefficients for {updates.shape[0]} update rows"
        )
    if not all(math.isfinite(c) for c in coefficients):
        raise InvalidRoundError("coefficients must be finite")
    acc = torch.zeros(updates.shape[1], dtype=torch.float64)
    term = torch.empty_like(acc)
    for row, c in zip(updates, coefficients, strict=True):
        if c == 0.0:
            continue
        term.copy_(row)
        term.mul_(c)
        acc.add_(term)
    return acc.to(torch.float32)


def validate_round(updates: Tensor, ctx: RoundContext) -> tuple[Tensor, list[str]]:
    """Check an update matrix against its context before any aggregation.

    Parameters
    ----------
    updates : Tensor
        Shape ``[n, d]`` with ``n >= 1`` and ``d >= 1``, floating point, all finite.
    ctx : RoundContext
        Its per-client sequences must have length ``n``, ``global_params`` and a tensor
        ``root_update`` length ``d``.

    Returns
    -------
    updates : Tensor
        Contiguous float32 (the input itself when it already is).
    client_ids : list of str
        The context's ids, or ``"0"`` ... ``"n-1"``.

    Raises
    ------
    InvalidRoundError
        Describing the first problem found; for non-finite rows ``bad_rows`` lists them all.
    """
    if not isinstance(updates, Tensor):
        raise InvalidRoundError(f"updates must be a torch.Tensor, got {type(updates).__name__}")
    if updates.dim() != 2:
        raise InvalidRoundError(f"updates must have shape [n, d], got {tuple(updates.shape)}")
    n, d = updates.shape
    if n == 0:
        raise InvalidRoundError("empty round: no client updates")
    if d == 0:
        raise InvalidRoundError("updates have dimension 0")
    if not updates.is_floating_point():
        raise InvalidRoundError(f"updates must be floating point, got {updates.dtype}")
    updates = updates.detach().to(device="cpu", dtype=torch.float32).contiguous()
    # amax/amin propagate NaN and expose +-Inf without an n x d temporary.
    finite_rows = torch.isfinite(updates.amax(dim=1)) & torch.isfinite(updates.amin(dim=1))
    if not bool(finite_rows.all()):
        bad = torch.nonzero(~finite_rows).flatten().tolist()
        raise InvalidRoundError(f"non-finite values (NaN/Inf) in update rows {bad}", bad)
    if ctx.client_ids is None:
        client_ids = [str(i) for i in range(n)]
    else:
        client_ids = [str(c) for c in ctx.client_ids]
        if len(client_ids) != n:
            raise InvalidRoundError(f"{len(client_ids)} client ids for {n} updates")
        if len(set(client_ids)) != n:
            raise InvalidRoundError("client ids must be unique within a round")
    if ctx.sample_counts is not None:
        counts = list(ctx.sample_counts)
        if len(counts) != n:
            raise InvalidRoundError(f"{len(counts)} sample counts for {n} updates")
        if any(int(c) != c or c < 0 for c in counts) or sum(counts) <= 0:
            raise InvalidRoundError("sample counts must be non-negative integers, not all 0")
    for label, vector in (("global_params", ctx.global_params), ("root_update", ctx.root_update)):
        if isinstance(vector, Tensor) and vector.shape != (d,):
            raise InvalidRoundError(f"{label} has shape {tuple(vector.shape)}, expected ({d},)")
    return updates, client_ids


def row_norms(updates: Tensor) -> Tensor:
    """Euclidean norm of every row, accumulated in float32 (vectorised), returned as float64.

    The float32 accumulation (relative error around 1e-7) is 40x faster than a float64 one on
    CPU; norms only feed decisions and coefficients, which the report stores exactly.
    """
    return torch.linalg.vector_norm(updates, dim=1).to(torch.float64)


def tensor_sha256(tensor: Tensor) -> str:
    """SHA-256 hex digest of a tensor's contiguous little-endian float32 bytes."""
    array = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return hashlib.sha256(array.astype("<f4", copy=False).tobytes()).hexdigest()


def robust_z(values: Tensor, floor: float) -> Tensor:
    """Robust z-scores ``(x - median) / max(1.4826 * MAD, floor)``.

    The lower median (``torch.median``) is used for both the centre and the MAD; 1.4826 makes
    the MAD a consistent estimator of the standard deviation under normality; ``floor`` (in the
    values' units) keeps a round of near-identical values from turning tiny differences into
    large scores.

    Parameters
    ----------
    values : Tensor
        One value per client, shape ``[n]``.
    floor : float
        Smallest scale used.

    Returns
    -------
    Tensor
        float64, shape ``[n]``.
    """
    values = values.to(torch.float64)
    centre = values.median()
    scale = torch.clamp(1.4826 * (values - centre).abs().median(), min=floor)
    return (values - centre) / scale


def _as_report(report: Mapping[str, Any] | str | AggregationResult) -> Mapping[str, Any]:
    if isinstance(report, AggregationResult):
        return report.to_dict()
    if isinstance(report, str):
        return json.loads(report)
    return report


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_tree(value: Any) -> Any:
    """Make method info JSON-ready: tensors to lists, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_tree(v) for v in value]
    if isinstance(value, Tensor):
        return _json_tree(value.tolist())
    if isinstance(value, float):
        return _json_float(value)
    return value
