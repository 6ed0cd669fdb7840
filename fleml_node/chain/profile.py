"""Chain profiles: what a node must know about the chain it runs on, beyond its RPC URL.

Consortia run proof-of-authority networks (Clique, QBFT, IBFT), not anvil. Such chains differ
from a development chain in ways that break a node that assumes mainnet-like behaviour:

* **Proof of authority.** Clique keeps the sealers' addresses and signature in ``extraData``
  (32 + 20·n + 65 bytes); web3.py rejects any block whose extraData exceeds 32 bytes unless
  ``ExtraDataToPOAMiddleware`` is installed.
* **Fees.** Some clients have no ``eth_maxPriorityFeePerGas`` and refuse ``"pending"`` fee
  history, so web3's EIP-1559 defaults fail; a legacy ``gasPrice`` works on every chain.
* **EVM version.** A London-era chain has no PUSH0 (Shanghai) or MCOPY/TSTORE (Cancun), so a
  contract compiled for ``cancun`` fails there; the project ships one artifact per EVM version
  it supports (:data:`EVM_VERSIONS`) and deploys the one the target runs.
* **Receipts.** Some clients' receipts lack ``status``; success is then read from the logs
  (every state-changing function of the consortium emits an event; a reverted call leaves none).
* **Finality.** A sealer can reorganise the last blocks; nodes act on an event only after
  ``confirmations`` blocks on top of it.

A profile is resolved once per deployment and written into its record, so every node reads the
same answers; anything left ``None`` here is detected from the chain (:func:`detect`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.middleware import ExtraDataToPOAMiddleware

log = logging.getLogger(__name__)

EVM_VERSIONS = ("london", "cancun")
"""The EVM versions the project ships an artifact for, oldest first. A chain between two of
them (e.g. shanghai) runs the older one's artifact."""
FEE_MODES = ("eip1559", "legacy")
PROFILE_ENV = "FLEML_CHAIN_PROFILE"
POA_MIDDLEWARE = "fleml_poa"
_PLAIN_EXTRA_DATA = 32
"""Bytes of extraData a block may carry on a chain without proof of authority (the yellow
paper's limit, which web3.py enforces)."""

# Probes executed with eth_call as contract creation (no `to`): they succeed only if the chain's
# EVM knows the opcode. PUSH0 PUSH0 RETURN (Shanghai); PUSH0 x3 MCOPY STOP (Cancun).
_PROBE_SHANGHAI = "0x5f5ff3"
_PROBE_CANCUN = "0x5f5f5f5e00"


class ProfileError(ValueError):
    """A chain profile cannot be read or names something unsupported."""


