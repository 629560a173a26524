"""RW-LoRA and gossip Dec-LoRA, each one engine over the problem protocol
(lorakit.decentralized.simulation): a one-site peft model runs exactly as the matrix problem with
the same W0 and client losses, messages go through the upload compressor, ``lr=`` is deprecated,
and a run stops when its progress bar asks (notebook 07's Cancel)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from bars import StopAfter
from peft_toys import toy_problem

import lorakit as lk
from lorakit.compressors import rand_k, top_k
from lorakit.decentralized import GossipLoRA, RWLoRA
from lorakit.problems import FederatedProblem
from lorakit.problems.base import MatrixProblem
from lorakit.progress import report_progress

N = 4
RING, COMPLETE = nx.cycle_graph(N), nx.complete_graph(N)


@dataclass(eq=False)
class ToyClient(MatrixProblem):
    """f_c(W) = the peft toy's loss on client c's rows with fc1's weight W (no peft): the matrix
    problem a one-site model is."""

    x: torch.Tensor = None
    y: torch.Tensor = None
    head: tuple = ()

    def loss(self, W, idx=None):
        if W.dim() > 2:
            return torch.stack([self.loss(w) for w in W])
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        bias, W2, b2 = self.head
        logits = torch.tanh(x @ W.T + bias) @ W2.T + b2
        return torch.nn.functional.cross_entropy(logits, y)

    def grad(self, W, idx=None):
        with torch.enable_grad():
            W = W.detach().requires_grad_(True)
            (G,) = torch.autograd.grad(self.loss(W, idx), W)
        return G


@pytest.fixture(scope="module")
def one_site():
    return toy_problem(clients=N, target_modules=["fc1"])


def matrix_twin(model) -> FederatedProblem:
    """The toy's client losses as a FederatedProblem of one 8×6 site, W0 = fc1's base weight."""
    fc1 = model.sites[0].layer.get_base_layer()
    fc2 = model.model.base_model.model.fc2
    head = (fc1.bias.detach(), fc2.weight.detach(), fc2.bias.detach())
    W0 = model.sites[0].W0.detach().clone()
    clients = [
        ToyClient(8, 6, W0, x=model.data["x"][rows], y=model.data["labels"][rows], head=head,
                  n_samples=rows.numel())
        for rows in model.clients
    ]  # fmt: skip
    return FederatedProblem.from_clients(clients, W0=W0)


def assert_same_frames(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-10):
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-13, err_msg=col)
        else:
            np.testing.assert_array_equal(x, y, err_msg=col)


# -- one engine at both scales -------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg",
    [
        RWLoRA(
            2, 0.5, transition="lazy", estimator=lk.sgd(sigma=0.1, batch_size=8), token_loss=0.2
        ),
        RWLoRA(2, 0.05, optimizer="adamw", pi=[1, 2, 3, 4], start="uniform"),
        GossipLoRA(
            2, 0.5, local_steps=2, estimator=lk.sgd(sigma=0.1, batch_size=8), link_failure=0.3
        ),
        GossipLoRA(2, 0.05, optimizer="adamw", mixing="uniform"),
    ],
    ids=["walk-sgd", "walk-adamw", "gossip-sgd", "gossip-adamw"],
)
def test_a_one_site_model_runs_as_its_matrix_problem(one_site, cfg):
    """Same seeds, same W0, same client losses: the frames agree to 1e-10 (minibatches, noise,
    AdamW, failures, π-weighted objective), and the model keeps the last token / average adapter."""
    steps = 15 if isinstance(cfg, RWLoRA) else 6
    model = cfg.run(one_site, steps, seeds=[0, 3], graph=RING)
    matrix = cfg.run(matrix_twin(one_site), steps, seeds=[0, 3], graph=RING)
    assert_same_frames(model, matrix)
    assert model["loss"].iloc[-1] < model["loss"].iloc[0]
    last = model["loss"].iloc[-1]  # the model holds seed 3's result
    weights = model.attrs.get("pi", [1 / N] * N)
    held = sum(w * one_site.loss(client=c) for c, w in enumerate(weights))
    assert held == pytest.approx(last, rel=1e-12)


def test_a_lost_token_keeps_its_adamw_state(square):
    """optimizer_state="token": a lost transfer leaves the token's factors and its AdamW
    state_dict bit for bit as they were before the hop (the sender re-issues its copy)."""
    cfg = RWLoRA(2, 0.05, optimizer="adamw", token_loss=0.4)  # MH on K_4 always moves
    sim = cfg.simulator(square, COMPLETE, seed=2)
    lost = 0
    for _ in range(40):
        before = (sim.B, sim.A, copy.deepcopy(sim.state))
        record = sim.hop()
        if record["lost"]:
            lost += 1
            assert sim.B is before[0] and sim.A is before[1]
            if before[2] is None:  # lost before the token had a state
                assert sim.state is None
                continue
            now, then = sim.state["state"], before[2]["state"]
            for new, old in zip(now.values(), then.values(), strict=True):
                assert all(torch.equal(new[k], old[k]) for k in old)
    assert lost >= 8 and int(sim.state["state"][0]["step"]) == 40 - lost


# -- the upload compressor -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def square():
    """5×5 nodes at rank 2: the adapter is one message of d = 2·(5 + 5) = 20 entries."""
    return lk.problems.heterogeneous_quadratics(N, 5, 5, L=0.5, seed=0)


@pytest.mark.parametrize("make", [RWLoRA, GossipLoRA])
def test_a_compressor_that_keeps_everything_changes_no_iterate(square, make):
    """Top-k and rand-k at k = d are the identity on the message: the same iterates; bytes are
    the payload's (top-k sends d floats and d indices)."""
    kw = {"transition": "lazy"} if make is RWLoRA else {}
    plain = make(2, 0.3, **kw).run(square, 12, seeds=[0, 1], graph=RING)
    for compressor in (top_k(20), rand_k(20)):
        same = make(2, 0.3, compressor=compressor, **kw).run(square, 12, seeds=[0, 1], graph=RING)
        cols = ["loss", "grad_norm_sq", "communicated_params"]
        pd.testing.assert_frame_equal(same[cols], plain[cols], check_exact=False, rtol=1e-13)
        np.testing.assert_array_equal(same["bytes"], 2 * plain["bytes"])


