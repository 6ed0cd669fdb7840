"""The Flower strategies aggregate exactly as the project's round engine does (runs in the
Flower venv, .fleml/flower-venv; tests/flower/test_flower_venv.py runs it from the main suite)."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("flwr", reason="Flower is installed in .fleml/flower-venv only")

import torch  # noqa: E402
from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402

from fleml_node.attacks import make_attack  # noqa: E402
from fleml_node.defense import REGISTRY, make_defense  # noqa: E402
from fleml_node.flower import STRATEGIES, DefenseStrategy, make_strategy, train_content  # noqa: E402
from fleml_node.learning import flatten, get_params, local_train, make_generator  # noqa: E402
from fleml_node.round_engine import RoundEngine, Submission, encode_update  # noqa: E402
from fleml_node.storage import content_hash  # noqa: E402
from fleml_node.task import TaskConfig, client_data, validation_data  # noqa: E402

N = 5
IDS = [f"client-{i:02d}" for i in range(N)]  # sorted order == member index order


@pytest.fixture(autouse=True, scope="module")
def flower_task_identity():
    """Messages are built inside a run, whose identity a ServerApp process has set."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture(scope="module")
def task() -> TaskConfig:
    return TaskConfig(dataset="mnist", seed=3, num_clients=N, validation_size=100,
                      max_client_samples=60)


@pytest.fixture(scope="module")
def rounds(task) -> list[list[tuple[dict, int]]]:
    """Two rounds of real updates (member 1 flips labels, member 4 scales its update up)."""
    flip = make_attack("label_flip")
    model, base = task.initial_model(), get_params(task.initial_model())
    out = []
    for r in (1, 2):
        updates = []
        for i in range(N):
            x, y = client_data(task, i)
            update, _ = local_train(model, base, x, y, task.train, make_generator(task.seed, r, i),
                                    attack=flip if i == 1 else None)
            if i == 4:
                update = {k: 8 * v for k, v in update.items()}
            updates.append((update, int(y.numel())))
        out.append(updates)
        base = {k: v + updates[0][0][k] for k, v in base.items()}  # any base will do for r 2
    return out


def flower_replies(updates: list[tuple[dict, int]], order: list[int]) -> list[Message]:
    return [Message(train_content(IDS[i], n, update=u), dst_node_id=1000 + i,
                    message_type="train") for i, (u, n) in ((i, updates[i]) for i in order)]


def engine_submissions(round_id: int, updates: list[tuple[dict, int]]) -> list[Submission]:
    subs = []
    for i, (u, n) in enumerate(updates):
        blob = encode_update(u, round_id, n, IDS[i])
        subs.append(Submission(IDS[i], i, content_hash(blob), "", blob))
    return subs


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_strategy_equals_round_engine_bit_for_bit(name, task, rounds):
    engine = RoundEngine(task, make_defense(name), validation_data(task))
    strategy = DefenseStrategy.for_task(task, name)
    assert type(make_strategy(name, model=task.initial_model())) is STRATEGIES[name]
    base = get_params(task.initial_model())
    shuffle = random.Random(name)
    for r, updates in enumerate(rounds, start=1):
        outcome = engine.decide(r, base, engine_submissions(r, updates))
        order = list(range(N))
        shuffle.shuffle(order)  # Flower's replies arrive in any order
        report, params, _ = strategy.aggregate_round(r, base, flower_replies(updates, order))
        assert report.accepted == IDS and report.rejected == {}
        assert torch.equal(report.aggregate, outcome.aggregate)
        assert list(params) == list(outcome.result_params)
        for k in params:
            assert torch.equal(params[k], outcome.result_params[k]), k
        assert report.defense == outcome.defense_report  # flags, reasons, coefficients, info
        assert report.flagged == outcome.flagged
        assert report.coefficients == outcome.coefficients
        base = outcome.result_params
    assert strategy.state_dict() == engine.defense_state()  # FLEML's state carried over


