"""ModelProblem: validation of its data and clients, reset, splits, chunked loss."""

from __future__ import annotations

import pytest
import torch
from peft_toys import toy_model, toy_problem

from lorakit.adapters import ModelProblem

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def _data(N=10):
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(N, 6, generator=g, dtype=torch.float64), "labels": torch.arange(N) % 3}


@pytest.mark.parametrize(
    "kwargs,match",
    [({"data": {}}, "non-empty dict"),
     ({"data": {"x": torch.zeros(4, 6), "labels": torch.zeros(5)}}, "share their first dimension"),
     ({"clients": [torch.tensor([0, 1]), torch.tensor([], dtype=torch.long)]}, "non-empty"),
     ({"clients": [torch.tensor([0, 10])]}, r"clients\[0\] holds indices outside \[0, 10\)"),
     ({"eval_batch_size": 0}, "eval_batch_size")],
)  # fmt: skip
def test_bad_data_and_clients_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelProblem(toy_model(), **{"data": _data(), **kwargs})


def test_loss_in_chunks_equals_one_pass_and_clients_average_to_it():
    problem = toy_problem(samples=30)
    with torch.no_grad():
        whole = float(problem.objective(problem.batch(problem.indices())))
    problem.eval_batch_size = 7  # chunks 7, 7, 7, 7, 2 weighted by their size
    assert problem.loss() == pytest.approx(whole, rel=1e-13)
    split = problem.split(3, seed=0)  # iid: 10 rows each
    assert split.M == 3 and sorted(torch.cat(split.clients).tolist()) == list(range(30))
    mean = sum(split.loss(client=c) for c in range(3)) / 3
    assert mean == pytest.approx(whole, rel=1e-13)


def test_reset_restores_weights_factors_and_scaling():
    problem = toy_problem()
    loss0 = problem.loss()
    for site in problem.sites:
        site.merge_and_restart(torch.ones_like(site.B), torch.ones_like(site.A))
        site.scaling = 3.0
    assert problem.loss() != pytest.approx(loss0)
    problem.reset()
    assert problem.loss() == loss0
    assert all(site.scaling == 1.0 for site in problem.sites)


def test_split_by_labels_and_bad_label_names():
    problem = toy_problem(samples=60)
    parts = problem.split(3, "dirichlet", labels="labels", alpha=0.5, seed=1).clients
    assert sorted(torch.cat(parts).tolist()) == list(range(60))
    with pytest.raises(ValueError, match="labels must name a data tensor"):
        problem.split(3, "dirichlet", labels="y")
    with pytest.raises(ValueError, match="1-D class labels"):
        problem.split(3, "dirichlet", labels="x")


def test_sample_draws_without_replacement_from_the_client():
    problem = toy_problem(samples=40).split(4, seed=0)
    g = torch.Generator().manual_seed(0)
    rows = problem.indices(2)
    batch = problem.sample(g, 5, client=2)
    x_rows = problem.data["x"][rows]
    hits = [int(((x_rows - x).abs().sum(1) == 0).nonzero()) for x in batch["x"]]
    assert len(set(hits)) == 5  # five distinct rows, all of client 2
    assert len(problem.sample(g, 100, client=2)["x"]) == rows.numel()
    with pytest.raises(ValueError, match="client"):
        problem.indices(4)
