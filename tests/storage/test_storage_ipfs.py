"""IpfsStore against a real IPFS daemon (js-ipfs unless FLEML_IPFS_API names another)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import torch

from fleml_node.learning.params import ParamSpec
from fleml_node.storage import (
    ENV_API,
    HashMismatch,
    InvalidCid,
    IpfsStore,
    IpfsTimeout,
    IpfsUnavailable,
    LocalStore,
    PayloadTooLarge,
    api_url,
    content_hash,
    decode_tensors,
    encode_tensors,
)
from fleml_node.storage.ipfs import CHUNK_BYTES

CIDV1_BASE32 = re.compile(r"b[a-z2-7]{58,}")


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]


def test_daemon_answers(store: IpfsStore) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", store.version())
    assert store.is_available()


def test_model_round_trip_through_ipfs(
    store: IpfsStore, model_state: dict[str, torch.Tensor]
) -> None:
    data = encode_tensors(model_state, kind="model", round=0)
    cid = store.put(data)
    assert CIDV1_BASE32.fullmatch(cid), cid
    assert store.is_pinned(cid)
    fetched = store.get(cid, expected_hash=content_hash(data))
    assert fetched == data
    spec = ParamSpec.from_named(model_state)
    payload = decode_tensors(fetched, expected_kind="model", expected_spec=spec)
    assert all(torch.equal(payload.tensors[n], t) for n, t in model_state.items())


def test_put_is_deterministic_and_uses_raw_sha256_cids(
    store: IpfsStore, make_raw_cid: Callable[[bytes], str]
) -> None:
    data = b"a small single-block object " + os.urandom(16)
    cid = store.put(data)
    assert store.put(data) == cid
    # CIDv1 + raw leaves + sha2-256: a one-block object's CID is derived from its SHA-256,
    # which is also its FLEML content hash.
    assert cid == make_raw_cid(data)


def test_an_update_sized_object_is_one_block_and_a_larger_one_is_chunked(
        store: IpfsStore, make_raw_cid: Callable[[bytes], str]) -> None:
    update = os.urandom(827_688)  # the MNIST CNN's fp32 update: below the 1 MiB chunk size
    cid = store.put(update)
    assert cid == make_raw_cid(update) and store.is_pinned(cid)
    data = os.urandom(CHUNK_BYTES + 300_000)  # above it: a dag-pb root over raw leaves
    cid = store.put(data)
    assert cid.startswith("bafybei") and store.is_pinned(cid)
    assert store.get(cid, expected_hash=content_hash(data)) == data


def test_tampered_object_raises_hash_mismatch_without_retrying(
    store: IpfsStore, model_state: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    data = encode_tensors(model_state, kind="update", round=1)
    commitment = content_hash(data)
    tampered = bytearray(data)
    tampered[-1] ^= 0x01
    cid = store.put(bytes(tampered))
    with caplog.at_level(logging.WARNING), pytest.raises(HashMismatch) as info:
        store.get(cid, expected_hash=commitment)
    assert info.value.expected == commitment
    assert info.value.actual == content_hash(bytes(tampered))
    assert commitment.hex() in str(info.value) and cid in str(info.value)
    assert not retry_warnings(caplog)


def test_missing_cid_times_out_cleanly(
    ipfs_api: str, make_raw_cid: Callable[[bytes], str]
) -> None:
    missing = make_raw_cid(os.urandom(32))
    with IpfsStore(ipfs_api, timeout=1.0, retries=0) as impatient:
        started = time.monotonic()
        with pytest.raises(IpfsTimeout, match="timed out"):
            impatient.get(missing)
        assert time.monotonic() - started < 15


def test_objects_above_max_bytes_are_cut_off(store: IpfsStore) -> None:
    data = os.urandom(5000)
    cid = store.put(data)
    with pytest.raises(PayloadTooLarge, match="larger than the cap of 4999 bytes"):
        store.get(cid, max_bytes=4999)
    assert store.get(cid, max_bytes=5000) == data


def test_unreachable_daemon_is_reported_with_address_and_remedy(
    unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    addr = f"/ip4/127.0.0.1/tcp/{unused_port}"
    dead = IpfsStore(addr, timeout=2.0, retries=2, backoff=0.01)
    assert not dead.is_available()
    with caplog.at_level(logging.WARNING), pytest.raises(IpfsUnavailable) as info:
        dead.version()
    message = str(info.value)
    assert addr in message
    assert "fleml-node devnet up" in message and ENV_API in message
    assert len(retry_warnings(caplog)) == 2  # three attempts in all


def test_invalid_cids_are_refused_before_any_request(unused_port: int) -> None:
    dead = IpfsStore(f"/ip4/127.0.0.1/tcp/{unused_port}", retries=0)
    for bad in ["QmTkzDwWqPbnAh5YiV5VwcTLnGdwSNsNTn2aDxdXBFca7D", "bafy/../x", ""]:
        with pytest.raises(InvalidCid):
            dead.get(bad)
        with pytest.raises(InvalidCid):
            dead.pin(bad)


def test_cache_hit_avoids_refetching(ipfs_api: str, tmp_path: Path, unused_port: int) -> None:
    data = os.urandom(3000)
    with IpfsStore(ipfs_api, timeout=10.0) as uncached:
        cid = uncached.put(data)
    cache = LocalStore(tmp_path)
    with IpfsStore(ipfs_api, timeout=10.0, cache=cache) as live:
        assert live.get(cid) == data
    assert content_hash(data) in cache
    # The daemon is now unreachable: only the cache can answer.
    offline = IpfsStore(f"/ip4/127.0.0.1/tcp/{unused_port}", retries=0, cache=cache)
    assert offline.get(cid, expected_hash=content_hash(data)) == data
    assert offline.get(cid) == data  # found through the CID link
    with pytest.raises(PayloadTooLarge):
        offline.get(cid, max_bytes=100)  # caps apply to cached objects too
    elsewhere = IpfsStore(ipfs_api).put(os.urandom(100))
    with pytest.raises(IpfsUnavailable):
        offline.get(elsewhere)


def test_put_fills_the_cache_and_corrupt_entries_are_refetched(
    ipfs_api: str, tmp_path: Path
) -> None:
    cache = LocalStore(tmp_path)
    data = os.urandom(2000)
    with IpfsStore(ipfs_api, timeout=10.0, cache=cache) as cached:
        cid = cached.put(data)
        assert cache.get(content_hash(data)) == data
        assert cache.hash_for_cid(cid) == content_hash(data)
        cache.path_for(content_hash(data)).write_bytes(b"bit rot")
        assert cached.get(cid, expected_hash=content_hash(data)) == data
    assert cache.get(content_hash(data)) == data


def test_pin_pins_an_unpinned_object(ipfs_api: str, store: IpfsStore) -> None:
    data = os.urandom(64)
    response = requests.post(
        f"{api_url(ipfs_api)}/add",
        params={"cid-version": "1", "raw-leaves": "true", "pin": "false", "cid-base": "base32"},
        files={"file": ("blob", data, "application/octet-stream")},
        timeout=10,
    )
    cid = response.json()["Hash"]
    assert not store.is_pinned(cid)
    store.pin(cid)
    assert store.is_pinned(cid)


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001/api/v0"),
        ("/ip4/127.0.0.1/tcp/5001/http", "http://127.0.0.1:5001/api/v0"),
        ("/dns/ipfs.local/tcp/443/https", "https://ipfs.local:443/api/v0"),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001/api/v0"),
        ("http://127.0.0.1:5001", "http://127.0.0.1:5001/api/v0"),
        ("http://localhost:5001/api/v0", "http://localhost:5001/api/v0"),
    ],
)
def test_api_addresses_in_multiaddr_or_url_form(addr: str, url: str) -> None:
    assert api_url(addr) == url


@pytest.mark.parametrize("addr", ["127.0.0.1:5001", "/ip4/127.0.0.1/udp/5001", "http://host"])
def test_bad_api_addresses_are_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="neither a multiaddr"):
        IpfsStore(addr)


def test_address_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API, "http://127.0.0.1:5999")
    assert IpfsStore().url == "http://127.0.0.1:5999/api/v0"
    monkeypatch.delenv(ENV_API)
    assert IpfsStore().url == "http://127.0.0.1:5001/api/v0"
