"""One local devnet for trying FLEML by hand: an anvil chain, a js-ipfs daemon, a consortium.

Everything lives under one state folder (default ``.fleml/devnet``)::

    devnet.json                        the chain's port and the number of members
    anvil.pid, anvil.log               the detached chain
    chain-state.json                   its state, saved when it stops (anvil --state)
    ipfs/                              the IPFS repository (daemon.pid, daemon.log, api-port)
    poa/                               ``--chain poa``: the Clique network (devnet/poa.py)
    deployment.json                    the consortium's deployment record
    env                                shell exports: FLEML_RPC, FLEML_IPFS_API, FLEML_DEPLOYMENT

``up`` is idempotent: it starts what does not run, keeps what does, and deploys the consortium
(anvil's test key 0 operates, key 1 aggregates, keys 2, 3, ... are members) unless the record
names a contract that the chain still holds and the shipped artifact still matches. Both
services keep their ports and state across ``down`` and ``up``, so nodes can stay configured.

web3 and eth-account are imported where they are used: ``fleml-node --help`` imports this
module for its defaults and should not pay seconds for them.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from fleml_node.devnet.ipfs import LocalIpfsDaemon, find_detached, stop_detached
from fleml_node.devnet.processes import read_pid, runs, terminate
from fleml_node.storage.local import atomic_write

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(".fleml/devnet")
DIR_ENV = "FLEML_DEVNET_DIR"
DEFAULT_RPC_PORT = 8546
DEFAULT_POA_RPC_PORT = 8561
"""The PoA devnet's first node; node i listens on 8561 + i."""
"""Beside brownie's 8545: brownie attaches its tests to any chain found on 8545, which must not
be the devnet's."""
DEFAULT_MEMBERS = 2
CHAINS = ("anvil", "poa")
DEFAULT_SEALERS = 3
ACCOUNTS = 10
_STOP_SECONDS = 10.0


class DevnetError(Exception):
    """The devnet could not be brought up or down; the message says why in one line."""


@dataclass(frozen=True)
class DevnetStatus:
    """What runs in a devnet folder.

    Attributes
    ----------
    state_dir : Path
        The devnet's folder.
    rpc_url : str or None
        The chain's JSON-RPC URL while anvil runs.
    anvil_pid : int or None
        anvil's pid while it runs.
    ipfs_api : str or None
        The IPFS API multiaddr while the daemon runs.
    ipfs_pid : int or None
        The daemon's pid while it runs.
    deployment : Path or None
        The deployment record, if one was written.
    members : int
        How many members the deployed consortium admitted.
    chain : str
        ``anvil`` or ``poa`` (a Clique network of @ethereumjs/client nodes).
    rpc_urls : tuple of str
        Every chain node's RPC URL while it runs (one for anvil; ``rpc_url`` is the first).
    chain_pids : tuple of int
        The pids of the chain's running nodes.
    """

    state_dir: Path
    rpc_url: str | None
    anvil_pid: int | None
    ipfs_api: str | None
    ipfs_pid: int | None
    deployment: Path | None
    members: int
    chain: str = "anvil"
    rpc_urls: tuple[str, ...] = ()
    chain_pids: tuple[int, ...] = ()

    @property
    def running(self) -> bool:
        """Whether both the chain and the IPFS daemon run."""
        return bool(self.chain_pids or self.anvil_pid) and self.ipfs_pid is not None


