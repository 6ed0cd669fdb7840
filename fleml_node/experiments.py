"""One cell runner and one results store for every sweep (benchmarks/sweep.py, the
effectiveness suite), run one after another, in a process pool or as Ray tasks.

A :class:`Cell` is one (dataset, attack, seed) point of a sweep, run for a tuple of defenses on
identical clients (one ``simulate()`` in memory mode). :func:`run_cell` is a pure function of
the cell: it pins torch to one thread, so the same cell gives the same numbers sequentially,
in a worker process or in a Ray task on another machine (only the timing fields differ; see
:func:`comparable`). :class:`ResultStore` keeps one JSON file per finished cell, written
atomically, so an interrupted sweep resumes where it stopped (:func:`run_cells` skips cells
already in the store).

    cells = [Cell("sweep", "mnist", "label_flipping", "label_flip", {}, seed,
                  ("fedavg", "fleml"), {"num_clients": 10, "rounds": 8, ...})
             for seed in (0, 1)]
    results = run_cells(cells, ResultStore("out/cells"), workers=2)      # process pool
    results = run_cells(cells, store, ray_address="local")               # Ray on this machine
    results = run_cells(cells, store, ray_address="ray://head:10001", device="cuda")

Ray is optional (``pip install .[ray]``); it is imported only when ``ray_address`` is given.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleml_node.storage.local import atomic_write

logger = logging.getLogger(__name__)

# what run_cell sets for the duration of a cell (fleml_node.learning.runtime reads it)
THREADS_ENV = "FLEML_TORCH_THREADS"
# SimulationConfig fields a cell sets itself; `base` may not repeat them
CELL_FIELDS = ("dataset", "seed", "defenses", "attack", "attack_params", "mode")
_KEY_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

Progress = Callable[[dict[str, Any], int, int], None]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Cell:
    """One sweep cell: a dataset under one attack and seed, for a tuple of defenses.

    ``attack`` is a registry name (:data:`fleml_node.attacks.ATTACKS`) or ``"none"``;
    ``attack_key`` is the row name tables use (``"label_flipping"``). ``base`` holds the other
    :class:`~fleml_node.simulate.SimulationConfig` keyword arguments (num_clients, rounds,
    alpha, malicious_fraction, max_client_samples, ...). A cell without an attack is the
    clean reference: its ``malicious_fraction`` is set to 0 (no client is counted malicious).
    ``attack_params`` and ``base`` must be JSON values; they are copied on construction.
    """

    suite: str
    dataset: str
    attack_key: str
    attack: str
    attack_params: dict
    seed: int
    defenses: tuple[str, ...]
    base: dict

    def __post_init__(self) -> None:
        for name in ("suite", "dataset", "attack_key", "attack"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Cell.{name} must be a non-empty string, "
                                 f"got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"Cell.seed must be an int, got {self.seed!r}")
        if isinstance(self.defenses, str) or not self.defenses or not all(
                isinstance(d, str) for d in self.defenses):
            raise ValueError(f"Cell.defenses must be a non-empty sequence of names, "
                             f"got {self.defenses!r}")
        for name in ("attack_params", "base"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"Cell.{name} must be a dict, got {getattr(self, name)!r}")
        repeated = sorted(set(self.base) & set(CELL_FIELDS))
        if repeated:
            raise ValueError(f"Cell.base may not set {repeated}: the cell's own fields do")
        base = copy.deepcopy(self.base)
        if self.attack == "none":
            base["malicious_fraction"] = 0.0
        try:  # JSON values only: the key and the stored result depend on it
            _canonical([self.attack_params, base])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Cell.attack_params and Cell.base must be JSON values: {exc}") \
                from None
        object.__setattr__(self, "defenses", tuple(self.defenses))
        object.__setattr__(self, "attack_params", copy.deepcopy(self.attack_params))
        object.__setattr__(self, "base", base)

    def __hash__(self) -> int:
        return hash(self.key())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` gives back an equal cell."""
        return {"suite": self.suite, "dataset": self.dataset, "attack_key": self.attack_key,
                "attack": self.attack, "attack_params": copy.deepcopy(self.attack_params),
                "seed": self.seed, "defenses": list(self.defenses),
                "base": copy.deepcopy(self.base)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        if not isinstance(data, dict):
            raise ValueError(f"a cell must be a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"bad cell: missing fields {missing}, unknown fields {unknown}")
        return cls(**{**data, "defenses": tuple(data["defenses"])})

    def key(self) -> str:
        """A stable short id: a readable prefix and the sha256 of the canonical JSON of all
        fields (so two cells differing in anything, base included, never share a key)."""
        digest = hashlib.sha256(_canonical(self.to_dict()).encode()).hexdigest()[:16]
        prefix = _KEY_SAFE.sub("_", f"{self.suite}-{self.dataset}-{self.attack_key}-"
                                    f"s{self.seed}")
        return f"{prefix}-{digest}"

    def config(self, device: str = "cpu") -> Any:
        """The cell's :class:`~fleml_node.simulate.SimulationConfig` (memory mode).

        ``device`` is passed on when SimulationConfig has a ``device`` field; without one only
        ``"cpu"`` is accepted.
        """
        from fleml_node.simulate import SimulationConfig

        kwargs = dict(copy.deepcopy(self.base), dataset=self.dataset, seed=self.seed,
                      defenses=self.defenses, attack=self.attack,
                      attack_params=copy.deepcopy(self.attack_params), mode="memory")
        fields = {f.name for f in dataclasses.fields(SimulationConfig)}
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ValueError(f"Cell.base has fields SimulationConfig does not know: {unknown}")
        if "device" in fields:
            kwargs["device"] = device
        elif device != "cpu":
            raise ValueError(f"device {device!r} asked for, but this SimulationConfig has no "
                             "device field (CPU only)")
        return SimulationConfig(**kwargs)


def _as_cell(cell: Cell | dict[str, Any]) -> Cell:
    return cell if isinstance(cell, Cell) else Cell.from_dict(cell)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the cell (simulate() reads FLEML_TORCH_THREADS)."""
    import torch

    saved_env, saved_threads = os.environ.get(THREADS_ENV), torch.get_num_threads()
    os.environ[THREADS_ENV] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved_env
        torch.set_num_threads(saved_threads)


def cell_machine(device: str) -> dict[str, Any]:
    """Where a cell ran: the simulator's machine record plus host, device and load."""
    from fleml_node.simulate import machine_info

    info = machine_info()
    info.update(host=socket.gethostname(), device=device, loadavg=list(os.getloadavg()),
                pid=os.getpid(), platform=platform.platform())
    return info


def defense_params(cell: Cell | dict[str, Any]) -> dict[str, Any]:
    """Every defense's effective parameters in ``cell`` (its defaults with the cell's
    ``defense_params`` applied), as its reports record them.

    A cell's key names only what the cell sets, so a result stored before a defense's default
    changed would otherwise be reused as if it were current; :func:`run_cells` compares these.
    """
    from fleml_node.defense import make_defense

    cell = _as_cell(cell)
    given = cell.base.get("defense_params", {})
    return json.loads(_canonical({name: make_defense(name, **given.get(name, {})).params()
                                  for name in cell.defenses}))


def run_cell(cell_dict: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Run one cell (``simulate()`` in memory mode, in a scratch directory) on one torch
    thread and return a JSON-ready result:
    ``{cell, key, summary, rounds, malicious_clients, seconds, machine}``.

    A pure function of the cell: the same cell gives the same numbers wherever it runs; only
    the timing fields (``seconds`` here, per round and per defense) and ``machine`` differ.
    """
    from fleml_node.simulate import simulate

    cell = _as_cell(cell_dict)
    config = cell.config(device)
    with _one_thread(), tempfile.TemporaryDirectory(prefix="fleml-cell-") as scratch:
        started = time.perf_counter()
        result = simulate(config, Path(scratch))
        seconds = time.perf_counter() - started
        machine = cell_machine(device)
    out = {"cell": cell.to_dict(), "key": cell.key(), "summary": result["summary"],
           "rounds": result["rounds"], "malicious_clients": result["malicious_clients"],
           "defense_params": defense_params(cell), "seconds": seconds, "machine": machine}
    return json.loads(json.dumps(out))  # JSON-ready for certain (and a deep copy)


# timing and placement: the only parts of a result that differ between runs of a cell
TIMING_KEYS = frozenset({"seconds", "seconds_per_round", "machine"})


def comparable(result: Any) -> Any:
    """``result`` without its timing and machine fields, for comparing runs of a cell."""
    if isinstance(result, dict):
        return {k: comparable(v) for k, v in result.items() if k not in TIMING_KEYS}
    if isinstance(result, list):
        return [comparable(v) for v in result]
    return result


class ResultStore:
    """One JSON file per finished cell, ``<directory>/<key>.json``.

    A result is written to a temporary file in the same directory, flushed to disk and then
    renamed over ``<key>.json`` (:func:`os.replace`, atomic on POSIX), so a reader sees
    either no file or a whole one. A file that does not parse as a result of its key (left
    by something else, or truncated by a full disk) never counts as done: the cell runs again.
    """

    SUFFIX = ".json"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not key or _KEY_SAFE.search(key) or key[0] == ".":
            raise ValueError(f"not a cell key: {key!r}")
        return self.directory / f"{key}{self.SUFFIX}"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored result of ``key``, or None when there is no whole one."""
        try:
            data = json.loads(self.path(key).read_text())
        except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict) or data.get("key") != key or "summary" not in data:
            return None
        return data

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, result: dict[str, Any]) -> Path:
        """Store a :func:`run_cell` result under its key, atomically."""
        if not isinstance(result, dict) or "cell" not in result or "summary" not in result:
            raise ValueError("not a cell result (needs 'cell', 'key' and 'summary')")
        key = result.get("key")
        if key != _as_cell(result["cell"]).key():
            raise ValueError(f"result key {key!r} is not its cell's key")
        target = self.path(key)
        atomic_write(target, (json.dumps(result, indent=1, allow_nan=True) + "\n").encode())
        return target

    def results(self) -> list[dict[str, Any]]:
        """Every whole result in the store, by key."""
        out = []
        for path in sorted(self.directory.glob(f"*{self.SUFFIX}")):
            if path.name.startswith("."):
                continue
            data = self.get(path.name[: -len(self.SUFFIX)])
            if data is not None:
                out.append(data)
        return out


class CellsFailed(RuntimeError):
    """Some cells raised; every other cell's result was stored (a rerun resumes)."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = [f"  {key}: {type(exc).__name__}: {exc}" for key, exc in failures.items()]
        super().__init__(f"{len(failures)} cell(s) failed (the others are stored):\n"
                         + "\n".join(lines))


def run_cells(cells: Iterable[Cell | dict[str, Any]], store: ResultStore, *, workers: int = 1,
              ray_address: str | None = None, device: str = "cpu",
              progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run every cell not yet in ``store`` and return all their results, in ``cells`` order.

    * ``workers=1`` (and no ``ray_address``): one after another in this process;
    * ``workers>1``: a process pool of that many (spawn) processes;
    * ``ray_address``: one Ray task per cell, declaring ``num_cpus=1`` (and ``num_gpus=1``
      when ``device`` is cuda). ``"local"`` starts a Ray instance on this machine (with
      ``workers`` CPUs when ``workers>1``, else all of them); anything else is passed to
      ``ray.init(address=...)`` (``"auto"``, ``"ray://head:10001"``); the cluster's workers
      need fleml_node and the datasets installed.

    A stored result counts as done only if it ran on the same ``device`` (CUDA kernels need
    not round as the CPU's do) and with the parameters its defenses have now
    (:func:`defense_params`: a changed default makes it stale); otherwise the cell runs again
    and its result replaces the stored one. Results stored before parameters were recorded
    are reused, and counted in a warning. Each result is stored as soon as its cell finishes, and
    ``progress(result, done, total)``
    is called (``done`` counts cells finished in this call, ``total`` those it had to run).
    Cells whose run raises are reported together at the end (:class:`CellsFailed`) after the
    others finished and were stored. Duplicate cells run once.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(device, str) or not device:
        raise ValueError(f"device must be a device name ('cpu', 'cuda', ...), got {device!r}")
    ordered = [_as_cell(c) for c in cells]
    for cell in ordered:  # a bad cell fails here, before hours of work on the others
        cell.config(device)
    unique = {c.key(): c for c in ordered}
    # a cell's key does not name the device: a result from another device is not reused
    pending, unrecorded = [], 0
    for key, cell in unique.items():
        stored = store.get(key)
        if not _done(stored, device, cell):
            pending.append(cell)
        elif "defense_params" not in stored:
            unrecorded += 1
    if unrecorded:
        logger.warning("%d stored result(s) in %s predate parameter records: reused, but "
                       "whether their defenses ran with today's parameters cannot be checked",
                       unrecorded, store.directory)
    failures: dict[str, BaseException] = {}
    done = 0

    def finished(result: dict[str, Any]) -> None:
        nonlocal done
        store.put(result)
        done += 1
        if progress is not None:
            progress(result, done, len(pending))

    if pending:
        if ray_address is not None:
            _run_ray(pending, ray_address, workers, device, finished, failures)
        elif workers == 1:
            for cell in pending:
                try:
                    result = run_cell(cell.to_dict(), device)
                except Exception as exc:  # noqa: BLE001 - reported with the others at the end
                    failures[cell.key()] = exc
                    continue
                finished(result)
        else:
            _run_pool(pending, workers, device, finished, failures)
    if failures:
        raise CellsFailed(failures)
    results = {}
    for key in unique:
        result = store.get(key)
        if result is None:
            raise RuntimeError(f"cell {key} finished but its result is not in {store.directory}")
        results[key] = result
    return [results[c.key()] for c in ordered]


def _done(result: dict[str, Any] | None, device: str, cell: Cell) -> bool:
    if result is None or result.get("machine", {}).get("device", "cpu") != device:
        return False
    recorded = result.get("defense_params")
    if recorded is not None and recorded != defense_params(cell):
        logger.info("stored result %s is stale: its defenses ran with other parameters",
                    result.get("key"))
        return False
    return True


def _run_pool(pending: list[Cell], workers: int, device: str,
              finished: Callable[[dict[str, Any]], None],
              failures: dict[str, BaseException]) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context) as pool:
        futures = {pool.submit(run_cell, c.to_dict(), device): c for c in pending}
        remaining = set(futures)
        while remaining:
            complete, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in complete:
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001
                    failures[futures[future].key()] = exc
                    continue
                finished(result)


def _run_ray(pending: list[Cell], address: str, workers: int, device: str,
             finished: Callable[[dict[str, Any]], None],
             failures: dict[str, BaseException]) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install '.[ray]' "
                           "(or -r requirements-ray.txt)") from None
    started_here = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=workers if workers > 1 else None, include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started_here = True
    try:
        task = ray.remote(num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0,
                          max_retries=0)(run_cell)
        refs = {task.remote(c.to_dict(), device): c for c in pending}
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the cell's error
                    failures[refs[ref].key()] = exc
                    continue
                finished(result)
    finally:
        if started_here:
            ray.shutdown()
