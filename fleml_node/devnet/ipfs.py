"""Run a private, offline js-ipfs daemon (npm ``ipfs`` 0.66.1) for the devnet and the tests.

No kubo binary can be installed here, so FLEML runs js-ipfs (found as in
:mod:`fleml_node.devnet.executables`: ``$FLEML_JSIPFS_BIN``, ``PATH``, a checkout's
``node_modules``). The repository is initialised once (``jsipfs init --profile test
--emptyRepo``) and, before every start, its config is rewritten for an isolated loopback node:
the API on ``127.0.0.1``, no gateway, no swarm listeners, no gRPC endpoint, no bootstrap peers,
no MDNS/webRTC discovery. The daemon runs as ``jsipfs daemon --offline --enable-preload=false``
with ``IPFS_PATH`` set to the repository; it writes its actual API address to ``<repo>/api``,
which is polled until ``version`` answers.

The API port survives restarts, so nodes that were given the address keep working after the
daemon comes back: the first start lets the kernel pick a free port (several daemons coexist)
and records it in ``<repo>/api-port``; later starts reuse it and fail with a clear message if
another process holds it. An explicit ``api_port`` replaces the recorded one.

js-ipfs 0.66 quirks handled here:

* On a port conflict it logs ``listen EADDRINUSE`` and keeps running without an API, so the
  log is watched for such lines and startup fails at once with the log tail.
* A second daemon on a repository in use exits 0 after "Database is not open"; a pid file
  (``<repo>/daemon.pid``) refuses that case up front with a clear message.
* SIGKILL leaves ``repo.lock`` (a proper-lockfile directory, stale only after 20 s) and
  ``api``; they are removed when the recorded daemon is known to be dead.
* It sets ``process.title = 'ipfs'``, which replaces its command line in ``/proc``.

Online mode (``swarm=[...]``): the daemon runs without ``--offline``, listens for libp2p
peers on the given swarm addresses (e.g. ``/ip4/10.213.7.3/tcp/8802``), dials only the peers
named in ``bootstrap`` (full multiaddrs with ``/p2p/<peer id>``; no public bootstrap list, no
MDNS) and fetches objects it lacks from them over bitswap. The API stays on 127.0.0.1: peers
never need it. ``peer_id`` gives a repository's identity for the other daemons' bootstrap
lists. js-ipfs 0.66 as locked in ``package-lock.json`` cannot peer: several of its libp2p
dependencies (``@libp2p/bootstrap``, ``@libp2p/peer-record``) resolve
``@multiformats/multiaddr`` 12 while ``@libp2p/peer-store`` checks the symbol of version 11,
so bootstrap peers are stored without addresses ("The dial request has no valid addresses")
and every identify exchange fails ("multiaddr must be an instance of Multiaddr"): no
protocols are learnt and bitswap never sends a block. An online daemon therefore starts with
a Node.js resolve hook (``NODE_OPTIONS=--import=...``, written into the repository) that
loads peer-store's copy (11) wherever the top-level copy (12) would be loaded.

From Python::

    with LocalIpfsDaemon("/tmp/ipfs-repo") as daemon:
        store = IpfsStore(daemon.api_addr)

From a shell, ``fleml-node devnet up`` starts a detached daemon (with a chain) and
``fleml-node devnet down`` stops it. Test suites use :func:`ensure_test_daemon`, which
honours ``FLEML_IPFS_API`` when it is set and otherwise starts a throw-away daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fleml_node.devnet.executables import ExecutableNotFound, find_jsipfs
from fleml_node.devnet.processes import read_pid, runs, terminate
from fleml_node.storage.errors import DaemonError
from fleml_node.storage.ipfs import ENV_API, IpfsStore
from fleml_node.storage.local import atomic_write

log = logging.getLogger(__name__)

PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"
API_PORT_FILE = "api-port"
_LOCK = "repo.lock"
_API_FILE = "api"
_TCP_PORT = re.compile(r"/tcp/(\d+)")
_LOG_TAIL_LINES = 30
_POLL_SECONDS = 0.1
_INIT_TIMEOUT = 120.0
# js-ipfs logs these and keeps running without an API (e.g. on a port conflict): fail fast.
_FATAL_LOG_MARKERS = ("EADDRINUSE", "EACCES", "EADDRNOTAVAIL")


class LocalIpfsDaemon:
    """A js-ipfs daemon on a private repository, started as a subprocess.

    Parameters
    ----------
    repo_dir
        The IPFS repository (created and initialised if needed). It also holds
        ``daemon.log`` (the daemon's output) and ``daemon.pid`` while it runs.
    api_port
        Fixed API port on 127.0.0.1; ``None`` reuses the port recorded in the repository by an
        earlier start, or lets the kernel choose a free one on the first start.
    jsipfs
        Path of the ``jsipfs`` executable; ``None`` searches (see
        :func:`fleml_node.devnet.executables.find_jsipfs`).

    Raises
    ------
    DaemonError
        If no ``jsipfs`` executable is found.
    startup_timeout
        Seconds to wait for the API to answer after starting.
    stop_timeout
        Seconds to wait after SIGTERM before sending SIGKILL.
    swarm
        Online mode: the libp2p listen addresses (multiaddrs); ``None`` (the default) runs
        the daemon offline with no swarm listener.
    bootstrap
        Online mode: the peers to dial at start and keep dialling (multiaddrs ending in
        ``/p2p/<peer id>``); may be set after construction, before :meth:`start`.
    """

    def __init__(
        self,
        repo_dir: str | os.PathLike[str],
        api_port: int | None = None,
        *,
        jsipfs: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        swarm: list[str] | None = None,
        bootstrap: list[str] | None = None,
    ) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        self.swarm = list(swarm) if swarm is not None else None
        self.bootstrap = list(bootstrap or [])
        self.api_port = api_port
        try:
            self.jsipfs = find_jsipfs(jsipfs)
        except ExecutableNotFound as err:
            raise DaemonError(str(err)) from err
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._api_addr: str | None = None

    def __repr__(self) -> str:
        return f"LocalIpfsDaemon({str(self.repo_dir)!r}, api={self._api_addr!r})"

    def __enter__(self) -> LocalIpfsDaemon:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        """The daemon's combined stdout/stderr."""
        return self.repo_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        """Process id while running, else ``None``."""
        return self._proc.pid if self.is_running() else None

    @property
    def api_addr(self) -> str:
        """The API multiaddr, e.g. ``/ip4/127.0.0.1/tcp/40123/http``.

        Raises
        ------
        DaemonError
            If the daemon is not running.
        """
        if self._api_addr is None or not self.is_running():
            raise DaemonError(f"the js-ipfs daemon for {self.repo_dir} is not running")
        return self._api_addr

    @property
    def recorded_port(self) -> int | None:
        """The API port an earlier start recorded in the repository, if any."""
        try:
            return int((self.repo_dir / API_PORT_FILE).read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def online(self) -> bool:
        """Whether the daemon joins a swarm (``swarm`` given) rather than running offline."""
        return self.swarm is not None

    @property
    def peer_id(self) -> str:
        """The repository's libp2p peer id (initialises the repository if needed)."""
        if not (self.repo_dir / "config").exists():
            self.init(self.api_port or self.recorded_port)
        config = json.loads((self.repo_dir / "config").read_text(encoding="utf-8"))
        return str(config["Identity"]["PeerID"])

    def is_running(self) -> bool:
        """Return whether the daemon process started by this object is alive."""
        return self._proc is not None and self._proc.poll() is None

    def init(self, api_port: int | None = None) -> None:
        """Initialise the repository if needed and (re)write its isolated network config.

        Idempotent: an existing repository keeps its identity and blocks.

        Parameters
        ----------
        api_port
            The API port to configure; ``None`` or 0 lets the kernel choose.

        Raises
        ------
        DaemonError
            If ``jsipfs init`` fails or the config cannot be read.
        """
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.repo_dir / "config"
        if not config_path.exists():
            log.info("initialising js-ipfs repository %s", self.repo_dir)
            try:
                result = subprocess.run(
                    [str(self.jsipfs), "init", "--profile", "test", "--emptyRepo"],
                    env=self._env(),
                    cwd=self.repo_dir,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=_INIT_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise DaemonError(f"jsipfs init failed for {self.repo_dir}: {err}") from err
            if result.returncode != 0 or not config_path.exists():
                output = (result.stdout + result.stderr).decode(errors="replace")
                raise DaemonError(
                    f"jsipfs init failed for {self.repo_dir} (exit {result.returncode}):\n"
                    f"{_tail(output)}"
                )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DaemonError(f"cannot read js-ipfs config {config_path}: {err}") from err
        config["Addresses"] = {
            "API": f"/ip4/127.0.0.1/tcp/{api_port or 0}",
            "Gateway": [],
            "Swarm": list(self.swarm or []),
            "Announce": [],
            "NoAnnounce": [],
            "Delegates": [],
        }
        config["Bootstrap"] = list(self.bootstrap) if self.online else []
        discovery = config.setdefault("Discovery", {})
        discovery["MDNS"] = {**discovery.get("MDNS", {}), "Enabled": False}
        discovery["webRTCStar"] = {"Enabled": False}
        atomic_write(config_path, json.dumps(config, indent=2).encode("utf-8"))

    def start(self) -> str:
        """Initialise if needed, start the daemon and wait until its API answers.

        Returns
        -------
        str
            The API multiaddr.

        Raises
        ------
        DaemonError
            If another daemon runs on this repository, the API port recorded by an earlier
            start is taken, or the daemon exits or does not answer within ``startup_timeout``
            (the message includes the tail of its log).
        """
        if self.is_running():
            return self.api_addr
        port = self.api_port or self.recorded_port
        self.init(port)
        self._clear_stale_state()
        with open(self.log_path, "ab") as log_file:
            log_offset = log_file.tell()
            try:
                mode = [] if self.online else ["--offline"]
                self._proc = subprocess.Popen(
                    [str(self.jsipfs), "daemon", *mode, "--enable-preload=false"],
                    env=self._env(),
                    cwd=self.repo_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                raise DaemonError(f"cannot run {self.jsipfs}: {err}") from err
        atomic_write(self.repo_dir / PID_FILE, f"{self._proc.pid}\n".encode("ascii"))
        log.info("started js-ipfs daemon pid %d on %s", self._proc.pid, self.repo_dir)
        try:
            self._api_addr = self._wait_ready(self._proc, log_offset)
        except DaemonError as err:
            if port and "EADDRINUSE" in str(err):
                raise DaemonError(
                    f"the js-ipfs API port {port} of {self.repo_dir} is taken by another "
                    f"process; free it, or delete {self.repo_dir / API_PORT_FILE} to let the "
                    f"next start pick a new port (nodes given the old address must then be "
                    f"told the new one). {err}"
                ) from err
            raise
        match = _TCP_PORT.search(self._api_addr)
        if match and int(match.group(1)) != self.recorded_port:
            atomic_write(self.repo_dir / API_PORT_FILE, f"{match.group(1)}\n".encode("ascii"))
        log.info("js-ipfs API ready at %s", self._api_addr)
        return self._api_addr

    def stop(self) -> None:
        """Stop the daemon: SIGTERM, then SIGKILL after ``stop_timeout``. Idempotent."""
        if self._proc is None:
            return
        proc, self._proc, self._api_addr = self._proc, None, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("js-ipfs daemon pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        log.info("js-ipfs daemon pid %d stopped (exit %s)", proc.pid, proc.returncode)
        # A daemon that was killed leaves its lock and API file behind.
        _remove_state(self.repo_dir)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "IPFS_PATH": str(self.repo_dir), "NO_UPDATE_NOTIFIER": "1"}
        if self.online:
            hook = _write_multiaddr_hook(self.repo_dir)
            env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --import={hook.as_uri()}".strip()
        return env

    def _clear_stale_state(self) -> None:
        """Refuse to start twice on one repository; clean up after a daemon that died."""
        pid_path = self.repo_dir / PID_FILE
        pid = read_pid(pid_path)
        if pid is not None and _is_ipfs_daemon(pid):
            raise DaemonError(
                f"a js-ipfs daemon (pid {pid}) already runs on {self.repo_dir}; stop it "
                f"(`fleml-node devnet down` if the devnet started it, or kill {pid})"
            )
        if pid is not None:
            log.info("removing state left by dead js-ipfs daemon pid %d", pid)
            _remove_state(self.repo_dir)
        (self.repo_dir / _API_FILE).unlink(missing_ok=True)

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_offset: int) -> str:
        """Poll until the API answers; raise with the log tail if the daemon exits or hangs."""
        deadline = time.monotonic() + self.startup_timeout
        api_file = self.repo_dir / _API_FILE
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                # Leave the lock alone: it may belong to another daemon that made this one fail.
                self._proc = None
                (self.repo_dir / PID_FILE).unlink(missing_ok=True)
                raise DaemonError(
                    f"js-ipfs daemon on {self.repo_dir} exited with code {code} while starting; "
                    f"log tail:\n{self._log_tail(log_offset)}"
                )
            fatal = self._fatal_log_line(log_offset)
            if fatal is not None:
                tail = self._log_tail(log_offset)
                self.stop()
                raise DaemonError(
                    f"js-ipfs daemon on {self.repo_dir} failed while starting ({fatal}); "
                    f"log tail:\n{tail}"
                )
            if api_file.exists():
                addr = api_file.read_text(encoding="utf-8").strip()
                if addr:
                    with IpfsStore(addr, timeout=1.0, retries=0) as probe:
                        if probe.is_available():
                            return addr
            time.sleep(_POLL_SECONDS)
        tail = self._log_tail(log_offset)
        self.stop()
        raise DaemonError(
            f"js-ipfs daemon on {self.repo_dir} did not answer within "
            f"{self.startup_timeout:g} s; log tail:\n{tail}"
        )

    def _fatal_log_line(self, offset: int) -> str | None:
        """Return the first log line of this run that marks a fatal startup error."""
        for line in self._read_log(offset).splitlines():
            if any(marker in line for marker in _FATAL_LOG_MARKERS):
                return line.strip()
        return None

    def _read_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except OSError as err:
            return f"(log {self.log_path} unreadable: {err})"

    def _log_tail(self, offset: int) -> str:
        return _tail(self._read_log(offset))


_MULTIADDR_HOOKS = """\
// Written by fleml_node/devnet/ipfs.py for an online js-ipfs 0.66 daemon. The lockfile gives
// js-ipfs's libp2p stack @multiformats/multiaddr 11 but several of its dependencies
// (@libp2p/bootstrap, @libp2p/peer-record, ...) version 12, whose objects 11's isMultiaddr
// does not recognise: bootstrap peers get no addresses and identify fails. Every import that
// would load the top-level copy (12) loads @libp2p/peer-store's copy (11) instead.
const TOP = '/node_modules/@multiformats/multiaddr/';
export async function resolve(specifier, context, next) {
  const found = await next(specifier, context);
  if (specifier.startsWith('@multiformats/multiaddr') && found.url.includes(TOP) &&
      !found.url.includes('/node_modules/@libp2p/')) {
    const root = found.url.slice(0, found.url.indexOf(TOP));
    const from = root + '/node_modules/@libp2p/peer-store/package.json';
    return next(specifier, { ...context, parentURL: from });
  }
  return found;
}
"""
_MULTIADDR_REGISTER = """\
import { register } from 'node:module';
register(new URL('./multiaddr-hooks.mjs', import.meta.url));
"""


def _write_multiaddr_hook(repo_dir: Path) -> Path:
    """Write the resolve hook an online daemon preloads; returns the file to ``--import``."""
    atomic_write(repo_dir / "multiaddr-hooks.mjs", _MULTIADDR_HOOKS.encode("utf-8"))
    register = repo_dir / "multiaddr-register.mjs"
    atomic_write(register, _MULTIADDR_REGISTER.encode("utf-8"))
    return register


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(no output)"


def _remove_state(repo_dir: Path) -> None:
    """Remove the pid file, API file and repo lock of a daemon that is no longer running."""
    (repo_dir / PID_FILE).unlink(missing_ok=True)
    (repo_dir / _API_FILE).unlink(missing_ok=True)
    lock = repo_dir / _LOCK
    if lock.is_dir():
        shutil.rmtree(lock, ignore_errors=True)
    else:
        lock.unlink(missing_ok=True)


def _is_ipfs_daemon(pid: int) -> bool:
    """Whether ``pid`` is a live IPFS process.

    js-ipfs sets ``process.title = 'ipfs'``, which replaces its whole command line, so the
    command line is all there is to check.
    """
    return runs(pid, b"ipfs")


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """Stop a detached daemon by pid: SIGTERM, then SIGKILL after ``timeout``.

    Parameters
    ----------
    pid
        Process id from a pid file; ignored unless it is a live IPFS daemon.
    timeout
        Seconds between SIGTERM and SIGKILL.

    Returns
    -------
    bool
        ``True`` if a daemon was stopped, ``False`` if none was running under ``pid``.

    Raises
    ------
    DaemonError
        If the process survives SIGKILL.
    """
    if not _is_ipfs_daemon(pid):
        return False
    try:
        terminate(pid, timeout, "js-ipfs daemon")
    except TimeoutError as err:
        raise DaemonError(str(err)) from err
    return True


def find_detached(repo_dir: str | os.PathLike[str]) -> tuple[int, str] | None:
    """Find a daemon that runs on ``repo_dir``, started by any process.

    Returns
    -------
    tuple of (int, str) or None
        Its pid and API multiaddr, or ``None`` when none runs (or it does not answer).
    """
    repo = Path(repo_dir)
    pid = read_pid(repo / PID_FILE)
    if pid is None or not _is_ipfs_daemon(pid):
        return None
    try:
        addr = (repo / _API_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    with IpfsStore(addr, timeout=2.0, retries=0) as probe:
        return (pid, addr) if probe.is_available() else None


def stop_detached(repo_dir: str | os.PathLike[str], timeout: float = 10.0) -> int | None:
    """Stop the daemon that runs on ``repo_dir``, whoever started it, and clear its state.

    Returns
    -------
    int or None
        The pid that was stopped, or ``None`` if none was running.

    Raises
    ------
    DaemonError
        If the process survives SIGKILL.
    """
    repo = Path(repo_dir)
    pid = read_pid(repo / PID_FILE)
    if pid is None:
        return None
    stopped = stop_pid(pid, timeout)
    _remove_state(repo)
    return pid if stopped else None


@contextlib.contextmanager
def ensure_test_daemon(repo_dir: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Provide an IPFS API address for a test session.

    Yields ``$FLEML_IPFS_API`` when it is set (a daemon started by the test runner or a
    user's kubo); otherwise starts a :class:`LocalIpfsDaemon` on ``repo_dir`` (a temporary
    directory when ``None``) and stops it on exit.

    Parameters
    ----------
    repo_dir
        Where to keep the throw-away repository.

    Yields
    ------
    str
        The API address (multiaddr).
    """
    external = os.environ.get(ENV_API)
    if external:
        log.info("using the IPFS daemon at %s=%s", ENV_API, external)
        yield external
        return
    with contextlib.ExitStack() as stack:
        if repo_dir is None:
            repo_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="fleml-ipfs-"))
        daemon = stack.enter_context(LocalIpfsDaemon(repo_dir))
        yield daemon.api_addr
