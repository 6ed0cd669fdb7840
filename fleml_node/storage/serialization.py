"""Pickle-free, canonical serialization of model weights, updates and round reports.

Tensors (``kind`` = ``"model"``, ``"update"`` or ``"validation"``) are stored as a safetensors
file built with :func:`safetensors.torch.save`: float32 tensors only, plus **one** metadata entry,
``"fleml"``, whose value is canonical JSON::

    {"extra": {...}, "format": 1, "kind": "update", "round": 3,
     "spec": [["conv1.weight", [32, 1, 3, 3]], ["conv1.bias", [32]], ...]}

Why a single metadata key: safetensors keeps ``__metadata__`` in a Rust ``HashMap`` whose
iteration order is randomised per map, so several keys come out in a different order from
one call to the next and the bytes (hence the content hash) would change. With one key the
header is deterministic: tensors are laid out sorted by name, each entry has fixed fields.
The ``spec`` records the caller's parameter order, which safetensors does not keep;
:func:`decode_tensors` returns the tensors in that order. Expected specs are given as
:class:`fleml_node.learning.params.ParamSpec` (anything with ``names`` and ``shapes``).

Round reports are canonical JSON (:func:`canonical_json`): UTF-8, keys sorted by code point,
no whitespace, no NaN/Infinity, floats in Python's shortest round-trip form.

Decoding treats the bytes as hostile: every cap in :class:`Limits` is checked before the
expensive work (the safetensors header length before the header is parsed), and each
problem raises a specific :class:`~fleml_node.storage.errors.InvalidPayload` subclass whose
message says what is wrong. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import safetensors
import safetensors.torch
import torch

from fleml_node.storage.errors import (
    InvalidPayload,
    MalformedPayload,
    NonFiniteValues,
    PayloadTooLarge,
    SpecMismatch,
    UnsupportedDtype,
)
from fleml_node.storage.limits import DEFAULT_LIMITS, Limits

FORMAT_VERSION = 1
"""Version of the FLEML metadata layout; decoders reject any other."""

METADATA_KEY = "fleml"
"""The only key of the safetensors ``__metadata__`` map."""

KIND_MODEL = "model"
KIND_UPDATE = "update"
KIND_VALIDATION = "validation"  # the consortium's committed validation set: x and y (as float32)
TENSOR_KINDS = (KIND_MODEL, KIND_UPDATE, KIND_VALIDATION)

_SAFETENSORS_DTYPE = "F32"
_FLOAT32_BYTES = 4
_MAX_NDIM = 8
_LENGTH_PREFIX = 8
_METADATA_FIELDS = frozenset({"extra", "format", "kind", "round", "spec"})
_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})

_Pairs = tuple[tuple[str, tuple[int, ...]], ...]


class SpecLike(Protocol):
    """Ordered names and shapes, as :class:`fleml_node.learning.params.ParamSpec` has them."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]: ...


@dataclass(frozen=True)
class TensorPayload:
    """A decoded model or update.

    Attributes
    ----------
    kind
        ``"model"``, ``"update"`` or ``"validation"``.
    round
        The federated round the tensors belong to.
    tensors
        Float32 CPU tensors, in the order of the sender's parameter spec.
    extra
        Free-form JSON metadata the sender attached (already validated as canonical JSON).
    """

    kind: str
    round: int
    tensors: dict[str, torch.Tensor]
    extra: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Canonical JSON (reports and the tensor metadata)


