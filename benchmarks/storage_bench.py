"""Benchmark of FLEML storage: serialization, hashing and the local IPFS daemon.

Usage::

    .venv/bin/python benchmarks/storage_bench.py [--repeats N] [--rounds N] [--clients N]
                                                 [--seed S] [--out PATH]

The payload is an update shaped like the project's MNIST CNN (``build_model("mnist")``,
about 207k float32 parameters, ~0.8 MB serialized) filled with seeded N(0, 0.01) noise;
every measured object is a distinct update so that the daemon cannot deduplicate blocks.

Parts
-----
(a) single update, ``--repeats`` times each: encode, content hash, decode + validation
    (expected spec), put (add + pin, CIDv1), get from the daemon with hash verification,
    get served by the local cache, and the end-to-end publish (encode + hash + put) and
    fetch (get + verify + decode) paths.
(b) a federated round of ``--clients`` updates, ``--rounds`` times: all clients publish
    one after the other, then the aggregator fetches, verifies and decodes all of them.

The daemon is the one named by ``FLEML_IPFS_API`` or, when unset, a fresh offline js-ipfs
daemon started for the run. Results go to ``benchmarks/results/storage.json`` with the
configuration, seed, machine information and timestamps. The machine is shared: the load
average before and after is recorded so that figures can be read against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import ipfshttpclient
import safetensors
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fleml_node.devnet.ipfs import ensure_test_daemon  # noqa: E402
from fleml_node.learning import ParamSpec, build_model, get_params  # noqa: E402
from fleml_node.storage import (  # noqa: E402
    IpfsStore,
    LocalStore,
    content_hash,
    decode_tensors,
    encode_tensors,
)

T = TypeVar("T")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine_info(daemon_version: str) -> dict[str, object]:
    try:
        node = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        node = "unavailable"
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "safetensors": safetensors.__version__,
        "node": node,
        "ipfs_daemon_version": daemon_version,
    }


def summary(seconds: list[float], nbytes: int | None = None) -> dict[str, float]:
    """Latency statistics in milliseconds, plus MB/s at the median when a size is given."""
    ordered = sorted(seconds)
    median = statistics.median(ordered)
    stats = {
        "n": len(ordered),
        "median_ms": round(median * 1e3, 3),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
        "min_ms": round(ordered[0] * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }
    if nbytes is not None:
        stats["mb_per_s_at_median"] = round(nbytes / median / 1e6, 2)
    return stats


def timed(fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[float, T]:
    """Call ``fn(*args, **kwargs)``; return the elapsed seconds and its result."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def random_update(spec: ParamSpec, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        name: torch.randn(shape, generator=generator) * 0.01
        for name, shape in zip(spec.names, spec.shapes, strict=True)
    }


def publish(store: IpfsStore, update: dict[str, torch.Tensor], round_: int) -> tuple[str, bytes]:
    """Client side: serialize, hash (the on-chain commitment) and put."""
    data = encode_tensors(update, kind="update", round=round_)
    return store.put(data), content_hash(data)


def fetch(store: IpfsStore, cid: str, digest: bytes, spec: ParamSpec, round_: int) -> object:
    """Aggregator side: get, verify against the commitment, decode and validate."""
    return decode_tensors(store.get(cid, expected_hash=digest), expected_kind="update",
                          expected_round=round_, expected_spec=spec)


def single_update(store: IpfsStore, cached: IpfsStore, spec: ParamSpec, repeats: int,
                  generator: torch.Generator) -> dict[str, object]:
    times: dict[str, list[float]] = {
        key: []
        for key in ("encode", "content_hash", "decode_validate", "put", "get_verify",
                    "get_cache_hit", "publish_end_to_end", "fetch_end_to_end")
    }
    size = 0
    for index in range(repeats):
        update = random_update(spec, generator)
        seconds, data = timed(encode_tensors, update, kind="update", round=index)
        times["encode"].append(seconds)
        size = len(data)
        seconds, digest = timed(content_hash, data)
        times["content_hash"].append(seconds)
        seconds, _ = timed(decode_tensors, data, expected_kind="update", expected_spec=spec)
        times["decode_validate"].append(seconds)
        seconds, cid = timed(store.put, data)
        times["put"].append(seconds)
        seconds, fetched = timed(store.get, cid, expected_hash=digest)
        times["get_verify"].append(seconds)
        if fetched != data:
            raise RuntimeError(f"{cid} came back different from what was put")
        cached.cache.put(data)
        seconds, _ = timed(cached.get, cid, expected_hash=digest)
        times["get_cache_hit"].append(seconds)
        seconds, (cid, digest) = timed(publish, store, random_update(spec, generator), index)
        times["publish_end_to_end"].append(seconds)
        seconds, _ = timed(fetch, store, cid, digest, spec, index)
        times["fetch_end_to_end"].append(seconds)
    return {
        "payload_bytes": size,
        "latency": {key: summary(values, size) for key, values in times.items()},
    }


def federated_round(store: IpfsStore, spec: ParamSpec, clients: int, rounds: int,
                    generator: torch.Generator) -> dict[str, object]:
    publish_s, fetch_s = [], []
    total = 0
    for round_ in range(rounds):
        updates = [random_update(spec, generator) for _ in range(clients)]
        total = sum(len(encode_tensors(u, kind="update", round=round_)) for u in updates)
        start = time.perf_counter()
        commitments = [publish(store, update, round_) for update in updates]
        publish_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        for cid, digest in commitments:
            fetch(store, cid, digest, spec, round_)
        fetch_s.append(time.perf_counter() - start)
    return {
        "clients": clients,
        "rounds": rounds,
        "bytes_per_round": total,
        "publish_all_sequential": summary(publish_s, total),
        "fetch_verify_decode_all_sequential": summary(fetch_s, total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/storage.json")
    args = parser.parse_args()

    spec = ParamSpec.from_named(get_params(build_model("mnist", seed=args.seed)))
    generator = torch.Generator().manual_seed(args.seed)
    started = now()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fleml-storage-bench-") as tmp:
        external = os.environ.get("FLEML_IPFS_API")
        with ensure_test_daemon(Path(tmp) / "ipfs") as addr:
            store = IpfsStore(addr, timeout=30.0, retries=0)
            cached = IpfsStore(addr, timeout=30.0, retries=0, cache=LocalStore(Path(tmp) / "c"))
            version = store.version()
            store.put(encode_tensors(random_update(spec, generator), kind="update", round=0))
            single = single_update(store, cached, spec, args.repeats, generator)
            round_ = federated_round(store, spec, args.clients, args.rounds, generator)
    result = {
        "benchmark": "storage",
        "started_utc": started,
        "finished_utc": now(),
        "config": {
            "model": "fleml_node.learning MnistCNN (build_model('mnist'))",
            "params": spec.numel,
            "tensors": len(spec.names),
            "update_distribution": "N(0, 0.01), float32, a fresh update per measurement",
            "repeats": args.repeats,
            "rounds": args.rounds,
            "clients": args.clients,
            "seed": args.seed,
            "daemon": external or "js-ipfs started by the benchmark (offline, loopback)",
            "store": {
                "timeout_s": 30.0,
                "retries": 0,
                "cid": "v1 base32 raw-leaves pinned",
                "transport": f"ipfshttpclient {ipfshttpclient.__version__}, one Client per store",
            },
            "timing": "time.perf_counter around each call, sequential, warm daemon",
        },
        "machine": {**machine_info(version), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "single_update": single,
        "round": round_,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
