"""Fed-RAC-LoRA, RAC-LoRA Algorithm 2 (spec rac_lora.md §2.8): exact identities, bytes, input checks."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import lorakit as lk
from lorakit.federated import FEDERATED_METHODS, FedRACLoRA, make_federated
from lorakit.problems import FederatedProblem, MatrixProblem, heterogeneous_quadratics


@pytest.fixture(scope="module")
def wide():  # m ≤ n: a left sketch can have full rank r = m
    return heterogeneous_quadratics(
        5, 4, 6, L=2.0, mu=0.5, curvature="heterogeneous", spread=1.0, seed=0
    )


@pytest.fixture(scope="module")
def tall():  # m ≥ n: a right sketch can have full rank r = n
    return heterogeneous_quadratics(5, 6, 4, L=2.0, mu=0.5, curvature="heterogeneous", seed=1)


def _gd_losses(problem, gamma, rounds):
    """Federated GD written out: W ← W − γ·(1/M) Σ_l Λ_l ∘ (W − C_l)."""
    W, losses = problem.W0.clone(), []
    for _ in range(rounds + 1):
        losses.append(sum(float(c.loss(W)) for c in problem.clients) / problem.M)
        grad = sum(c.curvature * (W - c.W_star) for c in problem.clients) / problem.M
        W = W - gamma * grad
    return np.array(losses)


@pytest.mark.parametrize("side", ["left", "right"])
def test_full_cohort_full_rank_is_federated_gd(wide, tall, side):
    """C = M, β = 1, one component per client and H = I: a round is W − γ∇f(W)."""
    problem = wide if side == "left" else tall
    frame = make_federated("fed_rac_lora", 4, 0.3, side=side).run(problem, 25, seeds=[0, 5])
    expected = _gd_losses(problem, 0.3, 25)
    for _, g in frame.groupby("seed"):
        np.testing.assert_allclose(g.loss.to_numpy(), expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("side", ["left", "right"])
def test_full_cohort_is_the_rac_lora_chain_step(wide, side):
    """C = M, β = 1, N = 1: W^{t+1} = W^t − γ H ∇f(W^t) with the chain's own sketch draws."""
    fed = make_federated("fed_rac_lora", 2, 0.2, side=side).run(wide, 30, seeds=[1, 2])
    chain = lk.run("rac_lora", wide, 30, seeds=[1, 2], rank=2, gamma=0.2, side=side)
    np.testing.assert_allclose(fed.loss.to_numpy(), chain.loss.to_numpy(), rtol=1e-12, atol=1e-12)


def test_server_step_scales_the_chain_step(wide):
    """With single-component clients and C = M the merge is W − βγ H∇f: β·γ is the step."""
    fed = make_federated("fed_rac_lora", 2, 0.1, server_lr=2.5).run(wide, 20, seeds=[3])
    chain = lk.run("rac_lora", wide, 20, seeds=[3], rank=2, gamma=0.25, side="left")
    np.testing.assert_allclose(fed.loss.to_numpy(), chain.loss.to_numpy(), rtol=1e-12, atol=1e-12)
    assert FedRACLoRA(2, 0.1, server_lr=2.5).eta_tilde(4) == pytest.approx(1.0)


def test_alpha_rescales_the_upload_not_the_trajectory(wide):
    a = make_federated("fed_rac_lora", 2, 0.2).run(wide, 10, seeds=[0])
    b = make_federated("fed_rac_lora", 2, 0.2, alpha=16.0).run(wide, 10, seeds=[0])
    np.testing.assert_allclose(a.loss.to_numpy(), b.loss.to_numpy(), rtol=1e-12)


# -- finite-sum clients -------------------------------------------------------------------------
@dataclass(eq=False)
class _Linear(MatrixProblem):
    """f(W) = (1/N) Σ_i ⟨G_i, W⟩: constant component gradients, so an epoch's displacement does
    not depend on the order; records the components each step asked for."""

    G: torch.Tensor = None
    calls: list = None

    def loss(self, W):
        return (self.G.mean(0) * W).sum((-2, -1))

    def grad(self, W, idx=None):
        self.calls.append(None if idx is None else idx.tolist())
        return self.G.mean(0) if idx is None else self.G[idx].mean(0)


def _linear_problem(sizes, m=3, n=4):
    gen = torch.Generator().manual_seed(0)
    clients = [
        _Linear(m=m, n=n, W0=torch.zeros(m, n, dtype=torch.float64), n_samples=N,
                G=torch.randn(N, m, n, generator=gen, dtype=torch.float64), calls=[])
        for N in sizes
    ]  # fmt: skip
    return FederatedProblem.from_clients(clients)


