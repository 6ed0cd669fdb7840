"""Fetching a round's updates: one attempt per object, concurrently, and whose fault it is."""

import threading
from types import SimpleNamespace

import pytest

from fleml_node.storage import IpfsStore, IpfsUnavailable, content_hash
from fleml_node.storage.ipfs import IpfsStore as StoreClass
from fleml_node.submissions import fetch_member_object, gather_submissions

MISSING = [  # valid CIDv1 (raw, sha256) of bytes that no daemon has
    "bafkreihctmsjysftvyjdj3eyfsvdatj6vzstkn2zrv2sx67mcb5ifcglei",
    "bafkreigtdvwrwzqa7jrafadrplyichvooy7si3corrl6hqfvehvkawe4bu",
]


class Members:
    """The one chain read gathering needs: each member's index."""

    def __init__(self, addresses):
        self.index = {a: i for i, a in enumerate(addresses)}

    def member_info(self, address):
        return True, True, self.index[address], ""


def event(member, digest, cid):
    return SimpleNamespace(args={"member": member, "updateHash": digest, "updateCid": cid})


def test_missing_objects_cost_one_attempt_each_and_are_fetched_together(ipfs_api, monkeypatch):
    started, lock = [], threading.Lock()
    # both missing objects must be in flight at once: fetched one after the other, the first
    # would wait here for the second until the barrier breaks
    together = threading.Barrier(2, timeout=30)
    real_cat = StoreClass._cat

    def counting_cat(self, cid, limit):
        with lock:
            started.append(cid)
        if cid in MISSING:
            together.wait()
        return real_cat(self, cid, limit)

    monkeypatch.setattr(StoreClass, "_cat", counting_cat)
    store = IpfsStore(ipfs_api, timeout=2, retries=3)
    good = b"an update's bytes"
    good_cid = store.put(good)
    events = [event("0xa", b"\x01" * 32, MISSING[0]), event("0xb", content_hash(good), good_cid),
              event("0xc", b"\x02" * 32, MISSING[1])]
    subs = gather_submissions(Members(["0xa", "0xb", "0xc"]), store, events)

    assert [s.member for s in subs] == ["0xa", "0xb", "0xc"]
    assert subs[1].blob == good and subs[1].fetch_error is None
    for sub in (subs[0], subs[2]):
        assert sub.blob is None and "timed out" in sub.fetch_error
    # one attempt per missing object, despite the store's retries=3
    assert sorted(cid for cid in started if cid in MISSING) == sorted(MISSING)
    assert not together.broken


def test_an_invalid_cid_is_the_members_fault_without_asking_the_daemon(ipfs_api):
    blob, error = fetch_member_object(IpfsStore(ipfs_api), "not-a-cid")
    assert blob is None and "not-a-cid" in error


def test_an_object_over_the_cap_is_the_members_fault(ipfs_api):
    store = IpfsStore(ipfs_api, timeout=5)
    cid = store.put(b"x" * 5000)
    blob, error = fetch_member_object(store, cid, max_bytes=4096)
    assert blob is None and "larger than the cap" in error


def test_our_own_daemon_down_is_our_failure_not_the_members():
    down = IpfsStore("/ip4/127.0.0.1/tcp/9", timeout=1, retries=0)
    with pytest.raises(IpfsUnavailable):
        fetch_member_object(down, MISSING[0])
