"""Pickle-free serialization, content hashing and IPFS storage for FLEML nodes.

Typical use by a client publishing an update and an aggregator fetching it::

    from fleml_node.learning.params import ParamSpec
    from fleml_node.storage import IpfsStore, content_hash, decode_tensors, encode_tensors

    data = encode_tensors(delta, kind="update", round=r, extra={"num_samples": n})
    cid = store.put(data)                 # pinned CIDv1, base32
    commitment = content_hash(data)       # bytes32 for the contract

    data = store.get(cid, expected_hash=commitment)            # HashMismatch if tampered
    update = decode_tensors(data, expected_kind="update", expected_round=r,
                            expected_spec=ParamSpec.from_named(global_params))

Modules: :mod:`.serialization` (formats and validation), :mod:`.hashing` (content hash),
:mod:`.ipfs` (RPC client), :mod:`.local` (cache), :mod:`.daemon` (local js-ipfs daemon),
:mod:`.errors` (exceptions).
"""

from __future__ import annotations

import importlib
from typing import Any

from fleml_node.storage.errors import (
    DaemonError,
    HashMismatch,
    InvalidCid,
    InvalidPayload,
    IpfsError,
    IpfsRequestError,
    IpfsTimeout,
    IpfsUnavailable,
    MalformedPayload,
    NonFiniteValues,
    PayloadTooLarge,
    SpecMismatch,
    StorageError,
    UnsupportedDtype,
)
from fleml_node.storage.hashing import check_cid, content_hash, parse_hash, to_hex, verify_hash
from fleml_node.storage.ipfs import ENV_API, IpfsStore, api_url, default_api_addr
from fleml_node.storage.limits import DEFAULT_LIMITS, Limits
from fleml_node.storage.local import LocalStore

# Loaded on first use: they import torch (seconds), which the IPFS code and the devnet's
# daemon manager do not need.
_SERIALIZATION = frozenset(
    {
        "KIND_MODEL",
        "KIND_UPDATE",
        "KIND_VALIDATION",
        "SpecLike",
        "TensorPayload",
        "canonical_json",
        "decode_report",
        "decode_tensors",
        "encode_report",
        "encode_tensors",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SERIALIZATION:
        return getattr(importlib.import_module("fleml_node.storage.serialization"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_LIMITS",
    "ENV_API",
    "KIND_MODEL",
    "KIND_UPDATE",
    "KIND_VALIDATION",
    "DaemonError",
    "HashMismatch",
    "InvalidCid",
    "InvalidPayload",
    "IpfsError",
    "IpfsRequestError",
    "IpfsStore",
    "IpfsTimeout",
    "IpfsUnavailable",
    "Limits",
    "LocalStore",
    "MalformedPayload",
    "NonFiniteValues",
    "PayloadTooLarge",
    "SpecLike",
    "SpecMismatch",
    "StorageError",
    "TensorPayload",
    "UnsupportedDtype",
    "api_url",
    "canonical_json",
    "check_cid",
    "content_hash",
    "decode_report",
    "decode_tensors",
    "default_api_addr",
    "encode_report",
    "encode_tensors",
    "parse_hash",
    "to_hex",
    "verify_hash",
]
