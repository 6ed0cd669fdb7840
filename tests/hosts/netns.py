"""A lab of network namespaces: one "host" per node, joined by a bridge, links that can be cut.

::

    with Lab(tmp_path) as lab:
        chain = lab.add_host("chain")            # namespace <prefix>chain, 10.213.R.2/24
        lab.spawn(chain, "anvil", ["anvil", "--host", chain.ip, ...])
        lab.cut(chain); ...; lab.restore(chain)  # its link down and up again

Layout. Every lab has a per-run prefix ``flab-<pid>-<4 hex>-`` for its namespace names. The
bridge lives in a namespace of its own (``<prefix>sw``), so the root namespace gets no
interface, address or route: nothing here touches the machine's own networking. Each host is
a namespace with ``lo`` up and one veth link, ``eth0`` inside the host and ``p<i>`` on the
switch side, addressed in ``10.213.R.0/24``, a /24 that no interface of the machine uses (R
is chosen per lab). Traffic goes only to addresses the lab created.

A cut takes the switch side of a host's link down: the host keeps its address and route, its
packets go nowhere, as when a cable is pulled or a switch port dies (``tc netem`` would be the
other way, but this kernel has no ``sch_netem``). :meth:`Lab.restore` brings it back.

Processes run inside a host with ``ip netns exec`` (:meth:`Lab.spawn`, log to a file, own
process group). Python code that must itself talk to a host's addresses (a probe, a web3
client) runs with the *calling thread* moved into that namespace by :meth:`Lab.inside`
(``setns(2)`` on the thread; child processes started meanwhile are born there too).

Clean-up is unconditional: :meth:`Lab.close` (the context manager, a fixture finalizer, and an
``atexit`` hook) kills every process in the lab's namespaces (``ip netns pids``) and deletes
the namespaces; :func:`sweep` also removes namespaces of labs whose owning process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX_ROOT = "flab-"
LAB_NET = ipaddress.ip_network("10.213.0.0/16")
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/var/run/netns")


class LabError(RuntimeError):
    """The lab could not be built or driven (an `ip` command failed)."""


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add, veth links)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    name = f"{PREFIX_ROOT}probe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", name)
    except LabError as err:
        return f"`ip netns add` does not work here: {err}"
    try:
        _ip("-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except LabError as err:
        return f"veth links cannot be created here: {err}"
    finally:
        with contextlib.suppress(LabError):
            _ip("netns", "del", name)
    return None


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of the root namespace's addresses and routes."""
    nets = []
    for entry in json.loads(_ip("-j", "-4", "addr") or "[]"):
        for info in entry.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}",
                                             strict=False))
    for route in json.loads(_ip("-j", "-4", "route") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no interface or route of this machine overlaps."""
    used = used_networks()
    if any(net.overlaps(LAB_NET) and net.prefixlen <= 16 for net in used):
        raise LabError(f"the machine already routes {LAB_NET}; the lab will not reuse it")
    candidates = list(LAB_NET.subnets(new_prefix=24))
    start = secrets.randbelow(len(candidates))
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise LabError(f"no free /24 in {LAB_NET}")


def _owner_pid(namespace: str) -> int | None:
    """The pid in a lab namespace name ``flab-<pid>-<hex>-...``."""
    parts = namespace[len(PREFIX_ROOT):].split("-")
    return int(parts[0]) if namespace.startswith(PREFIX_ROOT) and parts[0].isdigit() else None


def namespaces(prefix: str = PREFIX_ROOT) -> list[str]:
    """Names of the namespaces that start with ``prefix``."""
    names = [line.split()[0] for line in _ip("netns", "list", check=False).splitlines()
             if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def _kill_namespace_processes(namespace: str) -> None:
    for _ in range(3):
        pids = [int(p) for p in _ip("netns", "pids", namespace, check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def remove_namespace(namespace: str) -> None:
    """Kill every process in ``namespace`` and delete it (a no-op when it is gone)."""
    _kill_namespace_processes(namespace)
    _ip("netns", "del", namespace, check=False)


def sweep(prefix: str | None = None) -> list[str]:
    """Remove this lab's leftovers (``prefix``), or, without one, every lab namespace whose
    owning process has exited. Returns the names removed."""
    removed = []
    for name in namespaces(prefix or PREFIX_ROOT):
        owner = _owner_pid(name)
        if prefix is None and (owner is None or Path(f"/proc/{owner}").exists()):
            continue  # another live run's lab, or not ours
        remove_namespace(name)
        removed.append(name)
    return removed


# -- per-thread namespace switching --------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def in_namespace(namespace: str) -> Iterator[None]:
    """Run the calling thread (and children it starts) in ``namespace``; restore after."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(_NETNS_DIR / namespace, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


@dataclass
class Host:
    """One namespace with one link to the lab's switch."""

    name: str
    namespace: str
    ip: str
    port: str  # the link's interface on the switch side
    cut_since: float | None = None

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


@dataclass
class Spawned:
    host: Host
    name: str
    process: subprocess.Popen[bytes]
    log: Path


_LABS: list[Lab] = []


@atexit.register
def _close_all() -> None:
    for lab in list(_LABS):
        lab.close()


@dataclass
class Lab:
    """The namespaces, bridge and processes of one test run; see the module docstring."""

    workdir: Path
    prefix: str = field(default_factory=lambda: f"{PREFIX_ROOT}{os.getpid()}-"
                                                f"{secrets.token_hex(2)}-")
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[Spawned] = field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = None
    closed: bool = False

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        sweep()  # namespaces of earlier runs that were killed before they could clean up
        self.subnet = _free_subnet()
        self.switch = f"{self.prefix}sw"
        _LABS.append(self)
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ------------------------------------------------------------------------
    def add_host(self, name: str) -> Host:
        """A new namespace ``<prefix><name>`` linked to the switch, with the next address."""
        if name in self.hosts:
            raise LabError(f"host {name!r} exists")
        index = len(self.hosts)
        assert self.subnet is not None
        ip = str(self.subnet.network_address + 2 + index)
        host = Host(name, f"{self.prefix}{name}", ip, f"p{index}")
        _ip("netns", "add", host.namespace)
        self.hosts[name] = host
        ns, sw = host.namespace, self.switch
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", sw, "link", "set", host.port, "master", "br0")
        _ip("-n", sw, "link", "set", host.port, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return host

    # -- processes -----------------------------------------------------------------------
    def spawn(self, host: Host, name: str, argv: Sequence[str], *,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Spawned:
        """Start ``argv`` inside ``host`` (own process group), output appended to a log."""
        log = self.workdir / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            out.write(f"{time.strftime('%H:%M:%S')} [{host.name} {host.ip}] $ "
                      f"{' '.join(map(str, argv))}\n".encode())
            out.flush()
            process = subprocess.Popen([*host.exec_prefix(), *map(str, argv)],
                                       stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                       start_new_session=True)
        spawned = Spawned(host, name, process, log)
        self.processes.append(spawned)
        return spawned

    @contextlib.contextmanager
    def inside(self, host: Host) -> Iterator[None]:
        """The calling thread in ``host``'s namespace for the block (see the docstring)."""
        with in_namespace(host.namespace):
            yield

    # -- faults --------------------------------------------------------------------------
    def cut(self, host: Host) -> None:
        """Pull ``host``'s cable: the switch side of its link goes down."""
        _ip("-n", self.switch, "link", "set", host.port, "down")
        host.cut_since = time.monotonic()

    def restore(self, host: Host) -> None:
        """Plug it back in."""
        _ip("-n", self.switch, "link", "set", host.port, "up")
        host.cut_since = None

    def restore_all(self) -> None:
        for host in self.hosts.values():
            if host.cut_since is not None:
                self.restore(host)

    def is_cut(self, host: Host) -> bool:
        state = json.loads(_ip("-n", self.switch, "-j", "link", "show", host.port))
        return "UP" not in state[0].get("flags", [])

    # -- clean-up ------------------------------------------------------------------------
    def close(self) -> None:
        """Kill every process of the lab and delete its namespaces. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for spawned in self.processes:
            if spawned.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(spawned.process.pid, signal.SIGKILL)
        for spawned in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spawned.process.wait(timeout=10)
        for host in self.hosts.values():
            remove_namespace(host.namespace)
        remove_namespace(self.switch)
        sweep(self.prefix)
        if self in _LABS:
            _LABS.remove(self)
