"""Bindings to the FlemlConsortium contract through web3.py, with the node's own key.

Transactions are built, signed locally with the node's key and sent raw, so the chain client
never holds the key. The key comes from an environment variable or an encrypted keystore file
and is never logged or printed. Every mined transaction's hash is logged at INFO and is in the
receipt each write returns (`tx_hash(receipt)` gives it as 0x hex). Reverts are decoded from
the contract's custom errors into `ChainError` messages such as
``AlreadySubmitted(roundId=3, member=0xabc...)``.
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from eth_utils.abi import abi_to_signature, function_signature_to_4byte_selector
from web3 import Web3
from web3.exceptions import (
    BadFunctionCallOutput,
    ContractCustomError,
    ContractLogicError,
    TimeExhausted,
    Web3Exception,
    Web3RPCError,
)
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from fleml_node.chain.deployment import Deployment
from fleml_node.chain.profile import (
    ChainProfile,
    detect,
    fee_fields,
    install_poa_middleware,
    is_poa,
)

log = logging.getLogger(__name__)


def _validate_each_abi_once() -> None:
    """Make web3 validate an ABI once rather than on every call it encodes.

    web3 7.16 checks the whole ABI (every function's selector: a keccak each, about a hundred
    for the consortium's) before it encodes any call or transaction; that was a fifth of a
    member's Python time per round. An ABI object that passed is remembered (by identity, with
    a reference, so the id cannot be reused); one that fails is checked again every time.
    Deployment ABIs are loaded once and never modified.
    """
    import web3.utils.abi as web3_abi

    checked: dict[int, Any] = {}
    validate = web3_abi.validate_abi
    if getattr(validate, "fleml_once", False):
        return

    def validate_once(abi: Any) -> None:
        if checked.get(id(abi)) is abi:
            return
        validate(abi)
        checked[id(abi)] = abi

    validate_once.fleml_once = True  # type: ignore[attr-defined]
    web3_abi.validate_abi = validate_once


_validate_each_abi_once()

PROTOCOL_VERSION = 2
"""The contract protocol version these bindings speak (`FlemlConsortium.version()`)."""
PRIVATE_KEY_ENV = "FLEML_PRIVATE_KEY"
KEYSTORE_PASSWORD_ENV = "FLEML_KEYSTORE_PASSWORD"


class ChainError(Exception):
    """A chain call failed: unreachable node, wrong chain, or a decoded contract revert."""


class ContractReverted(ChainError):
    """The contract refused the call (a decoded custom error) or the transaction failed on
    chain: sending it again unchanged fails again, unlike an unreachable or slow node."""


class RoundStatus(enum.IntEnum):
    """Mirror of `IFlemlRounds.RoundStatus`."""

    NONE = 0
    OPEN = 1
    CLOSED = 2
    FINALIZED = 3  # a result; the next round builds on it once it is accepted (`is_accepted`)
    ABANDONED = 4
    REJECTED = 5  # finalized, then failed by k attesters and rejected: never built on


class SubmissionMode(enum.IntEnum):
    """A policy's and a round's `mode`: how members hand in their updates."""

    PLAIN = 0  # submitUpdate(round, hash, cid) until the deadline
    COMMIT_REVEAL = 1  # commitUpdate until the deadline, revealUpdate until the reveal deadline


class CommitmentStatus(enum.IntEnum):
    """Mirror of `IFlemlRounds.CommitmentStatus` (what `verifyCommitment` returns)."""

    NOT_SUBMITTED = 0  # the member did not submit (reveal) in the round
    MATCHES = 1  # it submitted exactly the hash asked about
    DIFFERS = 2  # it submitted another hash
    SUPERSEDED = 3  # it submitted to a later round since: read the round's UpdateSubmitted events


@dataclass(frozen=True)
class RoundInfo:
    """A round's on-chain record (`IFlemlRounds.Round`).

    `opened_block` is the block that opened the round, where its events start; 0 for a round
    that does not exist, and for every round of a contract deployed before the field existed
    (its deployment record's ABI has no `openedBlock`). The fields after it are protocol
    version 2's and read 0 (plain mode, no attestations) from a contract that lacks them.
    `attestation_deadline` is the end of the attestation window, set at finalization when
    `attestations_required` is non-zero.
    """

    round_id: int
    model_hash: bytes
    result_hash: bytes
    report_hash: bytes
    deadline: int
    quorum: int
    submissions: int
    status: RoundStatus
    opened_block: int = 0
    min_submissions: int = 0
    mode: SubmissionMode = SubmissionMode.PLAIN
    reveal_deadline: int = 0
    commits: int = 0
    grace_seconds: int = 0
    attestations_required: int = 0
    passes: int = 0
    fails: int = 0
    attestation_deadline: int = 0
    attestation_window: int = 0

    @property
    def submission_end(self) -> int:
        """The last second at which updates count: the reveal deadline, else the deadline."""
        return self.reveal_deadline if self.mode is SubmissionMode.COMMIT_REVEAL else self.deadline

    @property
    def abandonable_after(self) -> int:
        """After this time anyone may abandon the round if it is still open or closed."""
        return self.submission_end + self.grace_seconds


@dataclass(frozen=True)
class Policy:
    """The consortium's round policy (`IFlemlPolicy.Policy`), fields in the struct's order.

    Exactly one of `min_submissions` (absolute) and `min_submissions_bps` (a fraction of the
    active members in basis points, rounded up) is non-zero; `reveal_seconds` is non-zero
    exactly in commit-reveal mode. `attestations_required` (k) members' passing attestations
    accept a finalized result before the next round may build on it, or the end of
    `attestation_window_seconds` after finalization with fewer than k failing ones; k failing
    ones let it be rejected. The defaults are the devnet's: plain mode, one submission, rounds
    of 1 s to 7 days, 60 s of grace, attestations off (k = 0, window 0).
    """

    min_round_seconds: int = 1
    max_round_seconds: int = 7 * 24 * 3600
    min_submissions: int = 1
    min_submissions_bps: int = 0
    mode: SubmissionMode = SubmissionMode.PLAIN
    reveal_seconds: int = 0
    grace_seconds: int = 60
    attestations_required: int = 0
    attestation_window_seconds: int = 0

    def as_tuple(self) -> tuple[int, ...]:
        """The ABI tuple a contract call takes."""
        return (self.min_round_seconds, self.max_round_seconds, self.min_submissions,
                self.min_submissions_bps, int(self.mode), self.reveal_seconds,
                self.grace_seconds, self.attestations_required, self.attestation_window_seconds)

    @classmethod
    def from_tuple(cls, fields: Any) -> Policy:
        """The policy a contract call returned (a tuple in the struct's order), or an event
        carried (a mapping of the struct's field names, in order). A policy of a contract
        without attestations (7 fields) reads as attestations off."""
        values = [int(v) for v in (fields.values() if isinstance(fields, Mapping) else fields)]
        values += [0] * (9 - len(values))
        return cls(values[0], values[1], values[2], values[3], SubmissionMode(values[4]),
                   values[5], values[6], values[7], values[8])

    def minimum_for(self, active_members: int) -> int:
        """The minimum submissions of a round opened under this policy with `active_members`."""
        if self.min_submissions:
            return self.min_submissions
        return -(-active_members * self.min_submissions_bps // 10_000)


@dataclass(frozen=True)
class PendingPolicy:
    """A scheduled policy change: the first round id and time it may apply to."""

    policy: Policy
    effective_from_round: int
    effective_from_time: int


def commitment_of(member: str, round_id: int, update_hash: bytes, salt: bytes) -> bytes:
    """A commit-reveal commitment, as the contract's `commitmentOf` computes it.

    ``keccak256(abi.encode(member, roundId, updateHash, salt))``: bound to the member, so a
    copied commitment does not open for anyone else.

    Parameters
    ----------
    member
        The committing member's address.
    round_id
        The round.
    update_hash
        The update's 32-byte content hash.
    salt
        32 secret random bytes (`new_salt`), kept until the reveal.
    """
    return keccak(abi_encode(["address", "uint256", "bytes32", "bytes32"],
                             [to_checksum_address(member), round_id, update_hash, salt]))


def new_salt() -> bytes:
    """32 random bytes for a commitment; keep them until the reveal."""
    return secrets.token_bytes(32)


def load_account(keystore: str | os.PathLike[str] | None = None) -> LocalAccount:
    """The node's signing account.

    Parameters
    ----------
    keystore
        An encrypted JSON keystore (web3 secret storage). Its password comes from
        $FLEML_KEYSTORE_PASSWORD, or is asked for on the terminal.
        Without it, the hex private key in $FLEML_PRIVATE_KEY is used.

    Raises
    ------
    ChainError
        If no key is configured or the keystore cannot be decrypted.
    """
    if keystore:
        return _decrypt_keystore(Path(keystore))
    key = os.environ.get(PRIVATE_KEY_ENV)
    if not key:
        raise ChainError(
            f"no signing key: set {PRIVATE_KEY_ENV} to the node's private key or pass --keystore"
        )
    try:
        return Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise ChainError(f"{PRIVATE_KEY_ENV} is not a valid private key") from exc


def _decrypt_keystore(path: Path) -> LocalAccount:
    try:
        encrypted = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ChainError(f"cannot read keystore {path}: {exc}") from None
    not_keystore = (f"{path} is not an encrypted keystore (web3 secret storage JSON, as "
                    f"`fleml-node account` writes)")
    crypto = encrypted.get("crypto", encrypted.get("Crypto")) if isinstance(encrypted,
                                                                           dict) else None
    if not isinstance(crypto, dict) or "mac" not in crypto:
        raise ChainError(not_keystore)
    password = os.environ.get(KEYSTORE_PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"password for {path}: ")
    try:
        return Account.from_key(Account.decrypt(encrypted, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise ChainError(f"cannot decrypt keystore {path}: wrong password?") from None
        raise ChainError(f"{not_keystore}: {exc}") from None
    except (KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        # eth-keyfile reads the fields it needs without checking them first
        raise ChainError(f"{not_keystore}: bad or missing field {exc}") from None


def tx_hash(receipt: Mapping[str, Any]) -> str:
    """The hash of the transaction behind `receipt` (what every write returns), as 0x hex."""
    return "0x" + bytes(receipt["transactionHash"]).hex()


@contextlib.contextmanager
def recorded_requests(w3: Web3) -> Iterator[list[tuple[str, Any]]]:
    """Record every JSON-RPC request `w3` sends inside the block, as ``(method, params)``.

    For measuring what a read costs, e.g. how many blocks an audit's ``eth_getLogs`` scan.
    """
    seen: list[tuple[str, Any]] = []

    class Recorder(Web3Middleware):
        def wrap_make_request(self, make_request: Callable[..., Any]) -> Callable[..., Any]:
            def record(method: str, params: Any) -> Any:
                seen.append((str(method), params))
                return make_request(method, params)
            return record

    name = f"fleml-recorder-{id(seen)}"
    w3.middleware_onion.add(Recorder, name)
    try:
        yield seen
    finally:
        w3.middleware_onion.remove(name)


class ChainIdOnce(Web3Middleware):
    """Answer ``eth_chainId`` from the first answer: an endpoint's chain id does not change
    (a node that restarts on another chain fails `Consortium`'s checks and every signature),
    and web3's validation asks for it before every call and transaction, a third of a node's
    requests. The answer is kept on the `Web3` object (web3 builds middleware per request)."""

    def wrap_make_request(self, make_request: Callable[..., Any]) -> Callable[..., Any]:
        def request(method: str, params: Any) -> Any:
            if method != "eth_chainId":
                return make_request(method, params)
            known = getattr(self._w3, "_fleml_chain_id", None)
            if known is None:
                answer = make_request(method, params)
                if "result" not in answer:
                    return answer
                known = answer["result"]
                setattr(self._w3, "_fleml_chain_id", known)  # noqa: B010
            return {"jsonrpc": "2.0", "id": 0, "result": known}
        return request


BROKEN_NODE_ERRORS = ("does not contain state root",)
"""Substrings of JSON-RPC errors that say the node itself is broken, not the request:
@ethereumjs/client 0.9.0 answers every state read so once its synchronizer stopped after a
failed block execution (docs/poa-ethereumjs.md, section 6). `FailoverHTTPProvider` moves on."""


class FailoverHTTPProvider(Web3.HTTPProvider):
    """JSON-RPC over HTTP to one of several nodes of the same chain, moving on when one fails.

    A consortium runs several nodes; a member that can reach more than one lists them all
    (``--rpc URL1,URL2``). Requests go to the current node; one that cannot be reached, times
    out, answers with an HTTP error, or answers with an error in `BROKEN_NODE_ERRORS` is sent
    to the next node, and the provider stays there. Each node's chain id is checked before the
    provider moves to it, so a misconfigured list cannot switch chains under a node. Nodes may
    be at different heights: the event follower treats a lower head as a rollback and handles
    events again, and a transaction the old node never relayed is resent by `send_signed`.
    """

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        if not urls:
            raise ValueError("FailoverHTTPProvider needs at least one URL")
        self.urls = list(urls)
        self._index = 0
        self._chain_id: str | None = None
        self._switch_lock = threading.Lock()
        super().__init__(self.urls[0], **kwargs)

    def _broken(self, response: Any) -> bool:
        if not isinstance(response, dict):
            return False
        message = str((response.get("error") or {}).get("message", ""))
        return any(marker in message for marker in BROKEN_NODE_ERRORS)

    def _move_on(self, failed: str, reason: object) -> bool:
        """Switch to the next node of the same chain; False when none answers."""
        with self._switch_lock:
            if self.endpoint_uri != failed:
                return True  # another thread already moved on
            for step in range(1, len(self.urls)):
                index = (self._index + step) % len(self.urls)
                url = self.urls[index]
                try:
                    answer = self._request_session_manager.json_make_post_request(
                        url, self.encode_rpc_request("eth_chainId", []),
                        **self.get_request_kwargs())
                except requests.RequestException:
                    continue
                chain_id = answer.get("result")
                if self._chain_id is not None and chain_id != self._chain_id:
                    raise ChainError(f"{url} serves chain {chain_id}, not {self._chain_id}: "
                                     "every --rpc URL must be a node of the same chain")
                log.warning("chain node %s failed (%s); using %s", failed, reason, url)
                self._index, self.endpoint_uri = index, url
                return True
            return False

    def _with_failover(self, send: Callable[[], Any]) -> Any:
        for _ in range(len(self.urls)):
            current = self.endpoint_uri
            try:
                response = send()
            except requests.RequestException as exc:
                if len(self.urls) == 1 or not self._move_on(current, exc):
                    raise
                continue
            answers = response if isinstance(response, list) else [response]  # a batch's
            broken = next((a for a in answers if self._broken(a)), None)
            if broken is not None and len(self.urls) > 1 \
                    and self._move_on(current, broken["error"].get("message")):
                continue
            return response
        return send()  # every node failed once: the last answer or error stands

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        response = self._with_failover(lambda: super(FailoverHTTPProvider, self)
                                       .make_request(method, params))
        if method == "eth_chainId" and self._chain_id is None and "result" in response:
            self._chain_id = response["result"]
        return response

    def make_batch_request(self, batch_requests: list[tuple[RPCEndpoint, Any]]) -> Any:
        return self._with_failover(lambda: super(FailoverHTTPProvider, self)
                                   .make_batch_request(batch_requests))


def connect(rpc_url: str, timeout: float = 30.0, poa: bool | None = None) -> Web3:
    """A connected Web3 over HTTP, or a `ChainError` naming the URL.

    web3's own silent retries are off: a node that cannot reach its RPC should say so and back
    off on its own schedule (:mod:`fleml_node.retry`), not block for minutes inside one call.
    On a proof-of-authority chain (``poa`` True, or None and the genesis block says so) web3's
    PoA middleware is installed, without which it cannot read a single block there.
    """
    # One session, its proxies read from the environment once: requests otherwise scans the
    # whole environment (and ~/.netrc) again on every call, half a millisecond a request here.
    # Credentials go in the URL (https://user:pass@host), not in ~/.netrc.
    urls = [url.strip() for url in rpc_url.split(",") if url.strip()]
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(urls[0] if urls else rpc_url)
    w3 = Web3(FailoverHTTPProvider(urls or [rpc_url], request_kwargs={"timeout": timeout},
                                   session=session, exception_retry_configuration=None))
    w3.middleware_onion.add(ChainIdOnce, "fleml_chain_id_once")
    try:
        w3.eth.chain_id  # noqa: B018 - the call is the connectivity check
        if poa or (poa is None and is_poa(w3)):
            install_poa_middleware(w3)
    except Exception as exc:  # requests and web3 raise many types for an unreachable node
        raise ChainError(f"cannot reach the chain at {rpc_url}: {exc}") from exc
    return w3


REBROADCAST_SECONDS = 15.0
"""How long a sent transaction may stay unmined before it is sent again."""


def send_signed(w3: Web3, account: LocalAccount, tx: dict[str, Any], fee_mode: str,
                timeout: float, label: str) -> Any:
    """Fill the fees and nonce of `tx`, sign it with `account`, send it and wait for it.

    A transaction still unmined after `REBROADCAST_SECONDS` is sent again, the same signed
    bytes (same hash and nonce, so it cannot be mined twice): a PoA sealer whose block loses a
    fork may drop the block's transactions from its pool for good (@ethereumjs/client 0.9.0
    does), and a pool may evict under pressure; resending puts it back.

    Returns the receipt whatever its outcome (see `receipt_succeeded`); raises `ChainError` if
    it was not sent or not mined within `timeout` seconds.
    """
    if not {"gasPrice", "maxFeePerGas"} & set(tx):
        tx = {**tx, **fee_fields(w3, fee_mode)}
    if "nonce" not in tx:  # not setdefault: that would read the nonce even when it is set
        tx = {**tx, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    signed = account.sign_transaction(tx)
    sent = "0x" + bytes(signed.hash).hex()
    try:
        w3.eth.send_raw_transaction(signed.raw_transaction)
    except (Web3RPCError, requests.RequestException) as exc:
        raise ChainError(f"{label} was not sent: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        wait = max(0.1, min(REBROADCAST_SECONDS, deadline - time.monotonic()))
        try:
            return w3.eth.wait_for_transaction_receipt(signed.hash, timeout=wait)
        except TimeExhausted as exc:
            if time.monotonic() >= deadline:
                raise ChainError(f"{label} transaction {sent} was not mined: {exc}") from exc
        except (Web3RPCError, requests.RequestException) as exc:
            raise ChainError(f"{label} transaction {sent} was not mined: {exc}") from exc
        log.info("%s transaction %s not mined after %.0f s; sending it again", label, sent,
                 REBROADCAST_SECONDS)
        with contextlib.suppress(Web3RPCError, requests.RequestException):
            # "already known" or "nonce too low" (it was mined meanwhile) are both fine
            w3.eth.send_raw_transaction(signed.raw_transaction)


def receipt_succeeded(w3: Web3, receipt: Mapping[str, Any], contract: str | None) -> bool:
    """Whether a mined transaction succeeded.

    The receipt's ``status`` when it has one. Some clients (@ethereumjs/client 0.9.0) leave it
    out; then a deployment succeeded if the new address holds code, and a call to `contract`
    succeeded if it left a log of that contract: every state-changing function of the
    consortium emits an event, and a reverted call leaves no log.
    """
    if "status" in receipt and receipt["status"] is not None:
        return int(receipt["status"]) == 1
    created = receipt.get("contractAddress")
    if created:
        return bool(w3.eth.get_code(created))
    emitter = (contract or "").lower()
    return any(str(entry["address"]).lower() == emitter for entry in receipt.get("logs", []))


class Consortium:
    """The FlemlConsortium contract, seen by one account.

    Parameters
    ----------
    w3
        A connected Web3.
    deployment
        The deployment record; its chain id must match the connected chain.
    account
        The signing account, or None for read-only use (audits, status).
    receipt_timeout
        Seconds to wait for a transaction to be mined.
    profile
        How to talk to the chain; default: the deployment record's, with anything it leaves
        open detected from the chain (:mod:`fleml_node.chain.profile`).
    """

    def __init__(self, w3: Web3, deployment: Deployment, account: LocalAccount | None = None,
                 receipt_timeout: float = 120.0, profile: ChainProfile | None = None) -> None:
        chain_id = w3.eth.chain_id
        if chain_id != deployment.chain_id:
            raise ChainError(
                f"deployment record {deployment.path} is for chain {deployment.chain_id}, "
                f"but the RPC endpoint serves chain {chain_id}"
            )
        if not w3.eth.get_code(deployment.address):
            raise ChainError(f"no contract at {deployment.address} on chain {chain_id}: "
                             f"is {deployment.path} from an older chain?")
        self.w3 = w3
        self.deployment = deployment
        self.account = account
        self.receipt_timeout = receipt_timeout
        self.profile = detect(w3, profile or deployment.profile)
        self.contract = w3.eth.contract(address=deployment.address, abi=deployment.abi)
        self._errors = {
            function_signature_to_4byte_selector(abi_to_signature(item)): item
            for item in deployment.abi if item.get("type") == "error"
        }
        get_round = next(item for item in deployment.abi
                         if item.get("type") == "function" and item.get("name") == "getRound")
        self._round_fields = [c["name"] for c in get_round["outputs"][0]["components"]]

    # -- reads ---------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self.contract.address

    def current_round(self) -> int:
        return self.contract.functions.currentRound().call()

    def get_round(self, round_id: int) -> RoundInfo:
        """A round's record, read by field name from the deployment's ABI: fields a contract
        lacks (an older deployment) read as 0."""
        return self._round_info(round_id, self.contract.functions.getRound(round_id).call())

    def member_round_view(self, member: str, round_id: int) -> tuple[int, RoundInfo, int]:
        """What a member reads before its part of a round, in one JSON-RPC batch: the round of
        its latest commitment, the round's record and :meth:`now`. One call each where the
        node refuses batches."""
        try:
            with self.w3.batch_requests() as batch:
                batch.add(self.contract.functions.latestCommitment(member))
                batch.add(self.contract.functions.getRound(round_id))
                batch.add(self.w3.eth.get_block("latest"))
                latest, record, block = batch.execute()
            info = self._round_info(round_id, record)
            now = max(int(block["timestamp"]), int(time.time()))
            return int(latest[0]), info, now
        except (Web3Exception, ValueError, TypeError, KeyError, IndexError) as exc:
            log.debug("batched round view refused (%s); one call each", exc)
        return self.latest_commitment(member)[0], self.get_round(round_id), self.now()

    def _round_info(self, round_id: int, record: Any) -> RoundInfo:
        fields = dict(zip(self._round_fields, record, strict=True))

        def number(name: str) -> int:
            return int(fields.get(name, 0))

        return RoundInfo(
            round_id, bytes(fields["modelHash"]), bytes(fields["resultHash"]),
            bytes(fields["reportHash"]), number("deadline"), number("quorum"),
            number("submissions"), RoundStatus(number("status")), number("openedBlock"),
            number("minSubmissions"), SubmissionMode(number("mode")), number("revealDeadline"),
            number("commits"), number("graceSeconds"), number("attestationsRequired"),
            number("passes"), number("fails"), number("attestationDeadline"),
            number("attestationWindow"))

    def version(self) -> int:
        """The contract's protocol version (2 for this package)."""
        return int(self.contract.functions.version().call())

    def check_version(self) -> None:
        """Raise `ChainError` unless the contract speaks `PROTOCOL_VERSION`."""
        try:
            found = self.version()
        except (ContractLogicError, BadFunctionCallOutput, ValueError) as exc:
            raise ChainError(f"the contract at {self.address} has no version(): a protocol "
                             f"older than {PROTOCOL_VERSION}? ({exc})") from None
        if found != PROTOCOL_VERSION:
            raise ChainError(f"the contract at {self.address} speaks protocol {found}, this "
                             f"node protocol {PROTOCOL_VERSION}")

    def last_finalized_round(self) -> int:
        """The latest round that was finalized (0 before the first), even if it is not
        accepted yet or was rejected since: build on `last_accepted_round` instead."""
        return int(self.contract.functions.lastFinalizedRound().call())

    def last_accepted_round(self) -> int:
        """The latest accepted round (0 if none): the one whose result the next round must
        train on (its `RoundFinalized` event carries the model's CID)."""
        return int(self.contract.functions.lastAcceptedRound().call())

    def is_accepted(self, round_id: int) -> bool:
        """Whether the round is finalized and accepted (attestations off, k passing ones, or
        its attestation window over with fewer than k failing ones)."""
        return bool(self.contract.functions.isAccepted(round_id).call())

    def attestations(self, round_id: int) -> tuple[int, int]:
        """The round's (passing, failing) attestations."""
        passes, fails = self.contract.functions.attestations(round_id).call()
        return int(passes), int(fails)

    def has_attested(self, round_id: int, member: str) -> bool:
        """Whether `member` attested the round."""
        return bool(self.contract.functions.hasAttested(round_id, member).call())

    def validation_set(self) -> tuple[bytes, str]:
        """The validation set (sha256, CID) the next round would open with; 32 zero bytes
        and "" when none is set."""
        digest, cid = self.contract.functions.validationSet().call()
        return bytes(digest), str(cid)

    def pending_validation_set(self) -> tuple[bytes, str, int, int] | None:
        """A scheduled validation set not yet in force: (sha256, CID, first round, earliest
        time), or None."""
        digest, cid, from_round, from_time = self.contract.functions.pendingValidationSet().call()
        if not from_round:
            return None
        return bytes(digest), str(cid), int(from_round), int(from_time)

    def round_validation_hash(self, round_id: int) -> bytes:
        """The validation set hash the round opened with (32 zero bytes: none)."""
        return bytes(self.contract.functions.roundValidationHash(round_id).call())

    def base_model_hash(self) -> bytes:
        """The model hash the next round must open on: the last accepted result (32 zero
        bytes: any, before round 1)."""
        return bytes(self.contract.functions.baseModelHash().call())

    def abandonable_after(self, round_id: int) -> int:
        """After this time anyone may abandon the round while it is open or closed."""
        return int(self.contract.functions.abandonableAfter(round_id).call())

    def policy(self) -> Policy:
        """The policy the next round to open would open under (all zeros before one is set)."""
        return Policy.from_tuple(self.contract.functions.policy().call())

    def pending_policy(self) -> PendingPolicy | None:
        """The scheduled policy change not yet in force for the next round, if any."""
        pending, from_round, from_time = self.contract.functions.pendingPolicy().call()
        if not from_round:
            return None
        return PendingPolicy(Policy.from_tuple(pending), int(from_round), int(from_time))

    def latest_commit(self, member: str) -> tuple[int, bytes]:
        """The latest commit-reveal round `member` committed in and its commitment."""
        round_id, value = self.contract.functions.latestCommit(member).call()
        return int(round_id), bytes(value)

    def verify_commitment(self, round_id: int, member: str, update_hash: bytes
                          ) -> CommitmentStatus:
        """What storage says about `member`'s commitment to `update_hash` in `round_id`."""
        return CommitmentStatus(
            self.contract.functions.verifyCommitment(round_id, member, update_hash).call())

    @staticmethod
    def commitment_of(member: str, round_id: int, update_hash: bytes, salt: bytes) -> bytes:
        """The commitment `member` makes for `update_hash` in `round_id`, computed locally."""
        return commitment_of(member, round_id, update_hash, salt)

    def aggregator(self) -> str:
        return self.contract.functions.aggregator().call()

    def is_member(self, address: str) -> bool:
        return self.contract.functions.isMember(address).call()

    def member_info(self, address: str) -> tuple[bool, bool, int, str]:
        known, active, index, label = self.contract.functions.memberInfo(address).call()
        return bool(known), bool(active), int(index), str(label)

    def member_indices(self, members: list[str]) -> dict[str, int]:
        """The permanent indices of `members` (known or not: an unknown one reads 0), in one
        JSON-RPC batch; one call each where the node refuses batches."""
        if not members:
            return {}
        calls = [self.contract.functions.memberInfo(m) for m in members]
        try:
            with self.w3.batch_requests() as batch:
                for call in calls:
                    batch.add(call)
                answers = batch.execute()
            if len(answers) != len(members):
                raise ValueError(f"{len(answers)} answers to {len(members)} calls")
            found = [int(a[2]) for a in answers]
        except (Web3Exception, ValueError, TypeError, KeyError, IndexError) as exc:
            log.debug("batched memberInfo refused (%s); one call each", exc)
            found = [self.member_info(m)[2] for m in members]
        return dict(zip(members, found, strict=True))

    def member_at(self, index: int) -> str:
        return self.contract.functions.memberAt(index).call()

    def member_slots(self) -> int:
        return self.contract.functions.memberSlots().call()

    def active_members(self) -> int:
        return self.contract.functions.activeMembers().call()

    def latest_commitment(self, member: str) -> tuple[int, bytes]:
        round_id, digest = self.contract.functions.latestCommitment(member).call()
        return int(round_id), bytes(digest)

    def verify_result(self, round_id: int, result_hash: bytes, report_hash: bytes) -> bool:
        return self.contract.functions.verifyResult(round_id, result_hash, report_hash).call()

    def is_flagged(self, round_id: int, member: str) -> bool:
        return self.contract.functions.isFlagged(round_id, member).call()

    def now(self) -> int:
        """The chain's notion of now: the latest block's time, or the wall clock if later.

        A local anvil mines only when a transaction arrives, so its latest block can be old;
        the next block will carry the wall-clock time, and that is what deadlines meet.
        """
        return max(int(self.w3.eth.get_block("latest")["timestamp"]), int(time.time()))

    # -- writes --------------------------------------------------------------------------
    def open_round(self, model_hash: bytes, model_cid: str, deadline: int, quorum: int) -> Any:
        return self._transact("openRound", model_hash, model_cid, deadline, quorum)

    def submit_update(self, round_id: int, update_hash: bytes, update_cid: str) -> Any:
        return self._transact("submitUpdate", round_id, update_hash, update_cid)

    def commit_update(self, round_id: int, commitment: bytes) -> Any:
        """Commit-reveal: commit to an update (see `commitment_of`) until the deadline."""
        return self._transact("commitUpdate", round_id, commitment)

    def reveal_update(self, round_id: int, update_hash: bytes, update_cid: str,
                      salt: bytes) -> Any:
        """Commit-reveal: reveal the committed update after the deadline; emits
        `UpdateSubmitted` like a plain submission."""
        return self._transact("revealUpdate", round_id, update_hash, update_cid, salt)

    def abandon_round(self, round_id: int) -> Any:
        """Abandon an open or closed round (operator: any time; anyone: see `abandonable_after`
        and `IFlemlRounds.abandonRound`)."""
        return self._transact("abandonRound", round_id)

    def set_initial_policy(self, policy: Policy) -> Any:
        """Operator: the first round's policy, with no delay (only before round 1)."""
        return self._transact("setInitialPolicy", policy.as_tuple())

    def schedule_policy(self, policy: Policy) -> Any:
        """Operator: a delayed policy change (see `pending_policy`)."""
        return self._transact("schedulePolicy", policy.as_tuple())

    def set_validation_set(self, validation_hash: bytes, validation_cid: str) -> Any:
        """Operator: the consortium's validation set (before round 1 at once, later scheduled
        like a policy change); 32 zero bytes and "" for none."""
        return self._transact("setValidationSet", validation_hash, validation_cid)

    def attest_round(self, round_id: int, passed: bool, audit_hash: bytes,
                     audit_cid: str) -> Any:
        """Member: attest a finalized round with the verdict of its audit (sha256 and CID of
        the verdict on IPFS); once per round."""
        return self._transact("attestRound", round_id, passed, audit_hash, audit_cid)

    def attest_inconclusive(self, round_id: int, audit_hash: bytes, audit_cid: str) -> Any:
        """Member: record that its audit of a finalized round was inconclusive (an object a
        check needs could not be fetched); takes its one attestation of the round and counts
        neither as a pass nor as a failure."""
        return self._transact("attestInconclusive", round_id, audit_hash, audit_cid)

    def reject_round(self, round_id: int) -> Any:
        """Reject the latest round once k members failed it (operator: any time; anyone once
        its attestation window is over and it is not accepted)."""
        return self._transact("rejectRound", round_id)

    def close_round(self, round_id: int) -> Any:
        return self._transact("closeRound", round_id)

    def finalize_round(self, round_id: int, result_hash: bytes, result_cid: str,
                       report_hash: bytes, report_cid: str, flagged_bitmap: list[int]) -> Any:
        return self._transact("finalizeRound", round_id, result_hash, result_cid, report_hash,
                              report_cid, flagged_bitmap)

    def set_aggregator(self, address: str) -> Any:
        return self._transact("setAggregator", address)

    def admit_member(self, address: str, label: str) -> Any:
        return self._transact("admitMember", address, label)

    def remove_member(self, address: str) -> Any:
        return self._transact("removeMember", address)

    def _transact(self, name: str, *args: Any) -> Any:
        """Estimate, sign locally, send and wait; returns the receipt or raises `ChainError`.

        The receipt is web3's (``gasUsed``, ``blockNumber``, ...); `tx_hash` gives its hash.
        """
        if self.account is None:
            raise ChainError(f"{name} needs a signing account; this binding is read-only")
        fn = getattr(self.contract.functions, name)(*args)
        sender = self.account.address
        try:
            # estimated on the pending block: an idle local chain's latest block can be older
            # than a deadline that the next block (carrying the wall-clock time) is past
            gas = fn.estimate_gas({"from": sender}, block_identifier="pending")
            tx = fn.build_transaction({
                "from": sender,
                "gas": int(gas * 1.2) + 10_000,
                "chainId": self.deployment.chain_id,
                **self._nonce_and_fees(sender),
            })
        except (ContractCustomError, ContractLogicError) as exc:
            raise ContractReverted(f"{name} reverted: {self.decode_error(exc)}") from None
        except Web3RPCError as exc:
            raise ChainError(f"{name} failed: {exc}") from None
        receipt = send_signed(self.w3, self.account, tx, self.profile.fee_mode,
                              self.receipt_timeout, name)
        sent = tx_hash(receipt)
        if not receipt_succeeded(self.w3, receipt, self.address):
            raise ContractReverted(f"{name} transaction {sent} failed on chain")
        # the public explorer's page of the transaction, when the record names one
        link = self.deployment.explorer.tx(sent) if self.deployment.explorer else None
        log.info("%s sent: %s (block %d, gas %d)%s", name, sent, receipt["blockNumber"],
                 receipt["gasUsed"], f" {link}" if link else "")
        return receipt

    def _nonce_and_fees(self, sender: str) -> dict[str, int]:
        """The nonce and fee fields of the next transaction, read in one JSON-RPC batch.

        EIP-1559 fees are filled as web3 fills them (tip from ``eth_maxPriorityFeePerGas``,
        fee cap = tip + 2 x the latest base fee); legacy ones from ``eth_gasPrice``. One call
        each where the node refuses batches.
        """
        legacy = self.profile.fee_mode == "legacy"
        try:
            with self.w3.batch_requests() as batch:
                batch.add(self.w3.eth.get_transaction_count(sender, "pending"))
                if legacy:
                    batch.add(self.w3.eth.gas_price)
                else:
                    batch.add(self.w3.eth.max_priority_fee)
                    batch.add(self.w3.eth.get_block("latest"))
                answers = batch.execute()
            if legacy:
                return {"nonce": int(answers[0]), "gasPrice": int(answers[1])}
            tip, block = int(answers[1]), answers[2]
            return {"nonce": int(answers[0]), "maxPriorityFeePerGas": tip,
                    "maxFeePerGas": tip + 2 * int(block["baseFeePerGas"])}
        except (Web3Exception, ValueError, TypeError, KeyError, IndexError) as exc:
            log.debug("batched nonce and fee reads refused (%s); one call each", exc)
        return {"nonce": self.w3.eth.get_transaction_count(sender, "pending"),
                **fee_fields(self.w3, self.profile.fee_mode)}

    def decode_error(self, exc: Exception) -> str:
        """Turn a revert into ``ErrorName(arg=value, ...)`` using the contract's ABI."""
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if not isinstance(data, str) or not data.startswith("0x") or len(data) < 10:
            return str(exc)
        raw = bytes.fromhex(data[2:])
        item = self._errors.get(raw[:4])
        if item is None:
            return f"unknown error {data}"
        types = [i["type"] for i in item["inputs"]]
        values = abi_decode(types, raw[4:])
        shown = ", ".join(f"{i['name']}={_show(v)}" for i, v in zip(item["inputs"], values,
                                                                      strict=True))
        return f"{item['name']}({shown})"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


BIND_RETRY_SECONDS = 60.0  # how long binding retries a chain read that failed


def bind_consortium(w3: Web3, deployment: Deployment, account: LocalAccount | None = None,
                    *, profile: ChainProfile | None = None,
                    retry_seconds: float = BIND_RETRY_SECONDS,
                    interval: float = 2.0) -> Consortium:
    """:class:`Consortium`, retrying for ``retry_seconds`` when a chain read fails.

    A chain node may fail a read for a moment: @ethereumjs/client answers "State trie does not
    contain state root" while it executes a block it has imported (after a restart, or just
    behind the node that sealed it), and an endpoint may be briefly unreachable. Those are
    retried; a wrong chain, a missing contract or one that speaks another protocol
    (:class:`ChainError`) is not.
    """
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            consortium = Consortium(w3, deployment, account, profile=profile)
            consortium.check_version()  # every tool speaks one protocol: refuse another
            return consortium
        except (Web3RPCError, requests.RequestException) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("binding to the consortium failed, retrying: %s", exc)
            time.sleep(interval)
