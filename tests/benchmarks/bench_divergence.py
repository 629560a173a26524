"""The cost of a model-scale federated round's write-back (``ModelProblem.commit``).

The FSLoRA engine (:mod:`lorakit.federated.lora`) keeps its global state as trees and commits
every site's W0, B, A into the model after each round, so the model holds the global adapter and a
diverged run is put back by committing its last good state (the chain keeps its previous tree of
weights and copies nothing). This measures that write against one Bernoulli-LoRA-GD step
(log_every = 1: a chain step is the cheapest unit of work, so the ratio is an upper bound for a
round) on the zoo's digits MLP (3 sites) and tiny GPT-2 (6 sites). A run of 10 steps and a
loop of 200 commits are timed interleaved (``timing.compare``, 5 repeats, each divided by its
count; the run's set-up is counted in its steps). Target: the ratio of medians commit / step
under 10%. Run with ``make bench``.
"""

import os

import torch
from timing import compare, record

import lorakit as lk
import lorakit.zoo
from lorakit.local import init_adapter

STEPS, COPIES, REPEATS = 10, 200, 5


def _commit_over_step(name, problem) -> float:
    """Median seconds of a commit of the problem's W0, B, A over the median seconds of a step."""
    state = problem.start(), *init_adapter(problem, 4, torch.Generator().manual_seed(0))

    def steps():
        lk.run("bernoulli_lora", problem, STEPS, rank=4, gamma=1e-3, p=0.5)

    def commits():
        for _ in range(COPIES):
            problem.commit(*state)

    t = compare(
        {"chain step": steps, "commit": commits},
        repeats=REPEATS,
        per={"chain step": STEPS, "commit": COPIES},
    )
    entries = sum(s.base.numel() + s.A.numel() + s.B.numel() for s in problem.sites)
    ratio = t.ratio("commit", "chain step")
    print(
        f"{name}: {len(problem.sites)} sites, {entries} entries copied per commit\n{t.table()}\n"
        f"  commit / step (ratio of medians) = {100 * ratio:.2f}% (target < 10%)"
    )
    return ratio


def test_a_rounds_commit_costs_little_against_a_step():
    print(f"\n{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads")
    ratios = {
        "digits": _commit_over_step("digits", lorakit.zoo.digits_problem(rank=4)),
        "gpt2": _commit_over_step("gpt2", lorakit.zoo.gpt2_problem(rank=4)),
    }
    passed = [
        record("bench_divergence", f"commit / step, {name}", 100 * r, "%", "< 10", r < 0.1)
        for name, r in ratios.items()
    ]
    assert all(passed)
