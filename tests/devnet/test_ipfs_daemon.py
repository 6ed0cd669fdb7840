"""The devnet's js-ipfs daemon manager (real daemons, a few seconds each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from fleml_node.devnet.executables import JSIPFS_ENV
from fleml_node.devnet.ipfs import (
    API_PORT_FILE,
    LocalIpfsDaemon,
    ensure_test_daemon,
    find_detached,
    stop_detached,
)
from fleml_node.storage import DaemonError, IpfsStore


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository initialised once (``jsipfs init`` takes seconds); tests copy it."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    LocalIpfsDaemon(repo).init()
    return repo


@pytest.fixture
def repo(template_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the initialised repository."""
    return Path(shutil.copytree(template_repo, tmp_path / "repo"))


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_start_stop_through_the_python_api(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEML_IPFS_API", raising=False)
    with ensure_test_daemon(repo) as addr:
        store = IpfsStore(addr, timeout=10.0, retries=0)
        assert store.is_available()
        config = json.loads((repo / "config").read_text())
        assert config["Addresses"]["API"] == "/ip4/127.0.0.1/tcp/0"
        assert config["Addresses"]["Swarm"] == [] and config["Addresses"]["Gateway"] == []
        assert config["Bootstrap"] == [] and "RPC" not in config["Addresses"]
        pid = int((repo / "daemon.pid").read_text())
        assert pid_alive(pid)
        with pytest.raises(DaemonError, match="already runs on"):
            LocalIpfsDaemon(repo).start()
    assert not pid_alive(pid) and not store.is_available()
    assert not (repo / "repo.lock").exists() and not (repo / "daemon.pid").exists()


def test_restarts_keep_the_api_port_and_recover_after_a_kill(repo: Path) -> None:
    peer_id = json.loads((repo / "config").read_text())["Identity"]["PeerID"]
    daemon = LocalIpfsDaemon(repo, startup_timeout=30.0)
    addr = daemon.start()
    port = int((repo / API_PORT_FILE).read_text())
    assert addr == f"/ip4/127.0.0.1/tcp/{port}/http"
    cid = IpfsStore(addr, timeout=10.0, retries=0).put(b"kept across restarts")

    daemon.stop()
    assert daemon.start() == addr  # same port after a clean stop

    # A daemon killed hard leaves its repo lock behind; the next start recovers, same port.
    pid = daemon.pid
    assert pid is not None and find_detached(repo) == (pid, addr)
    os.kill(pid, signal.SIGKILL)
    daemon._proc.wait()
    assert (repo / "repo.lock").exists() and find_detached(repo) is None
    again = LocalIpfsDaemon(repo, startup_timeout=30.0)
    assert again.start() == addr and again.pid != pid
    new_pid = again.pid
    store = IpfsStore(addr, timeout=10.0, retries=0)
    assert store.get(cid) == b"kept across restarts" and store.is_pinned(cid)
    assert json.loads((repo / "config").read_text())["Identity"]["PeerID"] == peer_id

    assert stop_detached(repo) == new_pid  # as `fleml-node devnet down` stops it
    assert not pid_alive(new_pid) and not store.is_available()
    assert not (repo / "daemon.pid").exists() and stop_detached(repo) is None


def test_a_taken_recorded_port_fails_clearly(repo: Path) -> None:
    with LocalIpfsDaemon(repo, startup_timeout=30.0):
        port = int((repo / API_PORT_FILE).read_text())
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        daemon = LocalIpfsDaemon(repo, startup_timeout=30.0)
        with pytest.raises(DaemonError, match=f"API port {port} .* is taken") as info:
            daemon.start()
    assert API_PORT_FILE in str(info.value) and not daemon.is_running()
    assert int((repo / API_PORT_FILE).read_text()) == port  # never moved silently


def test_startup_failure_reports_the_log_tail(repo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = LocalIpfsDaemon(repo, api_port=port, startup_timeout=30.0)
        with pytest.raises(DaemonError, match="EADDRINUSE") as info:
            daemon.start()
    assert "log tail" in str(info.value)
    assert not daemon.is_running()


def test_missing_executable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JSIPFS_ENV, str(tmp_path / "no-jsipfs"))
    with pytest.raises(DaemonError, match=f"no-jsipfs \\(named by {JSIPFS_ENV}\\) does not exist"):
        LocalIpfsDaemon(tmp_path / "repo")


def test_ensure_test_daemon_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEML_IPFS_API", "/ip4/127.0.0.1/tcp/5999")
    with ensure_test_daemon(tmp_path / "unused") as addr:
        assert addr == "/ip4/127.0.0.1/tcp/5999"
    assert not (tmp_path / "unused").exists()