def canonical_json(value: Any, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialize a JSON value canonically.

    Parameters
    ----------
    value
        Built from dicts with ``str`` keys, lists/tuples, ``str``, ``int``, finite ``float``,
        ``bool`` and ``None``.
    limits
        Only ``max_json_depth`` is used.

    Returns
    -------
    bytes
        UTF-8, keys sorted, no whitespace; equal values always give equal bytes.

    Raises
    ------
    NonFiniteValues
        For NaN or infinities.
    MalformedPayload
        For values JSON cannot represent (non-``str`` keys, other types, lone surrogates).
    PayloadTooLarge
        For nesting deeper than ``limits.max_json_depth``.
    """
    _validate_json(value, limits.max_json_depth)
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise MalformedPayload(f"string is not encodable as UTF-8: {err.reason}") from err


def encode_report(report: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialize a round report (a JSON object) canonically.

    Parameters
    ----------
    report
        The report; see :func:`canonical_json` for the accepted values.
    limits
        ``max_bytes`` caps the result, ``max_json_depth`` the nesting.

    Returns
    -------
    bytes
        Canonical UTF-8 JSON.

    Raises
    ------
    InvalidPayload
        If the report is not a JSON object, holds NaN/Inf or unsupported values, or is too
        large.
    """
    if not isinstance(report, Mapping):
        raise MalformedPayload(f"a report is a JSON object, got {type(report).__name__}")
    data = canonical_json(dict(report), limits=limits)
    _check_size(len(data), limits, "report")
    return data


def decode_report(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse and validate a report received from another party.

    Parameters
    ----------
    data
        The bytes, as fetched.
    limits
        Caps on size and nesting.

    Returns
    -------
    dict
        The report.

    Raises
    ------
    PayloadTooLarge
        Above ``limits.max_bytes`` or nested deeper than ``limits.max_json_depth``.
    MalformedPayload
        Not UTF-8, not JSON, duplicate keys, not an object, or not in canonical form.
    NonFiniteValues
        NaN, Infinity or numbers that overflow to infinity.
    """
    _check_size(len(data), limits, "report")
    value = _parse_json(data, limits, "report")
    if not isinstance(value, dict):
        raise MalformedPayload(f"a report is a JSON object, got a JSON {type(value).__name__}")
    if canonical_json(value, limits=limits) != data:
        raise MalformedPayload(
            "report is not canonical JSON (UTF-8, sorted keys, no whitespace, shortest floats)"
        )
    return value


def _parse_json(data: bytes | str, limits: Limits, what: str) -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, bounded depth."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except InvalidPayload:
        raise
    except UnicodeDecodeError as err:
        raise MalformedPayload(
            f"{what} is not valid UTF-8: {err.reason} at byte {err.start}"
        ) from err
    except RecursionError as err:
        raise PayloadTooLarge(f"{what} is nested too deeply to parse") from err
    except ValueError as err:
        raise MalformedPayload(f"{what} is not valid JSON: {err}") from err
    _validate_json(value, limits.max_json_depth, what)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses duplicate keys (parsers disagree on which wins)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedPayload(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    """``parse_constant`` hook: NaN, Infinity and -Infinity are not JSON."""
    raise NonFiniteValues(f"JSON contains {name}, which is not a finite number")


def _validate_json(value: Any, max_depth: int, path: str = "$", depth: int = 0) -> None:
    """Check that ``value`` is plain JSON with finite numbers and bounded nesting."""
    if isinstance(value, dict | list | tuple):
        if depth >= max_depth:
            raise PayloadTooLarge(f"{path} is nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise MalformedPayload(f"{path} has a non-string key {key!r}")
                _validate_json(item, max_depth, f"{path}.{key}", depth + 1)
        else:
            for index, item in enumerate(value):
                _validate_json(item, max_depth, f"{path}[{index}]", depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NonFiniteValues(f"{path} is {value}, not a finite number")
    elif value is not None and not isinstance(value, str | int):
        raise MalformedPayload(f"{path} has type {type(value).__name__}, which is not JSON")


def _check_size(size: int, limits: Limits, what: str) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"{what} is {size} bytes, above the cap of {limits.max_bytes} bytes")


# --------------------------------------------------------------------------------------------
# Tensors


def encode_tensors(
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    round: int,
    extra: Mapping[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Serialize ordered float32 tensors canonically (safetensors + FLEML metadata).

    Parameters
    ----------
    tensors
        A state dict (weights) or an update (deltas); its order becomes the spec order.
    kind
        ``"model"``, ``"update"`` or ``"validation"``.
    round
        The federated round (``>= 0``).
    extra
        Optional JSON metadata (for example ``{"num_samples": 600}``).
    limits
        The same caps the receivers apply, so nothing is published that they would reject.

    Returns
    -------
    bytes
        The payload; equal inputs always give equal bytes.

    Raises
    ------
    ValueError
        For an unknown ``kind``, a negative ``round`` or an empty/invalid name.
    TypeError
        If a value is not a :class:`torch.Tensor`.
    UnsupportedDtype
        If a tensor is not float32.
    NonFiniteValues
        If a tensor holds NaN or infinities.
    PayloadTooLarge
        If the payload would exceed ``limits``.
    """
    if kind not in TENSOR_KINDS:
        raise ValueError(f"kind must be one of {TENSOR_KINDS}, got {kind!r}")
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")
    if not tensors:
        raise ValueError("there are no tensors to serialize")
    if len(tensors) > limits.max_tensors:
        raise PayloadTooLarge(f"{len(tensors)} tensors, above the cap of {limits.max_tensors}")
    prepared: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.dtype != torch.float32:
            raise UnsupportedDtype(f"tensor {name!r} is {tensor.dtype}; only float32 is stored")
        if tensor.dim() > _MAX_NDIM:
            raise ValueError(f"tensor {name!r} has {tensor.dim()} dims, more than {_MAX_NDIM}")
        # A private contiguous CPU copy: safetensors refuses tensors that share storage.
        copy = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        _check_finite(name, copy)
        prepared[name] = copy
    document = {
        "extra": dict(extra or {}),
        "format": FORMAT_VERSION,
        "kind": kind,
        "round": round,
        "spec": [[name, list(t.shape)] for name, t in prepared.items()],
    }
    metadata = {METADATA_KEY: canonical_json(document, limits=limits).decode("utf-8")}
    data = safetensors.torch.save(prepared, metadata=metadata)
    _check_size(len(data), limits, "tensor payload")
    return data


def decode_tensors(
    data: bytes,
    *,
    expected_kind: str | None = None,
    expected_round: int | None = None,
    expected_spec: SpecLike | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> TensorPayload:
    """Parse and validate tensors received from another party.

    Checks, in order: total size; header length against ``limits.max_header_bytes``; the
    header as strict JSON; each entry (float32 only, shape, byte range); the byte ranges tile
    the data exactly; the FLEML metadata and its spec agree with the header; the expectations
    given by the caller; then safetensors decodes the data and every value must be finite.

    Parameters
    ----------
    data
        The payload, as fetched.
    expected_kind
        If given, the payload must be of this kind.
    expected_round
        If given, the payload must be for this round.
    expected_spec
        If given, names, order and shapes must equal it, e.g.
        ``ParamSpec.from_named(global_params)`` from :mod:`fleml_node.learning.params`.
    limits
        Caps on bytes, header bytes, tensor count and JSON nesting.

    Returns
    -------
    TensorPayload
        The tensors in spec order with kind, round and extra metadata.

    Raises
    ------
    PayloadTooLarge, MalformedPayload, UnsupportedDtype, NonFiniteValues, SpecMismatch
        As described in :mod:`fleml_node.storage.errors`; all are :class:`InvalidPayload`.
    """
    _check_size(len(data), limits, "tensor payload")
    header, data_start = _read_header(data, limits)
    metadata = header.pop("__metadata__", None)
    shapes = _check_entries(header, len(data) - data_start, limits)
    kind, round_, spec, extra = _read_metadata(metadata, limits)
    if dict(spec) != shapes:
        raise MalformedPayload(
            "the metadata spec does not list the same names and shapes as the header"
        )
    if expected_kind is not None and kind != expected_kind:
        raise SpecMismatch(f"payload is a {kind!r}, expected a {expected_kind!r}")
    if expected_round is not None and round_ != expected_round:
        raise SpecMismatch(f"payload is for round {round_}, expected round {expected_round}")
    if expected_spec is not None:
        expected = tuple(
            (name, tuple(shape))
            for name, shape in zip(expected_spec.names, expected_spec.shapes, strict=True)
        )
        _compare_spec(expected, spec)
    try:
        loaded = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as err:
        raise MalformedPayload(f"safetensors rejected the payload: {err}") from err
    tensors = {name: loaded[name] for name, _ in spec}
    for name, tensor in tensors.items():
        _check_finite(name, tensor)
    return TensorPayload(kind=kind, round=round_, tensors=tensors, extra=extra)


def _read_header(data: bytes, limits: Limits) -> tuple[dict[str, Any], int]:
    """Return the parsed safetensors header and the offset where tensor data starts."""
    if len(data) < _LENGTH_PREFIX:
        raise MalformedPayload(
            f"payload is {len(data)} bytes, shorter than the 8-byte safetensors length prefix"
        )
    header_len = int.from_bytes(data[:_LENGTH_PREFIX], "little")
    if header_len > limits.max_header_bytes:
        raise PayloadTooLarge(
            f"safetensors header claims {header_len} bytes, above the cap of "
            f"{limits.max_header_bytes} bytes"
        )
    data_start = _LENGTH_PREFIX + header_len
    if data_start > len(data):
        raise MalformedPayload(
            f"safetensors header claims {header_len} bytes but the payload has only "
            f"{len(data) - _LENGTH_PREFIX} after the length prefix"
        )
    header = _parse_json(data[_LENGTH_PREFIX:data_start], limits, "safetensors header")
    if not isinstance(header, dict):
        raise MalformedPayload("safetensors header is not a JSON object")
    return header, data_start


def _check_entries(header: dict[str, Any], data_len: int, limits: Limits) -> dict[str, tuple]:
    """Validate tensor entries; return name -> shape. The byte ranges must tile the data."""
    if not header:
        raise MalformedPayload("payload holds no tensors")
    if len(header) > limits.max_tensors:
        raise PayloadTooLarge(f"{len(header)} tensors, above the cap of {limits.max_tensors}")
    shapes: dict[str, tuple] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != _TENSOR_FIELDS:
            raise MalformedPayload(
                f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets"
            )
        if entry["dtype"] != _SAFETENSORS_DTYPE:
            raise UnsupportedDtype(
                f"tensor {name!r} has dtype {entry['dtype']!r}; only float32 ('F32') is accepted"
            )
        shape = _as_int_list(entry["shape"], f"tensor {name!r}: shape")
        if len(shape) > _MAX_NDIM:
            raise MalformedPayload(f"tensor {name!r} has {len(shape)} dims, more than {_MAX_NDIM}")
        offsets = _as_int_list(entry["data_offsets"], f"tensor {name!r}: data_offsets")
        if len(offsets) != 2 or offsets[0] > offsets[1]:
            raise MalformedPayload(
                f"tensor {name!r}: data_offsets must be [begin, end] with begin <= end"
            )
        size = _FLOAT32_BYTES * math.prod(shape)
        if offsets[1] - offsets[0] != size:
            raise MalformedPayload(
                f"tensor {name!r}: shape {shape} needs {size} bytes but data_offsets span "
                f"{offsets[1] - offsets[0]}"
            )
        shapes[name] = tuple(shape)
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise MalformedPayload(
                f"tensor {name!r} starts at byte {begin}, expected {position} "
                "(tensor data overlaps or leaves a gap)"
            )
        position = end
    if position != data_len:
        raise MalformedPayload(
            f"tensors cover {position} bytes but {data_len} bytes follow the header"
        )
    return shapes


def _as_int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise MalformedPayload(f"{what} must be a list of non-negative integers, got {value!r}")
    return value


def _read_metadata(metadata: Any, limits: Limits) -> tuple[str, int, _Pairs, dict[str, Any]]:
    """Validate the ``__metadata__`` map; return kind, round, spec and extra."""
    if (
        not isinstance(metadata, dict)
        or set(metadata) != {METADATA_KEY}
        or not isinstance(metadata[METADATA_KEY], str)
    ):
        raise MalformedPayload(
            f"safetensors __metadata__ must hold exactly one string entry {METADATA_KEY!r}"
        )
    text = metadata[METADATA_KEY]
    document = _parse_json(text, limits, "FLEML metadata")
    if not isinstance(document, dict) or set(document) != _METADATA_FIELDS:
        raise MalformedPayload(
            f"FLEML metadata must have exactly the fields {sorted(_METADATA_FIELDS)}"
        )
    if canonical_json(document, limits=limits).decode("utf-8") != text:
        raise MalformedPayload("FLEML metadata is not canonical JSON")
    if document["format"] != FORMAT_VERSION or isinstance(document["format"], bool):
        raise MalformedPayload(
            f"unsupported FLEML format {document['format']!r}; this node reads {FORMAT_VERSION}"
        )
    kind = document["kind"]
    if kind not in TENSOR_KINDS:
        raise MalformedPayload(f"unknown payload kind {kind!r}; expected one of {TENSOR_KINDS}")
    round_ = document["round"]
    if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
        raise MalformedPayload(f"round must be a non-negative integer, got {round_!r}")
    if not isinstance(document["extra"], dict):
        raise MalformedPayload("FLEML metadata 'extra' must be a JSON object")
    spec = _spec_from_json(document["spec"])
    return kind, round_, spec, document["extra"]


def _spec_from_json(value: Any) -> _Pairs:
    if not isinstance(value, list):
        raise MalformedPayload("FLEML metadata 'spec' must be a list of [name, shape] pairs")
    spec = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise MalformedPayload(f"spec entry {item!r} is not a [name, shape] pair")
        spec.append((item[0], tuple(_as_int_list(item[1], f"spec entry {item[0]!r}: shape"))))
    if len({name for name, _ in spec}) != len(spec):
        raise MalformedPayload("FLEML metadata 'spec' repeats a tensor name")
    return tuple(spec)


def _compare_spec(expected: _Pairs, actual: _Pairs) -> None:
    """Raise :class:`SpecMismatch` naming the first difference between two specs."""
    if expected == actual:
        return
    want, got = dict(expected), dict(actual)
    missing = [name for name in want if name not in got]
    if missing:
        raise SpecMismatch(f"payload lacks tensors {missing[:5]}")
    unexpected = [name for name in got if name not in want]
    if unexpected:
        raise SpecMismatch(f"payload has unexpected tensors {unexpected[:5]}")
    for name, shape in want.items():
        if got[name] != shape:
            raise SpecMismatch(
                f"tensor {name!r} has shape {list(got[name])}, expected {list(shape)}"
            )
    raise SpecMismatch(
        f"tensors are in order {[n for n, _ in actual][:5]}..., "
        f"expected {[n for n, _ in expected][:5]}..."
    )


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    # NaN and infinities propagate into the sum, so a finite sum proves every value finite;
    # only a non-finite sum (bad values, or an overflow of finite ones) needs the exact count.
    if bool(torch.isfinite(tensor.sum())):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise NonFiniteValues(f"tensor {name!r} has {bad} NaN/Inf values of {tensor.numel()}")
