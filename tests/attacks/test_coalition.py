"""Colluding attacks (ALIE, IPM, Min-Max, Min-Sum), model replacement, and the coalition hook."""

import json
import math

import pytest
import torch

from fleml_node.attacks import (
    ALIEAttack,
    CoalitionAttack,
    CoalitionContext,
    IPMAttack,
    MinMaxAttack,
    MinSumAttack,
    ModelReplacementAttack,
    alie_z,
    make_attack,
)
from fleml_node.attacks.min_max import PERTURBATIONS, perturbation, squared_distances
from fleml_node.learning import flatten
from fleml_node.simulate import SimulationConfig, run_memory, simulate
from fleml_node.storage import decode_tensors

COALITION = ("alie", "ipm", "min_max", "min_sum")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def round_updates():
    """Seven benign updates sharing a direction plus noise, three coalition members' own."""
    g = gen(5)
    direction = torch.randn(300, generator=g)
    benign = direction + 0.8 * torch.randn(7, 300, generator=g)
    own = direction + 0.8 * torch.randn(3, 300, generator=g)
    return benign, own


def dist(a, b):
    return torch.linalg.vector_norm(a.double() - b.double(), dim=-1)


# --- ALIE ----------------------------------------------------------------------------------


def test_alie_z_formula_by_hand():
    # n=10, m=3: s = floor(6) - 3 = 3, z = Phi^-1(7/10)
    assert alie_z(10, 3) == pytest.approx(0.524401, abs=1e-6)
    # n=50, m=10: s = 26 - 10 = 16, z = Phi^-1(34/50)
    assert alie_z(50, 10) == pytest.approx(0.467699, abs=1e-6)
    assert alie_z(2, 1) == pytest.approx(0.0, abs=1e-12)  # s = 1: (2-1)/2 = 0.5
    with pytest.raises(ValueError, match="unbounded"):
        alie_z(10, 6)
    with pytest.raises(ValueError, match="1 <= m < n"):
        alie_z(5, 0)


def test_alie_within_z_std_of_the_mean(round_updates):
    benign, own = round_updates
    out = ALIEAttack().craft(benign, own, gen(), CoalitionContext(round_id=1, num_clients=10))
    z = alie_z(10, 3)
    mean, std = benign.double().mean(0), benign.double().std(0)
    assert out.shape == own.shape and out.dtype == own.dtype
    assert torch.allclose(out.double(), (mean - z * std).expand(3, -1), atol=1e-5)
    # within z standard deviations of the mean in every coordinate, and shifted (not the mean)
    assert bool(((out.double() - mean).abs() <= z * std + 1e-5).all())
    assert float((mean - out[0].double()).abs().max()) > 0.1
    forced = ALIEAttack(z=1.5).craft(benign, own, gen())
    assert torch.allclose(forced[1].double(), mean - 1.5 * std, atol=1e-5)


def test_alie_own_knowledge_ignores_the_benign_updates(round_updates):
    benign, own = round_updates
    ctx = CoalitionContext(round_id=1, num_clients=10)
    a = ALIEAttack(knowledge="own").craft(benign, own, gen(), ctx)
    b = ALIEAttack(knowledge="own").craft(benign * 100, own, gen(), ctx)
    assert torch.equal(a, b)
    mean, std = own.double().mean(0), own.double().std(0)
    assert torch.allclose(a[0].double(), mean - alie_z(10, 3) * std, atol=1e-5)
    # a single member has no spread: it sends its own update
    single = ALIEAttack(knowledge="own").craft(benign, own[:1], gen(), ctx)
    assert torch.allclose(single, own[:1])


# --- IPM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 100.0])
def test_ipm_inner_product_with_benign_mean_is_negative(round_updates, epsilon):
    benign, own = round_updates
    out = IPMAttack(epsilon=epsilon).craft(benign, own, gen())
    mean = benign.double().mean(0)
    assert torch.allclose(out.double(), (-epsilon * mean).expand(3, -1), rtol=1e-6, atol=1e-7)
    assert float(out[0].double() @ mean) == pytest.approx(-epsilon * float(mean @ mean), rel=1e-5)
    assert float(out[0].double() @ mean) < 0


# --- Min-Max and Min-Sum -------------------------------------------------------------------