@dataclass(frozen=True)
class ChainProfile:
    """How to talk to one chain.

    Attributes
    ----------
    name : str
        A label (``anvil``, ``hardhat``, ``clique``, or the file it came from).
    evm_version : str or None
        The EVM version contracts are compiled for: one of :data:`EVM_VERSIONS`. None: detect.
    fee_mode : str or None
        ``eip1559`` or ``legacy`` (``gasPrice``). None: detect.
    poa : bool or None
        Whether blocks carry proof-of-authority extraData. None: detect from the genesis block.
    confirmations : int
        Blocks a node waits on top of an event's block before acting on it.
    block_time : float
        The chain's block period in seconds (0: a block per transaction); informational, and
        used to size waits.
    """

    name: str = "custom"
    evm_version: str | None = None
    fee_mode: str | None = None
    poa: bool | None = None
    confirmations: int = 0
    block_time: float = 0.0

    def __post_init__(self) -> None:
        if self.evm_version is not None and self.evm_version not in EVM_VERSIONS:
            raise ProfileError(f"chain profile {self.name!r}: evm_version {self.evm_version!r} "
                               f"has no artifact; supported: {', '.join(EVM_VERSIONS)}")
        if self.fee_mode is not None and self.fee_mode not in FEE_MODES:
            raise ProfileError(f"chain profile {self.name!r}: fee_mode must be one of "
                               f"{', '.join(FEE_MODES)}, not {self.fee_mode!r}")
        if self.confirmations < 0 or self.block_time < 0:
            raise ProfileError(f"chain profile {self.name!r}: confirmations and block_time "
                               "must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready values (the deployment record's ``chain`` section)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], name: str | None = None) -> ChainProfile:
        """A profile from a mapping; unknown keys are an error, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ProfileError(f"chain profile {name or values.get('name')!r}: unknown "
                               f"field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if name is not None:
            values.setdefault("name", name)
        try:
            return cls(**values)
        except TypeError as err:
            raise ProfileError(f"chain profile {name!r}: {err}") from err

    @property
    def resolved(self) -> bool:
        """Whether nothing is left to detect."""
        return None not in (self.evm_version, self.fee_mode, self.poa)


BUILTIN_PROFILES = {
    "anvil": ChainProfile("anvil", "cancun", "eip1559", False, 0, 0.0),
    "hardhat": ChainProfile("hardhat", "cancun", "eip1559", False, 0, 0.0),
    "clique": ChainProfile("clique", "london", "legacy", True, 2, 2.0),
    "auto": ChainProfile("auto"),
}
"""Profiles by name. ``clique`` is the @ethereumjs/client Clique network of the PoA devnet
(London EVM, legacy gas, 2 s blocks); ``auto`` detects everything."""


def load_profile(spec: str | os.PathLike[str] | None = None) -> ChainProfile:
    """A profile by builtin name or JSON file; ``None`` reads ``$FLEML_CHAIN_PROFILE``, else
    ``auto``.

    Raises
    ------
    ProfileError
        If the name is unknown or the file is unreadable or invalid.
    """
    spec = spec if spec is not None else os.environ.get(PROFILE_ENV) or "auto"
    if str(spec) in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise ProfileError(f"chain profile {str(spec)!r} is neither a builtin "
                           f"({', '.join(BUILTIN_PROFILES)}) nor a JSON file")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ProfileError(f"cannot read chain profile {path}: {err}") from err
    if not isinstance(values, dict):
        raise ProfileError(f"chain profile {path} must be a JSON object")
    return ChainProfile.from_dict(values, name=path.stem)


def is_poa(w3: Web3) -> bool:
    """Whether the chain's genesis block carries proof-of-authority extraData.

    Read with a raw request, because web3's block formatter is what fails on such blocks.
    """
    block = w3.provider.make_request("eth_getBlockByNumber", ["0x0", False]).get("result") or {}
    extra = str(block.get("extraData") or "0x")
    return (len(extra) - 2) // 2 > _PLAIN_EXTRA_DATA


def install_poa_middleware(w3: Web3) -> None:
    """Let web3 read proof-of-authority blocks (idempotent)."""
    if POA_MIDDLEWARE not in {name for _, name in w3.middleware_onion.middleware}:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, name=POA_MIDDLEWARE, layer=0)


def detect_fee_mode(w3: Web3) -> str:
    """``eip1559`` when the chain has a base fee and answers ``eth_maxPriorityFeePerGas``."""
    if w3.eth.get_block("latest").get("baseFeePerGas") is None:
        return "legacy"
    try:
        w3.eth.max_priority_fee  # noqa: B018 - the call is the probe
    except (Web3RPCError, ValueError, NotImplementedError):
        return "legacy"
    return "eip1559"


def detect_evm_version(w3: Web3) -> str:
    """The newest of :data:`EVM_VERSIONS` whose opcodes the chain executes.

    Probes with ``eth_call`` (no transaction, no gas spent): MCOPY for Cancun; anything older
    runs the London artifact, which uses neither PUSH0 nor Cancun's opcodes.
    """
    return "cancun" if _executes(w3, _PROBE_CANCUN) else "london"


def _executes(w3: Web3, code: str) -> bool:
    try:
        w3.eth.call({"data": code})
    except (Web3RPCError, ValueError):
        return False
    return True


def detect(w3: Web3, profile: ChainProfile | None = None) -> ChainProfile:
    """`profile` with every field it leaves open filled in from the chain.

    Installs the PoA middleware on `w3` when the chain needs it.
    """
    profile = profile or BUILTIN_PROFILES["auto"]
    poa = is_poa(w3) if profile.poa is None else profile.poa
    if poa:
        install_poa_middleware(w3)
    resolved = replace(
        profile,
        poa=poa,
        fee_mode=profile.fee_mode or detect_fee_mode(w3),
        evm_version=profile.evm_version or detect_evm_version(w3),
    )
    if not profile.resolved:
        log.info("chain profile %s: evm %s, fees %s, %s, %d confirmation(s)", resolved.name,
                 resolved.evm_version, resolved.fee_mode,
                 "proof of authority" if poa else "no PoA", resolved.confirmations)
    return resolved


def fee_fields(w3: Web3, fee_mode: str) -> dict[str, int]:
    """The fee fields of a transaction for `fee_mode`; empty lets web3 fill EIP-1559 fees."""
    return {"gasPrice": w3.eth.gas_price} if fee_mode == "legacy" else {}
