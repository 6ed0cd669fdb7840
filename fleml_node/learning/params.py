"""Model parameters as flat, ordered, named float32 tensors.

This is the exchange format between the learning core, the aggregators and storage:

* :func:`get_params` returns ``dict[str, Tensor]`` in ``model.state_dict()`` order, every
  tensor float32, contiguous, on the CPU and detached (a copy, never a view of the model).
* :class:`ParamSpec` records the ordered names and shapes; :meth:`ParamSpec.to_json` is a
  canonical one-line JSON text, so equal specs give byte-equal text (hashable as is).
* :func:`flatten` / :func:`unflatten` convert between the named form and one 1-D vector
  (the order of the spec), which is what robust aggregators operate on.
* Updates are named tensors too: ``delta = new - global`` (:func:`params_delta`) and
  ``global + scale * delta`` (:func:`apply_update`).

The models of :mod:`fleml_node.learning.models` have no buffers (no BatchNorm), so the
state dict holds exactly the trainable parameters.  BatchNorm running statistics and its
integer ``num_batches_tracked`` counter are not gradients: averaging or robust-weighting them
like weights is ill-defined, so integer entries are refused here with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

SPEC_FORMAT = "fleml-paramspec/1"

NamedTensors = dict[str, Tensor]


@dataclass(frozen=True)
class ParamSpec:
    """Ordered parameter names and shapes (all parameters are float32).

    Parameters
    ----------
    names : tuple of str
        Parameter names in exchange order (``state_dict`` order).
    shapes : tuple of tuple of int
        Shape of each parameter, aligned with ``names``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(f"ParamSpec has {len(self.names)} names but {len(self.shapes)} shapes")
        if not self.names:
            raise ValueError("ParamSpec must contain at least one parameter")
        if len(set(self.names)) != len(self.names):
            raise ValueError("ParamSpec names must be unique")
        for name, shape in zip(self.names, self.shapes, strict=True):
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ValueError(f"shape of {name!r} must be non-negative ints, got {shape!r}")

    @classmethod
    def from_named(cls, named: Mapping[str, Tensor]) -> ParamSpec:
        """Build the spec of named tensors, keeping their order."""
        return cls(tuple(named), tuple(tuple(int(d) for d in t.shape) for t in named.values()))

    @classmethod
    def from_model(cls, model: nn.Module) -> ParamSpec:
        """Build the spec of a model's state dict."""
        return cls.from_named(model.state_dict())

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each parameter."""
        return tuple(_prod(shape) for shape in self.shapes)

    @property
    def numel(self) -> int:
        """Total number of scalars (length of the flat vector)."""
        return sum(self.sizes)

    def to_json(self) -> str:
        """Return the canonical JSON text (one line, no spaces, order preserved)."""
        doc = {
            "format": SPEC_FORMAT,
            "dtype": "float32",
            "params": [
                [name, list(shape)] for name, shape in zip(self.names, self.shapes, strict=True)
            ],
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> ParamSpec:
        """Parse the text produced by :meth:`to_json`, validating it."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ParamSpec JSON is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != SPEC_FORMAT:
            raise ValueError(f"ParamSpec JSON must be an object with format {SPEC_FORMAT!r}")
        if doc.get("dtype") != "float32":
            raise ValueError(f"ParamSpec dtype must be 'float32', got {doc.get('dtype')!r}")
        entries = doc.get("params")
        if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[1], list) for e in entries
        ):
            raise ValueError("ParamSpec 'params' must be a list of [name, [dims...]] pairs")
        return cls(tuple(e[0] for e in entries), tuple(tuple(e[1]) for e in entries))

    def check(self, named: Mapping[str, Tensor], what: str = "tensors") -> None:
        """Raise ``ValueError`` unless ``named`` has exactly this spec's names, order and shapes."""
        names = tuple(named)
        if names != self.names:
            missing = [n for n in self.names if n not in named]
            unexpected = [n for n in names if n not in set(self.names)]
            raise ValueError(
                f"{what} do not match the parameter spec: missing {missing}, unexpected "
                f"{unexpected}" + ("" if missing or unexpected else " (order differs)")
            )
        for name, shape in zip(self.names, self.shapes, strict=True):
            got = tuple(named[name].shape)
            if got != shape:
                raise ValueError(f"{what}: {name!r} has shape {got}, expected {shape}")