class Devnet:
    """The devnet kept in ``state_dir``.

    Parameters
    ----------
    state_dir
        The state folder (created by :meth:`up`).
    """

    def __init__(self, state_dir: str | os.PathLike[str] = DEFAULT_DIR) -> None:
        self.state_dir = Path(state_dir).resolve()

    @property
    def ipfs_repo(self) -> Path:
        """The IPFS repository."""
        return self.state_dir / "ipfs"

    @property
    def record_path(self) -> Path:
        """The consortium's deployment record."""
        return self.state_dir / "deployment.json"

    @property
    def poa_dir(self) -> Path:
        """The PoA network's folder (``--chain poa``)."""
        return self.state_dir / "poa"

    @property
    def env_path(self) -> Path:
        """The shell file that exports the nodes' settings."""
        return self.state_dir / "env"

    def status(self) -> DevnetStatus:
        """Report what runs, without starting or stopping anything."""
        anvil_pid = self._anvil_pid()
        settings = self._settings()
        port = settings.get("rpc_port")
        ipfs = find_detached(self.ipfs_repo) if self.ipfs_repo.is_dir() else None
        urls, pids = self._poa_running() if settings.get("chain") == "poa" else ((), ())
        if anvil_pid is not None and port:
            urls, pids = (_rpc_url(port),), (anvil_pid,)
        return DevnetStatus(
            state_dir=self.state_dir,
            rpc_url=urls[0] if urls else None,
            anvil_pid=anvil_pid,
            ipfs_api=ipfs[1] if ipfs else None,
            ipfs_pid=ipfs[0] if ipfs else None,
            deployment=self.record_path if self.record_path.is_file() else None,
            members=int(settings.get("members", 0)),
            chain=str(settings.get("chain", "anvil")),
            rpc_urls=tuple(urls),
            chain_pids=tuple(pids),
        )

    def _poa_running(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        from fleml_node.devnet.poa import PoaNetwork

        if not (self.poa_dir / "network.json").is_file():
            return (), ()
        net = PoaNetwork(self.poa_dir, detached=True)
        running = net.running
        return (tuple(net.rpc_urls[i] for i in running),
                tuple(net.pid(i) for i in running))  # type: ignore[misc]

    def _settings(self) -> dict:
        try:
            return json.loads((self.state_dir / "devnet.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_settings(self, **values: int | str) -> None:
        settings = {**self._settings(), **values}
        atomic_write(self.state_dir / "devnet.json",
                     json.dumps(settings, sort_keys=True).encode("utf-8"))

    def up(self, rpc_port: int | None = None, members: int = DEFAULT_MEMBERS,
           chain: bool = True, kind: str = "anvil", sealers: int = DEFAULT_SEALERS,
           nodes: int | None = None) -> DevnetStatus:
        """Start the chain and the IPFS daemon unless they run, and deploy if needed.

        Parameters
        ----------
        rpc_port
            The chain's port; ``None`` keeps the one an earlier ``up`` used, else 8546.
        members
            How many members to admit when the consortium is (re)deployed.
        chain
            ``False`` starts only the IPFS daemon (the test runner's case: brownie and the
            tests start their own chains).
        kind
            ``anvil``, or ``poa``: a Clique network of @ethereumjs/client nodes
            (:mod:`fleml_node.devnet.poa`; ``rpc_port`` is then its first node's port, the
            others follow).
        sealers, nodes
            With ``poa``: how many nodes seal, and how many run in all (default: ``sealers``).

        Returns
        -------
        DevnetStatus
            What runs now.

        Raises
        ------
        DevnetError
            If a service cannot start (port taken, executable missing, ...) or deployment
            fails.
        """
        from fleml_node.chain.contract import ChainError
        from fleml_node.storage import StorageError

        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            rpc_url = self._start_chain(kind, rpc_port, sealers, nodes) if chain else None
            ipfs_api = self._start_ipfs()
            if rpc_url is not None:
                self._ensure_consortium(rpc_url, members)
        except (ChainError, StorageError) as err:
            raise DevnetError(str(err)) from err
        status = self.status()
        atomic_write(self.env_path, "".join(
            f"export {name}={shlex.quote(value)}\n"
            for name, value in env_vars(status).items()).encode("utf-8"))
        log.info("devnet up in %s: chain %s, IPFS %s", self.state_dir, status.rpc_url, ipfs_api)
        return status

    def down(self) -> list[str]:
        """Stop the chain (saving its state) and the IPFS daemon.

        Returns
        -------
        list of str
            What was stopped, e.g. ``["anvil pid 123", "js-ipfs pid 456"]``.

        Raises
        ------
        DevnetError
            If a process survives SIGKILL.
        """
        from fleml_node.storage import DaemonError

        stopped = []
        pid = self._anvil_pid()
        if pid is not None:
            try:
                terminate(pid, _STOP_SECONDS, "anvil")
            except TimeoutError as err:
                raise DevnetError(str(err)) from err
            stopped.append(f"anvil pid {pid}")
        (self.state_dir / "anvil.pid").unlink(missing_ok=True)
        stopped += self._stop_poa()
        if self.ipfs_repo.is_dir():
            try:
                ipfs_pid = stop_detached(self.ipfs_repo, _STOP_SECONDS)
            except DaemonError as err:
                raise DevnetError(str(err)) from err
            if ipfs_pid is not None:
                stopped.append(f"js-ipfs pid {ipfs_pid}")
        return stopped

    def _stop_poa(self) -> list[str]:
        from fleml_node.devnet.poa import PoaError, PoaNetwork

        if not (self.poa_dir / "network.json").is_file():
            return []
        net = PoaNetwork(self.poa_dir, detached=True)
        running = [(i, net.pid(i)) for i in net.running]
        try:
            net.stop()
        except PoaError as err:
            raise DevnetError(str(err)) from err
        return [f"PoA node {i} pid {pid}" for i, pid in running]

    def _start_chain(self, kind: str, rpc_port: int | None, sealers: int,
                     nodes: int | None) -> str:
        from fleml_node.chain.contract import ChainError

        recorded = self._settings().get("chain", "anvil")
        if recorded != kind and self.status().chain_pids:
            raise ChainError(f"the devnet runs a {recorded} chain; run `fleml-node devnet down` "
                             f"(and --wipe to drop its state) before starting {kind}")
        if kind == "poa":
            return self._start_poa(rpc_port, sealers, nodes)
        self._save_settings(chain="anvil")
        return self._start_anvil(rpc_port)

    def _start_poa(self, rpc_port: int | None, sealers: int, nodes: int | None) -> str:
        from fleml_node.chain.contract import ChainError
        from fleml_node.devnet.poa import PoaNetwork

        count = nodes or sealers
        ports = [rpc_port + i for i in range(count)] if rpc_port else None
        if ports is None and not (self.poa_dir / "network.json").is_file():
            ports = [DEFAULT_POA_RPC_PORT + i for i in range(count)]
        net = PoaNetwork(self.poa_dir, sealers=sealers, nodes=count, rpc_ports=ports,
                         detached=True)
        if ports and [n.rpc_port for n in net.nodes] != ports:
            raise ChainError(f"the devnet's PoA nodes use ports "
                             f"{[n.rpc_port for n in net.nodes]}; `down --wipe` to move them")
        net.start()
        self._save_settings(chain="poa")
        return net.rpc_urls[0]

    def _anvil_pid(self) -> int | None:
        pid = read_pid(self.state_dir / "anvil.pid")
        return pid if pid is not None and runs(pid, b"anvil") else None

    def _start_anvil(self, rpc_port: int | None) -> str:
        from fleml_node.chain.contract import ChainError
        from fleml_node.devnet.anvil import LocalAnvil, port_in_use

        recorded = self._settings().get("rpc_port")
        if self._anvil_pid() is not None and recorded:
            if rpc_port and rpc_port != recorded:
                raise ChainError(f"the devnet chain already runs on port {recorded}; run "
                                 "`fleml-node devnet down` first to move it")
            return _rpc_url(recorded)
        port = rpc_port or recorded or DEFAULT_RPC_PORT
        if port_in_use(port):
            raise ChainError(f"127.0.0.1:{port} is in use by another process (another chain?); "
                             "stop it or choose another port with --rpc-port")
        anvil = LocalAnvil(accounts=ACCOUNTS, log_file=self.state_dir / "anvil.log", port=port,
                           state_file=self.state_dir / "chain-state.json", zero_base_fee=True,
                           detached=True, cache_path=self.state_dir / "anvil-cache").start()
        atomic_write(self.state_dir / "anvil.pid", f"{anvil.pid}\n".encode("ascii"))
        self._save_settings(rpc_port=port)
        return anvil.url

    def _start_ipfs(self) -> str:
        running = find_detached(self.ipfs_repo) if self.ipfs_repo.is_dir() else None
        if running is not None:
            return running[1]
        return LocalIpfsDaemon(self.ipfs_repo).start()

    def _ensure_consortium(self, rpc_url: str, members: int) -> None:
        from fleml_node.chain.contract import connect
        from fleml_node.chain.deploy import load_artifact
        from fleml_node.chain.deployment import DeploymentError, load_record
        from fleml_node.chain.profile import BUILTIN_PROFILES, is_poa
        from fleml_node.devnet.anvil import test_keys
        from fleml_node.devnet.consortium import FIRST_MEMBER_KEY_INDEX, deploy_local_consortium

        w3 = connect(rpc_url)
        if self.record_path.is_file():
            try:
                record = load_record(self.record_path)
            except DeploymentError as err:
                log.info("redeploying: %s", err)
            else:
                if (record.chain_id == w3.eth.chain_id and w3.eth.get_code(record.address)
                        and record.abi == load_artifact()["abi"]):
                    return
                log.info("redeploying: the chain lost %s or the contract changed",
                         record.address)
        keys = test_keys(FIRST_MEMBER_KEY_INDEX + members)
        # a Clique network's record asks its nodes for the clique profile's confirmations
        profile = BUILTIN_PROFILES["clique"] if is_poa(w3) else None
        deploy_local_consortium(w3, keys, members, self.record_path, profile=profile)
        self._save_settings(members=members)


def _rpc_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def role_keys(members: int) -> list[tuple[str, str, str]]:
    """The devnet's accounts by role: anvil's public test keys, for local use only.

    Parameters
    ----------
    members
        How many members the consortium admitted.

    Returns
    -------
    list of (str, str, str)
        ``(role, address, private key)``: ``operator``, ``aggregator``, ``member-0``, ...
    """
    from eth_account import Account

    from fleml_node.devnet.anvil import test_keys
    from fleml_node.devnet.consortium import FIRST_MEMBER_KEY_INDEX

    roles = ["operator", "aggregator", *(f"member-{i}" for i in range(members))]
    keys = test_keys(FIRST_MEMBER_KEY_INDEX + members)
    return [(role, Account.from_key(key).address, "0x" + key.removeprefix("0x"))
            for role, key in zip(roles, keys, strict=True)]


def env_vars(status: DevnetStatus) -> dict[str, str]:
    """The nodes' settings for what runs of a devnet (a stopped part is left out).

    Parameters
    ----------
    status
        From :meth:`Devnet.status` or :meth:`Devnet.up`.

    Returns
    -------
    dict
        ``FLEML_RPC``, ``FLEML_IPFS_API`` and ``FLEML_DEPLOYMENT``.
    """
    values = {
        "FLEML_RPC": status.rpc_url,
        "FLEML_IPFS_API": status.ipfs_api,
        "FLEML_DEPLOYMENT": str(status.deployment) if status.rpc_url and status.deployment
        else None,
    }
    return {name: value for name, value in values.items() if value}
