"""The explorer's round page for a 50-member round: first load and cached loads.

    python benchmarks/explorer_bench.py [--members 50] [--requests 30] [--seed 0]

A fresh anvil chain and a local js-ipfs daemon (or $FLEML_IPFS_API) hold one real finalized
round of --members members: the real AggregatorNode (FLEML, MNIST's model) opens it, every
member puts a synthetic update on IPFS and commits it with its own key through the contract
bindings (a seeded fifth of them send large noise, so the report has flagged members), and the
aggregator closes it, runs FLEML, publishes the result, the report and the defense's inputs
and finalizes. Members are not trained: the explorer only shows what the chain and the report
say, and both are exactly what a trained round leaves.

Then the explorer (`fleml_node.explorer`, the Flask app) serves the round page ``/rounds/1``
and its JSON twin ``/api/rounds/1``: the first load of each by a fresh explorer (every log,
block time, receipt and the report fetched and checked), then --requests cached loads, through
Flask's test client and over real HTTP on a loopback port (8950-8999). Per series: median,
p95, min and max in milliseconds, and the JSON-RPC requests one load sends.

Target (issue 13): the round page of a 50-member round in < 300 ms after the first load.
Results: benchmarks/results/explorer.json, with the config, seed and machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from eth_account import Account  # noqa: E402

from fleml_node.aggregator import AggregatorNode  # noqa: E402
from fleml_node.chain.contract import Consortium, RoundStatus, connect, recorded_requests  # noqa: E402,E501
from fleml_node.chain.deployment import load_record  # noqa: E402
from fleml_node.defense import make_defense  # noqa: E402
from fleml_node.devnet.anvil import LocalAnvil, test_keys  # noqa: E402
from fleml_node.devnet.consortium import deploy_local_consortium  # noqa: E402
from fleml_node.devnet.ipfs import ensure_test_daemon  # noqa: E402
from fleml_node.learning import configure_threads, get_params  # noqa: E402
from fleml_node.round_engine import encode_update  # noqa: E402
from fleml_node.simulate import machine_info  # noqa: E402
from fleml_node.storage import IpfsStore, content_hash  # noqa: E402
from fleml_node.task import TaskConfig, validation_data  # noqa: E402

TARGET_MS = 300.0
OUT = ROOT / "benchmarks" / "results" / "explorer.json"


def build_round(w3: Any, record_path: Path, keys: list[str], store: IpfsStore,
                task: TaskConfig, members: int, seed: int) -> dict[str, Any]:
    """One finalized round: the real aggregator, members committing synthetic updates."""
    record = load_record(record_path)
    aggregator = AggregatorNode(Consortium(w3, record, Account.from_key(keys[1])), store,
                                make_defense("fleml"), task, until_round=1,
                                round_seconds=3600, validation=validation_data(task))
    assert aggregator.step() == "opened"
    base = get_params(task.initial_model())
    gen = torch.Generator().manual_seed(seed)
    noisy = sorted(torch.randperm(members, generator=gen)[: members // 5].tolist())
    started = time.perf_counter()
    for i in range(members):
        member = Consortium(w3, record, Account.from_key(keys[2 + i]))
        scale = 0.5 if i in noisy else 0.01
        update = {k: scale * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        blob = encode_update(update, 1, 100, member.account.address)
        member.submit_update(1, content_hash(blob), store.put(blob))
    submitted = time.perf_counter() - started
    steps = []
    while (did := aggregator.step()) != "done":
        steps.append(did)
        if len(steps) > 10:
            raise RuntimeError(f"the round did not finish: {steps}")
    summary = aggregator.summaries[-1]
    return {"noisy_members": noisy, "submit_seconds": round(submitted, 2),
            "aggregator_steps": steps,
            "accepted": sum(d.status == "accepted" for d in summary.decisions),
            "rejected": len(summary.rejected), "flagged": len(summary.flagged),
            "aggregation_seconds": {k: round(v, 2) for k, v in summary.seconds.items()}}


def timed(fetch: Callable[[], tuple[int, int]], w3: Any) -> tuple[float, int, int, int]:
    """One load: milliseconds, HTTP status, response bytes, JSON-RPC requests sent."""
    with recorded_requests(w3) as requests:
        t0 = time.perf_counter()
        status, size = fetch()
        ms = 1000 * (time.perf_counter() - t0)
    if status != 200:
        raise RuntimeError(f"the explorer answered {status}")
    return ms, status, size, len(requests)


def series(fetch: Callable[[], tuple[int, int]], w3: Any, count: int) -> dict[str, Any]:
    loads = [timed(fetch, w3) for _ in range(count)]
    ms = sorted(load[0] for load in loads)
    return {"requests": count, "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
            "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2),
            "bytes": loads[-1][2], "rpc_requests_per_load": loads[-1][3]}


def measure(reader: Consortium, store: IpfsStore, requests: int) -> dict[str, Any]:
    from werkzeug.serving import make_server

    from fleml_node.explorer import Explorer
    from fleml_node.explorer.web import create_app

    pages = {"html": "/rounds/1", "api": "/api/rounds/1"}
    out: dict[str, Any] = {}
    for kind, path in pages.items():
        # a fresh explorer per page, so each page's first load starts from nothing cached
        app = create_app(Explorer(reader, store))
        client = app.test_client()

        def fetch(path: str = path, client: Any = client) -> tuple[int, int]:
            response = client.get(path)
            return response.status_code, len(response.data)

        ms, _, size, rpc = timed(fetch, reader.w3)
        out[kind] = {"path": path, "first_load": {"ms": round(ms, 2), "bytes": size,
                                                  "rpc_requests": rpc},
                     "cached_test_client": series(fetch, reader.w3, requests)}
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}{path}"

        def over_http(url: str = url) -> tuple[int, int]:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, len(response.read())

        try:
            out[kind]["cached_http"] = series(over_http, reader.w3, requests)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    configure_threads()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    task = TaskConfig(dataset="mnist", seed=args.seed, num_clients=args.members,
                      validation_size=200, max_client_samples=100)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleml-explorer-")))
        ipfs_api = stack.enter_context(ensure_test_daemon(tmp / "ipfs"))
        keys = test_keys(args.members + 2)
        anvil = stack.enter_context(LocalAnvil(accounts=args.members + 2,
                                               log_file=tmp / "anvil.log"))
        w3 = connect(anvil.url)
        started = time.perf_counter()
        record = deploy_local_consortium(w3, keys, args.members, tmp / "deployment.json")
        store = IpfsStore(ipfs_api, timeout=60)
        built = build_round(w3, record.path, keys, store, task, args.members, args.seed)
        setup_seconds = time.perf_counter() - started
        reader = Consortium(w3, load_record(record.path))
        assert reader.get_round(1).status is RoundStatus.FINALIZED
        print(f"round 1 of {args.members} members finalized in {setup_seconds:.0f} s "
              f"({built['flagged']} flagged, {built['rejected']} rejected)", file=sys.stderr)
        pages = measure(reader, store, args.requests)
    worst = max(pages[k][s]["p95_ms"] for k in pages
                for s in ("cached_test_client", "cached_http"))
    results = {
        "benchmark": "explorer round page",
        "config": {"members": args.members, "requests": args.requests, "defense": "fleml",
                   "dataset": task.dataset, "chain": "anvil (fresh, confirmations 0)",
                   "ipfs": "local js-ipfs daemon ($FLEML_IPFS_API or one started here)"},
        "seed": args.seed,
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup_seconds": round(setup_seconds, 1),
        "round": built,
        "pages": pages,
        "target_ms": TARGET_MS,
        "worst_cached_p95_ms": worst,
        "meets_target": worst < TARGET_MS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for page in pages.values():
        print(f"{page['path']:>14}: first load {page['first_load']['ms']:.0f} ms; cached "
              f"median {page['cached_test_client']['median_ms']:.1f} ms, p95 "
              f"{page['cached_test_client']['p95_ms']:.1f} ms (test client); over HTTP "
              f"median {page['cached_http']['median_ms']:.1f} ms, p95 "
              f"{page['cached_http']['p95_ms']:.1f} ms")
    print(f"target < {TARGET_MS:.0f} ms after the first load: "
          f"{'met' if results['meets_target'] else 'MISSED'}; {args.out}")


if __name__ == "__main__":
    main()