def test_bad_replies_are_rejected_with_a_reason_and_the_rest_aggregated(task, rounds):
    updates = rounds[0]
    base = get_params(task.initial_model())
    replies = flower_replies(updates, [3, 0, 2])
    nan = {k: v.clone() for k, v in updates[1][0].items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    replies.append(Message(train_content("client-01", 10, update=nan), dst_node_id=7,
                           message_type="train"))
    wrong = dict(updates[4][0])
    wrong.popitem()
    replies.append(Message(train_content("client-04", 10, update=wrong), dst_node_id=8,
                           message_type="train"))
    anonymous = train_content("x", 10, update=updates[2][0])
    del anonymous.config_records["fleml"]
    replies.append(Message(anonymous, dst_node_id=9, message_type="train"))
    replies.append(Message(train_content("client-03", 60, update=updates[2][0]), dst_node_id=10,
                           message_type="train"))  # a second reply claiming client-03
    strategy = DefenseStrategy.for_task(task, "fedavg")
    report, params, _ = strategy.aggregate_round(1, base, replies)
    assert report.accepted == ["client-00", "client-02"]
    assert report.rejected["client-01"] == "invalid: the update holds NaN or Inf"
    assert report.rejected["client-04"].startswith("invalid: the arrays' names differ")
    (anonymous_key,) = [k for k in report.rejected if k.startswith("node ")]
    assert report.rejected[anonymous_key].startswith("invalid: no stable client id")
    assert report.rejected["client-03"] == "invalid: 2 replies name this client id"
    # the accepted clients are aggregated exactly as the engine aggregates those two alone
    engine = RoundEngine(task, make_defense("fedavg"), validation_data(task))
    subs = engine_submissions(1, updates)
    outcome = engine.decide(1, base, [subs[0], subs[2]])
    assert torch.equal(flatten(params), flatten(outcome.result_params))
    metrics = strategy._metrics(report, [])
    assert metrics["fleml-rejected"] == 4 and metrics[f"fleml-rejected/{anonymous_key}"] == 1
    assert metrics["fleml-flag/client-00"] == 0 and "fleml-coefficient/client-02" in metrics


def test_weights_replies_are_taken_relative_to_the_global_model(task, rounds):
    updates = rounds[0]
    base = get_params(task.initial_model())
    replies = []
    for i, (u, n) in enumerate(updates):
        weights = {k: base[k] + u[k] for k in base}
        replies.append(Message(train_content(IDS[i], n, weights=weights), dst_node_id=i,
                               message_type="train"))
    strategy = DefenseStrategy.for_task(task, "krum")
    report, params, _ = strategy.aggregate_round(1, base, replies)
    engine = RoundEngine(task, make_defense("krum"), validation_data(task))
    exact = [({k: (base[k] + u[k]) - base[k] for k in base}, n) for u, n in updates]
    outcome = engine.decide(1, base, engine_submissions(1, exact))
    assert torch.equal(flatten(params), flatten(outcome.result_params))
    assert report.flagged == outcome.flagged


def test_metrics_expose_the_report_and_bad_construction_fails(task, rounds):
    strategy = DefenseStrategy.for_task(task, "fleml")
    base = get_params(task.initial_model())
    report, _, contents = strategy.aggregate_round(1, base, flower_replies(rounds[0], [0, 1, 2,
                                                                                        3, 4]))
    metrics = strategy._metrics(report, contents)
    flagged = [cid for cid in IDS if metrics[f"fleml-flag/{cid}"] == 1]
    assert flagged == report.flagged and metrics["fleml-flagged"] == len(flagged)
    assert metrics["fleml-accepted"] + metrics["fleml-flagged"] == N
    coefficients = [metrics[f"fleml-coefficient/{cid}"] for cid in IDS]
    assert coefficients == [report.coefficients[cid] for cid in IDS]
    assert all(report.coefficients[cid] == 0 for cid in report.flagged)
    with pytest.raises(ValueError, match="unknown defense"):
        make_strategy("nope", model=task.initial_model())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        DefenseStrategy("fleml", model=object())
    with pytest.raises(ValueError, match="do not match"):
        strategy.aggregate_round(2, {"w": torch.zeros(2)}, [])
    assert ConfigRecord and RecordDict  # the records the replies are made of