def _prod(shape: tuple[int, ...]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def get_params(model: nn.Module) -> NamedTensors:
    """Copy a model's state dict into ordered, float32, contiguous CPU tensors.

    Parameters
    ----------
    model : torch.nn.Module
        A model whose state dict holds only floating-point tensors.

    Returns
    -------
    dict of str to Tensor
        Detached copies, in ``state_dict`` order.
    """
    out: NamedTensors = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            raise ValueError(
                f"state_dict entry {name!r} has dtype {tensor.dtype}; only floating-point "
                "tensors can be exchanged (BatchNorm's integer counter is one such entry: use "
                "GroupNorm or no normalisation layer)"
            )
        out[name] = tensor.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
    return out


def set_params(model: nn.Module, params: Mapping[str, Tensor]) -> None:
    """Load named tensors into a model in place.

    Parameters
    ----------
    model : torch.nn.Module
        Target model.
    params : mapping of str to Tensor
        Exactly the model's state-dict names (any order) with matching shapes.
    """
    state = model.state_dict()
    missing = [n for n in state if n not in params]
    unexpected = [n for n in params if n not in state]
    if missing or unexpected:
        raise ValueError(f"params do not fit the model: missing {missing}, unexpected {unexpected}")
    for name, tensor in params.items():
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise ValueError(
                f"param {name!r} has shape {tuple(tensor.shape)}, model expects "
                f"{tuple(state[name].shape)}"
            )
    model.load_state_dict(dict(params), strict=True)


def flatten(named: Mapping[str, Tensor]) -> Tensor:
    """Concatenate named tensors, in order, into one float32 1-D CPU tensor.

    Parameters
    ----------
    named : mapping of str to Tensor
        Non-empty, floating-point tensors.

    Returns
    -------
    Tensor
        Vector of length ``ParamSpec.from_named(named).numel``.
    """
    if not named:
        raise ValueError("cannot flatten an empty set of tensors")
    for name, tensor in named.items():
        if not tensor.is_floating_point():
            raise ValueError(f"tensor {name!r} has non-floating dtype {tensor.dtype}")
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for t in named.values()])


def unflatten(vec: Tensor, spec: ParamSpec) -> NamedTensors:
    """Split a flat vector back into named tensors following ``spec``.

    Parameters
    ----------
    vec : Tensor
        1-D floating-point tensor of length ``spec.numel``.
    spec : ParamSpec
        Names and shapes, in order.

    Returns
    -------
    dict of str to Tensor
        New contiguous float32 tensors (not views of ``vec``).
    """
    if vec.dim() != 1:
        raise ValueError(f"unflatten expects a 1-D vector, got shape {tuple(vec.shape)}")
    if not vec.is_floating_point():
        raise ValueError(f"unflatten expects a floating-point vector, got {vec.dtype}")
    if vec.numel() != spec.numel:
        raise ValueError(f"vector has {vec.numel()} elements, spec needs {spec.numel}")
    vec = vec.detach().to("cpu", torch.float32)
    parts = torch.split(vec, list(spec.sizes))
    return {
        name: part.reshape(shape).clone()
        for name, shape, part in zip(spec.names, spec.shapes, parts, strict=True)
    }


def params_delta(new: Mapping[str, Tensor], old: Mapping[str, Tensor]) -> NamedTensors:
    """Return ``new - old`` per name, in the order of ``old``.

    Parameters
    ----------
    new, old : mapping of str to Tensor
        Same names, order and shapes.
    """
    ParamSpec.from_named(old).check(new, "new params")
    return {name: new[name] - old[name] for name in old}


def apply_update(
    params: Mapping[str, Tensor], update: Mapping[str, Tensor], scale: float = 1.0
) -> NamedTensors:
    """Return ``params + scale * update`` per name, in the order of ``params``.

    Parameters
    ----------
    params, update : mapping of str to Tensor
        Same names, order and shapes.
    scale : float, default 1.0
        Multiplier of the update (e.g. a server learning rate).
    """
    ParamSpec.from_named(params).check(update, "update")
    return {name: params[name] + scale * update[name] for name in params}
