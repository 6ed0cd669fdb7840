"""Two kinds of failure for long-running nodes, and the one retry policy they share.

*Transient*: our own chain RPC or IPFS daemon is unreachable, slow or answers 5xx, a nonce
race, a receipt that did not come in time. The node backs off (doubling, capped) and tries
again, however long the outage lasts: the chain holds the round's state, so retrying a step
is safe. *Permanent*: a decoded contract revert, an invalid payload, our own non-finite
update. Retrying the same thing cannot help; the node logs it once with its reason and moves
on (a client skips that round, the aggregator re-reads the chain and waits for it to change).

Anything else is a bug and propagates.
"""

from __future__ import annotations

import logging
import time

import requests
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception, Web3RPCError

from fleml_node.chain.contract import ChainError, ContractReverted
from fleml_node.storage import (
    InvalidPayload,
    IpfsError,
    IpfsRequestError,
    IpfsTimeout,
    IpfsUnavailable,
    StorageError,
)

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same step later may succeed (see the module docstring)."""
    if isinstance(exc, ContractReverted | ContractLogicError | InvalidPayload):
        return False
    if isinstance(exc, IpfsRequestError):
        return _daemon_fault(exc)
    return isinstance(exc, ChainError | IpfsError | requests.RequestException | ConnectionError
                      | TimeoutError | TimeExhausted | Web3Exception)


def _daemon_fault(exc: IpfsRequestError) -> bool:
    """5xx from our daemon, or no HTTP status at all; a 4xx is about the request itself."""
    return exc.status >= 500 or exc.status == 0


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says our own chain RPC or IPFS daemon did not answer (or answered an
    RPC-level error such as a node still executing its newest block), as opposed to a
    mistake: a missing contract or another protocol (`ChainError`), a revert, bad bytes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ContractLogicError):
            return False
        if isinstance(seen, requests.RequestException | ConnectionError | TimeoutError
                      | IpfsUnavailable | IpfsTimeout | Web3RPCError):
            return True
        if isinstance(seen, IpfsRequestError) and _daemon_fault(seen):
            return True
        seen = seen.__cause__
    return False


def is_permanent(exc: BaseException) -> bool:
    """A known failure that retrying cannot mend (reverts, invalid payloads, storage misuse)."""
    return not is_transient(exc) and isinstance(exc, ChainError | StorageError
                                                | ContractLogicError)


class Backoff:
    """Capped exponential backoff that logs an outage once, not on every attempt.

    Parameters
    ----------
    base
        Seconds before the first retry.
    cap
        The longest wait between attempts.
    """

    def __init__(self, base: float = 1.0, cap: float = 30.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base, self.cap = base, cap
        self.failures = 0
        self._since: float | None = None

    def failed(self, what: str, exc: BaseException) -> float:
        """Record a transient failure; returns the seconds to wait before the next attempt."""
        self.failures += 1
        if self._since is None:
            self._since = time.monotonic()
            log.warning("%s failed, retrying until it works: %s", what, exc)
        elif self.failures % 10 == 0:
            log.warning("%s still failing after %.0f s (%d attempts): %s", what,
                        time.monotonic() - self._since, self.failures, exc)
        return min(self.cap, self.base * 2 ** min(self.failures - 1, 30))

    def succeeded(self, what: str) -> None:
        """Reset after a success, saying how long the outage lasted if there was one."""
        if self._since is not None:
            log.info("%s works again after %.0f s", what, time.monotonic() - self._since)
        self.failures, self._since = 0, None

