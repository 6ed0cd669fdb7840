"""Run a whole federation on one machine and measure it: `fleml-node simulate`.

By default every round goes through the real path: a fresh FlemlConsortium on a local anvil
chain, weights and reports on a local IPFS daemon, the same ClientNode and AggregatorNode code
that members and aggregators run, stepped in one process (the clients take turns, so results
do not depend on thread timing). Each defense gets its own fresh chain and the same clients,
data split, malicious set and random streams, so defenses are compared on identical rounds.

``mode="memory"`` skips the chain and IPFS and calls the same training, attack and defense
functions directly. It is for large sweeps (benchmarks/sweep.py); because clients draw their
random streams from ``(seed, round, client)`` in both modes, a round's numbers are the same.

Per round and defense it records test accuracy, backdoor attack success rate, the flagged
clients, detection precision and recall against the known malicious set, bytes moved
(IPFS uploads and downloads of every node) and gas used (all transactions of the round).
Results are written as JSON and CSV with the full config, seed and machine, and as PNG plots.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from eth_account import Account

from fleml_node.attacks import ATTACKS, Attack, BackdoorAttack, make_attack
from fleml_node.attacks.coalition import CoalitionAttack, CoalitionContext
from fleml_node.defense import REGISTRY, make_defense
from fleml_node.defense.base import tensor_sha256
from fleml_node.defense.metrics import DetectionMetrics, detection_metrics
from fleml_node.learning import (
    ParamSpec,
    TrainConfig,
    attack_success_rate,
    configure_threads,
    evaluate,
    flatten,
    get_params,
    local_train,
    make_generator,
    unflatten,
)
from fleml_node.learning.datasets import DATASETS
from fleml_node.learning.runtime import device_info, resolve_device
from fleml_node.round_engine import (
    MemberDecision,
    RoundEngine,
    Submission,
    encode_update,
    encode_validation,
)
from fleml_node.storage import InvalidPayload, content_hash, encode_tensors
from fleml_node.storage.compression import UpdateEncoder
from fleml_node.task import (
    LOSS_EVAL_SAMPLES,
    TaskConfig,
    client_data,
    test_data,
    validation_data,
)

log = logging.getLogger(__name__)

DEFENSES: tuple[str, ...] = tuple(REGISTRY)  # what --defense all runs


@dataclass
class SimulationConfig:
    """Everything a simulation depends on (written beside its results)."""

    dataset: str = "mnist"
    num_clients: int = 10
    malicious_fraction: float = 0.3
    attack: str = "label_flip"
    attack_params: dict[str, Any] = field(default_factory=dict)
    defenses: tuple[str, ...] = ("fedavg", "fleml")
    defense_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: int = 5
    partition: str = "dirichlet"
    alpha: float = 0.5
    seed: int = 0
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    max_client_samples: int = 600
    validation_size: int = 500
    test_samples: int = 2000
    mode: str = "chain"  # chain | memory
    ipfs_api: str | None = None  # external IPFS daemon; None starts a local one
    round_seconds: int = 600
    compression: str = "none"  # members' update encoding (fleml_node.storage.compression)
    topk_fraction: float = 0.1
    device: str = "cpu"  # training and evaluation in memory mode: cpu | cuda[:i] | mps | auto
    # chain mode: members step on this many threads, their training one at a time (as in
    # memory mode) and their IPFS and chain work overlapping, as separate members' would
    member_threads: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.malicious_fraction < 1:
            raise ValueError("malicious_fraction must be in [0, 1)")
        unknown = [d for d in self.defenses if d not in REGISTRY]
        if unknown or not self.defenses:
            raise ValueError(f"unknown defense(s) {unknown}; choose from {list(REGISTRY)}")
        if self.attack and self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose from {list(ATTACKS)}")
        if self.attack and self.mode == "chain" and issubclass(ATTACKS[self.attack],
                                                               CoalitionAttack):
            raise ValueError(f"attack {self.attack!r} colludes (crafts its updates from the "
                             "round's updates): only mode='memory' (--mode memory) runs it")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {list(DATASETS)}")
        if self.mode not in ("chain", "memory"):
            raise ValueError("mode must be 'chain' or 'memory'")
        if self.rounds < 1 or self.num_clients < 2:
            raise ValueError("rounds must be >= 1 and num_clients >= 2")
        if self.member_threads < 1:
            raise ValueError("member_threads must be >= 1")
        self.defenses = tuple(self.defenses)
        resolve_device(self.device)  # a clear error now rather than in round 1

    def task(self) -> TaskConfig:
        return TaskConfig(
            dataset=self.dataset, seed=self.seed, num_clients=self.num_clients,
            partition=self.partition, alpha=self.alpha, validation_size=self.validation_size,
            max_client_samples=self.max_client_samples,
            train=TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              momentum=self.momentum, loss_eval_samples=LOSS_EVAL_SAMPLES),
            compression=self.compression, topk_fraction=self.topk_fraction,
        )

    def malicious_clients(self) -> list[int]:
        """The malicious client indices: a seeded draw of round(fraction * N) clients."""
        count = round(self.malicious_fraction * self.num_clients)
        order = torch.randperm(self.num_clients, generator=torch.Generator().manual_seed(
            self.seed + 7919))
        return sorted(order[:count].tolist())

    def make_attack(self) -> Attack | None:
        if not self.attack or self.attack == "none" or self.malicious_fraction == 0:
            return None
        params = dict(self.attack_params)
        if "federation_size" in {f.name for f in dataclasses.fields(ATTACKS[self.attack])}:
            params.setdefault("federation_size", self.num_clients)  # model replacement's n
        return make_attack(self.attack, **params)


@dataclass
class RoundRecord:
    defense: str
    round: int
    accuracy: float | None  # None: not evaluated (an aggregator run with --no-evaluate)
    backdoor_asr: float | None
    flagged: list[int]
    precision: float | None
    recall: float | None
    bytes_moved: int
    gas_used: int
    seconds: float
    # what the round engine decided per member (status, reason, coefficient), and the hash of
    # the aggregate: identical in both modes for the same seed
    members: list[dict[str, Any]] = field(default_factory=list)
    aggregate_sha256: str = ""


# A fault injected into what member `client` publishes in a round: given (round, client, the
# honest update's bytes) it returns (the bytes published, the hash committed), or None to
# leave that member honest. Both modes apply it at the same point.
Corruption = Callable[[int, int, bytes], tuple[bytes, bytes] | None]


def member_keys(num_clients: int) -> list[str]:
    """The local test keys: operator, aggregator, then one per member (both modes use them)."""
    from fleml_node.devnet.anvil import test_keys

    return test_keys(num_clients + 2)


def _record(defense: str, round_id: int, decisions: list[MemberDecision], aggregate_sha: str,
            index_of: dict[str, int], malicious: list[int], metrics: dict[str, float],
            moved: int, gas: int, seconds: float) -> RoundRecord:
    flagged = sorted(index_of[d.member] for d in decisions if d.status != "accepted")
    present = sorted(index_of[d.member] for d in decisions)
    det = _detection(flagged, malicious, present)
    members = [{**d.to_dict(), "coefficient": d.coefficient} for d in decisions]
    return RoundRecord(defense, round_id, metrics["accuracy"], metrics.get("backdoor_asr"),
                       flagged, det.precision, det.recall, moved, gas, seconds, members,
                       aggregate_sha)


class Evaluator:
    """Test accuracy and, for a backdoor, attack success rate of a global model."""

    def __init__(self, config: SimulationConfig, attack: Attack | None) -> None:
        x, y = test_data(config.task())
        if config.test_samples and config.test_samples < y.numel():
            keep = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(
                config.seed))[: config.test_samples]
            x, y = x[keep], y[keep]
        self.x, self.y = x, y
        self.backdoor = attack if isinstance(attack, BackdoorAttack) else None
        self.device = config.device

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        out = {"accuracy": evaluate(model, self.x, self.y, device=self.device).accuracy}
        if self.backdoor is not None:
            out["backdoor_asr"] = attack_success_rate(model, self.x, self.y,
                                                      self.backdoor.target_class,
                                                      self.backdoor.stamp, device=self.device)
        model.to("cpu")  # the aggregator's model (FLEML's look-ahead) lives on the CPU
        return out


def _detection(flagged: list[int], malicious: list[int], present: list[int]) -> DetectionMetrics:
    return detection_metrics([str(i) for i in flagged], [str(i) for i in malicious],
                             [str(i) for i in present])


# -- the real path: anvil + IPFS --------------------------------------------------------------
@contextlib.contextmanager
def _ipfs(config: SimulationConfig, work: Path) -> Iterator[str]:
    if config.ipfs_api:
        yield config.ipfs_api
        return
    from fleml_node.devnet.ipfs import LocalIpfsDaemon

    with LocalIpfsDaemon(work / "ipfs") as daemon:
        yield daemon.api_addr


@dataclass
class ChainFederation:
    """A federation on a fresh local chain: the aggregator, the clients and the chain.

    With a `pool`, the clients handle their events on its threads: in a consortium each member
    is its own machine, so one member's IPFS put, transaction and receipt wait overlap with
    the next one's training. The clients share one training lock, so training itself runs one
    member at a time, exactly as in memory mode, and the comparison of the two modes measures
    the real path's cost rather than extra cores.
    """

    aggregator: Any
    clients: list[Any]
    w3: Any
    malicious: list[int]
    pool: ThreadPoolExecutor | None = None

    def step(self) -> str:
        """One aggregator step, then every client handles what is new on chain; meanwhile
        the aggregator starts verifying the updates submitted so far, as its own process
        would while the other members train."""
        did = self.aggregator.step()
        self.poll_members()
        return did

    def poll_members(self) -> None:
        """Every client handles what is new on chain (on the pool's threads when there is
        one); the aggregator watches for submitted updates in between."""
        if self.pool is None:
            for client in self.clients:
                client.poll_once()
                self.aggregator.watch()
            return
        pending = {self.pool.submit(client.poll_once) for client in self.clients}
        while pending:
            # the aggregator's look for new updates costs a request or two: a few per second
            # keep its verification going without taking the members' CPU
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a member's error is the simulation's error
            self.aggregator.watch()


@contextlib.contextmanager
def chain_federation(config: SimulationConfig, defense_name: str, run_dir: Path,
                     ipfs_api: str, evaluate: Callable | None = None,
                     corrupt: Corruption | None = None) -> Iterator[ChainFederation]:
    """Start anvil, deploy, admit the clients and build every node; stop anvil on exit."""
    from fleml_node.aggregator import AggregatorNode
    from fleml_node.chain.contract import Consortium, connect
    from fleml_node.chain.events import EventFollower
    from fleml_node.client import ClientNode
    from fleml_node.devnet.anvil import LocalAnvil, test_keys
    from fleml_node.devnet.consortium import deploy_local_consortium
    from fleml_node.storage import IpfsStore

    task, attack, malicious = config.task(), config.make_attack(), config.malicious_clients()
    run_dir.mkdir(parents=True, exist_ok=True)
    n = config.num_clients
    with LocalAnvil(accounts=n + 2, log_file=run_dir / "anvil.log") as anvil:
        keys = test_keys(n + 2)
        w3 = connect(anvil.url)
        store = IpfsStore(ipfs_api, timeout=60)
        # the consortium commits the aggregator's validation set, as a real one would
        validation = validation_data(task)
        blob = encode_validation(*validation)
        record = deploy_local_consortium(w3, keys, n, run_dir / "deployment.json", "client",
                                         validation=(content_hash(blob), store.put(blob)))
        clients = []
        train_lock = threading.Lock()
        for i in range(n):
            consortium = Consortium(w3, record, Account.from_key(keys[2 + i]))
            x, y = client_data(task, i)
            follower = EventFollower(consortium, run_dir / f"client{i}.events.json")
            client = ClientNode(consortium, store, follower, task, x, y, i,
                                attack=attack if i in malicious else None,
                                train_lock=train_lock)
            if corrupt is not None:
                client.publish_update = _corrupted_publish(client, i, corrupt)
            clients.append(client)
        defense = make_defense(defense_name, **config.defense_params.get(defense_name, {}))
        aggregator = AggregatorNode(
            Consortium(w3, record, Account.from_key(keys[1])), store, defense, task,
            until_round=config.rounds, round_seconds=config.round_seconds,
            validation=validation, evaluate=evaluate)
        pool = (ThreadPoolExecutor(max_workers=config.member_threads,
                                   thread_name_prefix="member")
                if config.member_threads > 1 else None)
        with pool or contextlib.nullcontext():
            yield ChainFederation(aggregator, clients, w3, malicious, pool)


def _corrupted_publish(client: Any, index: int,
                       corrupt: Corruption) -> Callable[[int, bytes], tuple[bytes, str]]:
    honest = client.publish_update

    def publish(round_id: int, blob: bytes) -> tuple[bytes, str]:
        fault = corrupt(round_id, index, blob)
        if fault is None:
            return honest(round_id, blob)
        published, committed = fault
        return committed, client.store.put(published)

    return publish


def run_chain(config: SimulationConfig, defense_name: str, work: Path, ipfs_api: str,
              on_round: Callable[[RoundRecord], None],
              corrupt: Corruption | None = None) -> list[RoundRecord]:
    """One defense through the real path on a fresh chain."""
    evaluator = Evaluator(config, config.make_attack())
    with chain_federation(config, defense_name, work / defense_name, ipfs_api,
                          evaluator, corrupt) as fed:
        index_of = {c.address: i for i, c in enumerate(fed.clients)}
        records: list[RoundRecord] = []
        block_before, started = fed.w3.eth.block_number, time.perf_counter()
        while True:
            did = fed.step()
            if did == "finalized":
                s = fed.aggregator.summaries[-1]
                block_after = fed.w3.eth.block_number
                gas = sum(fed.w3.eth.get_block(b)["gasUsed"]
                          for b in range(block_before + 1, block_after + 1))
                moved = s.bytes_down + s.bytes_up + sum(
                    h.bytes_up + h.bytes_down for c in fed.clients for h in c.history
                    if h.round_id == s.round_id)
                rec = _record(defense_name, s.round_id, s.decisions, s.aggregate_sha256,
                              index_of, fed.malicious, s.metrics, moved, gas,
                              time.perf_counter() - started)
                records.append(rec)
                on_round(rec)
                block_before, started = block_after, time.perf_counter()
            if did == "done":
                return records


# -- the in-memory path ------------------------------------------------------------------------
def run_memory(config: SimulationConfig, defense_name: str,
               on_round: Callable[[RoundRecord], None],
               corrupt: Corruption | None = None) -> list[RoundRecord]:
    """One defense without chain or IPFS: the same members, encoding and round engine.

    Each member trains, encodes its update as a client node does (a member whose training
    yields NaN/Inf skips the round, as a client node does) and commits its bytes' hash; the
    round engine decides on those bytes exactly as the aggregator node does on IPFS's.
    With a colluding attack (:class:`~fleml_node.attacks.coalition.CoalitionAttack`) the
    malicious members train honestly, then :func:`craft_coalition` replaces their updates
    with the coalition's, once per round, before anything is encoded.
    """
    task, attack, malicious = config.task(), config.make_attack(), config.malicious_clients()
    evaluator = Evaluator(config, attack)
    engine = RoundEngine(task, make_defense(defense_name,
                                            **config.defense_params.get(defense_name, {})),
                         validation_data(task))
    scratch = task.initial_model()
    global_params = get_params(task.initial_model())
    addresses = [Account.from_key(k).address for k in member_keys(config.num_clients)[2:]]
    index_of = {a: i for i, a in enumerate(addresses)}
    data = [client_data(task, i) for i in range(config.num_clients)]
    encoders = [UpdateEncoder.for_task(task, i) for i in range(config.num_clients)]
    coalition = attack if isinstance(attack, CoalitionAttack) else None
    coalition_model = task.initial_model() if coalition is not None else None
    records = []
    for r in range(1, config.rounds + 1):
        started = time.perf_counter()
        submissions, moved = [], 0
        model_bytes = len(encode_tensors(global_params, kind="model", round=r,
                                         extra={"dataset": task.dataset}))
        updates = [
            local_train(scratch, global_params, x, y, task.train, make_generator(task.seed, r, i),
                        attack=attack if i in malicious and coalition is None else None,
                        device=config.device)[0]
            for i, (x, y) in enumerate(data)
        ]
        if coalition is not None:
            updates = craft_coalition(coalition, updates, malicious, coalition_context(
                config, defense_name, r, global_params, coalition_model, engine.validation))
        for i, (_x, y) in enumerate(data):
            update = updates[i]
            try:
                blob = encode_update(update, r, int(y.numel()), addresses[i], encoders[i])
            except InvalidPayload:
                continue  # the member's own update is not finite: it skips the round
            fault = corrupt(r, i, blob) if corrupt else None
            published, committed = fault if fault else (blob, content_hash(blob))
            submissions.append(Submission(addresses[i], i, committed, "", published))
            moved += model_bytes + len(published)  # the dense model down, the update up
        outcome = engine.decide(r, global_params, submissions)
        global_params = outcome.result_params
        engine.model.load_state_dict(global_params)
        rec = _record(defense_name, r, outcome.decisions, tensor_sha256(outcome.aggregate),
                      index_of, malicious, evaluator(engine.model), moved, 0,
                      time.perf_counter() - started)
        records.append(rec)
        on_round(rec)
    return records


# Stream key of the coalition's per-round generator: (seed, round, COALITION_STREAM), apart
# from the clients' (seed, round, i) and the root update's (seed, round, 10**6).
COALITION_STREAM = 10**6 + 1


def coalition_context(config: SimulationConfig, defense_name: str, round_id: int,
                      global_params: dict[str, torch.Tensor], model: torch.nn.Module | None,
                      validation: tuple[torch.Tensor, torch.Tensor] | None) -> CoalitionContext:
    """What a coalition may know of a round: public facts only (size, model, validation set,
    task seed, the defense's published parameters)."""
    x_val, y_val = validation if validation is not None else (None, None)
    return CoalitionContext(round_id=round_id, num_clients=config.num_clients,
                            global_params=flatten(global_params), model=model,
                            x_val=x_val, y_val=y_val, seed=config.seed, defense=defense_name,
                            defense_params=dict(config.defense_params.get(defense_name, {})))


def craft_coalition(attack: CoalitionAttack, updates: list[dict[str, torch.Tensor]],
                    malicious: list[int], context: CoalitionContext
                    ) -> list[dict[str, torch.Tensor]]:
    """Replace the malicious members' honest updates with the coalition's crafted ones.

    The benign set handed to :meth:`CoalitionAttack.craft` holds the finite updates of the
    honest members; members whose own update is not finite (they skip the round) take no
    part. The coalition's generator is ``(seed, round, COALITION_STREAM)``.
    """
    flats = [flatten(u) for u in updates]
    finite = [bool(torch.isfinite(f).all()) for f in flats]
    members = [i for i in malicious if finite[i]]
    if not members:
        return updates
    d = flats[0].numel()
    benign = [f for i, f in enumerate(flats) if i not in malicious and finite[i]]
    crafted = attack.craft(torch.stack(benign) if benign else torch.empty(0, d),
                           torch.stack([flats[i] for i in members]),
                           make_generator(context.seed, context.round_id, COALITION_STREAM),
                           context)
    spec = ParamSpec.from_named(updates[members[0]])
    out = list(updates)
    for row, i in enumerate(members):
        out[i] = unflatten(crafted[row], spec)
    return out


# -- orchestration and output ----------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def simulate(config: SimulationConfig, out_dir: Path,
             on_round: Callable[[RoundRecord], None] = lambda r: None) -> dict[str, Any]:
    """Run every configured defense and write results.json, results.csv and plots."""
    configure_threads()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    records: list[RoundRecord] = []
    with contextlib.ExitStack() as stack:
        # chains, IPFS repository and node state are scratch: only the results are kept
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleml-sim-")))
        ipfs_api = stack.enter_context(_ipfs(config, work)) if config.mode == "chain" else ""
        for name in config.defenses:
            if config.mode == "chain":
                records += run_chain(config, name, work, ipfs_api, on_round)
            else:
                records += run_memory(config, name, on_round)
    results = {
        "config": asdict(config),
        "malicious_clients": config.malicious_clients(),
        # the attack as run (defaults filled in; a coalition's knowledge mode is among them)
        "attack": attack.describe() if (attack := config.make_attack()) else None,
        "machine": {**machine_info(), **device_info(config.device)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": time.time() - started,
        "rounds": [asdict(r) for r in records],
        "summary": summarize(records, config),
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_csv(records, out_dir / "results.csv")
    plot(records, out_dir)
    return results


def summarize(records: list[RoundRecord], config: SimulationConfig) -> dict[str, Any]:
    """Final accuracy, ASR, detection over all rounds, bytes and gas per round, per defense."""
    malicious = config.malicious_clients()
    out = {}
    for name in config.defenses:
        rows = [r for r in records if r.defense == name]
        if not rows:
            continue
        total = DetectionMetrics(0, 0, 0, 0)
        for r in rows:
            total = total + _detection(r.flagged, malicious, list(range(config.num_clients)))
        out[name] = {
            "final_accuracy": rows[-1].accuracy,
            "final_backdoor_asr": rows[-1].backdoor_asr,
            "detection": total.to_dict(),
            "bytes_per_round": sum(r.bytes_moved for r in rows) / len(rows),
            "gas_per_round": sum(r.gas_used for r in rows) / len(rows),
            "seconds_per_round": sum(r.seconds for r in rows) / len(rows),
        }
    return out


def write_csv(records: list[RoundRecord], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["defense", "round", "accuracy", "backdoor_asr", "flagged",
                         "precision", "recall", "bytes_moved", "gas_used", "seconds"])
        for r in records:
            writer.writerow([r.defense, r.round,
                             "" if r.accuracy is None else f"{r.accuracy:.4f}",
                             "" if r.backdoor_asr is None else f"{r.backdoor_asr:.4f}",
                             " ".join(map(str, r.flagged)),
                             "" if r.precision is None else f"{r.precision:.3f}",
                             "" if r.recall is None else f"{r.recall:.3f}",
                             r.bytes_moved, r.gas_used, f"{r.seconds:.2f}"])


def plot(records: list[RoundRecord], out_dir: Path) -> None:
    """accuracy.png (accuracy per round per defense) and detection.png (precision/recall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(dict.fromkeys(r.defense for r in records))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        rows = [r for r in records if r.defense == name]
        ax.plot([r.round for r in rows], [100 * r.accuracy for r in rows], marker="o",
                label=name)
    ax.set(xlabel="round", ylabel="test accuracy (%)", title="Accuracy per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, metric in zip(axes, ("precision", "recall"), strict=True):
        for name in names:
            rows = [r for r in records if r.defense == name]
            ax.plot([r.round for r in rows],
                    [float("nan") if getattr(r, metric) is None else getattr(r, metric)
                     for r in rows], marker="o", label=name)
        ax.set(xlabel="round", title=f"Detection {metric}", ylim=(-0.05, 1.05))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "detection.png", dpi=120)
    plt.close(fig)
