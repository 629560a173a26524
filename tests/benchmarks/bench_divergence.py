"""The cost of a model-scale federated round's write-back (``ModelProblem.commit``).

The FSLoRA engine (:mod:`lorakit.federated.lora`) keeps its global state as trees and commits
every site's W0, B, A into the model after each round, so the model holds the global adapter and a
diverged run is put back by committing its last good state (the chain keeps its previous tree of
weights and copies nothing). This measures that write against one Bernoulli-LoRA-GD step
(log_every = 1: a chain step is the cheapest unit of work, so the ratio is an upper bound for a
round) on the zoo's digits MLP (3 sites) and tiny GPT-2 (6 sites). Run with ``make bench`` or
``python tests/benchmarks/bench_divergence.py``. Target: under 10% of a step.
"""

import time

import torch

import lorakit as lk
import lorakit.zoo
from lorakit.local import init_adapter

STEPS, COPIES = 10, 200


def _overhead(problem) -> tuple[float, float]:
    """(seconds per chain step, seconds per commit of the problem's W0, B, A) on ``problem``."""
    lk.run("bernoulli_lora", problem, 2, rank=4, gamma=1e-3, p=0.5)  # warm-up
    start = time.perf_counter()
    lk.run("bernoulli_lora", problem, STEPS, rank=4, gamma=1e-3, p=0.5)
    step = (time.perf_counter() - start) / STEPS
    state = problem.start(), *init_adapter(problem, 4, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(COPIES):
        problem.commit(*state)
    return step, (time.perf_counter() - start) / COPIES


def _report(name, problem):
    step, copy = _overhead(problem)
    entries = sum(s.base.numel() + s.A.numel() + s.B.numel() for s in problem.sites)
    print(
        f"{name}: {len(problem.sites)} sites, {entries} entries copied; step {step * 1e3:.2f} ms, "
        f"copy {copy * 1e3:.3f} ms ({100 * copy / step:.1f}% of a step)"
    )
    return copy / step


def test_a_rounds_commit_costs_little_against_a_step():
    digits = _report("digits", lorakit.zoo.digits_problem(rank=4))
    gpt2 = _report("gpt2", lorakit.zoo.gpt2_problem(rank=4))
    assert digits < 0.1 and gpt2 < 0.1


if __name__ == "__main__":
    test_a_rounds_commit_costs_little_against_a_step()