def exact_gamma(observed, p, rule):
    """Closed-form largest gamma (roots of the quadratic constraints), to check the search."""
    x = observed.double()
    mean = x.mean(0)
    diff = mean - x
    a, b, c = (diff * diff).sum(1), diff @ p, float(p @ p)
    d2 = squared_distances(x)
    if rule == "min_max":
        bound = float(d2.max())
        roots = (-b + torch.sqrt(b * b - c * (a - bound))) / c
        return float(roots.min())
    bound = float(d2.sum(1).max())
    k, sa, sb = len(a), float(a.sum()), float(b.sum())
    return (-sb + math.sqrt(sb * sb - k * c * (sa - bound))) / (k * c)


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_min_max_stays_inside_the_benign_distances(round_updates, kind):
    benign, own = round_updates
    attack = MinMaxAttack(perturbation=kind)
    out = attack.craft(benign, own, gen())
    assert torch.equal(out[0], out[2])
    max_benign = float(squared_distances(benign).max().sqrt())
    assert float(dist(out[0], benign).max()) <= max_benign * (1 + 1e-6)
    gamma, _, p = attack.gamma(benign)
    exact = exact_gamma(benign, p, "min_max")
    assert gamma > 0 and gamma <= exact * (1 + 1e-9)
    assert gamma == pytest.approx(exact, rel=2e-5)  # the search finds the optimum
    # and the constraint is tight: a slightly larger gamma would break it
    beyond = benign.double().mean(0) + 1.01 * gamma * p
    assert float(dist(beyond, benign).max()) > max_benign


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_min_sum_sum_of_squares_inside_the_benign_ones(round_updates, kind):
    benign, own = round_updates
    attack = MinSumAttack(perturbation=kind)
    out = attack.craft(benign, own, gen())
    bound = float(squared_distances(benign).sum(1).max())
    assert float((dist(out[0], benign) ** 2).sum()) <= bound * (1 + 1e-6)
    gamma, _, p = attack.gamma(benign)
    assert gamma == pytest.approx(exact_gamma(benign, p, "min_sum"), rel=2e-5)
    beyond = benign.double().mean(0) + 1.01 * gamma * p
    assert float((dist(beyond, benign) ** 2).sum()) > bound  # the constraint is tight


def test_min_max_search_is_not_capped_by_gamma_init(round_updates):
    benign, _ = round_updates
    small = MinMaxAttack(perturbation="sign", gamma_init=1e-4).gamma(benign)[0]
    large = MinMaxAttack(perturbation="sign", gamma_init=1e4).gamma(benign)[0]
    assert small == pytest.approx(large, rel=1e-4)


def test_perturbation_vectors_by_hand():
    x = torch.tensor([[1.0, -2.0, 0.0], [3.0, -2.0, 2.0]])
    f64 = torch.float64
    assert torch.allclose(perturbation(x, "sign"), torch.tensor([-1.0, 1.0, -1.0], dtype=f64))
    std = math.sqrt(2.0)
    assert torch.allclose(perturbation(x, "std"), torch.tensor([-std, 0.0, -std], dtype=f64))
    unit = perturbation(x, "unit_vec")
    assert torch.allclose(unit, -torch.tensor([2.0, -2.0, 1.0], dtype=f64) / 3)


def test_no_spread_sends_the_mean(round_updates):
    _, own = round_updates
    out = MinMaxAttack(knowledge="own").craft(own[:0], own[:1], gen())
    assert torch.allclose(out, own[:1])  # one observed update: p = -std = 0


# --- model replacement ---------------------------------------------------------------------


def test_model_replacement_multiplies():
    update = {"w": torch.randn(4, 3, generator=gen(2)), "b": torch.randn(3, generator=gen(3))}
    by_size = ModelReplacementAttack(federation_size=20, server_lr=2.0)
    assert by_size.gamma == 10.0
    out = by_size.poison_update(update, gen())
    assert all(torch.equal(out[k], update[k] * 10.0) for k in update)
    explicit = make_attack("model_replacement", scale=3.5, federation_size=20)
    assert explicit.gamma == 3.5
    assert torch.equal(explicit.poison_update(update, gen())["w"], update["w"] * 3.5)
    # it backdoors the data like BackdoorAttack, and fraction=0 leaves the data alone
    x, y = torch.randn(50, 1, 8, 8, generator=gen(4)), torch.arange(50) % 10
    x2, y2 = ModelReplacementAttack(federation_size=5, fraction=0.2, target_class=3,
                                    trigger={"size": 2}).poison_data(x, y, gen())
    assert int((y2 != y).sum()) <= 10 and int((y2 == 3).sum()) >= 10
    x3, y3 = ModelReplacementAttack(federation_size=5, fraction=0.0).poison_data(x, y, gen())
    assert torch.equal(x3, x) and torch.equal(y3, y)


def test_model_replacement_validation():
    with pytest.raises(ValueError, match="scale or federation_size"):
        ModelReplacementAttack()
    with pytest.raises(ValueError, match="federation_size"):
        ModelReplacementAttack(federation_size=0)
    with pytest.raises(ValueError, match="server_lr"):
        ModelReplacementAttack(federation_size=5, server_lr=0)
    with pytest.raises(ValueError, match="scale"):
        ModelReplacementAttack(scale=-1.0)


