"""Follow the consortium's events: poll logs, wait for confirmations, resume where it stopped.

A node's event follower keeps one number on disk, the last block whose events it has fully
handled. On restart it resumes from the next block, so a round is neither done twice nor
missed: the handler runs for each confirmed event once, in chain order, and the cursor moves
past a block only after every event in it was handled.

Reorganisations: the follower handles a block only once ``confirmations`` blocks sit on top of
it (the chain profile's, :mod:`fleml_node.chain.profile`), so a reorg shorter than that never
reaches the handler. It also keeps the hash of its cursor block; if that block was replaced
anyway (a reorg deeper than the confirmations), it logs a warning and handles the new branch
from ``REORG_REWIND`` blocks back: handlers are idempotent, so events seen twice do no harm,
and events that moved to the new branch are not missed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address
from eth_utils.abi import event_abi_to_log_topic
from hexbytes import HexBytes
from web3.contract.contract import ContractEvent
from web3.exceptions import Web3RPCError

from fleml_node.chain.contract import CommitmentStatus, Consortium, RoundStatus

log = logging.getLogger(__name__)

MAX_BLOCK_RANGE = 2_000  # many RPC providers refuse larger eth_getLogs ranges
REORG_REWIND = 64
"""Blocks re-handled after a reorg deeper than the confirmations was detected."""
BLOOM_WINDOW = 128
"""The newest blocks of a poll whose logs blooms are checked against what eth_getLogs gave."""
UNINDEXED_PATIENCE = 60.0
"""Seconds a follower waits for the logs of a block whose bloom names the consortium."""


@dataclass(frozen=True)
class ChainEvent:
    """One decoded contract event."""

    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str
    block_hash: str = ""  # 0x hex; empty where the event was not read from a log


class EventFollower:
    """Yields the consortium's confirmed events once each, across restarts.

    Parameters
    ----------
    consortium
        The contract binding.
    state_file
        JSON file holding the last fully handled block; created on first use.
    confirmations
        Blocks to wait on top of an event's block before handling it; None takes the chain
        profile's (0 on a dev chain, 2 on the Clique devnet).
    start_block
        Where to start when there is no state yet (default: the deployment block).
    """

    def __init__(self, consortium: Consortium, state_file: Path,
                 confirmations: int | None = None, start_block: int | None = None) -> None:
        if confirmations is None:
            confirmations = consortium.profile.confirmations
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self.consortium = consortium
        self.state_file = Path(state_file)
        self.confirmations = confirmations
        self._events = _events_by_topic(consortium)
        default = consortium.deployment.block_number if start_block is None else start_block
        self._first = default - 1
        self._unindexed: dict[int, float] = {}
        self._wanted: set[bytes] | None = None
        self.last_block, self._last_hash = self._load_cursor(default - 1)

    def _load_cursor(self, default: int) -> tuple[int, str | None]:
        if not self.state_file.exists():
            return default, None
        try:
            state = json.loads(self.state_file.read_text())
            if state.get("contract") != self.consortium.address:
                log.warning("event state %s is for another contract; starting afresh",
                            self.state_file)
                return default, None
            return int(state["last_block"]), state.get("last_hash")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"corrupt event state file {self.state_file}: {exc}") from exc

    def _save_cursor(self, block: int, block_hash: str | None = None) -> None:
        block_hash = block_hash or self._hash_of(block)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"contract": self.consortium.address, "last_block": block,
                                   "last_hash": block_hash}))
        tmp.replace(self.state_file)
        self.last_block, self._last_hash = block, block_hash

    def _hash_of(self, block: int) -> str | None:
        if block < 0:
            return None
        found = self.consortium.w3.eth.get_block(block)
        return "0x" + bytes(found["hash"]).hex()

    def _check_reorg(self, head: int, head_hash: str) -> None:
        """Rewind if the cursor's block is no longer on the chain (a reorg deeper than the
        confirmations), or if the chain is now shorter than the cursor (a chain node restored
        from an older state, as anvil is from its state file after a crash). `head` and
        `head_hash` are the chain's latest block, read once per poll."""
        if self.last_block <= self._first:
            return
        if self.last_block > head:
            current = None
        elif self._last_hash is None:
            return
        else:
            current = head_hash if self.last_block == head else self._hash_of(self.last_block)
            if current == self._last_hash:
                return
        rewind = max(self._first, min(self.last_block, head) - REORG_REWIND)
        log.warning("block %d changed (%s -> %s): a reorg deeper than %d confirmation(s); "
                    "handling events again from block %d", self.last_block, self._last_hash,
                    current, self.confirmations, rewind + 1)
        self.last_block, self._last_hash = rewind, None

    def only(self, names: set[str]) -> None:
        """Decode and hand over only events of these names (the rest are still read, so the
        cursor and the logs-bloom check see every block with consortium logs). A member's
        node acts on two kinds of event; decoding every member's submission in every
        member's node cost each round work growing with the square of the members."""
        unknown = names - {e.event_name for e in self._events.values()}
        if unknown:
            raise ValueError(f"the contract has no events {sorted(unknown)}")
        self._wanted = {topic for topic, e in self._events.items() if e.event_name in names}

    def fetch(self, from_block: int, to_block: int,
              blocks: set[int] | None = None) -> list[ChainEvent]:
        """The decoded events of the contract in a block range, in chain order (only those
        named in :meth:`only`, when called); `blocks` collects the blocks of every log."""
        return fetch_events(self.consortium, from_block, to_block, events=self._events,
                            wanted=self._wanted, blocks=blocks)

    def poll(self, handler: Callable[[ChainEvent], bool | None]) -> int:
        """Handle every new confirmed event once; returns how many were handled.

        `handler` returns True when it acted on an event (sent a transaction, changed state);
        the cursor is saved right after each block in which it acted, and once at the end.
        A crash inside `handler` therefore repeats on restart only events it had not acted
        on yet, or had ignored; handlers are written to be idempotent for that case.
        """
        # one read of the latest block serves the reorg check, the confirmed head and (with
        # no confirmations) the cursor's hash: an idle poll costs one request
        latest = self.consortium.w3.eth.get_block("latest")
        latest_number, latest_hash = int(latest["number"]), "0x" + bytes(latest["hash"]).hex()
        self._check_reorg(latest_number, latest_hash)
        head = latest_number - self.confirmations
        if head <= self.last_block:
            return 0
        with_logs: set[int] = set()
        found = self.fetch(self.last_block + 1, head, blocks=with_logs)
        unindexed = self._first_unindexed(head, with_logs)
        if unindexed is not None:
            head = unindexed - 1
            found = [event for event in found if event.block_number <= head]
        handled = 0
        for block, events in _by_block(found):
            acted = False
            for event in events:
                acted = bool(handler(event)) or acted
                handled += 1
            if acted:
                self._save_cursor(block, events[0].block_hash or None)
        if head > self.last_block:
            self._save_cursor(head, latest_hash if head == latest_number else None)
        return handled

    def _first_unindexed(self, head: int, with_events: set[int]) -> int | None:
        """The first recent block whose header's logs bloom names the consortium although the
        node returned none of its logs: a node that imports blocks before it executes them
        (@ethereumjs/client) answers ``eth_getLogs`` without them for a moment. The cursor
        stops before such a block; after `UNINDEXED_PATIENCE` seconds of waiting on the same
        block it is taken as the bloom's false positive and passed."""
        address = bytes.fromhex(self.consortium.address[2:])
        for block in range(max(self.last_block + 1, head - BLOOM_WINDOW + 1), head + 1):
            if block in with_events:
                continue
            bloom = bytes(self.consortium.w3.eth.get_block(block)["logsBloom"])
            if not bloom_contains(bloom, address):
                continue
            waited = self._unindexed.setdefault(block, time.monotonic())
            if time.monotonic() - waited < UNINDEXED_PATIENCE:
                log.info("block %d names the consortium in its logs bloom but the node has "
                         "not returned its logs yet; waiting", block)
                return block
            log.warning("block %d names the consortium in its logs bloom but no log of it "
                        "came in %.0f s: taken as a false positive", block, UNINDEXED_PATIENCE)
        self._unindexed.clear()
        return None


