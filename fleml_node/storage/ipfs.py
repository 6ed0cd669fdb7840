"""Client for the IPFS HTTP RPC API (js-ipfs here, kubo elsewhere), through ``ipfshttpclient``.

:class:`IpfsStore` stores bytes as pinned CIDv1 (base32, raw leaves) and fetches them back
with a size cap, a timeout on every call, retries with exponential backoff on transient
failures and verification against an expected content hash (the on-chain commitment).

Transport: the python ``ipfshttpclient`` package (0.7.0, requests backend), one
:class:`ipfshttpclient.Client` with a persistent session per store. The client is built
directly as ``ipfshttpclient.Client(addr, ...)`` rather than through
``ipfshttpclient.connect()``: ``connect()`` asks the daemon for its version and refuses any
daemon from 0.8.0 on, which rules out both js-ipfs 0.66 (it reports 0.18.1) and every
current kubo; building the client directly skips only that check. Every call goes out as a
POST (as kubo requires since 0.5) with the daemon-side ``timeout`` option and an HTTP
timeout, so a ``cat`` of an object nobody has cannot hang.

Only RPC calls that kubo and js-ipfs both serve are used: ``add``, ``cat``, ``pin/add``,
``pin/ls`` and ``version``. Differences handled here:

* js-ipfs answers ``add`` and ``pin/ls`` with CIDv1 in base58btc (``zb2...``) unless
  ``cid-base=base32`` is passed; kubo defaults to base32. It is always passed.
* Only ``Hash`` is read from ``add`` (``Size`` is a number in js-ipfs, a string in kubo).
* A daemon-side timeout fails with "request timed out" (js-ipfs) or "context deadline
  exceeded" (kubo); both map to :class:`~fleml_node.storage.errors.IpfsTimeout`.
* js-ipfs refuses multipart parts without a ``Content-Type``; ipfshttpclient sends one.

``ipfshttpclient`` exceptions are mapped to this package's errors: connection failures and
dropped connections to :class:`~fleml_node.storage.errors.IpfsUnavailable`, HTTP timeouts to
:class:`~fleml_node.storage.errors.IpfsTimeout`, error answers to
:class:`~fleml_node.storage.errors.IpfsRequestError` (or ``IpfsTimeout`` for the daemon's own
timeout). ipfshttpclient maps errors only while a response is opened; those met while a
streamed ``cat`` body is read arrive as ``requests`` exceptions and are mapped the same way.

The API address is a multiaddr (``/ip4/127.0.0.1/tcp/5001``) or a URL
(``http://127.0.0.1:5001``), turned into the multiaddr ipfshttpclient expects; by default it
is taken from the environment variable ``FLEML_IPFS_API``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_errors
import requests

from fleml_node.storage.errors import (
    IpfsError,
    IpfsRequestError,
    IpfsTimeout,
    IpfsUnavailable,
    PayloadTooLarge,
)
from fleml_node.storage.hashing import check_cid, content_hash, parse_hash, verify_hash
from fleml_node.storage.limits import DEFAULT_LIMITS
from fleml_node.storage.local import LocalStore

log = logging.getLogger(__name__)

ENV_API = "FLEML_IPFS_API"
"""Environment variable holding the API address (multiaddr or URL)."""

DEFAULT_API_ADDR = "/ip4/127.0.0.1/tcp/5001"
"""Used when neither an argument nor ``FLEML_IPFS_API`` gives an address."""

CHUNK_BYTES = 1 << 20
"""Chunk size of `IpfsStore.put`: objects up to this size are one raw block.

