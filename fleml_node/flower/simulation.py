"""A federation of the project's simulator, run by Flower's own simulation engine.

:func:`client_app` is a Flower ClientApp whose clients are the simulator's members: member
``partition-id`` trains on its share of the task's dataset with the simulator's random stream
``(seed, round, member)`` and, if it is one of the config's malicious members, runs the config's
attack, exactly as :func:`fleml_node.simulate.run_memory` does. :func:`server_app` runs a
:class:`~fleml_node.flower.strategy.DefenseStrategy` for the config's task, so a Flower
simulation and ``fleml-node simulate --mode memory`` of the same config give the same
aggregates, bit for bit (tests/flower checks it).

    reports, result = run(SimulationConfig(dataset="mnist", num_clients=10, rounds=3), "fleml")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fleml_node.flower.client import client_id, global_params, train_reply
from fleml_node.flower.strategy import DefenseStrategy, RoundReport, params_to_arrays
from fleml_node.learning import configure_threads, get_params, local_train, make_generator

log = logging.getLogger(__name__)


def client_app(config: Any) -> ClientApp:
    """A ClientApp whose node ``partition-id`` is member ``partition-id`` of ``config``
    (a :class:`fleml_node.simulate.SimulationConfig`)."""
    app = ClientApp()
    state: dict[str, Any] = {}

    @app.train()
    def train(message: Message, context: Context) -> Message:
        from fleml_node.task import client_data

        configure_threads()
        index = int(context.node_config["partition-id"])
        if "task" not in state:
            state.update(task=config.task(), attack=config.make_attack(),
                         malicious=set(config.malicious_clients()), data={})
        task = state["task"]
        if index not in state["data"]:
            state["data"][index] = client_data(task, index)
        x, y = state["data"][index]
        round_id = int(message.content["config"]["server-round"])
        update, _ = local_train(task.initial_model(), global_params(message), x, y, task.train,
                                make_generator(task.seed, round_id, index),
                                attack=state["attack"] if index in state["malicious"] else None)
        return train_reply(message, client_id(context), int(y.numel()), update=update)

    return app


def server_app(config: Any, defense: str = "fleml",
               on_round: Callable[[RoundReport], None] | None = None,
               evaluate: bool = True) -> tuple[ServerApp, DefenseStrategy]:
    """A ServerApp running ``defense`` over every member for ``config.rounds`` rounds, and its
    strategy (whose ``reports`` fill as rounds finish). With ``evaluate``, the global model's
    test accuracy is measured on the server after each round (the simulator's Evaluator)."""
    task = config.task()
    strategy = DefenseStrategy.for_task(
        task, defense, defense_params=config.defense_params.get(defense, {}),
        on_round=on_round, fraction_evaluate=0.0, min_train_nodes=config.num_clients,
        min_available_nodes=config.num_clients)
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        evaluate_fn = None
        if evaluate:
            from fleml_node.learning import set_params
            from fleml_node.simulate import Evaluator

            evaluator, model = Evaluator(config, config.make_attack()), task.initial_model()

            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
                set_params(model, {k: v for k, v in arrays.to_torch_state_dict().items()})
                return MetricRecord(evaluator(model))

        strategy.result = strategy.start(
            grid=grid, initial_arrays=params_to_arrays(get_params(task.initial_model())),
            num_rounds=config.rounds, train_config=ConfigRecord(), evaluate_fn=evaluate_fn)

    return app, strategy


def run(config: Any, defense: str = "fleml",
        on_round: Callable[[RoundReport], None] | None = None, evaluate: bool = True,
        num_cpus: int | None = None) -> tuple[list[RoundReport], Any]:
    """Run ``config``'s federation under Flower's simulation engine (Ray backend, one CPU per
    ClientApp); return the strategy's round reports and Flower's Result."""
    app, strategy = server_app(config, defense, on_round, evaluate)
    backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    if num_cpus:
        backend["init_args"] = {"num_cpus": num_cpus}
    strategy.result = None
    run_simulation(server_app=app, client_app=client_app(config),
                   num_supernodes=config.num_clients, backend_config=backend)
    if strategy.result is None or len(strategy.reports) != config.rounds:
        raise RuntimeError(f"the Flower simulation finished {len(strategy.reports)} of "
                           f"{config.rounds} rounds (see Flower's log above)")
    return strategy.reports, strategy.result
