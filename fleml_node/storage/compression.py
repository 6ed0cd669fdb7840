"""Update compression: fewer bytes per round, decoded the same way by every party.

A federation's task names one encoding for members' updates (``TaskConfig.compression``);
members encode with it, the aggregator and every auditor decode with it, and the bytes put on
IPFS are the encoded bytes, so the content hash committed on chain is over exactly what
travels. Global models stay dense float32 (:func:`~fleml_node.storage.encode_tensors`).

Encodings
---------
``none``  dense float32: the plain FLEML safetensors update (the default; unchanged bytes).
``fp16``  every value as IEEE half precision: 2 bytes a value, relative error <= 2**-11 for
          values in the normal range; an update with a value beyond +-65504 is refused.
``int8``  8-bit stochastic quantization with one float32 scale per tensor,
          ``scale = max|x| / 127`` and ``q = floor(x / scale + u)``, ``u ~ U[0, 1)`` drawn from
          the member's own seeded stream (seed, round, member index), so it is unbiased
          (``E[q * scale] = x``), within one ``scale`` of ``x``, and reproducible.
``topk``  the ``k = ceil(fraction * d)`` largest-magnitude entries of ``update + residual``
          (indices int32 ascending, values float32), with error feedback: what is not sent
          this round stays in the member's residual and is added to its next update. The
          residual is kept in a safetensors file in the member's state directory, so it
          survives restarts (:class:`ResidualFile`).

Layout of a compressed update: a safetensors file with fixed tensor names (``values`` for
fp16; ``values`` int8 and ``scales`` float32 for int8; ``indices`` int32 and ``values``
float32 for topk) of the *flattened* update in the spec's order, and the one metadata entry
``"fleml"`` holding canonical JSON ``{"encoding", "extra", "format", "kind": "update", "round",
"spec"}`` (plus ``"topk_fraction"`` for topk). Equal inputs give equal bytes.

:func:`decode_update` treats the bytes as hostile: it refuses a blob whose encoding (or top-k
fraction) differs from the task's with :class:`EncodingMismatch`, and checks the header
length, every entry's dtype, shape and byte range, the metadata and spec, and every value
(finite, int8 codes in [-127, 127], scales >= 0, top-k indices strictly increasing and in
range) before anything is built. Every failure is an
:class:`~fleml_node.storage.errors.InvalidPayload` with a reason; nothing is unpickled.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from fleml_node.storage.errors import (
    InvalidPayload,
    MalformedPayload,
    NonFiniteValues,
    PayloadTooLarge,
    SpecMismatch,
    UnsupportedDtype,
)
from fleml_node.storage.limits import DEFAULT_LIMITS, Limits
from fleml_node.storage.serialization import (
    FORMAT_VERSION,
    KIND_UPDATE,
    METADATA_KEY,
    SpecLike,
    TensorPayload,
    _compare_spec,
    _parse_json,
    _read_header,
    _spec_from_json,
    canonical_json,
    decode_tensors,
    encode_tensors,
)

log = logging.getLogger(__name__)

ENCODINGS = ("none", "fp16", "int8", "topk")
DEFAULT_TOPK_FRACTION = 0.1
# The fourth key of a member's compression stream: (seed, round, member index, this).
COMPRESSION_STREAM = 0xC0DEC
_FP16_MAX = 65504.0
_INT8_LEVELS = 127

# encoding -> {tensor name: (safetensors dtype, numpy dtype, bytes per value)}
_LAYOUT: dict[str, dict[str, tuple[str, str, int]]] = {
    "fp16": {"values": ("F16", "<f2", 2)},
    "int8": {"scales": ("F32", "<f4", 4), "values": ("I8", "i1", 1)},
    "topk": {"indices": ("I32", "<i4", 4), "values": ("F32", "<f4", 4)},
}
_FIELDS = frozenset({"encoding", "extra", "format", "kind", "round", "spec"})
_ENTRY_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


class EncodingMismatch(SpecMismatch):
    """An update encoded otherwise than the task says (encoding or top-k fraction)."""


@dataclass(frozen=True)
class Codec:
    """The task's update encoding.

    Parameters
    ----------
    encoding
        One of :data:`ENCODINGS`.
    topk_fraction
        For ``topk``: the share of entries sent each round, in (0, 1].
    """

    encoding: str = "none"
    topk_fraction: float = DEFAULT_TOPK_FRACTION

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown compression {self.encoding!r}; choose one of {ENCODINGS}")
        f = self.topk_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
            raise ValueError(f"topk_fraction must be in (0, 1], got {f!r}")

    @classmethod
    def of(cls, task: Any) -> Codec:
        """The codec a :class:`~fleml_node.task.TaskConfig` names (``none`` if it names none)."""
        return cls(getattr(task, "compression", "none"),
                   getattr(task, "topk_fraction", DEFAULT_TOPK_FRACTION))

    def k(self, numel: int) -> int:
        """Entries a top-k update of ``numel`` values sends: ``ceil(fraction * numel)``, >= 1."""
        return min(numel, max(1, math.ceil(self.topk_fraction * numel)))

    def describe(self) -> str:
        return f"topk (fraction {self.topk_fraction:g})" if self.encoding == "topk" \
            else self.encoding


# --------------------------------------------------------------------------------------------
# Encoding


def _flat(tensors: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[str, list[int]]]]:
    """The update as one float32 vector in the given order, and its spec; refuses NaN/Inf."""
    if not tensors:
        raise ValueError("there are no tensors to serialize")
    parts, spec = [], []
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid tensor name {name!r}")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.dtype != torch.float32:
            raise UnsupportedDtype(f"tensor {name!r} is {tensor.dtype}; only float32 is stored")
        parts.append(tensor.detach().to("cpu").reshape(-1))
        spec.append([name, list(tensor.shape)])
    flat = torch.cat(parts).contiguous()
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).sum())
        raise NonFiniteValues(f"the update has {bad} NaN/Inf values of {flat.numel()}")
    return flat, spec


def compress(tensors: Mapping[str, Tensor], codec: Codec, *, round: int,
             extra: Mapping[str, Any] | None = None, generator: torch.Generator | None = None,
             residual: Tensor | None = None,
             limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, Tensor | None]:
    """Encode an update with ``codec``.

    Parameters
    ----------
    tensors
        The update (float32), in the model's parameter order.
    codec
        The task's encoding.
    round
        The federated round.
    extra
        JSON metadata (the member's address and sample count).
    generator
        ``int8`` only: the stream the stochastic rounding draws from (required).
    residual
        ``topk`` only: what earlier rounds did not send (zeros or None in the first round).

    Returns
    -------
    (bytes, Tensor or None)
        The payload and, for ``topk``, the residual after this round (else None).

    Raises
    ------
    NonFiniteValues
        NaN/Inf in the update, or (fp16) a value beyond the float16 range.
    ValueError, TypeError, UnsupportedDtype
        For a malformed update or missing generator.
    """
    if codec.encoding == "none":
        return encode_tensors(tensors, kind=KIND_UPDATE, round=round, extra=extra,
                              limits=limits), None
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")
    flat, spec = _flat(tensors)
    document: dict[str, Any] = {"encoding": codec.encoding, "extra": dict(extra or {}),
                                "format": FORMAT_VERSION, "kind": KIND_UPDATE, "round": round,
                                "spec": spec}
    new_residual = None
    if codec.encoding == "fp16":
        if float(flat.abs().max()) > _FP16_MAX:
            raise NonFiniteValues(f"a value of {float(flat.abs().max()):.3g} is beyond the "
                                  f"float16 range (+-{_FP16_MAX:g}); use another compression")
        out = {"values": flat.half()}
    elif codec.encoding == "int8":
        if generator is None:
            raise ValueError("int8 compression needs the member's generator")
        scales, codes, start = [], [], 0
        for _, shape in spec:
            part = flat[start:start + math.prod(shape)]
            start += part.numel()
            top = float(part.abs().max()) if part.numel() else 0.0
            scale = torch.tensor(top / _INT8_LEVELS, dtype=torch.float32)
            noise = torch.rand(part.shape, generator=generator, dtype=torch.float64)
            if float(scale) > 0:
                q = torch.floor(part.double() / scale.double() + noise)
                q = q.clamp_(-_INT8_LEVELS, _INT8_LEVELS)
            else:
                q = torch.zeros_like(part, dtype=torch.float64)
            scales.append(scale)
            codes.append(q.to(torch.int8))
        out = {"scales": torch.stack(scales), "values": torch.cat(codes)}
    else:  # topk
        acc = flat if residual is None else flat + _checked_residual(residual, flat.numel())
        k = codec.k(acc.numel())
        # a stable sort: ties are broken by index, so equal inputs give equal bytes
        order = torch.argsort(acc.abs(), descending=True, stable=True)[:k]
        indices = order.sort().values
        values = acc[indices].clone()
        new_residual = acc.clone()
        new_residual[indices] = 0.0
        document["topk_fraction"] = codec.topk_fraction
        out = {"indices": indices.to(torch.int32), "values": values}
    metadata = {METADATA_KEY: canonical_json(document, limits=limits).decode("utf-8")}
    data = safetensors.torch.save({n: t.contiguous() for n, t in out.items()}, metadata=metadata)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"update is {len(data)} bytes, above the cap of {limits.max_bytes}")
    return data, new_residual


def _checked_residual(residual: Tensor, numel: int) -> Tensor:
    if residual.shape != (numel,) or residual.dtype != torch.float32:
        raise ValueError(f"residual must be float32 of shape ({numel},), got "
                         f"{residual.dtype} {tuple(residual.shape)}")
    return residual


# --------------------------------------------------------------------------------------------
# Decoding


def encoding_of(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The encoding a payload claims (``"none"`` for a dense FLEML payload), or None when its
    header cannot be read at all (the full decoder then says why)."""
    try:
        header, _ = _read_header(data, limits)
        document = _parse_json(header["__metadata__"][METADATA_KEY], limits, "FLEML metadata")
    except (InvalidPayload, KeyError, TypeError):
        return None
    if not isinstance(document, dict):
        return None
    found = document.get("encoding", "none")
    return found if isinstance(found, str) else None


def decode_update(data: bytes, codec: Codec, *, expected_round: int | None = None,
                  expected_spec: SpecLike | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> TensorPayload:
    """Parse and validate an update from another party, encoded as the task says.

    Parameters
    ----------
    data
        The bytes, as fetched (already checked against their commitment).
    codec
        The task's encoding; a payload in any other is refused.
    expected_round, expected_spec
        As for :func:`~fleml_node.storage.decode_tensors`.
    limits
        Caps on bytes, header bytes and JSON nesting; a compressed update's dense size
        (4 bytes per value) must also fit ``limits.max_bytes``.

    Returns
    -------
    TensorPayload
        The decoded float32 update (kind ``"update"``), in spec order.

    Raises
    ------
    EncodingMismatch
        The payload is in another encoding, or top-k with another fraction or count.
    InvalidPayload
        Anything else wrong with the bytes (see the module docstring).
    """
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"tensor payload is {len(data)} bytes, above the cap of "
                              f"{limits.max_bytes} bytes")
    found = encoding_of(data, limits=limits)
    if found is not None and found != codec.encoding:
        described = "dense float32 ('none')" if found == "none" else repr(found)
        raise EncodingMismatch(f"update is encoded as {described[:40]}, but the task's "
                               f"compression is {codec.describe()}")
    if codec.encoding == "none":
        return decode_tensors(data, expected_kind=KIND_UPDATE, expected_round=expected_round,
                              expected_spec=expected_spec, limits=limits)
    header, data_start = _read_header(data, limits)
    document = _read_document(header.pop("__metadata__", None), codec, limits)
    spec = _spec_from_json(document["spec"])
    if not spec:
        raise MalformedPayload("FLEML metadata 'spec' lists no tensors")
    if len(spec) > limits.max_tensors:
        raise PayloadTooLarge(f"{len(spec)} tensors, above the cap of {limits.max_tensors}")
    numel = sum(math.prod(shape) for _, shape in spec)
    if 4 * numel > limits.max_bytes:
        raise PayloadTooLarge(f"the spec describes {numel} values; dense they exceed the cap "
                              f"of {limits.max_bytes} bytes")
    if expected_round is not None and document["round"] != expected_round:
        raise SpecMismatch(f"payload is for round {document['round']}, expected round "
                           f"{expected_round}")
    if expected_spec is not None:
        _compare_spec(tuple((n, tuple(s)) for n, s in zip(expected_spec.names,
                                                          expected_spec.shapes, strict=True)),
                      spec)
    lengths = {"fp16": {"values": numel},
               "int8": {"scales": len(spec), "values": numel},
               "topk": {"indices": codec.k(numel), "values": codec.k(numel)}}[codec.encoding]
    arrays = _read_arrays(data, header, data_start, codec.encoding, lengths)
    flat = _dense(arrays, codec, spec, numel)
    tensors, start = {}, 0
    for name, shape in spec:
        size = math.prod(shape)
        tensors[name] = flat[start:start + size].reshape(shape)
        start += size
    return TensorPayload(kind=KIND_UPDATE, round=document["round"], tensors=tensors,
                         extra=document["extra"])


def _read_document(metadata: Any, codec: Codec, limits: Limits) -> dict[str, Any]:
    if not isinstance(metadata, dict) or set(metadata) != {METADATA_KEY} \
            or not isinstance(metadata[METADATA_KEY], str):
        raise MalformedPayload(f"safetensors __metadata__ must hold exactly one string entry "
                               f"{METADATA_KEY!r}")
    text = metadata[METADATA_KEY]
    document = _parse_json(text, limits, "FLEML metadata")
    fields = _FIELDS | ({"topk_fraction"} if codec.encoding == "topk" else set())
    if not isinstance(document, dict) or set(document) != fields:
        raise MalformedPayload(f"FLEML metadata of a {codec.encoding} update must have exactly "
                               f"the fields {sorted(fields)}")
    if canonical_json(document, limits=limits).decode("utf-8") != text:
        raise MalformedPayload("FLEML metadata is not canonical JSON")
    if document["format"] != FORMAT_VERSION or isinstance(document["format"], bool):
        raise MalformedPayload(f"unsupported FLEML format {document['format']!r}; this node "
                               f"reads {FORMAT_VERSION}")
    if document["kind"] != KIND_UPDATE:
        raise SpecMismatch(f"payload is a {document['kind']!r}, expected an 'update'")
    round_ = document["round"]
    if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
        raise MalformedPayload(f"round must be a non-negative integer, got {round_!r}")
    if not isinstance(document["extra"], dict):
        raise MalformedPayload("FLEML metadata 'extra' must be a JSON object")
    if codec.encoding == "topk" and document["topk_fraction"] != codec.topk_fraction:
        raise EncodingMismatch(f"update is top-k with fraction {document['topk_fraction']!r}, "
                               f"but the task's is {codec.topk_fraction:g}")
    return document


def _read_arrays(data: bytes, header: dict[str, Any], data_start: int, encoding: str,
                 lengths: dict[str, int]) -> dict[str, np.ndarray]:
    """Check each entry against the layout and read it; the byte ranges must tile the data."""
    layout = _LAYOUT[encoding]
    if set(header) != set(layout):
        raise MalformedPayload(f"a {encoding} update holds exactly the tensors "
                               f"{sorted(layout)}, got {sorted(header)[:5]}")
    spans = []
    for name, (dtype, _, width) in layout.items():
        entry = header[name]
        if not isinstance(entry, dict) or set(entry) != _ENTRY_FIELDS:
            raise MalformedPayload(f"tensor {name!r}: entry must have exactly dtype, shape and "
                                   "data_offsets")
        if entry["dtype"] != dtype:
            raise UnsupportedDtype(f"tensor {name!r} of a {encoding} update has dtype "
                                   f"{str(entry['dtype'])[:20]!r}, expected {dtype!r}")
        if entry["shape"] != [lengths[name]]:
            raise MalformedPayload(f"tensor {name!r} has shape {str(entry['shape'])[:40]}, "
                                   f"expected [{lengths[name]}]")
        offsets = entry["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in offsets)):
            raise MalformedPayload(f"tensor {name!r}: data_offsets must be two non-negative "
                                   "integers")
        if offsets[1] - offsets[0] != width * lengths[name]:
            raise MalformedPayload(f"tensor {name!r}: {lengths[name]} values need "
                                   f"{width * lengths[name]} bytes, data_offsets span "
                                   f"{offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise MalformedPayload(f"tensor {name!r} starts at byte {begin}, expected "
                                   f"{position} (tensor data overlaps or leaves a gap)")
        position = end
    if position != len(data) - data_start:
        raise MalformedPayload(f"tensors cover {position} bytes but {len(data) - data_start} "
                               "bytes follow the header")
    return {name: np.frombuffer(data, dtype=layout[name][1], count=lengths[name],
                                offset=data_start + begin)
            for begin, _, name in spans}


def _dense(arrays: dict[str, np.ndarray], codec: Codec, spec: Any, numel: int) -> Tensor:
    """The float32 update the arrays encode, after checking every value."""
    if codec.encoding == "fp16":
        values = torch.from_numpy(arrays["values"].astype(np.float32))
        _finite("values", values)
        return values
    if codec.encoding == "int8":
        codes, scales = arrays["values"], arrays["scales"].astype(np.float32)
        _finite("scales", torch.from_numpy(scales))
        if (scales < 0).any():
            raise MalformedPayload("int8 scales must be >= 0")
        if (codes < -_INT8_LEVELS).any():
            raise MalformedPayload(f"int8 codes must lie in [-{_INT8_LEVELS}, {_INT8_LEVELS}]")
        sizes = np.array([math.prod(shape) for _, shape in spec], dtype=np.int64)
        per_value = np.repeat(scales, sizes)
        return torch.from_numpy(codes.astype(np.float32) * per_value)
    indices = arrays["indices"].astype(np.int64)
    values = torch.from_numpy(arrays["values"].astype(np.float32))
    _finite("values", values)
    if len(indices) and (indices[0] < 0 or indices[-1] >= numel):
        raise MalformedPayload(f"top-k indices must lie in [0, {numel})")
    if (np.diff(indices) <= 0).any():
        raise MalformedPayload("top-k indices must be strictly increasing")
    flat = torch.zeros(numel, dtype=torch.float32)
    flat[torch.from_numpy(indices)] = values
    return flat


def _finite(name: str, tensor: Tensor) -> None:
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise NonFiniteValues(f"tensor {name!r} has {bad} NaN/Inf values of {tensor.numel()}")


# --------------------------------------------------------------------------------------------
# The member's side: its stream and its residual


class ResidualFile:
    """A member's top-k residual on its own disk, as safetensors (never pickle).

    The file holds the residual before and after the last encoded round (tensors ``before``
    and ``after``) and that round's number, so that encoding the same round again (a node
    restarted before its submission went through) starts from the same residual instead of
    dropping what the lost attempt "sent". Written atomically (temporary file, then rename).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, numel: int, codec: Codec) -> tuple[int, Tensor, Tensor] | None:
        """(round, before, after), or None when there is no usable file (then it says why)."""
        if not self.path.exists():
            return None
        try:
            with safetensors.safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                before, after = f.get_tensor("before"), f.get_tensor("after")
            round_id = int(meta["round"])
            same_codec = meta.get("topk_fraction") == repr(codec.topk_fraction)
        except (OSError, KeyError, ValueError, safetensors.SafetensorError) as exc:
            log.warning("residual file %s is unreadable (%s); starting from a zero residual",
                        self.path, exc)
            return None
        for t in (before, after):
            if t.dtype != torch.float32 or t.shape != (numel,) or not torch.isfinite(t).all():
                log.warning("residual file %s is not for this model; starting from zero",
                            self.path)
                return None
        if not same_codec:
            log.warning("residual file %s is for another top-k fraction; starting from zero",
                        self.path)
            return None
        return round_id, before, after

    def save(self, round_id: int, before: Tensor, after: Tensor, codec: Codec) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        safetensors.torch.save_file(
            {"before": before.contiguous(), "after": after.contiguous()}, str(tmp),
            metadata={"round": str(round_id), "topk_fraction": repr(codec.topk_fraction)})
        os.replace(tmp, self.path)


class UpdateEncoder:
    """How one member encodes its updates: the task's codec, its own stream, its residual.

    Parameters
    ----------
    codec
        The task's encoding.
    seed, member_index
        Key the member's compression stream ``(seed, round, member_index, COMPRESSION_STREAM)``
        (int8 rounding), so a member's bytes are reproducible.
    residual_file
        ``topk``: where the residual is kept across rounds and restarts; None keeps it in
        memory (the in-memory simulator).
    """

    def __init__(self, codec: Codec, seed: int, member_index: int,
                 residual_file: str | Path | None = None) -> None:
        self.codec = codec
        self.seed, self.member_index = seed, member_index
        self.residual_file = ResidualFile(residual_file) if residual_file else None
        self._state: tuple[int, Tensor, Tensor] | None = None

    @classmethod
    def for_task(cls, task: Any, member_index: int,
                 residual_file: str | Path | None = None) -> UpdateEncoder:
        return cls(Codec.of(task), task.seed, member_index, residual_file)

    def generator(self, round_id: int) -> torch.Generator:
        from fleml_node.learning import make_generator

        return make_generator(self.seed, round_id, self.member_index, COMPRESSION_STREAM)

    def residual_for(self, round_id: int, numel: int) -> Tensor:
        """The residual round ``round_id`` starts from (zeros before any top-k round)."""
        state = self.residual_file.load(numel, self.codec) if self.residual_file \
            else self._state
        if state is None or state[1].numel() != numel:
            return torch.zeros(numel, dtype=torch.float32)
        last, before, after = state
        if last == round_id:
            return before.clone()  # this round again (a restart): what it started from
        if last > round_id:
            log.warning("encoding round %d after round %d: keeping the newer residual",
                        round_id, last)
        return after.clone()

    def encode(self, update: Mapping[str, Tensor], round_id: int,
               extra: Mapping[str, Any]) -> bytes:
        """The bytes to publish for this round; for top-k, the residual is stored first."""
        if self.codec.encoding != "topk":
            gen = self.generator(round_id) if self.codec.encoding == "int8" else None
            return compress(update, self.codec, round=round_id, extra=extra, generator=gen)[0]
        numel = sum(t.numel() for t in update.values())
        before = self.residual_for(round_id, numel)
        blob, after = compress(update, self.codec, round=round_id, extra=extra,
                               residual=before)
        assert after is not None
        if self.residual_file is not None:
            self.residual_file.save(round_id, before, after, self.codec)
        self._state = (round_id, before, after)
        return blob
