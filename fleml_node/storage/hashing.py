"""Content hashes used for on-chain commitments, and CID syntax checks.

The content hash of a serialized object is **SHA-256 of its exact bytes**, as 32 raw bytes
(a Solidity ``bytes32``). SHA-256 rather than keccak256 because it needs nothing beyond
:mod:`hashlib`, it is the multihash IPFS uses for CIDv1 (for a raw single-block object the
CID's digest *is* this hash), and Solidity can still recompute it with the ``sha256``
precompile if a contract ever has to. The contracts only store and compare the bytes32.

Serialization (:mod:`fleml_node.storage.serialization`) is canonical, so the same tensors
and metadata always give the same bytes and therefore the same hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from fleml_node.storage.errors import HashMismatch, InvalidCid

HASH_SIZE = 32
"""Length in bytes of a content hash (``bytes32`` on chain)."""

_CIDV1_BASE32 = re.compile(r"b[a-z2-7]{10,250}")


def content_hash(data: bytes) -> bytes:
    """Return the content hash (SHA-256, 32 raw bytes) of serialized bytes.

    Parameters
    ----------
    data
        The exact serialized bytes (as stored on IPFS).

    Returns
    -------
    bytes
        32-byte digest, usable as a Solidity ``bytes32`` commitment.
    """
    return hashlib.sha256(data).digest()


def to_hex(digest: bytes) -> str:
    """Format a 32-byte hash as ``0x``-prefixed lower-case hex (the web3 convention)."""
    return "0x" + parse_hash(digest).hex()


def parse_hash(value: bytes | str) -> bytes:
    """Normalise a hash given as 32 raw bytes or 64 hex digits (``0x`` prefix optional).

    Parameters
    ----------
    value
        The hash, for example as read from a contract event (bytes) or a JSON file (hex).

    Returns
    -------
    bytes
        The 32 raw bytes.

    Raises
    ------
    ValueError
        If the value is not exactly 32 bytes / 64 hex digits.
    """
    if isinstance(value, str):
        text = value[2:] if value[:2].lower() == "0x" else value
        if len(text) != 2 * HASH_SIZE:
            raise ValueError(f"a content hash has {2 * HASH_SIZE} hex digits, got {value!r}")
        try:
            return bytes.fromhex(text)
        except ValueError as err:
            raise ValueError(f"a content hash must be hex, got {value!r}") from err
    raw = bytes(value)
    if len(raw) != HASH_SIZE:
        raise ValueError(f"a content hash has {HASH_SIZE} bytes, got {len(raw)}")
    return raw


def verify_hash(data: bytes, expected: bytes | str, source: str = "payload") -> bytes:
    """Check that ``data`` hashes to ``expected``.

    Parameters
    ----------
    data
        Bytes received from another party.
    expected
        The committed hash (32 bytes or hex).
    source
        Where the bytes came from, used in the error message (for example the CID).

    Returns
    -------
    bytes
        The verified 32-byte hash.

    Raises
    ------
    HashMismatch
        If the hash of ``data`` differs from ``expected``; it carries both hashes.
    ValueError
        If ``expected`` is not a well-formed hash.
    """
    want = parse_hash(expected)
    got = content_hash(data)
    if not hmac.compare_digest(want, got):
        raise HashMismatch(want, got, source)
    return got


def check_cid(cid: str) -> str:
    """Check that ``cid`` is a CIDv1 in base32 (the only form FLEML stores and accepts).

    The check is syntactic (multibase prefix ``b`` and the base32 alphabet); it keeps
    arbitrary strings from another party out of RPC arguments and file names.

    Parameters
    ----------
    cid
        For example ``"bafkreif..."`` or ``"bafybei..."``.

    Returns
    -------
    str
        The same CID.

    Raises
    ------
    InvalidCid
        For anything else, including CIDv0 (``Qm...``).
    """
    if not isinstance(cid, str) or not _CIDV1_BASE32.fullmatch(cid):
        raise InvalidCid(f"not a CIDv1 in base32 (like 'bafy...'): {cid!r}")
    return cid
