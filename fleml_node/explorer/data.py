"""What the explorer shows, as JSON-ready dicts read from the chain and IPFS.

`Explorer` answers each page's question (the consortium, a page of rounds, a round, a member's
history, an audit). Its caches hold only what can no longer change:

* logs, block times and transaction receipts of blocks at least ``confirmations`` deep (the
  chain profile's: 0 on a dev chain, where a block is final once mined);
* a round's part up to its finalization or abandonment (events, gas, times, the report,
  checked against the hash on chain), once that block is confirmed.

A round's status (a finalized round can be rejected), its attestations and acceptance, the
current round and the policy are read from the chain on every request. Nothing is written to
disk, so a restarted explorer shows the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eth_utils.abi import event_abi_to_log_topic

from fleml_node.chain.contract import Consortium, RoundStatus
from fleml_node.chain.deployment import ExplorerUrls
from fleml_node.chain.events import ChainEvent, fetch_events, round_events
from fleml_node.storage import IpfsStore, StorageError, decode_report

FINAL = (RoundStatus.FINALIZED, RoundStatus.REJECTED, RoundStatus.ABANDONED)
MEMBERSHIP_EVENTS = ("MemberAdmitted", "MemberRemoved", "AggregatorSet", "OperatorTransferred")
ATTESTATION_EVENTS = ("RoundAttested", "RoundAuditInconclusive", "RoundRejected")
"""A round's attestations (passing, failing, inconclusive) and its rejection."""
DOWNLOADS = ("base", "result", "report")
"""The objects of a round the explorer serves: the model it trained on, its result, its report."""
PRIMARY_SCORES = ("anomaly", "krum", "trust")
"""The defense score the chart plots, the first one a round's report has (FLEML, Krum, FLTrust)."""


