"""Detached processes of the devnet, known by pid files: is one alive, stop it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.1


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or ``None`` if there is none or it is not a number."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (PID 1 in containers may not reap)."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            return False
        # The state follows the parenthesised command name, which may itself hold spaces.
        return stat.rpartition(")")[2].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs(pid: int, name: bytes) -> bool:
    """Whether ``pid`` is alive and, where /proc tells, its command line contains ``name``.

    The check guards against a pid file whose process died and whose pid was reused.
    """
    if not is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return name in cmdline


def terminate(pid: int, timeout: float, what: str) -> None:
    """Stop ``pid``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Parameters
    ----------
    pid
        The process, which the caller has checked is the one it means.
    timeout
        Seconds between SIGTERM and SIGKILL, and the most to wait after SIGKILL.
    what
        The process's description, for log lines and the error.

    Raises
    ------
    TimeoutError
        If the process survives SIGKILL.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    log.warning("%s pid %d ignored SIGTERM for %g s; killing it", what, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, timeout):
        raise TimeoutError(f"{what} pid {pid} survived SIGKILL")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(_POLL_SECONDS)
    return not is_alive(pid)
