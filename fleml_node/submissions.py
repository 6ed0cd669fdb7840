"""Fetch a round's committed updates from IPFS, concurrently, and say whose fault a failure is.

The aggregator and the audit both turn a round's `UpdateSubmitted` events into the
:class:`~fleml_node.round_engine.Submission` list the round engine decides on. A fetch can
fail because of the member (its CID names nothing, a directory, a malformed CID, an object
over the size cap) or because of us (our IPFS daemon is down). The rule that tells them
apart: when a fetch fails, ask our own daemon a cheap question (``version``); if it answers,
the member's object is at fault and the member is rejected with the reason; if it does not,
the failure is ours and is raised, so the node retries the whole step later.

Each object is fetched once, without retries (a missing CID costs one IPFS timeout, not
four), by a small pool of threads with one IPFS client each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from fleml_node.chain.contract import Consortium
from fleml_node.chain.events import ChainEvent
from fleml_node.round_engine import Submission
from fleml_node.storage import InvalidCid, IpfsError, IpfsStore, PayloadTooLarge

log = logging.getLogger(__name__)

FETCH_WORKERS = 8


def fetch_member_object(store: IpfsStore, cid: str,
                        max_bytes: int | None = None) -> tuple[bytes | None, str | None]:
    """The bytes of a member's CID, or the reason they cannot be had when that is its fault.

    Raises
    ------
    IpfsError
        When our own daemon does not answer: a transient failure of ours.
    """
    try:
        return store.get(cid, max_bytes=max_bytes), None
    except (InvalidCid, PayloadTooLarge) as exc:
        return None, str(exc)
    except IpfsError as exc:
        if store.is_available():
            return None, str(exc)
        raise


def gather_submissions(consortium: Consortium, store: IpfsStore, events: Sequence[ChainEvent],
                       max_bytes: int | None = None,
                       workers: int = FETCH_WORKERS) -> list[Submission]:
    """The round's submissions with their bytes, in member-index order.

    Parameters
    ----------
    consortium
        Read access to the contract (member indices).
    store
        Our IPFS daemon; its address and limits are used by the fetching threads.
    events
        The round's `UpdateSubmitted` events.
    max_bytes
        The largest object fetched (the round engine's `update_size_cap`); larger ones reject
        their member after reading one byte past the cap.
    workers
        Objects fetched at the same time.
    """
    index_of = {e.args["member"]: consortium.member_info(e.args["member"])[2] for e in events}
    local, opened = threading.local(), []

    def fetch(event: ChainEvent) -> Submission:
        if not hasattr(local, "store"):
            local.store = IpfsStore(store.api_addr, timeout=store.timeout, retries=0,
                                    max_bytes=store.max_bytes)
            opened.append(local.store)
        member, cid = event.args["member"], event.args["updateCid"]
        blob, error = fetch_member_object(local.store, cid, max_bytes)
        if error:
            log.warning("update of %s (%s) cannot be fetched: %s", member, cid, error)
        return Submission(member, index_of[member], bytes(event.args["updateHash"]), cid,
                          blob, error)

    if not events:
        return []
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(events)))) as pool:
            found = list(pool.map(fetch, events))
    finally:
        for each in opened:
            each.close()
    return sorted(found, key=lambda s: s.index)
