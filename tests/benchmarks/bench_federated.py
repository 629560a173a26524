"""FSLoRA rounds, 1,000 clients × 10 local steps, 64×64 rank-8 heterogeneous quadratics: the
batched cohort (stacked tensors, in cache-sized chunks) against the client-by-client loop (each
device training its k_i columns and rows), with the same numbers (Federated issue §7).

Whole runs of both sides are timed interleaved (``timing.compare``, 5 repeats), each divided by
its number of rounds; a run's set-up and the global loss it logs at the start and the end are
counted on both sides, which can only lower the ratio. Target: the ratio of medians loop /
batched ≥ 10 in float32, the dtype of simulated training; float64 (the theory checks' dtype) is
reported without a target. Run with ``make bench``.
"""

import os

import numpy as np
import torch
from timing import compare, record

import lorakit as lk
from lorakit.federated import budgets, make_federated

CLIENTS, STEPS, M, ROUNDS, REPEATS = 1000, 10, 64, 1, 5


def _loop_over_batched(dtype) -> float:
    """Time runs of both sides interleaved, check their losses agree, return the ratio of medians."""
    problem = lk.problems.heterogeneous_quadratics(
        CLIENTS, M, M, L=1.0, spread=1.0, seed=0, dtype=dtype
    )
    kw = dict(budgets=budgets.uniform(2), local_steps=STEPS)
    sides = {
        "batched": make_federated("fslora", 8, 0.01, **kw),
        "per-client loop": make_federated("fslora", 8, 0.01, impl="slice", **kw),
    }
    frames = {}

    def run(name):
        return lambda: frames.__setitem__(name, sides[name].run(problem, ROUNDS))

    t = compare({name: run(name) for name in sides}, repeats=REPEATS, per=ROUNDS)
    a, b = frames["batched"].loss.to_numpy(), frames["per-client loop"].loss.to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == torch.float32 else 1e-10)
    ratio = t.ratio("per-client loop", "batched")
    print(
        f" {dtype}, seconds per round (final losses {a[-1]:.8g} vs {b[-1]:.8g}):\n"
        f"{t.table(1.0, 's')}\n  loop / batched (ratio of medians) = {ratio:.1f}"
    )
    return ratio


def test_fslora_round_batched_vs_loop():
    print(
        f"\nFSLoRA, {CLIENTS} clients x {STEPS} local steps, {M}x{M}, r=8, k_i ~ U{{2..8}}; "
        f"{ROUNDS} round(s) per run, {REPEATS} interleaved runs per side; "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    )
    ratio32 = _loop_over_batched(torch.float32)
    ratio64 = _loop_over_batched(torch.float64)
    record("bench_federated", "FSLoRA round, loop / batched, float64", ratio64, "×")
    assert record(
        "bench_federated", "FSLoRA round, loop / batched, float32", ratio32, "×", ">= 10",
        ratio32 >= 10,
    )  # fmt: skip
