"""`fleml-node`: the command line of FLEML's nodes.

Every option can also come from a TOML config file (``--config FILE``, before or after the
command): a ``[common]`` table applies to every command that has the option, and a table named
after a command (``[client]``, ``[aggregator]``, ``[audit]``, ``[status]``, ``[simulate]``) to
that command; keys are option names with underscores (``ipfs_api = "/ip4/127.0.0.1/tcp/5001"``).
An unknown table or key is an error. Options given on the command line win. ``examples/`` has
a commented config for a client and for an aggregator.

Names a user picks from (``--dataset``, ``--defense``, ``--attack``) are read from the
registries of the modules that implement them, so a typo fails while the arguments are parsed,
before anything connects to the chain or IPFS.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

import click

from fleml_node import __version__

log = logging.getLogger("fleml_node")

DEFAULT_ROUNDS = 5  # `aggregator` without --rounds or --until-round


# -- names from the registries --------------------------------------------------------------
class RegistryChoice(click.Choice):
    """A :class:`click.Choice` whose names are read from a registry when first needed.

    The registries live in modules that import torch; reading them lazily keeps
    ``fleml-node --help`` and ``--version`` quick, while each command's parsing and ``--help``
    still see exactly the registered names.

    Parameters
    ----------
    names : Callable[[], Iterable[str]]
        Returns the valid names (called once).
    extra : Sequence[str]
        Names the command accepts besides the registry's (e.g. ``all``).
    """

    def __init__(self, names: Callable[[], Iterable[str]], extra: Sequence[str] = ()) -> None:
        self._names = names
        self._extra = tuple(extra)
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._loaded is None:
            self._loaded = (*self._names(), *self._extra)
        return self._loaded

    @choices.setter
    def choices(self, _value: Sequence[str]) -> None:
        """click.Choice.__init__ assigns the (empty) list; the registry is the source."""


def _dataset_names() -> Iterable[str]:
    from fleml_node.learning.datasets import DATASETS

    return DATASETS


def _defense_names() -> Iterable[str]:
    from fleml_node.defense import REGISTRY

    return REGISTRY


def _attack_names() -> Iterable[str]:
    from fleml_node.attacks import ATTACKS

    return ATTACKS


def _partition_names() -> Iterable[str]:
    from fleml_node.task import PARTITIONS

    return PARTITIONS


# -- config files ---------------------------------------------------------------------------
def _config_keys(command: click.Command) -> dict[str, str]:
    """Config keys a command accepts -> the parameter each sets.

    A key is an option's long name with underscores (``num_clients``, ``round``, ``defense``)
    or its parameter name where that differs (``round_id``, ``defenses``).
    """
    keys: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or not param.expose_value \
                or param.name in (None, "help"):
            continue
        keys[param.name] = param.name
        for opt in (*param.opts, *param.secondary_opts):
            if opt.startswith("--"):
                keys[opt[2:].replace("-", "_")] = param.name
    return keys


def read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a ``--config`` TOML file into each command's option defaults.

    Parameters
    ----------
    path : str or Path
        The TOML file: a ``[common]`` table and one table per command.

    Returns
    -------
    dict[str, dict[str, Any]]
        For every command, its defaults by parameter name: the ``[common]`` keys that command
        has, overridden by its own table.

    Raises
    ------
    click.BadParameter
        The file cannot be read or parsed, or names a table, or a key in a table, that no
        command has (the message names the key and the table).
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read config {path}: {exc}") from exc
    keys = {name: _config_keys(cmd) for name, cmd in main.commands.items()}
    stray = sorted(k for k, v in data.items() if not isinstance(v, dict))
    if stray:
        raise click.BadParameter(f"key(s) {stray} in {path} are outside any table; "
                                 f"put them under [common] or [COMMAND]")
    unknown = sorted(set(data) - {"common", *keys})
    if unknown:
        raise click.BadParameter(f"unknown table(s) {unknown} in {path}; "
                                 f"use [common] or one of {list(keys)}")
    every = {k for command_keys in keys.values() for k in command_keys}
    for table, values in data.items():
        valid = every if table == "common" else set(keys[table])
        bad = sorted(set(values) - valid)
        if bad:
            raise click.BadParameter(f"unknown key(s) {bad} in table [{table}] of {path}; "
                                     f"valid keys there: {', '.join(sorted(valid))}")
    common = data.get("common", {})
    return {
        name: {command_keys[k]: v for k, v in {**common, **data.get(name, {})}.items()
               if k in command_keys}
        for name, command_keys in keys.items()
    }


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--config`` callback, before the command (all tables) or after it (its own table)."""
    if not value:
        return value
    tables = read_config(value)
    if ctx.command is main:
        ctx.default_map = tables
    else:
        # after the subcommand: its own defaults, over any from a --config before it
        ctx.default_map = {**(ctx.default_map or {}), **tables.get(ctx.info_name or "", {})}
    return value


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE``; eager, so the file's values are defaults for every other option."""
    return click.option(
        "--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True,
        expose_value=False,
        help="TOML file with option defaults ([common] and one table per command).")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, prog_name="fleml-node")
@config_option
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """FLEML nodes: federated learning coordinated by contracts, weights on IPFS.

    Members run `client`, the aggregator runs `aggregator`, anyone can `audit` a round;
    `simulate` runs a whole federation on this machine.
    """
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


