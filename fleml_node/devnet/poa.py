"""A Clique proof-of-authority network of several `@ethereumjs/client` nodes.

What a consortium runs instead of anvil: a chain sealed by a fixed set of signers (Clique,
EIP-225), each node on its own data folder, P2P port and RPC port, peered by bootnodes.
:class:`PoaNetwork` writes a London Clique genesis naming the sealers and prefunding anvil's
test accounts (so the devnet's operator, aggregator and member keys work unchanged), starts
the nodes, waits until every node imports blocks, and stops them all, always.

The client is `@ethereumjs/client` 0.9.0 from ``tools/ethereumjs/package-lock.json``, run
with two preloaded files from that folder: ``readline-shim.js`` (0.9.0's ``--unlock`` crashes
without it) and ``clique-fixes.js`` (0.9.0 never refreshes a peer's head after the handshake,
so a node two blocks behind stops importing for good, and a restarted sealer can crash on a
block it has not executed yet). ``docs/poa-ethereumjs.md`` says why this version, what the
fixes do and how the bugs reproduce.

Layout of a network folder::

    genesis/poa.json          the geth-style genesis (the client names the chain "poa")
    network.json              chain id, period, nodes (host, ports, sealer), enodes
    node<i>/                  node i's data folder; key (its sealer key), node.log, node.pid

Each node's exact command line is :meth:`PoaNetwork.node_command`, so a node can also be
launched another way (``ip netns exec NS ...``) on an address of its own (``hosts``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account

from fleml_node.chain.contract import ChainError
from fleml_node.devnet.anvil import TEST_MNEMONIC, free_port, port_in_use, test_keys
from fleml_node.devnet.processes import read_pid, runs, terminate
from fleml_node.locations import checkout_root
from fleml_node.storage.local import atomic_write

log = logging.getLogger(__name__)

CLIENT_DIR_ENV = "FLEML_ETHEREUMJS_DIR"
"""Names the folder holding the client's ``package.json``, ``node_modules`` and preloads
(default: a checkout's ``tools/ethereumjs``)."""
CLIENT_VERSION = "0.9.0"
DEFAULT_CHAIN_ID = 13371
"""Not 1337 (geth/ganache dev chains) nor 31337 (anvil, hardhat): records never collide."""
DEFAULT_PERIOD = 2
DEFAULT_SEALERS = 3
SEALER_KEY_INDEX = 100
"""Sealer i signs with account ``SEALER_KEY_INDEX + i`` of anvil's test mnemonic: far from the
devnet's role keys (0, 1, 2, ...), so a sealer never competes for a member's nonce."""
PREFUNDED_ACCOUNTS = 20
PREFUND_WEI = 10**24
GAS_LIMIT = 30_000_000
PRELOADS = ("readline-shim.js", "clique-fixes.js")
_CLIENT_SCRIPT = "node_modules/@ethereumjs/client/dist/bin/cli.js"
_PROCESS_MARK = b"@ethereumjs/client"
_ENODE = re.compile(r"url=(enode://[0-9a-f]{128}@[^\s]+)")
_STOP_SECONDS = 10.0
_POLL_SECONDS = 0.25


class PoaError(ChainError):
    """The PoA network could not be set up, started or stopped; the message says why."""


def client_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder with the installed client and its preloads.

    Parameters
    ----------
    explicit
        A folder given by the caller; wins over ``$FLEML_ETHEREUMJS_DIR`` and the checkout.

    Raises
    ------
    PoaError
        If no folder holds an installed client.
    """
    root = checkout_root()
    candidates = [explicit, os.environ.get(CLIENT_DIR_ENV),
                  root / "tools/ethereumjs" if root else None]
    for candidate in candidates:
        if candidate and (Path(candidate) / _CLIENT_SCRIPT).is_file():
            return Path(candidate).resolve()
    raise PoaError(f"@ethereumjs/client {CLIENT_VERSION} is not installed: run tools/setup.sh "
                   f"(it installs tools/ethereumjs), or set {CLIENT_DIR_ENV} to a folder with "
                   f"that package.json after `npm install` there")


def sealer_keys(count: int) -> list[str]:
    """Private keys (hex, no 0x) of the first `count` sealers; public test keys, local use only."""
    return [Account.from_mnemonic(TEST_MNEMONIC,
                                  account_path=f"m/44'/60'/0'/0/{SEALER_KEY_INDEX + i}").key.hex()
            .removeprefix("0x") for i in range(count)]


def clique_genesis(signers: list[str], funded: list[str], chain_id: int = DEFAULT_CHAIN_ID,
                   period: int = DEFAULT_PERIOD, timestamp: int | None = None) -> dict:
    """A geth-style genesis of a London Clique chain.

    London, not later: with ``shanghaiTime``/``cancunTime`` the client takes the chain for
    post-merge and stops sealing.

    Parameters
    ----------
    signers
        The sealers' addresses (extraData: 32 zero bytes, the sorted signers, 65 zero bytes).
    funded
        Addresses given :data:`PREFUND_WEI` each.
    chain_id, period
        The chain id and the Clique block period in seconds.
    timestamp
        The genesis time; ``None``: now.
    """
    ordered = sorted((a.lower().removeprefix("0x") for a in signers), key=lambda a: int(a, 16))
    forks = ("homestead", "eip150", "eip155", "eip158", "byzantium", "constantinople",
             "petersburg", "istanbul", "berlin", "london")
    return {
        "config": {"chainId": chain_id, **{f"{name}Block": 0 for name in forks},
                   "clique": {"period": period, "epoch": 30000}},
        "nonce": "0x0",
        "timestamp": hex(int(time.time()) if timestamp is None else timestamp),
        "extraData": "0x" + "00" * 32 + "".join(ordered) + "00" * 65,
        "gasLimit": hex(GAS_LIMIT),
        "difficulty": "0x1",
        "mixHash": "0x" + "00" * 32,
        "coinbase": "0x" + "00" * 20,
        "number": "0x0",
        "gasUsed": "0x0",
        "parentHash": "0x" + "00" * 32,
        "baseFeePerGas": hex(10**9),
        "alloc": {a.lower().removeprefix("0x"): {"balance": hex(PREFUND_WEI)} for a in funded},
    }


def rpc_call(url: str, method: str, params: list | None = None, timeout: float = 3.0):  # noqa: ANN201
    """One JSON-RPC call over HTTP (no web3: start-up checks stay light).

    Raises
    ------
    OSError
        If the node does not answer, or answers with an error.
    """
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http URL)
        reply = json.loads(response.read())
    if "error" in reply:
        raise OSError(f"{method}: {reply['error']}")
    return reply["result"]


@dataclass
class PoaNode:
    """One node of the network.

    Attributes
    ----------
    index : int
        Its position (node 0, 1, ...).
    host : str
        The address it binds its RPC to and announces for P2P (the RLPx listener of
        client 0.9.0 binds 0.0.0.0 whatever this says).
    rpc_port, p2p_port : int
        Its ports.
    sealer : bool
        Whether it seals blocks (its key is one of the genesis signers).
    enode : str or None
        Its enode URL, known once it has started.
    """

    index: int
    host: str
    rpc_port: int
    p2p_port: int
    sealer: bool
    enode: str | None = None

    @property
    def rpc_url(self) -> str:
        """The node's JSON-RPC URL."""
        return f"http://{self.host}:{self.rpc_port}"


class PoaNetwork:
    """A Clique network of ``nodes`` @ethereumjs/client nodes, ``sealers`` of them sealing.

    Parameters
    ----------
    state_dir
        The network's folder; kept, so that a network started again resumes its chain.
    sealers
        How many nodes seal (the genesis signers); default 3 for a new network, and a network
        saved in `state_dir` keeps its own (naming another number is an error).
    nodes
        How many nodes in all (default: ``sealers``); nodes past the sealers only follow.
    period
        Clique block period in seconds.
    chain_id
        The chain id.
    hosts
        One address for all nodes, or one per node (e.g. each in its own network namespace).
    rpc_ports, p2p_ports
        One port per node; ``None`` picks free ones (loopback check) on first start.
    client
        The client's folder (see :func:`client_dir`).
    detached
        Run the nodes in sessions of their own, to outlive this process (the devnet); they
        are then found again by their pid files.
    startup_timeout
        Seconds to wait for each node to come up and for the network to advance.

    Examples
    --------
    >>> with PoaNetwork(tmp_path, sealers=3) as net:  # doctest: +SKIP
    ...     w3 = connect(net.rpc_urls[2])
    """

    def __init__(self, state_dir: str | os.PathLike[str], sealers: int | None = None,
                 nodes: int | None = None, period: int = DEFAULT_PERIOD,
                 chain_id: int = DEFAULT_CHAIN_ID, hosts: str | list[str] = "127.0.0.1",
                 rpc_ports: list[int] | None = None, p2p_ports: list[int] | None = None,
                 client: str | os.PathLike[str] | None = None, detached: bool = False,
                 startup_timeout: float = 90.0) -> None:
        self.state_dir = Path(state_dir).resolve()
        saved = self._load_layout()
        if saved is not None:
            self.chain_id, self.period = saved["chain_id"], saved["period"]
            self.nodes = [PoaNode(**node) for node in saved["nodes"]]
            _check_same(self, sealers, nodes)
        else:
            sealers = sealers or DEFAULT_SEALERS
            self.chain_id, self.period = chain_id, period
            self.nodes = _plan_nodes(sealers, nodes or sealers, hosts, rpc_ports, p2p_ports)
        self._client = client
        self.detached = detached
        self.startup_timeout = startup_timeout
        self._processes: dict[int, subprocess.Popen] = {}

    # -- layout -------------------------------------------------------------------------------

    @property
    def layout_path(self) -> Path:
        """The saved layout: chain id, period, nodes and their enodes."""
        return self.state_dir / "network.json"

    @property
    def genesis_path(self) -> Path:
        """The genesis file (its name, ``poa``, is the chain's name for the client)."""
        return self.state_dir / "genesis" / "poa.json"

    @property
    def rpc_urls(self) -> list[str]:
        """Every node's JSON-RPC URL, by node index."""
        return [node.rpc_url for node in self.nodes]

    @property
    def sealers(self) -> list[PoaNode]:
        """The sealing nodes."""
        return [node for node in self.nodes if node.sealer]

    def describe(self) -> dict:
        """What runs, for reports: client, consensus, sealers, nodes, block time, chain id."""
        return {"client": f"@ethereumjs/client {CLIENT_VERSION} (+ tools/ethereumjs preloads)",
                "consensus": "clique", "sealers": len(self.sealers), "nodes": len(self.nodes),
                "block_time": self.period, "chain_id": self.chain_id}

    def node_dir(self, index: int) -> Path:
        """Node `index`'s folder: its data, key, log and pid file."""
        return self.state_dir / f"node{index}"

    def log_path(self, index: int) -> Path:
        """Node `index`'s log (the client's output; appended across restarts)."""
        return self.node_dir(index) / "node.log"

    def _load_layout(self) -> dict | None:
        try:
            return json.loads(self.layout_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _save_layout(self) -> None:
        layout = {"chain_id": self.chain_id, "period": self.period,
                  "nodes": [asdict(node) for node in self.nodes]}
        atomic_write(self.layout_path, json.dumps(layout, indent=1).encode("utf-8"))

    def prepare(self) -> None:
        """Write the genesis, the sealer keys and the layout, unless they exist (idempotent)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        keys = sealer_keys(len(self.sealers))
        for node, key in zip(self.sealers, keys, strict=True):
            key_file = self.node_dir(node.index) / "key"
            key_file.parent.mkdir(parents=True, exist_ok=True)
            if not key_file.is_file():
                atomic_write(key_file, key.encode("ascii"))
                key_file.chmod(0o600)
        if not self.genesis_path.is_file():
            signers = [Account.from_key(key).address for key in keys]
            funded = [Account.from_key(key).address for key in test_keys(PREFUNDED_ACCOUNTS)]
            genesis = clique_genesis(signers, funded, self.chain_id, self.period)
            self.genesis_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.genesis_path, json.dumps(genesis, indent=1).encode("utf-8"))
        self._save_layout()

    # -- commands -----------------------------------------------------------------------------

    def node_command(self, index: int, bootnodes: list[str] | None = None,
                     start_peers: int | None = None) -> list[str]:
        """The exact argv that runs node `index` (``env NODE_OPTIONS=... node cli.js ...``).

        Prefix it with ``ip netns exec NS`` to run the node in a namespace; :meth:`prepare`
        must have run. Output goes to stdout (the caller redirects it to :meth:`log_path`).

        Parameters
        ----------
        index
            The node.
        bootnodes
            Enodes to dial; ``None``: those of every other node known to have started.
        start_peers
            Peers a sealer waits for before it seals block 1 (clique-fixes.js fix 8);
            ``None``: every other node.
        """
        node, folder = self.nodes[index], self.client_dir
        if start_peers is None:
            start_peers = len(self.nodes) - 1
        preload = " ".join(f"--require={folder / name}" for name in PRELOADS)
        boot = self._bootnodes(index) if bootnodes is None else bootnodes
        args = ["env", f"NODE_OPTIONS={preload}",
                f"FLEML_POA_START_PEERS={start_peers}",  # block 1 waits for its peers
                shutil.which("node") or "node",
                str(folder / _CLIENT_SCRIPT),
                "--gethGenesis", str(self.genesis_path),
                "--dataDir", str(self.node_dir(index) / "data"),
                "--port", str(node.p2p_port), "--extIP", node.host,
                "--rpc", "--rpcAddr", node.host, "--rpcPort", str(node.rpc_port),
                "--discDns", "false", "--discV4", "false",
                "--logFile", "false",
                "--logLevel", os.environ.get("FLEML_POA_LOG_LEVEL", "info")]
        if node.sealer:
            args += ["--mine", "--unlock", str(self.node_dir(index) / "key")]
        if boot:
            args += ["--bootnodes", ",".join(boot)]
        return args

    @property
    def client_dir(self) -> Path:
        """The client's folder (resolved on first use)."""
        if not isinstance(self._client, Path):
            self._client = client_dir(self._client)
        return self._client

    def _bootnodes(self, index: int) -> list[str]:
        return [node.enode for node in self.nodes if node.index != index and node.enode]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> PoaNetwork:
        """Start every node that does not run, one after the other, and wait until all advance.

        Returns
        -------
        PoaNetwork
            ``self``.

        Raises
        ------
        PoaError
            If a node cannot start or the network does not advance in time; everything this
            call started is stopped again.
        """
        self.prepare()
        if not self.detached:
            atexit.register(self.stop)
        try:
            for node in self.nodes:
                if self.pid(node.index) is None:
                    self.start_node(node.index, wait=False)
            self.wait_advancing()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, index: int, wait: bool = True, bootnodes: list[str] | None = None,
                   start_peers: int | None = None) -> None:
        """Start node `index`, dialling every other node whose enode is known.

        Parameters
        ----------
        index
            The node.
        wait
            Also wait until the node imports blocks along with the others.
        bootnodes, start_peers
            As for :meth:`node_command` (``bootnodes=[]`` starts it apart from the others).

        Raises
        ------
        PoaError
            If it already runs, its port is taken, or it does not come up in time.
        """
        node = self.nodes[index]
        if self.pid(index) is not None:
            raise PoaError(f"PoA node {index} already runs (pid {self.pid(index)})")
        if node.host == "127.0.0.1" and port_in_use(node.rpc_port):
            raise PoaError(f"cannot start PoA node {index}: {node.host}:{node.rpc_port} is in use")
        self.prepare()
        offset = self.log_path(index).stat().st_size if self.log_path(index).is_file() else 0
        self._launch(index, bootnodes, start_peers)
        node.enode = self._await_enode(index, offset)
        self._save_layout()
        log.info("PoA node %d (%s) up at %s, pid %s", index,
                 "sealer" if node.sealer else "follower", node.rpc_url, self.pid(index))
        if wait:
            self.wait_advancing()

    def _launch(self, index: int, bootnodes: list[str] | None = None,
                start_peers: int | None = None) -> None:
        folder = self.node_dir(index)
        folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(index), "ab") as out:
            try:
                popen = subprocess.Popen(self.node_command(index, bootnodes, start_peers),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=folder,
                                         start_new_session=self.detached)
            except OSError as err:
                raise PoaError(f"cannot run node for PoA node {index}: {err}") from err
        self._processes[index] = popen
        atomic_write(folder / "node.pid", f"{popen.pid}\n".encode("ascii"))

    def _await_enode(self, index: int, offset: int) -> str:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.pid(index) is None:
                raise PoaError(f"PoA node {index} exited during start-up; see "
                               f"{self.log_path(index)}")
            enode = _enode_in_log(self.log_path(index), offset)
            if enode and _answers(self.nodes[index].rpc_url):
                return enode
            time.sleep(_POLL_SECONDS)
        raise PoaError(f"PoA node {index} did not come up within {self.startup_timeout:g} s; "
                       f"see {self.log_path(index)}")

    def stop_node(self, index: int) -> None:
        """Stop node `index` (SIGTERM, SIGKILL after 10 s); nothing happens if it is stopped.

        Raises
        ------
        PoaError
            If it survives SIGKILL.
        """
        pid = self.pid(index)
        process = self._processes.pop(index, None)
        if pid is not None:
            try:
                terminate(pid, _STOP_SECONDS, f"PoA node {index}")
            except TimeoutError as err:
                raise PoaError(str(err)) from err
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)  # reap it
        (self.node_dir(index) / "node.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop every node, each one even if stopping another fails. Idempotent."""
        for index in self.running:  # signal all first: each takes seconds to shut down
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(self.pid(index), signal.SIGTERM)  # type: ignore[arg-type]
        errors = []
        for node in self.nodes:
            try:
                self.stop_node(node.index)
            except PoaError as err:
                errors.append(str(err))
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if errors:
            raise PoaError("; ".join(errors))

    def kill_node(self, index: int) -> None:
        """Kill node `index` with SIGKILL (a crash, for fault tests)."""
        pid = self.pid(index)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.stop_node(index)

    def pid(self, index: int) -> int | None:
        """Node `index`'s pid while it runs (this process's child or found by pid file)."""
        process = self._processes.get(index)
        if process is not None:
            return process.pid if process.poll() is None else None
        pid = read_pid(self.node_dir(index) / "node.pid")
        return pid if pid is not None and runs(pid, _PROCESS_MARK) else None

    @property
    def running(self) -> list[int]:
        """Indices of the nodes that run."""
        return [node.index for node in self.nodes if self.pid(node.index) is not None]

    # -- chain --------------------------------------------------------------------------------

    def heights(self) -> list[int | None]:
        """Every node's block number; ``None`` for a node that does not answer."""
        return [_height(node.rpc_url) if self.pid(node.index) is not None else None
                for node in self.nodes]

    def wait_advancing(self, blocks: int = 2, timeout: float | None = None) -> list[int]:
        """Wait until every running node has imported `blocks` blocks past the highest height
        any of them had when the wait began.

        Returns
        -------
        list of int
            The heights reached, by node index (stopped nodes left out).

        Raises
        ------
        PoaError
            If some running node does not get there within `timeout` (default: the start-up
            timeout).
        """
        timeout = self.startup_timeout if timeout is None else timeout
        running = self.running
        start = max((h for h in self.heights() if h is not None), default=0)
        deadline = time.monotonic() + timeout
        heights: list[int | None] = []
        while time.monotonic() < deadline:
            current = self.heights()
            heights = [current[i] for i in running]
            if all(h is not None and h >= start + blocks for h in heights):
                return heights  # type: ignore[return-value]
            time.sleep(_POLL_SECONDS * 2)
        raise PoaError(f"the PoA network did not advance {blocks} blocks past {start} within "
                       f"{timeout:g} s (heights {dict(zip(running, heights, strict=False))}); "
                       f"see {self.state_dir}/node*/node.log")

    def __enter__(self) -> PoaNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_same(net: PoaNetwork, sealers: int | None, nodes: int | None) -> None:
    have = (len(net.sealers), len(net.nodes))
    if (sealers is not None and sealers != have[0]) or (nodes is not None and nodes != have[1]):
        raise PoaError(f"the PoA network in {net.state_dir} has {have[0]} sealer(s) of "
                       f"{have[1]} node(s); wipe the folder to change that")


def _plan_nodes(sealers: int, count: int, hosts: str | list[str],
                rpc_ports: list[int] | None, p2p_ports: list[int] | None) -> list[PoaNode]:
    if sealers < 1 or count < sealers:
        raise PoaError(f"a PoA network needs 1 <= sealers <= nodes, not {sealers} of {count}")
    addresses = [hosts] * count if isinstance(hosts, str) else list(hosts)
    for name, values in (("hosts", addresses), ("rpc_ports", rpc_ports),
                         ("p2p_ports", p2p_ports)):
        if values is not None and len(values) != count:
            raise PoaError(f"{name} must name one value per node ({count}), not {len(values)}")
    rpc = rpc_ports or _free_ports(count)
    p2p = p2p_ports or _free_ports(count, avoid=set(rpc))
    return [PoaNode(i, addresses[i], rpc[i], p2p[i], i < sealers) for i in range(count)]


def _free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in (avoid or set()):
            ports.append(port)
    return ports


def _enode_in_log(path: Path, offset: int) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    match = _ENODE.search(text)
    return match.group(1) if match else None


def _answers(url: str) -> bool:
    return _height(url) is not None


def _height(url: str) -> int | None:
    try:
        return int(rpc_call(url, "eth_blockNumber"), 16)
    except (OSError, ValueError, urllib.error.URLError):
        return None

