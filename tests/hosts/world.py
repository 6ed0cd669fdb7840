"""A consortium laid out across lab hosts: chain, aggregator, members, observer.

::

    world = World(workdir, members=3).start()   # namespaces, chain, one js-ipfs per node host
    with world.lab.inside(world.observer):       # the observer's reads cross the lab too
        fed = world.federation(tmp_path)         # a fresh consortium; nodes started by `fed`
        ...
    world.close()

Placement (each a namespace of :class:`tests.hosts.netns.Lab`):

* ``chain0`` (more with a multi-node chain): the chain; its JSON-RPC listens on the host's lab
  address only (``anvil --host 10.213.R.x``). The harness does not depend on the chain kind:
  :class:`AnvilChain` is one implementation of the small interface the scenarios use
  (``url_for``, ``nodes``, each node's ``host``, ``start``, ``kill``, ``stop``, ``log``).
* ``aggregator`` and ``member<i>``: a `fleml-node` process and its own js-ipfs daemon. The
  daemon's HTTP API is on the namespace's own 127.0.0.1:8801, reachable by that node only; the
  daemons find each other's objects over the IPFS swarm (libp2p TCP on the host's lab address,
  port 8802), each bootstrapped with every other daemon's address, no public bootstrap list,
  no MDNS. This is the deployment shape: an update leaves its member's host only over bitswap.
* ``observer``: the test's own reads of the chain (an auditor's host; no IPFS).

Keys follow the devnet's convention (key 0 operator, 1 aggregator, 2.. members), anvil's test
mnemonic, local use only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

from fleml_node.chain.contract import connect
from fleml_node.devnet.anvil import TEST_MNEMONIC, test_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.devnet.executables import find_anvil
from fleml_node.devnet.ipfs import LocalIpfsDaemon
from tests.integration.conftest import AGGREGATOR_KEY, FIRST_MEMBER_KEY, Federation

from .netns import Host, Lab, Spawned

CHAIN_PORT = 8810
IPFS_API_PORT = 8801
IPFS_SWARM_PORT = 8802
IPFS_API = f"/ip4/127.0.0.1/tcp/{IPFS_API_PORT}/http"  # the same on every host: its own daemon
ACCOUNTS = 8


class ChainNode(Protocol):
    host: Host
    log: Path

    def start(self) -> None: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...
    def is_running(self) -> bool: ...


class Chain(Protocol):
    kind: str
    nodes: list[ChainNode]

    def url_for(self, index: int) -> str: ...
    def start(self) -> None: ...


def wait_listening(lab: Lab, host: Host, port: int, timeout: float, alive=lambda: True) -> None:
    """Until ``host.ip:port`` accepts TCP connections, probed from inside ``host``."""
    deadline = time.monotonic() + timeout
    with lab.inside(host):
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"the process for {host.ip}:{port} exited")
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((host.ip, port)) == 0:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host.ip}:{port} after {timeout:g} s")


class AnvilNode:
    """anvil on one lab host, its state dumped every second so a kill -9 loses at most ~1 s."""

    def __init__(self, lab: Lab, host: Host, workdir: Path, accounts: int = ACCOUNTS) -> None:
        self.lab, self.host, self.accounts = lab, host, accounts
        self.state_file = workdir / f"{host.name}-state.json"
        self.log = workdir / "logs" / f"{host.name}.log"
        self.url = f"http://{host.ip}:{CHAIN_PORT}"
        self.spawned: Spawned | None = None

    def argv(self) -> list[str]:
        return [str(find_anvil()), "--host", self.host.ip, "--port", str(CHAIN_PORT),
                "--hardfork", "cancun", "--accounts", str(self.accounts),
                "--mnemonic", TEST_MNEMONIC, "--gas-limit", "30000000",
                "--state", str(self.state_file), "--state-interval", "1"]

    def is_running(self) -> bool:
        return self.spawned is not None and self.spawned.process.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        self.spawned = self.lab.spawn(self.host, self.host.name, self.argv())
        wait_listening(self.lab, self.host, CHAIN_PORT, 30, self.is_running)

    def kill(self) -> None:
        if self.is_running():
            assert self.spawned is not None
            self.spawned.process.send_signal(signal.SIGKILL)
            self.spawned.process.wait(10)

    def stop(self) -> None:
        if self.is_running():
            assert self.spawned is not None
            self.spawned.process.terminate()
            try:
                self.spawned.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class AnvilChain:
    """A single anvil node: every node connects to it."""

    kind = "anvil"

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.nodes: list[AnvilNode] = [AnvilNode(lab, lab.add_host("chain0"), workdir)]

    def url_for(self, index: int) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()


class PoaChainNode:
    """Node ``index`` of a :class:`fleml_node.devnet.poa.PoaNetwork`, on its own lab host."""

    def __init__(self, lab: Lab, net, index: int, host: Host) -> None:
        self.lab, self.net, self.index, self.host = lab, net, index, host
        self.log = net.log_path(index)

    def is_running(self) -> bool:
        return self.net.pid(self.index) is not None

    def start(self) -> None:
        # launched from a thread inside the host: the node is born in its namespace, and the
        # network's own readiness probe reaches its RPC on the host's lab address
        if not self.is_running():
            with self.lab.inside(self.host):
                self.net.start_node(self.index, wait=False)

    def kill(self) -> None:
        self.net.kill_node(self.index)

    def stop(self) -> None:
        self.net.stop_node(self.index)


class PoaChain:
    """A Clique network of @ethereumjs/client sealers (fleml_node/devnet/poa.py), one per
    host ``chain<i>``, RPC and P2P on the host's lab address; the aggregator and the members
    are spread over the nodes (``url_for``), the observer reads node 0."""

    kind = "poa"

    def __init__(self, lab: Lab, workdir: Path, observer: Host, sealers: int = 3,
                 period: int = 2) -> None:
        from fleml_node.devnet.poa import PoaNetwork

        hosts = [lab.add_host(f"chain{i}") for i in range(sealers)]
        self.observer, self.lab = observer, lab
        self.net = PoaNetwork(workdir / "poa", sealers=sealers, period=period,
                              hosts=[h.ip for h in hosts], rpc_ports=[CHAIN_PORT] * sealers,
                              p2p_ports=[CHAIN_PORT + 20] * sealers)
        self.nodes = [PoaChainNode(lab, self.net, i, h) for i, h in enumerate(hosts)]

    def url_for(self, index: int) -> str:
        return self.net.rpc_urls[index % len(self.nodes)]

    def start(self) -> None:
        self.net.prepare()
        for node in self.nodes:
            node.start()
        with self.lab.inside(self.observer):
            self.net.wait_advancing()
            self.wait_agreeing()

    def wait_agreeing(self, checks: int = 3, timeout: float = 180) -> None:
        """Until every node has the same block two below the lowest head, ``checks`` polls in
        a row: sealers started one after the other seal competing forks at first, and a
        transaction sent before they converge can be dropped with the losing fork."""
        from fleml_node.devnet.poa import rpc_call

        deadline, agreed = time.monotonic() + timeout, 0
        while agreed < checks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the PoA nodes did not agree on a chain in {timeout:g} s")
            try:
                heads = [int(rpc_call(url, "eth_blockNumber"), 16) for url in self.net.rpc_urls]
                number = hex(max(min(heads) - 2, 0))
                hashes = {rpc_call(url, "eth_getBlockByNumber", [number, False])["hash"]
                          for url in self.net.rpc_urls}
                agreed = agreed + 1 if len(hashes) == 1 and min(heads) > 2 else 0
            except Exception:  # a node still starting
                agreed = 0
            time.sleep(2)


class World:
    """The lab, the chain and one IPFS daemon per node host (see the module docstring)."""

    def __init__(self, workdir: Path, members: int = 3, chain: str = "anvil") -> None:
        self.workdir = Path(workdir)
        self.members = members
        self.lab = Lab(self.workdir)
        try:
            self.observer = self.lab.add_host("observer")
            self.chain: Chain = (PoaChain(self.lab, self.workdir, self.observer)
                                 if chain == "poa" else AnvilChain(self.lab, self.workdir))
            self.aggregator = self.lab.add_host("aggregator")
            self.member_hosts = [self.lab.add_host(f"member{i}") for i in range(members)]
            self.daemons: dict[str, LocalIpfsDaemon] = {}
            for host in self.node_hosts:
                self.daemons[host.name] = LocalIpfsDaemon(
                    self.workdir / "ipfs" / host.name, api_port=IPFS_API_PORT,
                    swarm=[f"/ip4/{host.ip}/tcp/{IPFS_SWARM_PORT}"], startup_timeout=120)
            peers = {name: f"/ip4/{self.lab.hosts[name].ip}/tcp/{IPFS_SWARM_PORT}/p2p/"
                           f"{daemon.peer_id}" for name, daemon in self.daemons.items()}
            for name, daemon in self.daemons.items():
                daemon.bootstrap = [addr for other, addr in peers.items() if other != name]
        except BaseException:
            self.lab.close()
            raise
        self.keys = test_keys(ACCOUNTS)

    @property
    def node_hosts(self) -> list[Host]:
        return [self.aggregator, *self.member_hosts]

    def host_of_key(self, key_index: int) -> Host:
        if key_index == AGGREGATOR_KEY:
            return self.aggregator
        return self.member_hosts[key_index - FIRST_MEMBER_KEY]

    # -- services ------------------------------------------------------------------------
    def start(self) -> World:
        try:
            self.chain.start()
            self._parallel([lambda name=name: self.start_daemon(name) for name in self.daemons])
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _parallel(jobs: list) -> None:
        errors: list[BaseException] = []

        def run(job) -> None:
            try:
                job()
            except BaseException as err:  # reported below, in the caller's thread
                errors.append(err)

        threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def start_daemon(self, name: str) -> None:
        """(Re)start a host's IPFS daemon, inside its namespace, on the same API port."""
        with self.lab.inside(self.lab.hosts[name]):
            self.daemons[name].start()

    def stop_daemon(self, name: str) -> None:
        self.daemons[name].stop()

    def kill_daemon(self, name: str) -> None:
        """SIGKILL, as a crash would; the daemon's stale lock is cleared for the restart."""
        daemon = self.daemons[name]
        if daemon.pid is not None:
            os.kill(daemon.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                daemon._proc.wait(10)  # type: ignore[union-attr]
        daemon.stop()

    def ensure_running(self) -> None:
        """Everything up and every link in (between tests sharing one world)."""
        self.lab.restore_all()
        self.chain.start()
        for name, daemon in self.daemons.items():
            if not daemon.is_running():
                self.start_daemon(name)

    def federation(self, tmp_path: Path, members: int | None = None) -> LabFederation:
        """A freshly deployed consortium and a Federation whose nodes run on the lab hosts.

        Call from a thread inside the observer's namespace (``lab.inside(world.observer)``).
        """
        members = members or self.members
        tmp_path.mkdir(parents=True, exist_ok=True)
        record = deploy_local_consortium(connect(self.chain.url_for(0)), self.keys, members,
                                         tmp_path / "deployment.json")
        return LabFederation(self, tmp_path, record.path, members)

    def close(self) -> None:
        for daemon in self.daemons.values():
            with contextlib.suppress(Exception):
                daemon.stop()
        self.lab.close()


class LabFederation(Federation):
    """tests/integration's Federation with each node in its host's namespace, its own IPFS
    daemon (the same address on every host: its own 127.0.0.1) and its chain node."""

    def __init__(self, world: World, tmp_path: Path, record_path: Path, members: int) -> None:
        super().__init__(tmp_path, world.chain.url_for(0), record_path, world.keys, IPFS_API,
                         world.chain.nodes[0].log)
        self.world = world
        self.task_args = ["--dataset", "mnist", "--num-clients", str(members),
                          "--max-client-samples", "120", "--validation-size", "200",
                          "--seed", "3", "--alpha", "1.0"]

    def launcher(self, key_index: int) -> list[str]:
        return self.world.host_of_key(key_index).exec_prefix()

    def start(self, name, command, key_index, args, fault=None, expected_rc=0):
        # the node's own chain node (members spread over a multi-node chain)
        reader_url, self.url = self.url, self.world.chain.url_for(key_index)
        try:
            return super().start(name, command, key_index, args, fault, expected_rc)
        finally:
            self.url = reader_url

    def report(self, headline: str) -> str:
        parts = [super().report(headline)]
        for name, daemon in self.world.daemons.items():
            text = daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() \
                else ""
            parts.append(f"--- ipfs {name}:\n" + "\n".join(text.splitlines()[-4:]))
        return "\n".join(parts)
