"""Content-addressed local cache of stored and fetched objects.

Layout under the cache root::

    objects/<first 2 hex digits>/<64 hex digits of the SHA-256>   the bytes
    cids/<CIDv1>                                                   hex hash of that CID's bytes

Objects are written atomically (temporary file in the same folder, ``fsync``, then
``os.replace``), so a crash never leaves a partial object under its final name, and several
processes can share one cache. Every read re-hashes the bytes: a corrupted entry is removed
and reported as a miss, so the caller fetches it again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from fleml_node.storage.hashing import check_cid, content_hash, parse_hash

log = logging.getLogger(__name__)


class LocalStore:
    """A directory of objects keyed by their content hash.

    Parameters
    ----------
    root
        Cache directory; created if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._cids = self.root / "cids"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._cids.mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: bytes | str) -> Path:
        """Return the file that holds (or would hold) the object with this hash."""
        hex_digest = parse_hash(digest).hex()
        return self._objects / hex_digest[:2] / hex_digest

    def put(self, data: bytes) -> bytes:
        """Store bytes under their content hash (no-op if already present).

        Parameters
        ----------
        data
            The object.

        Returns
        -------
        bytes
            Its 32-byte content hash.
        """
        digest = content_hash(data)
        path = self.path_for(digest)
        if not path.exists():
            atomic_write(path, data)
            log.debug("cached %d bytes as %s", len(data), digest.hex())
        return digest

    def get(self, digest: bytes | str) -> bytes | None:
        """Return the object with this hash, or ``None`` when absent or corrupted.

        Parameters
        ----------
        digest
            32-byte hash or its hex form.
        """
        want = parse_hash(digest)
        path = self.path_for(want)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if content_hash(data) != want:
            log.warning("cache entry %s is corrupted; removing it", path)
            path.unlink(missing_ok=True)
            return None
        return data

    def __contains__(self, digest: bytes | str) -> bool:
        return self.path_for(digest).exists()

    def link_cid(self, cid: str, digest: bytes | str) -> None:
        """Record that ``cid`` names the object with hash ``digest``.

        Raises
        ------
        InvalidCid
            If ``cid`` is not a CIDv1 in base32 (it becomes a file name).
        """
        path = self._cids / check_cid(cid)
        text = parse_hash(digest).hex()
        if not path.exists() or path.read_text(encoding="ascii") != text:
            atomic_write(path, text.encode("ascii"))

    def hash_for_cid(self, cid: str) -> bytes | None:
        """Return the content hash recorded for ``cid``, or ``None``.

        Raises
        ------
        InvalidCid
            If ``cid`` is not a CIDv1 in base32 (it would become a file name).
        """
        path = self._cids / check_cid(cid)
        try:
            return parse_hash(path.read_text(encoding="ascii"))
        except (FileNotFoundError, ValueError):
            return None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
