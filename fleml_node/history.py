"""What earlier rounds left on chain and IPFS that a later round builds on.

A round trains on the result of an earlier finalized round (its base: the last accepted one
when it opened), never on an abandoned or rejected one. A learned defense must continue from
that same round: its state is the one the base round's report published as the state after it,
or a fresh one when the round builds on the initial model. The aggregator restores it from
here before every aggregation and the audit checks it the same way, so neither depends on
files a node kept locally, and a rejected round's learning is forgotten with its model.
"""

from __future__ import annotations

from typing import Any

from fleml_node.chain.contract import Consortium, RoundStatus
from fleml_node.chain.events import round_events
from fleml_node.storage import IpfsStore, decode_report


def base_round(consortium: Consortium, round_id: int) -> int:
    """The finalized round whose result round `round_id` trains on; 0 for the initial model."""
    model = consortium.get_round(round_id).model_hash
    for r in range(round_id - 1, 0, -1):
        info = consortium.get_round(r)
        if info.status is RoundStatus.FINALIZED and info.result_hash == model:
            return r
    return 0


def round_report(consortium: Consortium, store: IpfsStore, round_id: int) -> dict[str, Any]:
    """A finalized round's report, fetched by the CID its `RoundFinalized` event names and
    checked against the hash the chain holds.

    Raises
    ------
    StorageError
        When it cannot be fetched or does not match (HashMismatch).
    """
    finalized = round_events(consortium, round_id)["RoundFinalized"][-1]
    return decode_report(store.get(finalized.args["reportCid"],
                                   expected_hash=consortium.get_round(round_id).report_hash))


def published_state_after(consortium: Consortium, store: IpfsStore, round_id: int
                          ) -> tuple[str, dict[str, Any]] | None:
    """The defense state round `round_id`'s report published as the state after it:
    ``(hash, state)``, or None when the report publishes none (a stateless defense)."""
    ref = round_report(consortium, store, round_id).get("defense_state", {}).get("after")
    if not ref:
        return None
    return ref["hash"], decode_report(store.get(ref["cid"], expected_hash=ref["hash"]))