# --- validation and the hook ---------------------------------------------------------------


def test_parameter_validation():
    with pytest.raises(ValueError, match="knowledge"):
        ALIEAttack(knowledge="partial")
    with pytest.raises(ValueError, match="z must be"):
        ALIEAttack(z=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        IPMAttack(epsilon=0)
    with pytest.raises(ValueError, match="epsilon"):
        make_attack("ipm", epsilon=float("inf"))
    with pytest.raises(ValueError, match="perturbation"):
        MinMaxAttack(perturbation="gauss")
    with pytest.raises(ValueError, match="gamma_init"):
        MinSumAttack(gamma_init=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        MinMaxAttack(tolerance=1.0)
    with pytest.raises(ValueError, match="no parameter"):
        make_attack("alie", epsilon=1.0)


def test_craft_checks_its_inputs(round_updates):
    benign, own = round_updates
    attack = IPMAttack()
    with pytest.raises(ValueError, match="coordinates"):
        attack.craft(benign[:, :10], own, gen())
    with pytest.raises(ValueError, match="finite"):
        attack.craft(benign, own * float("nan"), gen())
    with pytest.raises(ValueError, match="at least one benign"):
        attack.craft(benign[:0], own, gen())
    with pytest.raises(ValueError, match="2-D"):
        attack.craft(benign[0], own, gen())
    # per-client use refuses loudly instead of sending honest updates
    with pytest.raises(RuntimeError, match="colluding"):
        attack.poison_update({"w": torch.zeros(3)}, gen())


@pytest.mark.parametrize("name", COALITION)
def test_craft_is_reproducible_and_described(round_updates, name):
    benign, own = round_updates
    attack = make_attack(name, knowledge="own")
    assert isinstance(attack, CoalitionAttack)
    a = attack.craft(benign, own, gen(1))
    b = make_attack(name, knowledge="own").craft(benign, own, gen(1))
    assert torch.equal(a, b)
    record = attack.describe()
    assert record["name"] == name and record["knowledge"] == "own"
    json.dumps(record)


def test_chain_mode_refuses_colluding_attacks():
    with pytest.raises(ValueError, match="only mode='memory'"):
        SimulationConfig(attack="min_max", mode="chain")
    SimulationConfig(attack="model_replacement", mode="chain")  # per-client: fine


# --- tiny memory-mode federations ----------------------------------------------------------

TINY = dict(dataset="mnist", num_clients=4, malicious_fraction=0.5, defenses=("fedavg",),
            rounds=1, max_client_samples=32, validation_size=64, test_samples=100,
            mode="memory")


def published_updates(config, defense="fedavg"):
    """Run one memory-mode round and return every member's published update (flat)."""
    seen = {}

    def spy(round_id, client, blob):
        seen[client] = flatten(decode_tensors(blob, expected_kind="update").tensors)
        return None  # publish as is

    records = run_memory(config, defense, lambda r: None, corrupt=spy)
    return seen, records


@pytest.fixture(scope="module")
def honest():
    """The members' updates in the same round with nobody attacking."""
    return published_updates(SimulationConfig(**{**TINY, "malicious_fraction": 0.0},
                                              attack="none"))[0]


@pytest.mark.parametrize("name", COALITION)
def test_coalition_in_a_memory_round(name, honest):
    config = SimulationConfig(**TINY, attack=name)
    malicious = config.malicious_clients()
    seen, records = published_updates(config)
    benign = torch.stack([seen[i] for i in range(4) if i not in malicious])
    own = torch.stack([honest[i] for i in malicious])
    # the benign members are untouched; the coalition sent what craft gives on the round
    for i in range(4):
        if i not in malicious:
            assert torch.equal(seen[i], honest[i])
    expected = config.make_attack().craft(benign, own, gen())
    for row, i in enumerate(malicious):
        assert torch.allclose(seen[i], expected[row], atol=1e-6)
        assert not torch.allclose(seen[i], honest[i])
    again, records2 = published_updates(config)
    assert records[0].aggregate_sha256 == records2[0].aggregate_sha256
    assert all(torch.equal(again[i], seen[i]) for i in seen)


def test_simulation_records_the_knowledge_mode(tmp_path):
    config = SimulationConfig(**TINY, attack="ipm", attack_params={"knowledge": "own"})
    results = simulate(config, tmp_path)
    assert results["attack"] == {"name": "ipm", "knowledge": "own", "epsilon": 0.5}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attack"]["knowledge"] == "own"
    replaced = SimulationConfig(**TINY, attack="model_replacement").make_attack()
    assert replaced.gamma == 4.0  # n / eta with the simulator's client count
