"""The deployment record: what `brownie run deploy` writes and what nodes and auditors read.

A record is one JSON file per chain, ``deployments/<chain_id>.json`` by default, holding the
chain id, the network name, the consortium contract's address, ABI, artifact path, deployment
transaction and block, and the compiler settings. Nodes need nothing else to bind the contract,
so they run without brownie's build folder.

An optional ``explorer`` section names a public block explorer of the chain as URL templates,
which `fleml-node explorer` and the CLI use to link addresses and transactions::

    "explorer": {"name": "Etherscan", "address_url": "https://etherscan.io/address/{address}",
                 "tx_url": "https://etherscan.io/tx/{tx}"}
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fleml_node.chain.profile import ChainProfile, ProfileError

SCHEMA_VERSION = 1
CONTRACT_NAME = "FlemlConsortium"
DEPLOYMENTS_DIR_ENV = "FLEML_DEPLOYMENTS_DIR"
DEPLOYMENT_FILE_ENV = "FLEML_DEPLOYMENT"


class DeploymentError(Exception):
    """A deployment record is missing, unreadable or does not describe a FLEML deployment."""


@dataclass(frozen=True)
class ExplorerUrls:
    """A public block explorer's URL templates (the record's optional ``explorer`` section).

    `address_url` holds ``{address}``, `tx_url` holds ``{tx}``; both are http(s) URLs.
    """

    name: str = ""
    address_url: str = ""
    tx_url: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> ExplorerUrls:
        """Check and read an ``explorer`` section; raises `DeploymentError` when malformed."""
        if not isinstance(data, dict):
            raise DeploymentError("the record's explorer section must be an object")
        unknown = sorted(set(data) - {"name", "address_url", "tx_url"})
        if unknown:
            raise DeploymentError(f"unknown key(s) {unknown} in the record's explorer section")
        found = cls(str(data.get("name", "")), str(data.get("address_url", "")),
                    str(data.get("tx_url", "")))
        for key, placeholder in (("address_url", "{address}"), ("tx_url", "{tx}")):
            value = getattr(found, key)
            if value and (placeholder not in value
                          or not value.startswith(("https://", "http://"))):
                raise DeploymentError(f"explorer.{key} must be an http(s) URL holding "
                                      f"{placeholder}, not {value!r}")
        return found

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "address_url": self.address_url, "tx_url": self.tx_url}

    def address(self, address: str) -> str | None:
        """The explorer's page of an address, or None without a template."""
        return self.address_url.replace("{address}", quote(address, safe="")) \
            if self.address_url else None

    def tx(self, tx_hash: str) -> str | None:
        """The explorer's page of a transaction, or None without a template."""
        return self.tx_url.replace("{tx}", quote(tx_hash, safe="")) if self.tx_url else None


@dataclass(frozen=True)
class Deployment:
    """A FLEML deployment on one chain.

    Attributes
    ----------
    chain_id : int
        The EIP-155 chain id the contract lives on.
    network : str
        The brownie network name it was deployed with (informational).
    address : str
        Checksummed address of the FlemlConsortium contract.
    abi : list
        The contract's ABI.
    block_number : int
        The block that holds the deployment; event scans start there.
    path : Path
        Where the record was read from.
    profile : ChainProfile or None
        How to talk to the chain (EVM version, fees, PoA, confirmations), as resolved at
        deployment; None in records written before profiles existed (then nodes detect it).
    """

    chain_id: int
    network: str
    address: str
    abi: list[dict[str, Any]]
    block_number: int
    path: Path
    profile: ChainProfile | None = None
    explorer: ExplorerUrls | None = None


def default_record_path(chain_id: int, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the record for `chain_id` lives: $FLEML_DEPLOYMENTS_DIR or ./deployments."""
    base = Path(directory or os.environ.get(DEPLOYMENTS_DIR_ENV) or "deployments")
    return base / f"{chain_id}.json"


def write_record(path: Path, *, chain_id: int, network: str, address: str,
                 abi: list[dict[str, Any]], block_number: int, transaction: str,
                 deployer: str, artifact: str, compiler: dict[str, Any],
                 profile: ChainProfile | None = None,
                 explorer: ExplorerUrls | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write a deployment record atomically and return its path.

    `profile` is written as the record's ``chain`` section: the EVM version the contract was
    compiled for, the fee mode, PoA, confirmations and block time every node then uses.
    `explorer` is the optional public explorer's URL templates; `extra` adds further
    top-level sections (e.g. ``verification``, the contract's verifiable source).
    """
    record = {
        "schema": SCHEMA_VERSION,
        "chain_id": chain_id,
        "network": network,
        "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "deployer": deployer,
        "compiler": compiler,
        **({"chain": profile.to_dict()} if profile is not None else {}),
        **({"explorer": explorer.to_dict()} if explorer is not None else {}),
        **(extra or {}),
        "contracts": {
            CONTRACT_NAME: {
                "address": address,
                "block_number": block_number,
                "transaction": transaction,
                "artifact": artifact,
                "abi": abi,
            }
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_record(path: str | os.PathLike[str]) -> Deployment:
    """Read and check a deployment record.

    Raises
    ------
    DeploymentError
        If the file is missing, is not JSON, or lacks the consortium's address or ABI.
    """
    path = Path(path)
    if not path.is_file():
        raise DeploymentError(
            f"no deployment record at {path}: deploy first (`brownie run deploy --network NAME`, "
            f"or ./fleml deploy for a local chain) or pass the record's path"
        )
    try:
        record = json.loads(path.read_text())
        entry = record["contracts"][CONTRACT_NAME]
        return Deployment(
            chain_id=int(record["chain_id"]),
            network=str(record.get("network", "")),
            address=str(entry["address"]),
            abi=list(entry["abi"]),
            block_number=int(entry["block_number"]),
            path=path,
            profile=ChainProfile.from_dict(record["chain"]) if "chain" in record else None,
            explorer=ExplorerUrls.from_dict(record["explorer"]) if record.get("explorer")
            else None,
        )
    except (ProfileError, DeploymentError) as exc:
        raise DeploymentError(f"{path}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DeploymentError(f"{path} is not a FLEML deployment record: {exc!r}") from exc
