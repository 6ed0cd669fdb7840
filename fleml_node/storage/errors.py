"""Exceptions raised by :mod:`fleml_node.storage`.

Every error carries a human-readable reason in its message. The hierarchy lets callers
catch broadly (:class:`StorageError`) or narrowly (for example :class:`HashMismatch`, which
an aggregator turns into a rejected update):

.. code-block:: text

    StorageError
    ├── InvalidPayload (also ValueError)   bytes from another party failed validation
    │   ├── PayloadTooLarge                size, header or tensor-count cap exceeded
    │   ├── MalformedPayload               not a well-formed FLEML safetensors / JSON object
    │   ├── UnsupportedDtype               a tensor that is not float32
    │   ├── NonFiniteValues                NaN or +/-Inf in tensors or reports
    │   └── SpecMismatch                   names/shapes/kind/round differ from what was expected
    ├── HashMismatch                       content hash differs from the commitment
    ├── InvalidCid (also ValueError)       not a CIDv1 in base32
    ├── IpfsError                          talking to the IPFS daemon failed
    │   ├── IpfsUnavailable                daemon not reachable (connection refused, ...)
    │   ├── IpfsTimeout                    daemon did not answer in time (missing CID, ...)
    │   └── IpfsRequestError               daemon answered with an error
    └── DaemonError                        local js-ipfs daemon could not be set up or started
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by :mod:`fleml_node.storage`."""


class InvalidPayload(StorageError, ValueError):
    """Serialized bytes (tensors or a report) failed validation.

    Parameters
    ----------
    reason
        What is wrong, in words a user can act on.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PayloadTooLarge(InvalidPayload):
    """The payload exceeds a configured cap (bytes, header bytes, tensor count or depth)."""


class MalformedPayload(InvalidPayload):
    """The payload is not a well-formed FLEML safetensors file or canonical JSON document."""


class UnsupportedDtype(InvalidPayload):
    """A tensor has a dtype other than float32."""


class NonFiniteValues(InvalidPayload):
    """A tensor or report contains NaN or an infinity."""


class SpecMismatch(InvalidPayload):
    """Tensor names/shapes, kind or round differ from what the caller expected."""


class HashMismatch(StorageError):
    """The content hash of fetched bytes differs from the expected commitment.

    Parameters
    ----------
    expected
        The 32-byte hash the caller expected (for example the on-chain commitment).
    actual
        The 32-byte hash of the bytes actually received.
    source
        Where the bytes came from (a CID), for the message.
    """

    def __init__(self, expected: bytes, actual: bytes, source: str = "payload") -> None:
        super().__init__(
            f"content hash mismatch for {source}: expected 0x{expected.hex()}, "
            f"got 0x{actual.hex()}"
        )
        self.expected = expected
        self.actual = actual
        self.source = source


class InvalidCid(StorageError, ValueError):
    """A string that is not a CIDv1 in base32 was given where a CID was expected."""


class IpfsError(StorageError):
    """Base class of errors while talking to the IPFS daemon's HTTP RPC API."""


class IpfsUnavailable(IpfsError):
    """The IPFS daemon could not be reached at the configured address."""


class IpfsTimeout(IpfsError):
    """The IPFS daemon did not answer in time (typically a CID nobody provides)."""


class IpfsRequestError(IpfsError):
    """The IPFS daemon answered a request with an error.

    Parameters
    ----------
    message
        The error as the daemon described it.
    status
        The HTTP status code of the answer.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class DaemonError(StorageError):
    """The local js-ipfs daemon could not be initialised, started or stopped."""
