"""Client for the IPFS HTTP RPC API (js-ipfs here, kubo elsewhere).

:class:`IpfsStore` stores bytes as pinned CIDv1 (base32, raw leaves) and fetches them back
with a size cap, a timeout on every call, retries with exponential backoff on transient
failures and verification against an expected content hash (the on-chain commitment).

Only RPC calls that kubo and js-ipfs both serve are used, always as POST: ``add``, ``cat``,
``pin/add``, ``pin/ls`` and ``version``. Differences handled here:

* ``add`` answers one JSON object (js-ipfs) or newline-delimited JSON (kubo); ``Size`` is a
  number in one and a string in the other, so only ``Hash`` is read.
* js-ipfs answers ``add`` and ``pin/ls`` with CIDv1 in base58btc (``zb2...``) unless
  ``cid-base=base32`` is passed; kubo defaults to base32. It is always passed.
* A daemon-side timeout (the ``timeout`` query option both support) fails with
  "request timed out" (js-ipfs) or "context deadline exceeded" (kubo); both map to
  :class:`~fleml_node.storage.errors.IpfsTimeout`.
* js-ipfs refuses multipart parts without a ``Content-Type``; one is always sent.

The API address is a multiaddr (``/ip4/127.0.0.1/tcp/5001``) or a URL
(``http://127.0.0.1:5001``); by default it is taken from the environment variable
``FLEML_IPFS_API``. The python ``ipfshttpclient`` package is not used: 0.7.0 refuses
daemons newer than 0.8 in ``connect()`` and drives urllib3 with deprecated arguments.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

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

START_HINT = (
    "start a local js-ipfs daemon with `python -m fleml_node.storage.daemon start "
    "--repo .fleml/ipfs --pidfile .fleml/ipfs.pid --addr-file .fleml/ipfs.addr` and set "
    f"{ENV_API} to the address it prints, or set {ENV_API} to your own kubo daemon's API "
    "address (e.g. /ip4/127.0.0.1/tcp/5001)"
)

_MULTIADDR = re.compile(
    r"/(?P<proto>ip4|ip6|dns|dns4|dns6)/(?P<host>[^/]+)/tcp/(?P<port>\d{1,5})"
    r"(?:/(?P<scheme>http|https))?/?"
)
_TIMEOUT_MESSAGES = ("timed out", "timeout", "deadline exceeded")
_TRANSIENT_STATUS = frozenset({502, 503, 504})
_CHUNK = 1 << 16
_CONNECT_TIMEOUT = 5.0
# Extra seconds the client waits beyond the daemon-side timeout, so that the daemon's own
# (clearer) timeout error arrives before the HTTP read times out.
_CLIENT_GRACE = 2.0

T = TypeVar("T")


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
    text = addr.strip()
    match = _MULTIADDR.fullmatch(text)
    if match:
        host = match["host"]
        if match["proto"] == "ip6" or (match["proto"] == "dns6" and ":" in host):
            host = f"[{host}]"
        return f"{match['scheme'] or 'http'}://{host}:{int(match['port'])}/api/v0"
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname and parts.port:
        return f"{parts.scheme}://{parts.netloc}/api/v0"
    raise ValueError(
        f"IPFS API address {addr!r} is neither a multiaddr like /ip4/127.0.0.1/tcp/5001 "
        "nor a URL like http://127.0.0.1:5001"
    )


def default_api_addr() -> str:
    """Return ``$FLEML_IPFS_API`` if set, else :data:`DEFAULT_API_ADDR`."""
    return os.environ.get(ENV_API) or DEFAULT_API_ADDR


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

    Notes
    -----
    One instance keeps a pooled HTTP session: use one per thread. Always pass
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
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"IpfsStore({self.api_addr!r}, timeout={self.timeout}, retries={self.retries})"

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._session.close()

    # ----------------------------------------------------------------------------------------
    # Public API

    def put(self, data: bytes) -> str:
        """Add bytes to IPFS as a pinned CIDv1 (base32, raw leaves).

        Parameters
        ----------
        data
            The serialized object.

        Returns
        -------
        str
            The CID, e.g. ``"bafkrei..."`` (one block) or ``"bafybei..."`` (chunked).

        Raises
        ------
        IpfsError
            If the daemon is unreachable, times out or refuses the object.
        """
        params = {"cid-version": "1", "raw-leaves": "true", "pin": "true", "cid-base": "base32"}

        def call() -> str:
            files = {"file": ("blob", data, "application/octet-stream")}
            response = self._post("add", params, files=files)
            lines = [line for line in response.text.splitlines() if line.strip()]
            if not lines:
                raise IpfsRequestError("IPFS add returned no result", response.status_code)
            return str(_json(response, lines[-1])["Hash"])

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
            answer = _json(self._post("pin/add", {"arg": cid, "cid-base": "base32"}))
            if cid not in answer.get("Pins", []):
                raise IpfsRequestError(f"daemon did not confirm the pin of {cid}: {answer}", 200)

        self._with_retries("pin/add", call)

    def is_pinned(self, cid: str) -> bool:
        """Return whether ``cid`` is pinned recursively on the daemon.

        Raises
        ------
        InvalidCid, IpfsError
            For a malformed CID or a failed request.
        """
        check_cid(cid)
        params = {"arg": cid, "type": "recursive", "cid-base": "base32"}

        def call() -> bool:
            try:
                answer = _json(self._post("pin/ls", params))
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
        return self._with_retries("version", lambda: str(_json(self._post("version"))["Version"]))

    def is_available(self) -> bool:
        """Return whether the daemon answers ``version`` (one attempt, no retries)."""
        try:
            _json(self._post("version"))
        except IpfsError as err:
            log.debug("IPFS daemon at %s is not available: %s", self.api_addr, err)
            return False
        return True

    # ----------------------------------------------------------------------------------------
    # Internals

    def _from_cache(self, cid: str, want: bytes | None) -> bytes | None:
        if self.cache is None:
            return None
        digest = want if want is not None else self.cache.hash_for_cid(cid)
        return None if digest is None else self.cache.get(digest)

    def _cat(self, cid: str, limit: int) -> bytes:
        # Ask for one byte more than allowed: receiving it proves the object is too large.
        params = {"arg": cid, "length": str(limit + 1)}
        with self._post("cat", params, stream=True) as response:
            chunks: list[bytes] = []
            received = 0
            try:
                for chunk in response.iter_content(_CHUNK):
                    received += len(chunk)
                    if received > limit:
                        raise PayloadTooLarge(
                            f"object {cid} is larger than the cap of {limit} bytes"
                        )
                    chunks.append(chunk)
            except requests.RequestException as err:
                raise _transport_error(err, self.api_addr) from err
        return b"".join(chunks)

    def _post(
        self,
        path: str,
        params: dict[str, str] | None = None,
        *,
        files: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """POST one RPC call with daemon- and client-side timeouts; raise on errors."""
        query = dict(params or {})
        query["timeout"] = f"{int(self.timeout * 1000)}ms"
        try:
            response = self._session.post(
                f"{self.url}/{path}",
                params=query,
                files=files,
                stream=stream,
                timeout=(min(_CONNECT_TIMEOUT, self.timeout), self.timeout + _CLIENT_GRACE),
            )
        except requests.RequestException as err:
            raise _transport_error(err, self.api_addr) from err
        if response.status_code != 200:
            message = _error_message(response)
            response.close()
            if any(word in message.lower() for word in _TIMEOUT_MESSAGES):
                raise IpfsTimeout(
                    f"IPFS {path} timed out after {self.timeout:g} s at {self.api_addr}: {message}"
                )
            raise IpfsRequestError(
                f"IPFS {path} failed at {self.api_addr} (HTTP {response.status_code}): {message}",
                response.status_code,
            )
        return response

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


def _transport_error(err: requests.RequestException, addr: str) -> IpfsError:
    """Map a requests exception to :class:`IpfsTimeout` or :class:`IpfsUnavailable`."""
    if isinstance(err, requests.Timeout) and not isinstance(err, requests.ConnectTimeout):
        return IpfsTimeout(f"IPFS daemon at {addr} did not answer in time: {err}")
    return IpfsUnavailable(
        f"IPFS daemon not reachable at {addr} or the connection dropped ({err}); {START_HINT}"
    )


def _error_message(response: requests.Response) -> str:
    """Extract ``Message`` from an RPC error body (both daemons send JSON), else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500].strip() or response.reason
    if isinstance(body, dict) and "Message" in body:
        return str(body["Message"])
    return str(body)[:500]


def _json(response: requests.Response, text: str | None = None) -> dict[str, Any]:
    """Decode a JSON object answer, raising :class:`IpfsRequestError` if it is not one."""
    try:
        value = json.loads(response.text if text is None else text)
    except ValueError as err:
        raise IpfsRequestError(f"daemon sent invalid JSON: {err}", response.status_code) from err
    if not isinstance(value, dict):
        raise IpfsRequestError(f"daemon sent {value!r}, expected a JSON object", 200)
    return value
