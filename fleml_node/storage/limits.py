"""Caps applied to bytes received from other parties (kept free of heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Caps applied to bytes received from other parties.

    Parameters
    ----------
    max_bytes
        Largest accepted payload, in bytes.
    max_tensors
        Most tensors in one payload.
    max_header_bytes
        Largest accepted safetensors JSON header, checked before the header is parsed.
    max_json_depth
        Deepest nesting of JSON objects/arrays in reports and metadata.
    """

    max_bytes: int = 64 * 2**20
    max_tensors: int = 1024
    max_header_bytes: int = 2**20
    max_json_depth: int = 32


DEFAULT_LIMITS = Limits()