def test_the_token_moves_through_the_compressor(square):
    """A transfer sends top-k of the token (as one vector of d = 20 entries), k floats and k
    indices; a self-loop sends nothing; fewer kept entries, fewer bytes."""
    cfg = RWLoRA(2, 0.3, transition="lazy", compressor=top_k(6))
    sim = cfg.simulator(square, RING, seed=1)
    ref = RWLoRA(2, 0.3, transition="lazy").simulator(square, RING, seed=1)
    for _ in range(10):
        ref.B, ref.A, ref.state = sim.B, sim.A, sim.state  # the same token before the hop
        record, expected = sim.hop(), ref.hop()
        assert record == expected  # the walk does not depend on the compressor
        if record["to"] == record["node"]:
            torch.testing.assert_close(sim.A, ref.A, rtol=0, atol=0)
            continue
        flat = torch.cat([ref.B.flatten(), ref.A.flatten()])
        keep = torch.zeros(20, dtype=torch.bool)
        keep[flat.abs().topk(6).indices] = True
        kept = torch.where(keep, flat, 0.0)
        torch.testing.assert_close(torch.cat([sim.B.flatten(), sim.A.flatten()]), kept)
    moved = sum(m["src"] != m["dst"] for m in sim.messages)
    assert moved > 3 and sim.communicated == 6 * moved and sim.bytes == (4 + 4) * 6 * moved
    frames = {
        k: RWLoRA(2, 0.3, transition="lazy", compressor=top_k(k)).run(square, 8, graph=RING)
        for k in (4, 12)
    }
    assert frames[4]["bytes"].iloc[-1] < frames[12]["bytes"].iloc[-1]
    assert not np.allclose(frames[4]["loss"], frames[12]["loss"])


def test_gossip_mixes_the_neighbours_compressed_adapters(square):
    """Node i keeps its own factors and receives C(B_j), C(A_j): x_i ← M_ii x_i + Σ_j≠i M_ij C(x_j);
    every message sent costs the payload of k = 5 of d = 20 entries."""
    cfg = GossipLoRA(2, 0.3, compressor=top_k(5))
    sim = cfg.simulator(square, RING, seed=0)
    sim.round()  # B ≠ 0 from here on
    A, B, _ = sim.local_steps()  # deterministic: no minibatch, no noise
    record = sim.round()
    flat = torch.cat([B.flatten(1), A.flatten(1)], dim=1)
    idx = flat.abs().topk(5, dim=1).indices
    sent = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx))
    M = torch.tensor(np.array(sim.M))
    own = torch.diagonal(M)[:, None]
    mixed = own * flat + (M - torch.diag(torch.diagonal(M))) @ sent
    torch.testing.assert_close(torch.cat([sim.B.flatten(1), sim.A.flatten(1)], 1), mixed)
    assert record["links"] == N and sim.communicated == 2 * 2 * N * 5
    assert sim.bytes == 2 * 2 * N * 5 * (4 + 4)


# -- the old name of the step size, the Cancel button ---------------------------------------------
@pytest.mark.parametrize("make", [RWLoRA, GossipLoRA])
def test_lr_is_a_deprecated_name_of_gamma(make):
    with pytest.warns(DeprecationWarning, match="the step size is gamma"):
        old = make(rank=2, lr=0.05)
    assert old == make(rank=2, gamma=0.05) and old.gamma == 0.05
    with pytest.raises(TypeError, match="once"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        make(rank=2, gamma=0.05, lr=0.05)
    with pytest.raises(TypeError, match="needs gamma"):
        make(rank=2)


@pytest.mark.parametrize("make", [RWLoRA, GossipLoRA])
@pytest.mark.parametrize("scale", ["matrix", "model"])
def test_cancel_stops_the_run_and_keeps_the_state_reached(make, scale, square):
    problem = square if scale == "matrix" else toy_problem(clients=N)
    cfg = make(2, 0.3)
    with report_progress(StopAfter):
        frame = cfg.run(problem, 20, graph=COMPLETE, log_every=5)
    unit = "hop" if make is RWLoRA else "round"
    assert frame[unit].tolist() == [0, 3]  # the state reached is logged, though not a 5th step
    full = cfg.run(problem if scale == "matrix" else toy_problem(clients=N), 3, graph=COMPLETE)
    assert frame["loss"].iloc[-1] == pytest.approx(full["loss"].iloc[-1], rel=1e-12)
    if scale == "model":
        assert problem.loss() == pytest.approx(frame["loss"].iloc[-1], rel=1e-10)