def iso(timestamp: int | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2025-01-31T12:00:00Z``); None for 0 or None."""
    if not timestamp:
        return None
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hex32(value: bytes) -> str:
    return "0x" + bytes(value).hex()


@dataclass(frozen=True)
class ExplorerLinks:
    """Links to a public explorer, from the deployment record (none when it names none)."""

    urls: ExplorerUrls | None = None

    def tx(self, tx_hash: str | None) -> str | None:
        return self.urls.tx(tx_hash) if self.urls and tx_hash else None

    def address(self, address: str | None) -> str | None:
        return self.urls.address(address) if self.urls and address else None


class ConfirmedLogs:
    """One log query (topics) over the whole chain, cached up to the confirmed head.

    Every call scans only the blocks after the cached part, and keeps what is confirmed.
    """

    def __init__(self, consortium: Consortium, topics: list[Any], first_block: int) -> None:
        self.consortium = consortium
        self.topics = topics
        self._events: list[ChainEvent] = []
        self._next = first_block  # first block not in the cache
        self._lock = threading.Lock()

    def events(self, head: int, confirmed: int) -> list[ChainEvent]:
        with self._lock:
            start = self._next
            fresh = fetch_events(self.consortium, start, head, topics=self.topics) \
                if head >= start else []
            if confirmed >= start:
                self._events += [e for e in fresh if e.block_number <= confirmed]
                self._next = confirmed + 1
            cached = list(self._events)
        return cached + [e for e in fresh if e.block_number > confirmed]


class Explorer:
    """The explorer's reads, shared by its HTML pages and their JSON twins.

    Parameters
    ----------
    consortium
        A read-only binding (no account).
    store
        The IPFS API reports and models are fetched from; None: reports are not shown.
    links
        A public explorer's URL templates, if the deployment record names one.
    """

    def __init__(self, consortium: Consortium, store: IpfsStore | None,
                 links: ExplorerLinks | None = None) -> None:
        if consortium.account is not None:
            raise ValueError("the explorer reads only: bind the consortium without a key")
        self.c = consortium
        self.store = store
        self.links = links or ExplorerLinks(consortium.deployment.explorer)
        self.confirmations = consortium.profile.confirmations
        self._final_rounds: dict[int, dict[str, Any]] = {}
        self._times: dict[int, int] = {}
        self._gas: dict[str, int] = {}
        self._lock = threading.Lock()
        self.audit_lock = threading.Lock()
        topic = {item["name"]: "0x" + event_abi_to_log_topic(item).hex()
                 for item in consortium.contract.abi if item.get("type") == "event"}
        self._topics = topic
        self._membership = ConfirmedLogs(
            consortium, [[topic[n] for n in MEMBERSHIP_EVENTS if n in topic]],
            consortium.deployment.block_number)
        self._late: dict[int, ConfirmedLogs] = {}

    # -- chain helpers -------------------------------------------------------------------
    def _heads(self) -> tuple[int, int]:
        head = int(self.c.w3.eth.block_number)
        return head, head - self.confirmations

    def _block_time(self, block: int, confirmed: int) -> int:
        if block in self._times:
            return self._times[block]
        found = int(self.c.w3.eth.get_block(block)["timestamp"])
        if block <= confirmed:
            with self._lock:
                self._times[block] = found
        return found

    def _gas_used(self, tx: str, block: int, confirmed: int) -> int:
        if tx in self._gas:
            return self._gas[tx]
        found = int(self.c.w3.eth.get_transaction_receipt(tx)["gasUsed"])
        if block <= confirmed:
            with self._lock:
                self._gas[tx] = found
        return found

    def _event(self, event: ChainEvent, confirmed: int, **fields: Any) -> dict[str, Any]:
        """The timeline entry of an event: block, ISO time, transaction, its gas and link."""
        return {"event": event.name, "block": event.block_number,
                "time": iso(self._block_time(event.block_number, confirmed)),
                "tx": event.tx_hash, "tx_url": self.links.tx(event.tx_hash),
                "gas": self._gas_used(event.tx_hash, event.block_number, confirmed), **fields}

    def members(self) -> dict[str, dict[str, Any]]:
        """Every member ever admitted, by address: label, index, admission and removal."""
        head, confirmed = self._heads()
        out: dict[str, dict[str, Any]] = {}
        for event in self._membership.events(head, confirmed):
            if event.name == "MemberAdmitted":
                address = event.args["member"]
                out[address] = {"address": address, "index": int(event.args["index"]),
                                "label": str(event.args["label"]), "active": True,
                                "address_url": self.links.address(address),
                                "admitted": self._event(event, confirmed), "removed": None}
            elif event.name == "MemberRemoved" and event.args["member"] in out:
                entry = out[event.args["member"]]
                entry["active"] = False
                entry["removed"] = self._event(event, confirmed)
        return out

    # -- pages ---------------------------------------------------------------------------
    def consortium(self, page: int = 1, per_page: int = 50) -> dict[str, Any]:
        """Roles, policy, validation set and a page of the members (by index)."""
        c = self.c
        policy = c.policy()
        pending = c.pending_policy()
        digest, cid = c.validation_set()
        members = sorted(self.members().values(), key=lambda m: m["index"])
        operator = c.contract.functions.operator().call()
        aggregator = c.aggregator()
        current = c.current_round()
        return {
            "address": c.address, "address_url": self.links.address(c.address),
            "chain_id": c.deployment.chain_id, "network": c.deployment.network,
            "deployed_block": c.deployment.block_number,
            "confirmations": self.confirmations,
            "explorer": self.links.urls.name if self.links.urls else None,
            "operator": operator, "operator_url": self.links.address(operator),
            "aggregator": aggregator, "aggregator_url": self.links.address(aggregator),
            "current_round": current, "last_accepted_round": c.last_accepted_round(),
            "active_members": c.active_members(),
            "policy": _policy_dict(policy),
            "pending_policy": None if pending is None else {
                **_policy_dict(pending.policy), "from_round": pending.effective_from_round,
                "from_time": iso(pending.effective_from_time)},
            "validation_set": None if digest == bytes(32) else {"hash": hex32(digest),
                                                                 "cid": cid},
            **_paged("members", members, page, per_page),
        }

    def rounds(self, page: int = 1, per_page: int = 20) -> dict[str, Any]:
        """A page of rounds, newest first, one summary row each."""
        current = self.c.current_round()
        ids = list(range(current, 0, -1))
        paged = _paged("rounds", ids, page, per_page)
        paged["rounds"] = [self._row(r) for r in paged["rounds"]]
        return {"current_round": current, **paged}

    def _row(self, round_id: int) -> dict[str, Any]:
        full = self.round(round_id)
        counts = {"accepted": 0, "rejected": 0, "flagged": 0}
        for sub in full["submissions"]:
            if sub.get("status") in counts:
                counts[sub["status"]] += 1
        return {
            "round": round_id, "status": full["status"], "accepted": full["accepted"],
            "submissions": full["submissions_count"], "quorum": full["quorum"],
            "min_submissions": full["min_submissions"],
            "rejected": counts["rejected"] if full["report"] else None,
            "flagged": counts["flagged"] if full["report"] else None,
            "flagged_or_rejected": full["flagged_bitmap_count"],
            "gas": sum(e["gas"] for e in full["timeline"])
            + sum(s["gas"] for s in full["submissions"] if s.get("gas")),
            "attestations": {k: full["attestations"][k] for k in ("passes", "fails",
                                                                  "required")},
            "accuracy": full["accuracy"],
            "opened": full["timeline"][0]["time"] if full["timeline"] else None,
            "report_error": full["report_error"],
        }

    def round(self, round_id: int) -> dict[str, Any]:
        """Everything about one round; raises KeyError for a round that does not exist."""
        info = self.c.get_round(round_id)
        if info.status is RoundStatus.NONE:
            raise KeyError(round_id)
        head, confirmed = self._heads()
        final, events = self._final_rounds.get(round_id), None
        if final is None:
            final, events = self._final_part(round_id, info, confirmed)
        attested, rejected = self._attestations(round_id, final, events, head, confirmed)
        out = dict(final)
        out.update(
            status=info.status.name.lower(),
            accepted=self.c.is_accepted(round_id) if info.status is RoundStatus.FINALIZED
            else False,
            attestations={
                "required": info.attestations_required, "passes": info.passes,
                "fails": info.fails,
                "inconclusive": sum(a["verdict"] == "INCONCLUSIVE" for a in attested),
                "deadline": iso(info.attestation_deadline), "events": attested},
            timeline=final["timeline"] + rejected,
            cached="final_block" in final,
        )
        return out

    def _final_part(self, round_id: int, info: Any, confirmed: int
                    ) -> tuple[dict[str, Any], dict[str, list[ChainEvent]]]:
        """What a round shows apart from its status and attestations; cached once final."""
        events = round_events(self.c, round_id)
        members = self.members()
        opened = events["RoundOpened"][-1]
        timeline = [self._event(opened, confirmed, model_cid=opened.args["modelCid"],
                                deadline=iso(opened.args["deadline"]))]
        for name in ("RoundClosed", "RoundFinalized", "RoundAbandoned"):
            for event in events.get(name, []):
                timeline.append(self._event(event, confirmed))
        submissions = []
        for event in events.get("UpdateSubmitted", []):
            member = event.args["member"]
            known = members.get(member, {})
            submissions.append({
                "member": member, "label": known.get("label", ""),
                "index": known.get("index"), "member_url": self.links.address(member),
                "hash": hex32(event.args["updateHash"]), "cid": event.args["updateCid"],
                **{k: v for k, v in self._event(event, confirmed).items()
                   if k in ("block", "time", "tx", "tx_url", "gas")}})
        finalized = events.get("RoundFinalized", [None])[-1]
        out: dict[str, Any] = {
            "round": round_id, "deadline": iso(info.deadline), "quorum": info.quorum,
            "submissions_count": info.submissions, "min_submissions": info.min_submissions,
            "mode": info.mode.name.lower().replace("_", "-"),
            "reveal_deadline": iso(info.reveal_deadline),
            "opened_block": info.opened_block, "timeline": timeline,
            "submissions": submissions, "report": None, "report_error": None,
            "defense": None, "accuracy": None, "flagged_bitmap_count": None,
            "downloads": {"base": {"hash": hex32(info.model_hash),
                                   "cid": opened.args["modelCid"]}},
        }
        if finalized is not None:
            out["flagged_bitmap_count"] = sum(bin(int(w)).count("1")
                                              for w in finalized.args["flaggedBitmap"])
            out["downloads"]["result"] = {"hash": hex32(info.result_hash),
                                          "cid": finalized.args["resultCid"]}
            out["downloads"]["report"] = {"hash": hex32(info.report_hash),
                                          "cid": finalized.args["reportCid"]}
            self._add_report(out, finalized, info)
        end = finalized or (events.get("RoundAbandoned") or [None])[-1]
        complete = out["report_error"] is None
        if info.status in FINAL and end is not None and end.block_number <= confirmed \
                and complete:
            out["final_block"] = end.block_number
            with self._lock:
                self._final_rounds[round_id] = out
        return out, events

    def _add_report(self, out: dict[str, Any], finalized: ChainEvent, info: Any) -> None:
        """Fetch the round's report (hash-checked) and merge each member's decision."""
        if self.store is None:
            out["report_error"] = "no IPFS API given"
            return
        try:
            report = decode_report(self.store.get(finalized.args["reportCid"],
                                                  expected_hash=info.report_hash))
        except StorageError as exc:
            out["report_error"] = f"the report cannot be fetched: {exc}"
            return
        clients = {c["client_id"]: c for c in (report.get("defense") or {}).get("clients", [])}
        by_member = {m["address"]: m for m in report.get("members", [])}
        for sub in out["submissions"]:
            entry = by_member.get(sub["member"], {})
            client = clients.get(sub["member"], {})
            sub.update(status=entry.get("status", "missing from the report"),
                       reason=entry.get("reason") or client.get("reason") or "",
                       coefficient=client.get("coefficient"),
                       scores=client.get("scores") or {})
        defense = report.get("defense") or {}
        out["report"] = {"format": report.get("format"), "task": report.get("task"),
                         "execution": report.get("execution"),
                         "validation": report.get("validation"),
                         "defense_state": report.get("defense_state")}
        out["defense"] = {"method": defense.get("method", "none"),
                          "params": defense.get("params", {}),
                          "aggregate_sha256": defense.get("aggregate_sha256")}
        evaluation = report.get("evaluation") or {}
        out["accuracy"] = evaluation.get("accuracy")
        out["score_name"] = next((k for k in PRIMARY_SCORES
                                  if any(k in s.get("scores", {}) for s in out["submissions"])),
                                 None)

    def _attestations(self, round_id: int, final: dict[str, Any],
                      events: dict[str, list[ChainEvent]] | None, head: int, confirmed: int
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The round's attestations and its rejection (timeline entries), read every time:
        they can still come after the round is final. A cached round's are scanned from its
        finalization block on, through a log cache of their own."""
        if events is None and "final_block" not in final:
            events = round_events(self.c, round_id)
        if events is not None:
            found = [e for name in ATTESTATION_EVENTS for e in events.get(name, [])]
        else:
            logs = self._late.get(round_id)
            if logs is None:
                topic = "0x" + round_id.to_bytes(32, "big").hex()
                with self._lock:
                    logs = self._late.setdefault(round_id, ConfirmedLogs(
                        self.c, [[self._topics[name] for name in ATTESTATION_EVENTS
                                  if name in self._topics], topic],
                        final["final_block"]))
            found = [e for e in logs.events(head, confirmed)
                     if e.args.get("roundId") == round_id]
        members = self.members()
        attested, rejected = [], []
        for event in sorted(found, key=lambda e: (e.block_number, e.log_index)):
            if event.name == "RoundRejected":
                rejected.append(self._event(event, confirmed))
                continue
            member = event.args["member"]
            # `pass` is None for an inconclusive audit: it counts neither way
            passed = bool(event.args["pass"]) if "pass" in event.args else None
            attested.append({**self._event(event, confirmed), "member": member,
                             "label": members.get(member, {}).get("label", ""),
                             "pass": passed, "verdict": {True: "PASS", False: "FAIL",
                                                         None: "INCONCLUSIVE"}[passed],
                             "audit_hash": hex32(event.args["auditHash"]),
                             "audit_cid": event.args["auditCid"]})
        return attested, rejected

    def member(self, address: str, page: int = 1, per_page: int = 20) -> dict[str, Any]:
        """A member's record and its history across rounds, newest first (paged).

        Raises KeyError for an address that was never admitted.
        """
        members = self.members()
        found = next((m for a, m in members.items() if a.lower() == address.lower()), None)
        if found is None:
            raise KeyError(address)
        current = self.c.current_round()
        paged = _paged("history", list(range(current, 0, -1)), page, per_page)
        history = []
        for r in paged["history"]:
            full = self.round(r)
            sub = next((s for s in full["submissions"] if s["member"] == found["address"]),
                       None)
            history.append({
                "round": r, "round_status": full["status"], "submitted": sub is not None,
                "status": sub.get("status") if sub else None,
                "reason": sub.get("reason") if sub else None,
                "coefficient": sub.get("coefficient") if sub else None,
                "score": (sub.get("scores") or {}).get(full.get("score_name") or "")
                if sub else None,
                "score_name": full.get("score_name"),
                "hash": sub["hash"] if sub else None, "cid": sub["cid"] if sub else None,
                "tx": sub["tx"] if sub else None, "tx_url": sub["tx_url"] if sub else None,
                "attested": next(({"pass": a["pass"], "verdict": a["verdict"], "tx": a["tx"]}
                                  for a in full["attestations"]["events"]
                                  if a["member"] == found["address"]), None),
            })
        _, active, _, _ = self.c.member_info(found["address"])
        return {**found, "active": bool(active), **paged, "history": history}

    def download(self, round_id: int, what: str) -> tuple[bytes, str]:
        """The bytes of a round's base model, result model or report, checked against the hash
        on chain, and a file name for them. KeyError when the round has no such object."""
        if what not in DOWNLOADS:
            raise KeyError(what)
        ref = self.round(round_id)["downloads"].get(what)
        if ref is None:
            raise KeyError(what)
        if self.store is None:
            raise StorageError("no IPFS API given")
        blob = self.store.get(ref["cid"], expected_hash=bytes.fromhex(ref["hash"][2:]))
        suffix = "json" if what == "report" else "safetensors"
        return blob, f"round{round_id}-{what}.{suffix}"

    def audit(self, round_id: int, run: Callable[..., Any] | None = None) -> dict[str, Any]:
        """The same audit as `fleml-node audit --round N`, its verdict as JSON.

        One at a time: raises `AuditBusy` while another runs.
        """
        if self.store is None:
            raise StorageError("the audit needs an IPFS API")
        if not self.audit_lock.acquire(blocking=False):
            raise AuditBusy("another audit is running; try again when it is done")
        try:
            if run is None:
                from fleml_node.audit import audit_round as run
            return run(self.c, self.store, round_id).to_dict()
        finally:
            self.audit_lock.release()


class AuditBusy(RuntimeError):
    """An audit was asked for while another one runs."""


def _policy_dict(policy: Any) -> dict[str, Any]:
    return {"mode": policy.mode.name.lower().replace("_", "-"),
            "min_round_seconds": policy.min_round_seconds,
            "max_round_seconds": policy.max_round_seconds,
            "min_submissions": policy.min_submissions,
            "min_submissions_bps": policy.min_submissions_bps,
            "reveal_seconds": policy.reveal_seconds, "grace_seconds": policy.grace_seconds,
            "attestations_required": policy.attestations_required,
            "attestation_window_seconds": policy.attestation_window_seconds}


def _paged(key: str, items: list[Any], page: int, per_page: int) -> dict[str, Any]:
    pages = max(1, -(-len(items) // per_page))
    page = min(max(1, page), pages)
    start = (page - 1) * per_page
    return {key: items[start:start + per_page], "page": page, "pages": pages,
            "per_page": per_page, "total": len(items)}