# Dev-only machinery has its own module; its commands load it lazily (see devnet/cli.py).
from fleml_node.devnet.cli import devnet  # noqa: E402

main.add_command(devnet)


def _node_logging() -> None:
    """Long-running nodes log what they do at INFO even without -v."""
    logger = logging.getLogger("fleml_node")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the expected failures (no chain, no IPFS, bad key or record) into one clear line.

    The error classes are imported when the command runs, not when it is decorated: importing
    the chain binding loads web3, which ``fleml-node --help`` must not pay for.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fleml_node.chain.contract import ChainError
        from fleml_node.chain.deployment import DeploymentError
        from fleml_node.storage import StorageError

        try:
            return fn(*args, **kwargs)
        except (ChainError, DeploymentError, StorageError, ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
            sys.exit(130)

    return wrapper


# -- shared options -------------------------------------------------------------------------
def chain_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--rpc``, ``--deployment``, ``--chain-profile`` and ``--config``: what every chain
    command needs."""
    options = [
        config_option,
        click.option("--rpc", default="http://127.0.0.1:8545", show_default=True,
                     envvar="FLEML_RPC",
                     help="JSON-RPC URL of the chain; several nodes of one chain, comma-"
                          "separated, are tried in turn when one fails [env FLEML_RPC]."),
        click.option("--deployment", type=click.Path(dir_okay=False), envvar="FLEML_DEPLOYMENT",
                     help="Deployment record from `brownie run deploy` "
                          "[default: deployments/<chain id>.json; env FLEML_DEPLOYMENT]."),
        click.option("--chain-profile", envvar="FLEML_CHAIN_PROFILE",
                     help="How to talk to the chain (EVM version, fees, PoA, confirmations), "
                          "overriding the deployment record's: anvil, hardhat, clique, auto, "
                          "or a JSON file [default: the record's; env FLEML_CHAIN_PROFILE]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def ipfs_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--ipfs-api`` and ``--ipfs-timeout``, for the commands that move weights or reports."""
    options = [
        click.option("--ipfs-api", envvar="FLEML_IPFS_API",
                     default="/ip4/127.0.0.1/tcp/5001", show_default=True,
                     help="IPFS HTTP RPC API (multiaddr or URL); kubo or js-ipfs "
                          "[env FLEML_IPFS_API]."),
        click.option("--ipfs-timeout", default=60.0, show_default=True,
                     help="Seconds allowed for each IPFS call."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def key_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--keystore", type=click.Path(exists=True, dir_okay=False),
        help="Encrypted keystore of this node's account (password from "
             "FLEML_KEYSTORE_PASSWORD or a prompt); without it FLEML_PRIVATE_KEY is used.")(fn)


# The task's options and their defaults, shared by every command that trains or aggregates;
# a command changes a default through task_options(...) where it must (simulate caps shares).
TASK_DEFAULTS: dict[str, Any] = {
    "dataset": "mnist", "seed": 0, "num_clients": 10, "partition": "dirichlet", "alpha": 0.5,
    "validation_size": 500, "max_client_samples": 0, "epochs": 1, "batch_size": 32,
    "lr": 0.05, "momentum": 0.0, "compression": "none", "topk_fraction": 0.1,
}


def task_options(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The task options (dataset, split, training), as one decorator for every command.

    Every node of a federation must agree on them, so they have one name, one help text and
    one type everywhere.

    Parameters
    ----------
    **defaults
        Defaults that differ for this command, by parameter name (a key of
        :data:`TASK_DEFAULTS`), e.g. ``task_options(max_client_samples=600)``.

    Returns
    -------
    Callable
        The decorator adding the options.

    Raises
    ------
    TypeError
        A default names no task option.
    """
    unknown = sorted(set(defaults) - set(TASK_DEFAULTS))
    if unknown:
        raise TypeError(f"task_options has no option(s) {unknown}")
    d = {**TASK_DEFAULTS, **defaults}
    options = [
        click.option("--dataset", type=RegistryChoice(_dataset_names), default=d["dataset"],
                     show_default=True, help="Dataset; fixes the model (CIFAR-10 needs its "
                                             "files: FLEML_CIFAR10_DIR)."),
        click.option("--seed", default=d["seed"], show_default=True,
                     help="Seed of the initial model, the split and the clients' streams."),
        click.option("--num-clients", type=click.IntRange(min=1), default=d["num_clients"],
                     show_default=True, help="Members the public dataset is split over."),
        click.option("--partition", type=RegistryChoice(_partition_names),
                     default=d["partition"], show_default=True, help="How the data is split."),
        click.option("--alpha", default=d["alpha"], show_default=True,
                     help="Dirichlet concentration (smaller = more non-IID)."),
        click.option("--validation-size", default=d["validation_size"], show_default=True,
                     help="Clean samples reserved for the aggregator."),
        click.option("--max-client-samples", default=d["max_client_samples"], show_default=True,
                     help="Cap on each member's share of the public dataset (0 = none)."),
        click.option("--epochs", default=d["epochs"], show_default=True, help="Local epochs."),
        click.option("--batch-size", default=d["batch_size"], show_default=True,
                     help="Local batch size."),
        click.option("--lr", default=d["lr"], show_default=True, help="Local learning rate."),
        click.option("--momentum", default=d["momentum"], show_default=True,
                     help="Local SGD momentum."),
        click.option("--compression", type=click.Choice(["none", "fp16", "int8", "topk"]),
                     default=d["compression"], show_default=True,
                     help="Members' update encoding: dense float32, half precision, 8-bit "
                          "stochastic quantization, or top-k with error feedback."),
        click.option("--topk-fraction", type=click.FloatRange(0, 1, min_open=True),
                     default=d["topk_fraction"], show_default=True,
                     help="Share of an update's entries sent with --compression topk."),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def task_from(opts: dict[str, Any]):
    from fleml_node.learning import TrainConfig
    from fleml_node.task import LOSS_EVAL_SAMPLES, TaskConfig

    return TaskConfig(
        dataset=opts["dataset"], seed=opts["seed"], num_clients=opts["num_clients"],
        partition=opts["partition"], alpha=opts["alpha"],
        validation_size=opts["validation_size"], max_client_samples=opts["max_client_samples"],
        train=TrainConfig(epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                          momentum=opts["momentum"], loss_eval_samples=LOSS_EVAL_SAMPLES),
        compression=opts["compression"], topk_fraction=opts["topk_fraction"],
    )


def parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON where they can be (numbers, lists, bools)."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


def _contact_chain(opts: dict[str, Any], with_key: bool):
    """Connect, read the deployment record, load the key when the command signs; one clear
    line when any of them fails (one-shot commands stop there, nodes wait: `_start_node`)."""
    from fleml_node.chain.contract import connect, load_account
    from fleml_node.chain.deployment import default_record_path, load_record
    from fleml_node.chain.profile import load_profile

    profile = load_profile(opts["chain_profile"]) if opts.get("chain_profile") else None
    w3 = connect(opts["rpc"], poa=profile.poa if profile else None)
    record = load_record(opts["deployment"] or default_record_path(w3.eth.chain_id))
    account = load_account(opts.get("keystore")) if with_key else None
    return w3, record, account, profile


def _bind_chain(opts: dict[str, Any], with_key: bool):
    """Connect to the chain, load the key when the command signs, and bind the consortium."""
    from fleml_node.chain.contract import bind_consortium

    w3, record, account, profile = _contact_chain(opts, with_key)
    # retried at start-up for a bounded time, as the running node retries its reads
    return bind_consortium(w3, record, account, profile=profile)


def _contact_ipfs(opts: dict[str, Any]):
    """The IPFS store, once its API has answered (else one clear line)."""
    from fleml_node.storage import IpfsStore, IpfsUnavailable

    store = IpfsStore(opts["ipfs_api"], timeout=opts["ipfs_timeout"])
    if not store.is_available():
        raise IpfsUnavailable(
            f"no IPFS API answers at {opts['ipfs_api']}: start a daemon (kubo: `ipfs daemon`; "
            f"or a local js-ipfs with a chain: `fleml-node devnet up`) or pass --ipfs-api")
    return store


def _bind(opts: dict[str, Any], with_key: bool):
    """Connect to the chain and IPFS, and load the key when the command signs."""
    consortium = _bind_chain(opts, with_key)
    return consortium, _contact_ipfs(opts)


def _start_node(opts: dict[str, Any], what: str, build: Callable[..., Any]) -> Any:
    """``build(consortium, store)`` for a long-running node, riding out outages at start-up.

    Nodes wait for their services as they do while running: when the chain RPC or the IPFS
    daemon does not answer (down, restarting, not up yet), start-up is retried with the
    running node's backoff (fleml_node.retry), the first failure logged at once with its
    address and later ones every tenth attempt, for as long as it takes or `--start-timeout`
    seconds. A mistake stops the node at once: no key, no deployment record, no contract at
    the address, another protocol, a revert.
    """
    import time

    from fleml_node.chain.contract import bind_consortium, load_account
    from fleml_node.retry import Backoff, is_outage

    account = load_account(opts.get("keystore"))  # a missing key fails before any wait
    limit = opts.get("start_timeout")
    give_up = None if limit is None else time.monotonic() + limit
    backoff = Backoff()
    while True:
        try:
            w3, record, _, profile = _contact_chain(opts, with_key=False)
            # no retries inside binding: this loop is the node's one retry layer
            node = build(bind_consortium(w3, record, account, profile=profile,
                                         retry_seconds=0), _contact_ipfs(opts))
        except Exception as exc:
            if not is_outage(exc) or (give_up is not None and time.monotonic() >= give_up):
                raise
            time.sleep(backoff.failed(f"{what} start-up", exc))
            continue
        backoff.succeeded(f"{what} start-up")
        return node


# -- commands -------------------------------------------------------------------------------
@main.command()
@chain_options
@ipfs_options
@key_option
@task_options()
@click.option("--client-index", type=int,
              help="This member's share of the public dataset (0-based).")
@click.option("--data-file", type=click.Path(exists=True, dir_okay=False),
              help="This member's own data: safetensors with x (float32) and y (int64).")
@click.option("--attack", type=RegistryChoice(_attack_names), default="none", show_default=True,
              help="Simulate a malicious member with this attack (none = honest).")
@click.option("--attack-param", multiple=True, metavar="KEY=VALUE",
              help="Attack parameter, repeatable (e.g. scale=10).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=".fleml/client",
              show_default=True, help="Where the node keeps its event cursor.")
@click.option("--confirmations", type=click.IntRange(0), default=None,
              help="Blocks to wait before acting on an event [default: the chain profile's; "
                   "0 on dev chains].")
@click.option("--poll-interval", default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--start-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up when the chain or IPFS does not answer within this many seconds "
                   "at start-up [default: wait as long as it takes, as while running].")
@click.option("--max-rounds", type=int, help="Exit after submitting this many updates.")
@click.option("--audit", "audit_rounds", is_flag=True,
              help="Also audit every finalized round (as `fleml-node audit` does) and attest "
                   "the verdict on chain.")
@_fail_cleanly
def client(**opts: Any) -> None:
    """Take part in every round: train on local data, publish and commit the update."""
    _node_logging()
    from fleml_node.attacks import make_attack
    from fleml_node.chain.events import EventFollower
    from fleml_node.client import ClientNode
    from fleml_node.task import client_data

    task = task_from(opts)
    attack = make_attack(opts["attack"], **parse_params(opts["attack_param"])) \
        if opts["attack"] != "none" else None
    x, y = client_data(task, opts["client_index"], opts["data_file"])

    def build(consortium, store):
        state = Path(opts["state_dir"]) / f"{consortium.account.address}.events.json"
        follower = EventFollower(consortium, state, confirmations=opts["confirmations"])
        index = consortium.member_info(consortium.account.address)[2] \
            if opts["client_index"] is None else opts["client_index"]
        return ClientNode(consortium, store, follower, task, x, y, index, attack=attack,
                          audit_rounds=opts["audit_rounds"])

    node = _start_node(opts, "client", build)
    consortium = node.consortium
    click.echo(f"client {consortium.account.address}: {len(y)} local samples"
               f"{', attack ' + opts['attack'] if attack else ''}; waiting for rounds "
               f"(Ctrl-C to stop)", err=True)
    node.run(poll_interval=opts["poll_interval"], max_rounds=opts["max_rounds"])


@main.command()
@chain_options
@ipfs_options
@key_option
@task_options()
@click.option("--defense", type=RegistryChoice(_defense_names), default="fleml",
              show_default=True, help="How updates are weighed and aggregated.")
@click.option("--defense-param", multiple=True, metavar="KEY=VALUE",
              help="Defense parameter, repeatable (e.g. f=3 for krum, bins=8 for fleml).")
@click.option("--rounds", type=click.IntRange(min=1),
              help="Finalize this many more rounds, counted from the chain's state when the "
                   "command starts (a round already open counts as the first) [default: 5].")
@click.option("--until-round", type=click.IntRange(min=1),
              help="Or finalize until this absolute round number is finalized.")
@click.option("--round-seconds", default=300, show_default=True,
              help="Submission window of each round.")
@click.option("--quorum", default=0, show_default=True,
              help="Submissions that close a round early (0 = every active member).")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Report test accuracy of each new global model.")
@click.option("--poll-interval", default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--start-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up when the chain or IPFS does not answer within this many seconds "
                   "at start-up [default: wait as long as it takes, as while running].")
@click.option("--results-dir", type=click.Path(file_okay=False),
              help="Write per-round results here (results.json and results.csv, the columns "
                   "`simulate` writes), rewritten atomically after each finalized round and "
                   "appended to across restarts.")
@click.option("--validation-file", type=click.Path(exists=True, dir_okay=False),
              help="The validation (root) set FLEML/FLTrust score updates on, as made by "
                   "`fleml-node validation-set` [default: the set the consortium committed "
                   "on chain, fetched from IPFS by its CID; without one, the task's].")
@_fail_cleanly
def aggregator(**opts: Any) -> None:
    """Run rounds: open, close at quorum or deadline, defend, publish, finalize."""
    _node_logging()
    from fleml_node.aggregator import AggregatorNode
    from fleml_node.defense import make_defense
    from fleml_node.task import test_data, validation_data

    rounds, until = _rounds_or_until(click.get_current_context())
    task = task_from(opts)
    defense = make_defense(opts["defense"], **parse_params(opts["defense_param"]))
    evaluate = _test_evaluator(task) if opts["evaluate"] else None
    if evaluate:
        test_data(task)  # load now, so a missing dataset fails before the first round
    from_file = _read_validation_file(opts["validation_file"]) \
        if opts["validation_file"] else None

    def build(consortium, store):
        until_round = until if until is not None else _until_round(consortium, rounds)
        validation = from_file or _committed_validation(consortium, store) \
            or validation_data(task)
        return AggregatorNode(consortium, store, defense, task, until_round=until_round,
                              round_seconds=opts["round_seconds"], quorum=opts["quorum"],
                              validation=validation, evaluate=evaluate,
                              results_dir=opts["results_dir"])

    node = _start_node(opts, "aggregator", build)
    consortium, until_round = node.consortium, node.until_round

    def progress(did: str) -> None:
        if did == "finalized":
            s = node.summaries[-1]
            acc = f", test accuracy {s.metrics['accuracy']:.4f}" if s.metrics else ""
            click.echo(f"round {s.round_id}: {len(s.accepted)} accepted, "
                       f"{len(s.rejected)} rejected, {len(s.flagged)} flagged{acc}", err=True)

    click.echo(f"aggregator {consortium.account.address}: defense {opts['defense']}, "
               f"finalizing until round {until_round} (Ctrl-C to stop)", err=True)
    node.run(poll_interval=opts["poll_interval"], on_step=progress)
    click.echo(f"done: round {until_round} finalized", err=True)


def _rounds_or_until(ctx: click.Context) -> tuple[int, int | None]:
    """``(rounds, until_round)`` after checking that --rounds and --until-round do not clash.

    A value on the command line (or from the environment) wins over one from a config file, so
    ``--until-round 30`` works with a config that sets ``rounds``.

    Raises
    ------
    click.UsageError
        Both were given at the same level: ``--rounds`` counts from the chain's state,
        ``--until-round`` is an absolute round number; only one can decide when to stop.
    """
    rounds, until = ctx.params["rounds"], ctx.params["until_round"]
    if rounds is not None and until is not None:
        from_file = click.core.ParameterSource.DEFAULT_MAP
        rounds_from_file = ctx.get_parameter_source("rounds") is from_file
        until_from_file = ctx.get_parameter_source("until_round") is from_file
        if rounds_from_file and not until_from_file:
            rounds = None
        elif until_from_file and not rounds_from_file:
            until = None
        else:
            raise click.UsageError("give either --rounds (how many more rounds) or "
                                   "--until-round (an absolute round number), not both")
    return (DEFAULT_ROUNDS if rounds is None else rounds), until


def _until_round(consortium, rounds: int) -> int:
    """The absolute round after which ``rounds`` more rounds are finalized.

    A round that exists but is not finalized yet (open or closed) is the first of them: the
    aggregator finishes it before opening new ones.
    """
    from fleml_node.chain.contract import RoundStatus

    current = consortium.current_round()
    if current and consortium.get_round(current).status != RoundStatus.FINALIZED:
        return current + rounds - 1
    return current + rounds


def _test_evaluator(task):
    from fleml_node.learning import evaluate
    from fleml_node.task import test_data

    def run(model):
        x, y = test_data(task)
        return {"accuracy": evaluate(model, x, y).accuracy}

    return run


def _read_validation_file(path: str):
    """(x, y) from a validation file, or a one-line error saying what is wrong with it."""
    from fleml_node.round_engine import decode_validation
    from fleml_node.storage import StorageError

    try:
        return decode_validation(Path(path).read_bytes())
    except (OSError, StorageError) as exc:
        raise click.ClickException(f"{path} is not a FLEML validation file: {exc} (make one "
                                   f"with `fleml-node validation-set`)") from None


def _committed_validation(consortium, store):
    """The validation set the consortium committed (the next round's), fetched from IPFS and
    checked against its hash; None when none is committed."""
    from fleml_node.round_engine import decode_validation

    committed, cid = consortium.validation_set()
    if committed == bytes(32):
        return None
    log.info("validation set: the committed one, %s", cid)
    return decode_validation(store.get(cid, expected_hash=committed))


@main.command()
@chain_options
@ipfs_options
@click.option("--round", "round_id", type=int, help="The round to audit [default: all].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdicts as JSON (one object per round, in a list).")
@click.option("--attest", is_flag=True,
              help="As a member: publish each verdict on IPFS and record it on chain "
                   "(attestRound); needs the member's key. Inconclusive verdicts are not "
                   "attested.")
@key_option
@_fail_cleanly
def audit(**opts: Any) -> None:
    """Check a finalized round from the chain and IPFS alone, re-running its defense.

    Each check passes, fails, or is inconclusive (an input could not be fetched). Exits 1 if
    any check fails, 3 if none fails but one is inconclusive, 0 otherwise.
    """
    import json

    from fleml_node.audit import attest, audit_round

    consortium, store = _bind(opts, with_key=opts["attest"])
    last = consortium.current_round()
    rounds = [opts["round_id"]] if opts["round_id"] else range(1, last + 1)
    if opts["round_id"] and not 1 <= opts["round_id"] <= last:
        raise click.ClickException(f"round {opts['round_id']} does not exist "
                                   f"(latest is {last})")
    verdicts = []
    for r in rounds:
        verdict = audit_round(consortium, store, r)
        ok, detail = verdict.checks.get("round is finalized", (True, ""))
        if not ok and opts["round_id"] is None:
            # an abandoned round has no result to check; an open one has none yet
            state = "abandoned" if "ABANDONED" in detail else "not finalized yet"
            if not opts["as_json"]:
                click.echo(f"round {r}: {state}, skipped")
            continue
        verdicts.append(verdict)
        if not opts["as_json"]:
            click.echo("\n".join(verdict.lines()))
        if opts["attest"]:
            sent = attest(consortium, store, verdict)
            link = consortium.deployment.explorer.tx(sent) \
                if consortium.deployment.explorer else None
            click.echo(f"round {r}: attested {verdict.verdict} in {sent}"
                       + (f" {link}" if link else ""), err=True)
    if opts["as_json"]:
        click.echo(json.dumps([v.to_dict() for v in verdicts], indent=2))
    results = {v.verdict for v in verdicts}
    sys.exit(1 if "FAIL" in results else 3 if "INCONCLUSIVE" in results else 0)


@main.command()
@chain_options
@ipfs_options
@click.option("--round", "round_id", type=click.IntRange(min=1), required=True,
              help="The round whose report to show.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the round as JSON: the explorer's /api/rounds/N object, each "
                   "submission with its on-chain flag.")
@_fail_cleanly
def report(**opts: Any) -> None:
    """Show a finalized round's report: each member's decision, reason, scores, coefficient.

    The report is fetched from IPFS by the CID the round's RoundFinalized event names and
    checked against the hash on chain; the flag column is the chain's flagged bitmap. Times
    are ISO 8601 in UTC. A round that is open, closed or abandoned has no report.
    """
    import json

    from fleml_node.chain.contract import RoundStatus
    from fleml_node.explorer.data import Explorer

    consortium, store = _bind(opts, with_key=False)
    r, last = opts["round_id"], consortium.current_round()
    if not 1 <= r <= last:
        raise click.ClickException(f"round {r} does not exist ("
                                   + (f"latest is {last})" if last else "no round yet)"))
    status = consortium.get_round(r).status
    if status not in (RoundStatus.FINALIZED, RoundStatus.REJECTED):
        why = "it was abandoned" if status is RoundStatus.ABANDONED else "not finalized yet"
        raise click.ClickException(f"round {r} is {status.name.lower()}: only a finalized "
                                   f"round has a report ({why})")
    data = Explorer(consortium, store).round(r)
    if data["report_error"]:
        raise click.ClickException(f"round {r}: {data['report_error']}")
    data = {k: v for k, v in data.items() if k not in ("cached", "final_block")}
    for sub in data["submissions"]:
        sub["flagged"] = consortium.is_flagged(r, sub["member"])
    if opts["as_json"]:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo("\n".join(report_lines(data)))


def _printable(value: Any) -> str:
    """A member-controlled string as one terminal-safe line (control characters escaped)."""
    text = "" if value is None else str(value)
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def report_lines(d: dict[str, Any]) -> list[str]:
    """A round (the explorer's round object, with ``flagged`` per submission) as text."""
    verdict = "accepted" if d["accepted"] else "not accepted (yet)" \
        if d["status"] == "finalized" else ""
    out = [f"round {d['round']}: {d['status']}{', ' + verdict if verdict else ''}; "
           f"{d['submissions_count']} of quorum {d['quorum']} submitted (minimum "
           f"{d['min_submissions']}), {d['mode']} submissions, deadline {d['deadline']}"]
    for event in d["timeline"]:
        name = event["event"].removeprefix("Round").lower()
        out.append(f"  {name:<10} {event['time']}  block {event['block']}  tx {event['tx']}"
                   + (f"  {event['tx_url']}" if event.get("tx_url") else ""))
    for what in ("base", "result", "report"):
        ref = d["downloads"].get(what)
        if ref:
            out.append(f"  {what:<10} {ref['hash']}  {_printable(ref['cid'])}"
                       + ("  (hash checked)" if what == "report" else ""))
    defense = d.get("defense") or {}
    params = " ".join(f"{k}={v}" for k, v in (defense.get("params") or {}).items())
    out.append(f"  defense    {defense.get('method', 'none')}{' ' + params if params else ''}"
               + (f"; test accuracy {d['accuracy']:.4f}" if d.get("accuracy") is not None
                  else ""))
    att = d["attestations"]
    out.append(f"  attested   {att['passes']} pass, {att['fails']} fail of "
               f"{att['required']} required")
    header = ("member", "label", "status", "reason", "scores", "coefficient", "flagged")
    rows = [header]
    for sub in d["submissions"]:
        scores = " ".join(f"{k}={v:.4g}" if isinstance(v, int | float) else f"{k}={v}"
                          for k, v in (sub.get("scores") or {}).items())
        coefficient = sub.get("coefficient")
        rows.append((sub["member"], _printable(sub.get("label")), _printable(sub.get("status")),
                     _printable(sub.get("reason")), _printable(scores),
                     "-" if coefficient is None else f"{coefficient:.4f}",
                     "yes" if sub["flagged"] else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out.append("")
    for row in rows:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())
    if not d["submissions"]:
        out.append("(no submissions)")
    return out


@main.command()
@chain_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_fail_cleanly
def status(**opts: Any) -> None:
    """Show the consortium: roles, members and the current round (needs no IPFS).

    Times are ISO 8601 in UTC.
    """
    import json

    from fleml_node.explorer.data import iso

    consortium = _bind_chain(opts, with_key=False)
    members = []
    for index in range(consortium.member_slots()):
        address = consortium.member_at(index)
        _, active, _, label = consortium.member_info(address)
        members.append({"index": index, "address": address, "label": label, "active": active})
    current = consortium.current_round()
    policy = consortium.policy()
    info = consortium.get_round(current) if current else None
    if opts["as_json"]:
        click.echo(json.dumps({
            "consortium": consortium.address, "chain_id": consortium.deployment.chain_id,
            "aggregator": consortium.aggregator(), "members": members,
            "policy": {"mode": policy.mode.name.lower().replace("_", "-"),
                       "min_round_seconds": policy.min_round_seconds,
                       "max_round_seconds": policy.max_round_seconds,
                       "min_submissions": policy.min_submissions,
                       "min_submissions_bps": policy.min_submissions_bps,
                       "grace_seconds": policy.grace_seconds,
                       "reveal_seconds": policy.reveal_seconds,
                       "attestations_required": policy.attestations_required,
                       "attestation_window_seconds": policy.attestation_window_seconds},
            "round": None if info is None else {
                "round": current, "status": info.status.name.lower(),
                "submissions": info.submissions, "quorum": info.quorum,
                "min_submissions": info.min_submissions, "deadline": iso(info.deadline),
                "reveal_deadline": iso(info.reveal_deadline)},
        }, indent=2))
        return
    click.echo(f"consortium {consortium.address} on chain {consortium.deployment.chain_id}")
    click.echo(f"aggregator {consortium.aggregator()}")
    for m in members:
        click.echo(f"member {m['index']}: {m['address']} {m['label']!r} "
                   f"{'active' if m['active'] else 'removed'}")
    minimum = (f"{policy.min_submissions}" if policy.min_submissions
               else f"{policy.min_submissions_bps / 100:g}% of active members")
    click.echo(f"policy: {policy.mode.name.lower().replace('_', '-')} submissions, rounds of "
               f"{policy.min_round_seconds}-{policy.max_round_seconds} s, at least {minimum} "
               f"per result, {policy.grace_seconds} s grace"
               + (f", {policy.reveal_seconds} s reveal window" if policy.reveal_seconds else ""))
    if info is not None:
        click.echo(f"round {current}: {info.status.name.lower()}, {info.submissions} of "
                   f"quorum {info.quorum} submitted (minimum {info.min_submissions}), "
                   f"deadline {iso(info.deadline)}")
    else:
        click.echo("no round yet")


@main.command()
@chain_options
@ipfs_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the explorer to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8900, show_default=True,
              help="Port to listen on (0: any free port).")
@_fail_cleanly
def explorer(**opts: Any) -> None:
    """Serve a read-only web explorer of the consortium's rounds (HTML and JSON under /api/).

    Reads the chain, IPFS and the deployment record like `audit`; loads no key and sends no
    transaction. Pages: the consortium, the rounds, a round (timeline, submissions, the
    report's decisions, a chart), a member's history, and an audit of a round on demand.
    """
    try:
        from fleml_node.explorer import Explorer
        from fleml_node.explorer.web import create_app, serve
    except ImportError as exc:
        raise click.ClickException(f"the explorer needs Flask ({exc}): "
                                   f"pip install -r requirements.lock") from exc
    from fleml_node.storage import IpfsStore

    consortium = _bind_chain(opts, with_key=False)
    store = IpfsStore(opts["ipfs_api"], timeout=opts["ipfs_timeout"])
    if not store.is_available():
        click.echo(f"warning: no IPFS API answers at {opts['ipfs_api']}: reports, decisions "
                   f"and downloads are not shown until it does", err=True)
    if opts["host"] not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"warning: binding {opts['host']}: the explorer is reachable from the "
                   f"network (it is read-only, but audits cost CPU)", err=True)
    app = create_app(Explorer(consortium, store))
    serve(app, opts["host"], opts["port"])


@main.command("validation-set")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--create", is_flag=True,
              help="Write PATH from the task's data (its validation split: --dataset, "
                   "--validation-size, --seed ...) instead of reading it.")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Put the file on IPFS (pinned) and print its CID.")
@ipfs_options
@task_options()
@_fail_cleanly
def validation_set(**opts: Any) -> None:
    """Check (or --create) a validation set file and publish it for the operator to commit.

    The file is safetensors with float32 tensors `x` (inputs) and `y` (integral labels) and
    FLEML's metadata; its sha256 and CID are what `setValidationSet` commits on chain
    (`brownie run admin set_validation_set 0xHASH CID`). The aggregator then uses exactly it.
    """
    from fleml_node.round_engine import encode_validation
    from fleml_node.storage import content_hash

    path = Path(opts["path"])
    if opts["create"]:
        from fleml_node.task import validation_data

        if path.exists():
            raise click.ClickException(f"{path} exists; not overwriting it")
        path.write_bytes(encode_validation(*validation_data(task_from(opts))))
    x, y = _read_validation_file(str(path))
    blob = path.read_bytes()
    digest = "0x" + content_hash(blob).hex()
    click.echo(f"{path}: {len(y)} samples, inputs {tuple(x.shape[1:])}, "
               f"{int(y.max()) + 1 if len(y) else 0} classes")
    click.echo(f"sha256 {digest}")
    if opts["publish"]:
        store = _contact_ipfs(opts)
        cid = store.put(blob)
        click.echo(f"cid    {cid}")
        click.echo(f"commit it (operator): brownie run admin set_validation_set {digest} {cid}")


@main.command("account")
@click.argument("keystore", type=click.Path(dir_okay=False))
def account_new(keystore: str) -> None:
    """Create a new account in an encrypted KEYSTORE file and print its address."""
    import json

    from eth_account import Account

    path = Path(keystore)
    if path.exists():
        raise click.ClickException(f"{path} exists; not overwriting a key")
    password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    account = Account.create()
    path.write_text(json.dumps(Account.encrypt(account.key, password)))
    path.chmod(0o600)
    click.echo(account.address)


@main.command()
@config_option
# shares capped at 600 samples: a whole federation must run in about a minute on a laptop
@task_options(max_client_samples=600)
@click.option("--malicious", "malicious_fraction", default=0.3, show_default=True,
              help="Fraction of malicious members.")
@click.option("--attack", type=RegistryChoice(_attack_names), default="label_flip",
              show_default=True, help="What the malicious members do (none = all honest).")
@click.option("--attack-param", multiple=True, metavar="KEY=VALUE",
              help="Attack parameter, repeatable (e.g. scale=10).")
@click.option("--defense", "defenses", type=RegistryChoice(_defense_names, extra=("all",)),
              multiple=True, default=("fedavg", "fleml"), show_default=True,
              help="Defense to run, repeatable; 'all' for every one.")
@click.option("--defense-param", multiple=True, metavar="NAME.KEY=VALUE",
              help="Parameter of one defense, repeatable (e.g. krum.f=3).")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Rounds per defense.")
@click.option("--test-samples", default=2000, show_default=True,
              help="Test images evaluated per round (0 = all).")
@click.option("--mode", type=click.Choice(["chain", "memory"]), default="chain",
              show_default=True, help="chain: anvil + IPFS (real path); memory: no chain, "
                                      "for large sweeps.")
@click.option("--ipfs-api", envvar="FLEML_IPFS_API",
              help="Use this IPFS daemon instead of starting a local one.")
@click.option("--device", default="cpu", show_default=True,
              help="Train and evaluate here in memory mode: cpu, cuda[:N], mps or auto "
                   "(CUDA when present); recorded in results.json.")
@click.option("--member-threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Chain mode: members' IPFS and chain work overlaps on this many threads "
                   "(training stays one member at a time); 1 steps them one after another.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Results folder [default: results/sim-<time>].")
@_fail_cleanly
def simulate(**opts: Any) -> None:
    """Run a whole federation here and compare defenses under attack.

    Starts its own anvil chain and IPFS daemon (unless --ipfs-api is given), runs every
    defense on the same clients, data and attackers, prints a line per round and a summary,
    and writes results.json, results.csv, accuracy.png and detection.png.
    """
    import time as _time

    from fleml_node.simulate import DEFENSES, SimulationConfig
    from fleml_node.simulate import simulate as run

    defenses = DEFENSES if "all" in opts["defenses"] else opts["defenses"]
    per_defense: dict[str, dict[str, Any]] = {}
    for key, value in parse_params(opts["defense_param"]).items():
        name, _, param = key.partition(".")
        if not param:
            raise click.BadParameter(f"--defense-param needs NAME.KEY=VALUE, got {key}")
        if name not in defenses:
            raise click.BadParameter(f"--defense-param {key}: {name!r} is not among the "
                                     f"defenses run ({', '.join(defenses)})")
        per_defense.setdefault(name, {})[param] = value
    config = SimulationConfig(
        dataset=opts["dataset"], num_clients=opts["num_clients"],
        malicious_fraction=opts["malicious_fraction"], attack=opts["attack"],
        attack_params=parse_params(opts["attack_param"]), defenses=tuple(defenses),
        defense_params=per_defense, rounds=opts["rounds"], partition=opts["partition"],
        alpha=opts["alpha"], seed=opts["seed"], epochs=opts["epochs"],
        batch_size=opts["batch_size"], lr=opts["lr"], momentum=opts["momentum"],
        max_client_samples=opts["max_client_samples"],
        validation_size=opts["validation_size"], test_samples=opts["test_samples"],
        mode=opts["mode"], ipfs_api=opts["ipfs_api"],
        compression=opts["compression"], topk_fraction=opts["topk_fraction"],
        device=opts["device"], member_threads=opts["member_threads"])
    out = Path(opts["out_dir"] or f"results/sim-{_time.strftime('%Y%m%d-%H%M%S')}")
    malicious = config.malicious_clients()
    click.echo(f"FLEML simulation: {config.dataset}, {config.num_clients} clients "
               f"({len(malicious)} malicious: {config.attack} {malicious}), "
               f"{config.partition} alpha={config.alpha}, {config.rounds} rounds, "
               f"defenses {', '.join(config.defenses)}, mode {config.mode}", err=True)
    if config.mode == "chain":
        click.echo("starting a local anvil chain and IPFS daemon for each run...", err=True)

    total = config.rounds * len(config.defenses)
    bar = click.progressbar(length=total, label="rounds", file=sys.stderr, show_eta=True,
                            show_pos=True)

    def line(r) -> None:
        if sys.stderr.isatty():
            click.echo("\r\033[K", nl=False, err=True)  # the bar's line, cleared for the row
        asr = "" if r.backdoor_asr is None else f"  asr {100 * r.backdoor_asr:5.1f}%"
        det = ("  precision " + ("  -  " if r.precision is None else f"{r.precision:.2f}")
               + " recall " + ("  -  " if r.recall is None else f"{r.recall:.2f}"))
        click.echo(f"[{r.defense:>11}] round {r.round:>2}  acc {100 * r.accuracy:5.2f}%{asr}"
                   f"  flagged {r.flagged}{det}  {r.bytes_moved / 1e6:6.2f} MB"
                   f"  gas {r.gas_used:>9,}  {r.seconds:5.1f}s")
        bar.update(1)

    with bar:
        results = run(config, out, on_round=line)
    click.echo("\nsummary (final round; detection over all rounds)")
    click.echo(f"{'defense':>11}  {'accuracy':>8}  {'asr':>6}  {'precision':>9}  {'recall':>6}"
               f"  {'MB/round':>8}  {'gas/round':>10}")
    for name, s in results["summary"].items():
        det = s["detection"]
        fmt = lambda v: "   -" if v is None else f"{v:.2f}"  # noqa: E731
        asr = "     -" if s["final_backdoor_asr"] is None else \
            f"{100 * s['final_backdoor_asr']:5.1f}%"
        click.echo(f"{name:>11}  {100 * s['final_accuracy']:7.2f}%  {asr}  "
                   f"{fmt(det['precision']):>9}  {fmt(det['recall']):>6}  "
                   f"{s['bytes_per_round'] / 1e6:8.2f}  {s['gas_per_round']:>10,.0f}")
    click.echo(f"\nresults: {out}/results.json, results.csv, accuracy.png, detection.png")
