"""One FSLoRA round, 1,000 clients × 10 local steps, 64×64 rank-8 heterogeneous quadratics:
the batched cohort (stacked tensors, in cache-sized chunks) against the client-by-client loop
(each device training its k_i columns and rows), with the same numbers (Federated issue §7).
Target: batched at least 10× faster in float32, the dtype of simulated training; float64 (the
theory checks' dtype) is reported too. Run with ``make bench``.

A round's time is (best time of 3 rounds − best time of 1 round)/2, so the per-run set-up and the global
loss logged at the start and the end cancel out.
"""

import time

import numpy as np
import torch

import lorakit as lk
from lorakit.federated import budgets, make_federated

CLIENTS, STEPS, M = 1000, 10, 64


def _round_time(cfg, problem):
    def timed(rounds):
        start = time.perf_counter()
        frame = cfg.run(problem, rounds)
        return time.perf_counter() - start, frame

    timed(1)  # warm-up
    t1 = min(timed(1)[0] for _ in range(3))
    t3, frame = min((timed(3) for _ in range(3)), key=lambda x: x[0])
    return (t3 - t1) / 2, frame


def test_fslora_round_batched_vs_loop():
    print(
        f"\nFSLoRA round, {CLIENTS} clients x {STEPS} local steps, {M}x{M}, r=8, k_i ~ U{{2..8}}:"
    )
    for dtype in (torch.float32, torch.float64):
        problem = lk.problems.heterogeneous_quadratics(
            CLIENTS, M, M, L=1.0, spread=1.0, seed=0, dtype=dtype
        )
        kw = dict(budgets=budgets.uniform(2), local_steps=STEPS)
        t_batched, a = _round_time(make_federated("fslora", 8, 0.01, **kw), problem)
        t_loop, b = _round_time(make_federated("fslora", 8, 0.01, impl="slice", **kw), problem)
        np.testing.assert_allclose(
            a.loss.to_numpy(), b.loss.to_numpy(), rtol=1e-4 if dtype == torch.float32 else 1e-10
        )
        ratio = t_loop / t_batched
        print(
            f"  {dtype!s:14s} batched {t_batched:6.3f} s   per-client loop {t_loop:6.3f} s"
            f"   loop / batched = {ratio:5.1f}   losses {a.loss.iloc[-1]:.8g} vs {b.loss.iloc[-1]:.8g}"
        )
        if dtype == torch.float32:
            assert ratio >= 10