1 MiB is the largest chunk both js-ipfs and kubo accept. An update of a model of up to 262,144
fp32 parameters is then one raw block whose CID is its SHA-256, stored, fetched and pinned as
one block instead of a dag-pb root over 256 KiB leaves: for the MNIST CNN's 0.83 MB update,
put took 27 ms instead of 36 and get 6 ms instead of 14 here (js-ipfs 0.66, loaded machine).
"""

ADD_OPTIONS = {"cid-version": "1", "raw-leaves": "true", "cid-base": "base32",
               "chunker": f"size-{CHUNK_BYTES}"}
"""How `IpfsStore.put` adds (it pins too); with ``only-hash`` they give the CID it would."""

START_HINT = (
    f"set {ENV_API} to your IPFS daemon's API address (kubo: /ip4/127.0.0.1/tcp/5001), or "
    "start a local one with `fleml-node devnet up` (a js-ipfs daemon and a chain) and use "
    "the exports it prints"
)

_MULTIADDR = re.compile(
    r"/(?P<proto>ip4|ip6|dns|dns4|dns6)/(?P<host>[^/]+)/tcp/(?P<port>\d{1,5})"
    r"(?:/(?P<scheme>http|https))?/?"
)
_API_BASE = "api/v0"
_TIMEOUT_MESSAGES = ("timed out", "timeout", "deadline exceeded")
_TRANSIENT_STATUS = frozenset({502, 503, 504})
_CONNECT_TIMEOUT = 5.0
# Extra seconds the client waits beyond the daemon-side timeout, so that the daemon's own
# (clearer) timeout error arrives before the HTTP read times out.
_CLIENT_GRACE = 2.0
# Size of the pieces an upload body is streamed in (ipfshttpclient's default is 8 KiB).
_UPLOAD_CHUNK = 1 << 18
# ipfshttpclient 0.7.0's requests_wrapper creates its urllib3 PoolManager with `strict=True`,
# an argument urllib3 2.x no longer needs, so urllib3 emits this FutureWarning on every
# request. It is harmless (urllib3 drops the argument) and nothing the caller can act on;
# only this exact warning is silenced, only around this module's calls into ipfshttpclient.
_URLLIB3_STRICT_WARNING = re.escape(
    "The 'strict' parameter is no longer needed on Python 3+. "
    "This will raise an error in urllib3 v3.0."
)

T = TypeVar("T")


def _split_api_addr(addr: str) -> tuple[str, str, str, int]:
    """Parse a multiaddr or URL into (multiaddr protocol, host, scheme, port)."""
    text = addr.strip()
    match = _MULTIADDR.fullmatch(text)
    if match:
        return match["proto"], match["host"], match["scheme"] or "http", int(match["port"])
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:  # out of range
        port = None
    if parts.scheme in ("http", "https") and parts.hostname and port:
        host = parts.hostname
        try:
            proto = f"ip{ipaddress.ip_address(host).version}"
        except ValueError:
            proto = "dns"
        return proto, host, parts.scheme, port
    raise ValueError(
        f"IPFS API address {addr!r} is neither a multiaddr like /ip4/127.0.0.1/tcp/5001 "
        "nor a URL like http://127.0.0.1:5001"
    )


def api_url(addr: str) -> str:
    """Turn an API multiaddr or URL into the RPC base URL (``.../api/v0``).

    Parameters
    ----------
    addr
        ``/ip4/127.0.0.1/tcp/5001``, ``/dns/ipfs/tcp/5001/http``, ``http://127.0.0.1:5001``
        or ``http://127.0.0.1:5001/api/v0``.

    Returns
    -------
    str
        For example ``http://127.0.0.1:5001/api/v0``.

    Raises
    ------
    ValueError
        If the address is neither form.
    """
    proto, host, scheme, port = _split_api_addr(addr)
    if ":" in host and proto in ("ip6", "dns6"):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/{_API_BASE}"


def api_multiaddr(addr: str) -> str:
    """Turn an API multiaddr or URL into the multiaddr form ipfshttpclient takes.

    For example ``http://127.0.0.1:5001`` gives ``/ip4/127.0.0.1/tcp/5001/http``.

    Raises
    ------
    ValueError
        If the address is neither form.
    """
    proto, host, scheme, port = _split_api_addr(addr)
    return f"/{proto}/{host}/tcp/{port}/{scheme}"


def default_api_addr() -> str:
    """Return ``$FLEML_IPFS_API`` if set, else :data:`DEFAULT_API_ADDR`."""
    return os.environ.get(ENV_API) or DEFAULT_API_ADDR


@contextlib.contextmanager
def _quiet_urllib3() -> Iterator[None]:
    """Silence urllib3's 'strict' FutureWarning caused by ipfshttpclient (see above).

    Per call rather than once at import: test runners (pytest) reset the warning filters
    around each test and collection, which would drop a filter installed at import time.
    ``catch_warnings`` swaps the process-wide filter list, so it is not thread-safe: with
    stores used from several threads at once, filter changes made meanwhile by another
    thread may be undone, or this one narrow filter left installed. FLEML's nodes call
    their store from one thread.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_URLLIB3_STRICT_WARNING, category=FutureWarning)
        yield


