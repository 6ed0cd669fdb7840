"""Peak-memory measurement shared by the benchmarks (Linux /proc; None where it is missing).

    before = rss_bytes("VmRSS") if reset_peak() else None
    ...                                    # the work to measure
    peak = rss_bytes("VmHWM")              # the process's peak since the reset
"""

from __future__ import annotations

from pathlib import Path


def rss_bytes(field: str) -> int | None:
    """The ``field`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the process's peak resident size (VmHWM) to its current size; False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