def test_finite_sum_clients_run_one_reshuffled_epoch():
    """Client m takes N_m steps, each component once; the merge is W − γ·(1/C) Σ_m Σ_i G_{m,i}."""
    problem = _linear_problem([3, 5])
    frame, msgs = make_federated("fed_rac_lora", 3, 0.1).run(problem, 2, seeds=[0], messages=True)
    for client, N in zip(problem.clients, [3, 5], strict=True):
        steps = [c for c in client.calls if c is not None]  # (None: the full gradient of a log)
        assert len(steps) == 2 * N
        for epoch in (steps[:N], steps[N:]):  # every step one component, each once per round
            assert all(len(c) == 1 for c in epoch)
            assert sorted(c[0] for c in epoch) == list(range(N))
    assert msgs.local_steps.tolist() == [3, 5, 3, 5]
    assert frame.local_steps.tolist() == [0.0, 4.0, 4.0]
    # Full-rank left sketch (r = m = 3): H = I; constant gradients make every epoch identical.
    step = sum(c.G.sum(0) for c in problem.clients) / 2
    for t, loss in enumerate(frame.loss):
        W = -0.1 * t * step
        assert loss == pytest.approx(float(problem.loss(W)), rel=1e-12, abs=1e-12)


def test_cohort_is_sampled_without_replacement(wide):
    _, msgs = make_federated("fed_rac_lora", 2, 0.1, cohort=3).run(
        wide, 200, seeds=[0], messages=True
    )
    per_round = msgs.groupby("round").client
    assert (per_round.nunique() == 3).all() and (per_round.size() == 3).all()
    counts = msgs.client.value_counts()
    assert len(counts) == 5 and counts.min() > 80  # each client in about 3/5 of 200 rounds


# -- bytes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_bytes(wide, side):
    m, n, r = wide.m, wide.n, 2
    up = (r * n if side == "left" else m * r) * 4
    sketch = (m * r if side == "left" else r * n) * 4
    frame, msgs = make_federated("fed_rac_lora", r, 0.1, side=side, cohort=2).run(
        wide, 3, seeds=[0], messages=True
    )
    assert (msgs.bytes_up == up).all()
    assert msgs.bytes_down.tolist() == [sketch] * 2 + [2 * sketch + up] * 4
    assert frame.bytes_up.tolist() == [0.0, 2 * up, 2 * up, 2 * up]
    assert frame.mb_up.iloc[-1] == pytest.approx(6 * up / 2**20)
    seeded = make_federated("fed_rac_lora", r, 0.1, side=side, sketch_as_seed=True, cohort=2)
    _, msgs = seeded.run(wide, 2, seeds=[0], messages=True)
    assert msgs.bytes_down.tolist() == [8, 8, 16 + up, 16 + up]
    full = make_federated("fed_rac_lora", r, 0.1, side=side, download="full")
    _, msgs = full.run(wide, 2, seeds=[0], messages=True)
    assert (msgs.bytes_down == m * n * 4 + sketch).all()


def test_compressed_upload_bytes_come_from_the_payload(wide):
    """Each client's trained factor (r×n = 12 entries) goes through the compressor: top-k(3) sends
    3 floats and 3 indices; keeping all 12 entries is the identity, value for value."""
    topk = make_federated("fed_rac_lora", 2, 0.2, compressor=lk.compressors.top_k(3))
    frame, msgs = topk.run(wide, 4, seeds=[0], messages=True)
    assert (msgs.bytes_up == 3 * 4 + 3 * 4).all()
    plain = make_federated("fed_rac_lora", 2, 0.2).run(wide, 4, seeds=[0])
    assert not np.allclose(frame.loss.iloc[1:], plain.loss.iloc[1:])
    full = make_federated("fed_rac_lora", 2, 0.2, compressor=lk.compressors.top_k(12))
    np.testing.assert_array_equal(full.run(wide, 4, seeds=[0]).loss, plain.loss)


# -- input checks and divergence ----------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(rank=0), "rank must be in"),
        (dict(lr=0.0), "gamma must be in"),
        (dict(server_lr=-1.0), "server_lr must be in"),
        (dict(cohort=0), "cohort must be in"),
        (dict(side="middle"), "side must be one of"),
        (dict(download="half"), "download must be one of"),
        (dict(sketch="no_such_sketch"), "sketch must be one of"),
    ],
)
def test_bad_configuration_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        make_federated("fed_rac_lora", **{"rank": 2, "lr": 0.1, **kw})


def test_bad_run_arguments_are_named(wide):
    with pytest.raises(ValueError, match="cohort must be in \\[1, 5\\]"):
        make_federated("fed_rac_lora", 2, 0.1, cohort=6).run(wide, 2)
    with pytest.raises(ValueError, match="rank must be in \\[1, 4\\]"):
        make_federated("fed_rac_lora", 5, 0.1).run(wide, 2)
    with pytest.raises(ValueError, match="problem must be a FederatedProblem"):
        make_federated("fed_rac_lora", 2, 0.1).run(lk.problems.quadratic(4, 6), 2)
    with pytest.raises(ValueError, match="rounds must be in"):
        make_federated("fed_rac_lora", 2, 0.1).run(wide, 0)


def test_divergence_is_refused_before_the_merge(wide):
    with pytest.raises(lk.DivergenceError, match="fed_rac_lora diverged in round 1") as err:
        make_federated("fed_rac_lora", 4, 1e9).run(wide, 5, seeds=[0])
    assert err.value.step == 1 and err.value.frame["round"].tolist() == [0]


def test_registered():
    assert "fed_rac_lora" in FEDERATED_METHODS
    cfg = make_federated("fed_rac_lora", 2, 0.1, cohort=3, server_lr=1.5)
    assert isinstance(cfg, FedRACLoRA) and cfg.describe()["cohort"] == "3"
