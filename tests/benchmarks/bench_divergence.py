"""The cost of keeping the last good state (:class:`lorakit.adapters.checkpoint.LastGood`).

A model-scale federated run copies every site's W0, B, A (and flags) once per logged round, so a
diverged run can be put back (the chain keeps its previous tree of weights and copies nothing).
This measures that copy against one Bernoulli-LoRA-GD step (log_every = 1: a chain step is the
cheapest unit of work, so the ratio is an upper bound for a round) on the
zoo's digits MLP (3 sites) and tiny GPT-2 (6 sites). Run with ``make bench`` or
``python tests/benchmarks/bench_divergence.py``. Target: under 10% of a step.
"""

import time

import lorakit as lk
import lorakit.zoo
from lorakit.adapters.checkpoint import site_state

STEPS, COPIES = 10, 200


def _overhead(problem) -> tuple[float, float]:
    """(seconds per chain step, seconds per site_state copy) on ``problem``."""
    lk.run("bernoulli_lora", problem, 2, rank=4, gamma=1e-3, p=0.5)  # warm-up
    start = time.perf_counter()
    lk.run("bernoulli_lora", problem, STEPS, rank=4, gamma=1e-3, p=0.5)
    step = (time.perf_counter() - start) / STEPS
    start = time.perf_counter()
    for _ in range(COPIES):
        site_state(problem.sites)
    return step, (time.perf_counter() - start) / COPIES


def _report(name, problem):
    step, copy = _overhead(problem)
    entries = sum(s.base.numel() + s.A.numel() + s.B.numel() for s in problem.sites)
    print(
        f"{name}: {len(problem.sites)} sites, {entries} entries copied; step {step * 1e3:.2f} ms, "
        f"copy {copy * 1e3:.3f} ms ({100 * copy / step:.1f}% of a step)"
    )
    return copy / step


def test_last_good_state_costs_little_against_a_step():
    digits = _report("digits", lorakit.zoo.digits_problem(rank=4))
    gpt2 = _report("gpt2", lorakit.zoo.gpt2_problem(rank=4))
    assert digits < 0.1 and gpt2 < 0.1


if __name__ == "__main__":
    test_last_good_state_costs_little_against_a_step()
