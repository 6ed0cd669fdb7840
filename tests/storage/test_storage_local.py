"""The content-addressed local cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleml_node.storage import InvalidCid, LocalStore, content_hash

CID = "bafkreif2pall7dybz7vecqka3zo24irdwabwdi4wc55jznaq75q7eaavvu"


def test_put_then_get_by_hash(tmp_path: Path) -> None:
    cache = LocalStore(tmp_path / "cache")
    digest = cache.put(b"weights")
    assert digest == content_hash(b"weights")
    assert digest in cache and digest.hex() in cache
    assert cache.get(digest) == b"weights"
    assert cache.get("0x" + digest.hex()) == b"weights"
    assert cache.get(content_hash(b"other")) is None
    assert cache.path_for(digest).name == digest.hex()


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    cache = LocalStore(tmp_path)
    for index in range(5):
        cache.link_cid(CID, cache.put(f"object {index}".encode()))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 6  # five objects and one CID link
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_a_second_store_on_the_same_directory_sees_the_objects(tmp_path: Path) -> None:
    digest = LocalStore(tmp_path).put(b"shared")
    assert LocalStore(tmp_path).get(digest) == b"shared"


def test_corrupted_entries_are_dropped(tmp_path: Path) -> None:
    cache = LocalStore(tmp_path)
    digest = cache.put(b"weights")
    cache.path_for(digest).write_bytes(b"weightz")
    assert cache.get(digest) is None
    assert digest not in cache
    assert cache.put(b"weights") == digest and cache.get(digest) == b"weights"


def test_cid_links(tmp_path: Path) -> None:
    cache = LocalStore(tmp_path)
    assert cache.hash_for_cid(CID) is None
    digest = cache.put(b"abc")
    cache.link_cid(CID, digest)
    assert cache.hash_for_cid(CID) == digest
    with pytest.raises(InvalidCid):
        cache.link_cid("../../escape", digest)
    with pytest.raises(InvalidCid):
        cache.hash_for_cid("Qm" + "x" * 44)