def bloom_contains(bloom: bytes, item: bytes) -> bool:
    """Whether a 2048-bit logs bloom (yellow paper, 4.3.1) may contain `item`."""
    digest = keccak(item)
    for i in (0, 2, 4):
        bit = int.from_bytes(digest[i:i + 2], "big") & 2047
        if not bloom[255 - bit // 8] >> (bit % 8) & 1:
            return False
    return True


def round_events(consortium: Consortium, round_id: int, from_block: int | None = None,
                 to_block: int | None = None) -> dict[str, list[ChainEvent]]:
    """Every event of one round (opened, submissions, closed, finalized), by event name.

    All round events index the round id as their first topic, so one filtered log query over
    the round's own blocks finds them: from the block that opened it to the block that opened
    the next round (round r + 1 opens only after round r is finalized), or the chain head
    while it is the latest round. Both bounds are read from the chain, so the cost depends on
    the round's length, not on the chain's. Attestations may come later, while the next rounds
    run: when the round's record counts more of them than its own blocks hold, a second query,
    filtered on `RoundAttested` and the round, scans from the next round's opening block to the
    head (see `_add_late_attestations`); by default only.

    Parameters
    ----------
    consortium
        The contract binding.
    round_id
        The round.
    from_block, to_block
        Explicit bounds of the scan; by default those above. A contract deployed before rounds
        recorded `openedBlock` is scanned from its deployment block.

    Returns
    -------
    dict
        Event name to that round's events of the name, in chain order; empty for a round that
        does not exist.
    """
    info = None
    if from_block is None:
        info = consortium.get_round(round_id)
        if info.status is RoundStatus.NONE:
            return {}
        from_block = info.opened_block or consortium.deployment.block_number
    following = 0
    if to_block is None:
        following = consortium.get_round(round_id + 1).opened_block
        to_block = following or consortium.w3.eth.block_number
    topic = "0x" + round_id.to_bytes(32, "big").hex()
    found: dict[str, list[ChainEvent]] = {}
    for event in fetch_events(consortium, from_block, to_block, topics=[None, topic]):
        if event.args.get("roundId") == round_id:
            found.setdefault(event.name, []).append(event)
    if following:
        _add_late_attestations(consortium, round_id, info, following, topic, found)
    return found


def commitment_status(consortium: Consortium, round_id: int, member: str,
                      update_hash: bytes) -> CommitmentStatus:
    """`verifyCommitment`, answered for every round: did `member` submit `update_hash` in
    `round_id` (`MATCHES`), another hash (`DIFFERS`), or nothing (`NOT_SUBMITTED`)?

    The contract keeps only each member's latest submission in storage (a slot per round
    would cost every submission about 22,000 gas), so for a round before that one it answers
    `SUPERSEDED`, whether or not the member submitted there. The round's own
    `UpdateSubmitted` events (one query over the round's blocks) then tell.
    """
    status = consortium.verify_commitment(round_id, member, update_hash)
    if status is not CommitmentStatus.SUPERSEDED:
        return status
    mine = [e for e in round_events(consortium, round_id).get("UpdateSubmitted", [])
            if e.args["member"].lower() == member.lower()]
    if not mine:
        return CommitmentStatus.NOT_SUBMITTED
    return CommitmentStatus.MATCHES if bytes(mine[-1].args["updateHash"]) == update_hash \
        else CommitmentStatus.DIFFERS


def _add_late_attestations(consortium: Consortium, round_id: int, info: Any, following: int,
                           topic: str, found: dict[str, list[ChainEvent]]) -> None:
    """Add the round's attestations sent after the next round opened.

    Members may attest a finalized round until its attestation window ends (with attestations
    off, at any time), so while later rounds run. The round's record counts its passing and
    failing attestations: only when the round's own blocks hold fewer does one more query,
    filtered on the attestation events and the round, scan from the next round's opening block
    to the head; it also brings the late inconclusive ones (`RoundAuditInconclusive`), which
    the record does not count and so do not by themselves start the query (the explorer reads
    every attestation from the round's finalization on). A rejection cannot be late:
    `rejectRound` needs the round to be the latest.
    """
    info = info or consortium.get_round(round_id)
    seen = len(found.get("RoundAttested", []))
    if info.passes + info.fails <= seen:
        return
    names = ("RoundAttested", "RoundAuditInconclusive")
    kinds = ["0x" + event_abi_to_log_topic(consortium.contract.events[name]().abi).hex()
             for name in names]
    known = {(e.tx_hash, e.log_index) for name in names for e in found.get(name, [])}
    for e in fetch_events(consortium, following + 1, consortium.w3.eth.block_number,
                          topics=[kinds, topic]):
        if e.args.get("roundId") == round_id and (e.tx_hash, e.log_index) not in known:
            found.setdefault(e.name, []).append(e)


def fetch_events(consortium: Consortium, from_block: int, to_block: int,
                 topics: list[str | None] | None = None,
                 events: dict[bytes, ContractEvent] | None = None,
                 wanted: set[bytes] | None = None,
                 blocks: set[int] | None = None) -> list[ChainEvent]:
    """Decoded events of the contract in a block range (optionally topic-filtered), in order.

    Each log is decoded by the contract's own event object (`ContractEvent.process_log`); logs
    of events the ABI does not know are skipped, and so are those whose topic 0 is not in
    `wanted` (when given). `blocks`, when given, collects the block number of every log read.
    """
    events = events or _events_by_topic(consortium)
    decoded = []
    for start in range(from_block, to_block + 1, MAX_BLOCK_RANGE):
        end = min(to_block, start + MAX_BLOCK_RANGE - 1)
        # the address as a list: web3's name-resolving middleware reads eth_getLogs'
        # "address" as address[] and would take a bare string's characters for names
        query: dict[str, Any] = {"address": [consortium.address], "fromBlock": hex(start),
                                 "toBlock": hex(end)}
        if topics:
            query["topics"] = topics
        # The logs as the node sent them (through the middleware, without web3's result
        # formatters): a member's follower reads every member's submissions, and formatting
        # each one (checksummed addresses, bytes) only to skip it cost each round work
        # growing with the square of the members. Only logs decoded below are formatted.
        for entry in consortium.w3.manager.request_blocking("eth_getLogs", [query]):
            if blocks is not None:
                blocks.add(int(entry["blockNumber"], 16))
            topic = bytes.fromhex(entry["topics"][0][2:]) if entry["topics"] else b""
            event = events.get(topic)
            if event is None or (wanted is not None and topic not in wanted):
                continue
            data = event.process_log(_formatted_log(entry))
            decoded.append(ChainEvent(data["event"], dict(data["args"]), data["blockNumber"],
                                      data["logIndex"],
                                      "0x" + bytes(data["transactionHash"]).hex(),
                                      "0x" + bytes(data["blockHash"]).hex()))
    decoded.sort(key=lambda e: (e.block_number, e.log_index))
    return decoded


def _formatted_log(entry: dict[str, Any]) -> dict[str, Any]:
    """A raw `eth_getLogs` entry (hex strings) as web3 formats a log (ints, bytes, a
    checksummed address): what `ContractEvent.process_log` decodes."""
    return {
        "address": to_checksum_address(entry["address"]),
        "topics": [HexBytes(topic) for topic in entry["topics"]],
        "data": HexBytes(entry["data"]),
        "blockNumber": int(entry["blockNumber"], 16),
        "blockHash": HexBytes(entry["blockHash"]),
        "transactionIndex": int(entry["transactionIndex"], 16),
        "transactionHash": HexBytes(entry["transactionHash"]),
        "logIndex": int(entry["logIndex"], 16),
        "removed": bool(entry.get("removed", False)),
    }


def _events_by_topic(consortium: Consortium) -> dict[bytes, ContractEvent]:
    """The contract's event objects by their topic 0 (the keccak of the event's signature)."""
    return {event_abi_to_log_topic(item): consortium.contract.events[item["name"]]()
            for item in consortium.contract.abi if item.get("type") == "event"}


def _by_block(events: list[ChainEvent]) -> Iterator[tuple[int, list[ChainEvent]]]:
    current: list[ChainEvent] = []
    for event in events:
        if current and event.block_number != current[0].block_number:
            yield current[0].block_number, current
            current = []
        current.append(event)
    if current:
        yield current[0].block_number, current


FILTER_CHECK_SECONDS = 0.1
"""How often a node asks its log filter for changes between full polls."""


class LogWatch:
    """When to poll: new consortium logs from a log filter, else a fixed interval.

    A node's follower reads events by block range from its cursor, which is what makes it
    exact across restarts and reorgs; this only says when reading is worth it. It installs a
    log filter on the contract (``eth_newFilter``) and asks it for changes
    (``eth_getFilterChanges``, one cheap call) every `FILTER_CHECK_SECONDS`: a node wakes
    within a tenth of a second of a new event instead of up to a poll interval later, and
    still does a full poll every `poll_interval` (confirmations on top of an event, deadlines,
    reveals). A node without log filters, or one that forgot ours (restarted, or expired it),
    falls back: no filter means plain polling every `poll_interval`; a lost filter is
    installed again and counts as news.

    Parameters
    ----------
    consortium
        The contract binding.
    poll_interval
        Seconds between full polls whatever the filter says.
    use_filter
        False: plain polling, as on a node known to lack filters.
    """

    def __init__(self, consortium: Consortium, poll_interval: float,
                 use_filter: bool = True) -> None:
        self.consortium = consortium
        self.poll_interval = poll_interval
        self.supported: bool | None = None if use_filter else False
        self._filter_id: Any = None
        self._last_poll = float("-inf")

    @property
    def mode(self) -> str:
        """``filter``, ``polling`` (no filters on this node), or ``unknown`` (not tried yet)."""
        return {True: "filter", False: "polling", None: "unknown"}[self.supported]

    def changes(self) -> bool | None:
        """Whether logs of the consortium came since the last call; None without a filter."""
        if self.supported is False:
            return None
        w3 = self.consortium.w3
        try:
            if self._filter_id is None:
                self._filter_id = w3.eth.filter({"address": self.consortium.address}).filter_id
                self.supported = True
                return True  # what came before the filter is unknown: poll once
            return bool(w3.eth.get_filter_changes(self._filter_id))
        except Web3RPCError as exc:
            if self._filter_id is None and self.supported is None:
                log.info("the chain node offers no log filters (%s); polling every %.1f s",
                         exc, self.poll_interval)
                self.supported = False
                return None
            log.info("log filter lost (%s); installing a new one", exc)
            self._filter_id = None
            return True

    def wait(self, stop_after: float | None = None) -> str:
        """Block until a poll is due; returns why: ``logs`` or ``interval``.

        `stop_after` bounds the wait (seconds) for callers that do other timed work.
        """
        limit = time.monotonic() + (self.poll_interval if stop_after is None else stop_after)
        while True:
            now = time.monotonic()
            if now - self._last_poll >= self.poll_interval or now >= limit:
                self._last_poll = now
                return "interval"
            try:
                news = self.changes()
            except Exception as exc:  # the node is away: the poll's own backoff handles it
                from fleml_node.retry import is_transient

                if not is_transient(exc):
                    raise
                self._last_poll = time.monotonic()
                return "interval"
            if news:
                self._last_poll = time.monotonic()
                return "logs"
            if self.supported is False:
                time.sleep(max(0.0, min(limit, self._last_poll + self.poll_interval)
                               - time.monotonic()))
                continue
            time.sleep(FILTER_CHECK_SECONDS)