class IpfsStore:
    """Put and get content-addressed bytes through an IPFS daemon's RPC API.

    Parameters
    ----------
    api_addr
        API multiaddr or URL; ``None`` reads ``FLEML_IPFS_API`` (see :func:`default_api_addr`).
    timeout
        Seconds allowed for each call, enforced by the daemon (``timeout`` option) and by
        the HTTP client.
    retries
        Extra attempts after a transient failure (daemon unreachable, timeout, HTTP
        502/503/504, connection dropped mid-transfer).
    backoff
        Seconds before the first retry; doubled for each further one.
    max_bytes
        Default cap on fetched objects.
    cache
        Optional :class:`~fleml_node.storage.local.LocalStore`: objects put or fetched are
        kept there and later gets are served from it without asking the daemon.

    Raises
    ------
    ValueError
        For a malformed address or a non-positive timeout or cap. No request is made.

    Notes
    -----
    One instance keeps one ``ipfshttpclient.Client`` with a pooled HTTP session, closed by
    :meth:`close` (or on leaving a ``with`` block): use one instance per thread. Always pass
    ``expected_hash`` to :meth:`get` for objects named by another party: kubo reports
    errors met mid-stream only in HTTP trailers, so the hash is what proves completeness.
    """

    def __init__(
        self,
        api_addr: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_bytes: int = DEFAULT_LIMITS.max_bytes,
        cache: LocalStore | None = None,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0 or max_bytes <= 0:
            raise ValueError("timeout and max_bytes must be positive, retries and backoff >= 0")
        self.api_addr = api_addr or default_api_addr()
        self.url = api_url(self.api_addr)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_bytes = max_bytes
        self.cache = cache
        # Built directly: ipfshttpclient.connect() would refuse the daemon's version.
        try:
            self._client = ipfshttpclient.Client(
                addr=api_multiaddr(self.api_addr),
                base=_API_BASE,
                chunk_size=_UPLOAD_CHUNK,
                timeout=self._http_timeout(),
                session=True,
            )
        except ipfs_errors.AddressError as err:  # e.g. port 99999 or IPv4 999.1.1.1
            raise ValueError(f"IPFS API address {self.api_addr!r} is not valid: {err}") from err

    def __repr__(self) -> str:
        return f"IpfsStore({self.api_addr!r}, timeout={self.timeout}, retries={self.retries})"

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's pooled HTTP connections (later calls open new ones)."""
        self._client.close()

    # ----------------------------------------------------------------------------------------
    # Public API

    def put(self, data: bytes) -> str:
        """Add bytes to IPFS as a pinned CIDv1 (base32, raw leaves, `CHUNK_BYTES` chunks).

        Parameters
        ----------
        data
            The serialized object.

        Returns
        -------
        str
            The CID, e.g. ``"bafkrei..."`` (one block: up to `CHUNK_BYTES`) or
            ``"bafybei..."`` (chunked).

        Raises
        ------
        IpfsError
            If the daemon is unreachable, times out or refuses the object.
        """
        opts = {**ADD_OPTIONS, "pin": "true"}

        def call() -> str:
            return str(self._rpc("add", lambda kw: self._client.add_bytes(data, **kw), opts))

        cid = self._with_retries("add", call)
        check_cid(cid)
        if self.cache is not None:
            self.cache.link_cid(cid, self.cache.put(data))
        log.debug("put %d bytes as %s", len(data), cid)
        return cid

    def get(
        self,
        cid: str,
        expected_hash: bytes | str | None = None,
        max_bytes: int | None = None,
    ) -> bytes:
        """Fetch an object, bounded in size and time, and verify it.

        Parameters
        ----------
        cid
            CIDv1 in base32, typically read from a contract event (untrusted).
        expected_hash
            The committed content hash (32 bytes or hex); the bytes must match it.
        max_bytes
            Cap for this object; defaults to the store's ``max_bytes``.

        Returns
        -------
        bytes
            The object (from the cache when it holds it).

        Raises
        ------
        InvalidCid
            If ``cid`` is not a CIDv1 in base32.
        HashMismatch
            If the bytes do not hash to ``expected_hash``; not retried.
        PayloadTooLarge
            If the object exceeds ``max_bytes``; the transfer is cut off there.
        IpfsTimeout
            If the daemon cannot produce the object in time (for example nobody has it).
        IpfsUnavailable, IpfsRequestError
            If the daemon is unreachable or refuses the request.
        """
        check_cid(cid)
        limit = self.max_bytes if max_bytes is None else max_bytes
        want = None if expected_hash is None else parse_hash(expected_hash)
        cached = self._from_cache(cid, want)
        if cached is not None:
            if len(cached) > limit:
                raise PayloadTooLarge(f"object {cid} is larger than the cap of {limit} bytes")
            log.debug("cache hit for %s", cid)
            return cached
        data = self._with_retries("cat", lambda: self._cat(cid, limit))
        digest = content_hash(data) if want is None else verify_hash(data, want, source=cid)
        if self.cache is not None:
            self.cache.put(data)
            self.cache.link_cid(cid, digest)
        log.debug("fetched %d bytes for %s", len(data), cid)
        return data

    def pin(self, cid: str) -> None:
        """Pin ``cid`` recursively on the daemon (fetching it first if needed).

        Raises
        ------
        InvalidCid, IpfsError
            For a malformed CID or a failed request.
        """
        check_cid(cid)

        def call() -> None:
            answer = self._rpc(
                "pin/add", lambda kw: self._client.pin.add(cid, **kw), {"cid-base": "base32"}
            )
            if cid not in answer.get("Pins", []):
                raise IpfsRequestError(
                    f"daemon did not confirm the pin of {cid}: {dict(answer)}", 200
                )

        self._with_retries("pin/add", call)

    def is_pinned(self, cid: str) -> bool:
        """Return whether ``cid`` is pinned recursively on the daemon.

        Raises
        ------
        InvalidCid, IpfsError
            For a malformed CID or a failed request.
        """
        check_cid(cid)

        def call() -> bool:
            try:
                answer = self._rpc(
                    "pin/ls",
                    lambda kw: self._client.pin.ls(cid, type="recursive", **kw),
                    {"cid-base": "base32"},
                )
            except IpfsRequestError as err:
                if "not pinned" in str(err):
                    return False
                raise
            return cid in answer.get("Keys", {})

        return self._with_retries("pin/ls", call)

    def version(self) -> str:
        """Return the daemon's version string (e.g. ``"0.18.1"`` for js-ipfs 0.66).

        Raises
        ------
        IpfsError
            If the daemon is unreachable or answers with an error.
        """
        return self._with_retries("version", lambda: str(self._version()["Version"]))

    def is_available(self) -> bool:
        """Return whether the daemon answers ``version`` (one attempt, no retries)."""
        try:
            self._version()
        except IpfsError as err:
            log.debug("IPFS daemon at %s is not available: %s", self.api_addr, err)
            return False
        return True

    # ----------------------------------------------------------------------------------------
    # Internals

    def _http_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for the HTTP client."""
        return min(_CONNECT_TIMEOUT, self.timeout), self.timeout + _CLIENT_GRACE

    def _version(self) -> Any:
        return self._rpc("version", lambda kw: self._client.version(**kw))

    def _from_cache(self, cid: str, want: bytes | None) -> bytes | None:
        if self.cache is None:
            return None
        digest = want if want is not None else self.cache.hash_for_cid(cid)
        return None if digest is None else self.cache.get(digest)

    def _cat(self, cid: str, limit: int) -> bytes:
        # Ask for one byte more than allowed: receiving it proves the object is too large.
        # The body is counted as it streams in (one piece per HTTP chunk: both daemons send
        # `cat` chunked, js-ipfs in 256 KiB pieces), so a daemon that ignored `length` is
        # still cut off just past the cap.
        stream = self._rpc(
            "cat",
            lambda kw: self._client.cat(cid, stream=True, **kw),
            {"length": str(limit + 1)},
        )
        chunks: list[bytes] = []
        received = 0
        with stream:
            try:
                for chunk in stream:
                    received += len(chunk)
                    if received > limit:
                        raise PayloadTooLarge(
                            f"object {cid} is larger than the cap of {limit} bytes"
                        )
                    chunks.append(chunk)
            except ipfs_errors.Error as err:
                raise self._map_error("cat", err) from err
            except requests.RequestException as err:
                # ipfshttpclient does not map errors met while the body is being read.
                raise _transport_error(err, self.api_addr) from err
        return b"".join(chunks)

    def _rpc(
        self,
        path: str,
        call: Callable[[dict[str, Any]], T],
        opts: dict[str, str] | None = None,
    ) -> T:
        """Make one ipfshttpclient call with daemon- and client-side timeouts.

        ``call`` receives the keyword arguments to pass on (``opts`` with the daemon-side
        ``timeout`` added, and the HTTP ``timeout``); ipfshttpclient errors are mapped to
        :class:`~fleml_node.storage.errors.IpfsError` subclasses.
        """
        query = dict(opts or {})
        query["timeout"] = f"{int(self.timeout * 1000)}ms"
        try:
            with _quiet_urllib3():
                return call({"opts": query, "timeout": self._http_timeout()})
        except ipfs_errors.Error as err:
            raise self._map_error(path, err) from err
        except requests.RequestException as err:  # a body read inside a non-streamed call
            raise _transport_error(err, self.api_addr) from err

    def _map_error(self, path: str, err: ipfs_errors.Error) -> IpfsError:
        """Map an ipfshttpclient exception to this package's errors."""
        if isinstance(err, ipfs_errors.TimeoutError):
            if isinstance(err.original, requests.ConnectTimeout):
                return _unavailable(self.api_addr, err)
            return IpfsTimeout(f"IPFS daemon at {self.api_addr} did not answer in time: {err}")
        if isinstance(err, ipfs_errors.ConnectionError | ipfs_errors.ProtocolError):
            return _unavailable(self.api_addr, err)
        if isinstance(err, ipfs_errors.StatusError):
            status = _status_of(err)
            message = str(err)
            if isinstance(err, ipfs_errors.ErrorResponse) and any(
                word in message.lower() for word in _TIMEOUT_MESSAGES
            ):
                return IpfsTimeout(
                    f"IPFS {path} timed out after {self.timeout:g} s at {self.api_addr}: {message}"
                )
            return IpfsRequestError(
                f"IPFS {path} failed at {self.api_addr} (HTTP {status}): {message}", status
            )
        if isinstance(err, ipfs_errors.DecodingError):
            return IpfsRequestError(f"daemon sent invalid JSON for {path}: {err}", 200)
        return IpfsRequestError(f"IPFS {path} failed at {self.api_addr}: {err}", 0)

    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``, retrying transient failures with exponential backoff."""
        attempt = 0
        while True:
            try:
                return call()
            except (IpfsUnavailable, IpfsTimeout, IpfsRequestError) as err:
                transient = not isinstance(err, IpfsRequestError) or err.status in _TRANSIENT_STATUS
                if not transient or attempt >= self.retries:
                    raise
                delay = self.backoff * 2**attempt
                attempt += 1
                log.warning(
                    "IPFS %s failed (attempt %d of %d), retrying in %.2f s: %s",
                    what, attempt, self.retries + 1, delay, err,
                )
                time.sleep(delay)


def _status_of(err: ipfs_errors.StatusError) -> int:
    """HTTP status of an error answer (200 for an error sent after a successful start)."""
    response = getattr(err.original, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else 200


def _unavailable(addr: str, err: Exception) -> IpfsUnavailable:
    return IpfsUnavailable(
        f"IPFS daemon not reachable at {addr} or the connection dropped ({err}); {START_HINT}"
    )


def _transport_error(err: requests.RequestException, addr: str) -> IpfsError:
    """Map a requests exception to :class:`IpfsTimeout` or :class:`IpfsUnavailable`."""
    if isinstance(err, requests.Timeout) and not isinstance(err, requests.ConnectTimeout):
        return IpfsTimeout(f"IPFS daemon at {addr} did not answer in time: {err}")
    return _unavailable(addr, err)
