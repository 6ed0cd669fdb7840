"""Runtime helpers for the learning core: torch thread count and deterministic generators.

Every random draw of the learning core (model initialisation, local shuffling, poisoning)
comes from an explicit ``torch.Generator`` derived here from integer keys such as
``(seed, round, client)``.  The keys are mixed by NumPy's ``SeedSequence`` (a hash designed
for this purpose), so results do not depend on the global torch RNG, on the order in which
clients are simulated, or on how many draws another client made.

Torch's intra-op thread count is a process-wide setting; :func:`configure_threads` sets it
from an argument or the ``FLEML_TORCH_THREADS`` environment variable, and defaults to 1.
Measured on the 2-core development machine with the MNIST CNN: 2 threads train a client
epoch about 1.4x faster than 1 on an idle machine, but as soon as another process holds a
core, OpenMP barrier waits make 2 threads up to 50x slower (seconds instead of 0.2 s), while
1 thread only loses its share.  Local training runs many small kernels, so one thread per
process (and several processes for parallel clients) is the robust choice.  Library code
never changes the setting on its own; entry points call :func:`configure_threads`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

logger = logging.getLogger(__name__)

THREADS_ENV = "FLEML_TORCH_THREADS"
DEFAULT_THREADS = 1


def derive_seed(*keys: int) -> int:
    """Mix non-negative integer keys into one 63-bit seed.

    Parameters
    ----------
    *keys : int
        At least one non-negative integer, e.g. ``(seed, round, client_id)``.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``; equal keys give equal seeds on every platform.
    """
    if not keys:
        raise ValueError("derive_seed needs at least one key")
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, int | np.integer) or key < 0:
            raise ValueError(f"seed keys must be non-negative integers, got {key!r}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def make_generator(*keys: int) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``.

    Parameters
    ----------
    *keys : int
        Non-negative integers identifying the stream, e.g. ``(seed, round, client_id)``.

    Returns
    -------
    torch.Generator
        A fresh generator; two calls with equal keys produce identical streams.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(*keys))
    return generator


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op thread count for this process.

    Parameters
    ----------
    num_threads : int, optional
        Threads to use.  Defaults to ``$FLEML_TORCH_THREADS`` when set, else 1 (see the
        module docstring for why).

    Returns
    -------
    int
        The thread count now in effect.
    """
    if num_threads is None:
        env = os.environ.get(THREADS_ENV)
        if env is not None:
            try:
                num_threads = int(env)
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be a positive integer, got {env!r}") from None
        else:
            num_threads = DEFAULT_THREADS
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    torch.set_num_threads(num_threads)
    logger.info("torch intra-op threads set to %d", num_threads)
    return num_threads


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to train and evaluate on: ``"cpu"`` (the default), ``"cuda"``,
    ``"cuda:1"``, ``"mps"``, or ``"auto"`` (the first CUDA device when one is present, else the
    CPU).

    Raises
    ------
    ValueError
        Not a device name torch knows, or a CUDA/MPS device that is not present here.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device type {dev.type!r}")
    return dev


def device_info(device: str | torch.device | None = None) -> dict[str, object]:
    """What a benchmark records about the device it ran on (type, name, torch's CUDA build)."""
    dev = resolve_device(device)
    info: dict[str, object] = {"device": str(dev), "cuda_build": torch.version.cuda}
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
    else:
        info["device_name"] = "cpu"
    return info
