"""The local js-ipfs daemon manager and its command line (real daemons, a few seconds each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleml_node.storage import DaemonError, IpfsStore
from fleml_node.storage.daemon import ENV_JSIPFS, LocalIpfsDaemon, ensure_test_daemon


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleml_node.storage.daemon", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


def test_cli_start_stop_and_recovery_after_a_kill(repo: Path, tmp_path: Path) -> None:
    pidfile, addrfile = tmp_path / "ipfs.pid", tmp_path / "ipfs.addr"
    args = ["start", "--repo", str(repo), "--pidfile", str(pidfile), "--addr-file", str(addrfile)]
    peer_id = json.loads((repo / "config").read_text())["Identity"]["PeerID"]
    started = cli(*args)
    assert started.returncode == 0, started.stderr
    addr = addrfile.read_text().strip()
    assert started.stdout.strip() == addr
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    cid = IpfsStore(addr, timeout=10.0, retries=0).put(b"kept across restarts")

    # A daemon killed hard leaves its repo lock behind; the next start must recover.
    os.kill(pid, signal.SIGKILL)
    assert (repo / "repo.lock").exists()
    restarted = cli(*args)
    assert restarted.returncode == 0, restarted.stderr
    new_pid = int(pidfile.read_text())
    store = IpfsStore(addrfile.read_text().strip(), timeout=10.0, retries=0)
    assert new_pid != pid and store.get(cid) == b"kept across restarts" and store.is_pinned(cid)
    assert json.loads((repo / "config").read_text())["Identity"]["PeerID"] == peer_id

    stopped = cli("stop", "--pidfile", str(pidfile))
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(new_pid) and not pidfile.exists() and not store.is_available()
    assert cli("stop", "--pidfile", str(pidfile)).returncode == 0  # nothing left to stop


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
    monkeypatch.setenv(ENV_JSIPFS, str(tmp_path / "no-jsipfs"))
    with pytest.raises(DaemonError, match="no-jsipfs does not exist"):
        LocalIpfsDaemon(tmp_path / "repo")


def test_ensure_test_daemon_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEML_IPFS_API", "/ip4/127.0.0.1/tcp/5999")
    with ensure_test_daemon(tmp_path / "unused") as addr:
        assert addr == "/ip4/127.0.0.1/tcp/5999"
    assert not (tmp_path / "unused").exists()
