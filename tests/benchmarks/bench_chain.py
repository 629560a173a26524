"""Bernoulli-LoRA-GD on the paper's linear regression at 64×64, rank 4 (Bernoulli-LoRA §7.1).

lorakit's time per step against
  (i)  a plain-torch projected step written inline here (target: lorakit within 1.2× of it), and
  (ii) a numpy step that forms H = B pinv(BᵀB) Bᵀ every iteration, as the authors' code does
       (IgorSokoloff/Bernoulli-LoRA_experiments, LinReg/RC-LoRA.py; ratio reported).
Run with ``make bench``.
"""

import time

import numpy as np
import torch

import lorakit as lk
from lorakit import problems as pb

M = N = 64
RANK, P, STEPS, REPEATS = 4, 0.5, 300, 5


def _best(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / STEPS


def test_bernoulli_lora_gd_step_time():
    problem = pb.linear_regression(M, N, n_pretrain=500, n_finetune=1000)
    gamma = 1.0 / problem.L
    chain = lk.make("bernoulli_lora", RANK, gamma, p=P)

    def lorakit_run():
        chain.run(problem, STEPS, seeds=0, log_every=STEPS)

    def inline_torch():
        gen = torch.Generator().manual_seed(0)
        W = problem.W0.clone()
        for _ in range(STEPS):
            G = problem.grad(W)
            if torch.rand((), generator=gen) < P:
                Q = torch.linalg.qr(torch.randn(M, RANK, generator=gen, dtype=W.dtype)).Q
                W = W - gamma * (Q @ (Q.T @ G))
            else:
                Q = torch.linalg.qr(torch.randn(N, RANK, generator=gen, dtype=W.dtype)).Q
                W = W - gamma * ((G @ Q) @ Q.T)
        return W

    D, b, reg = problem.D.numpy(), problem.b.numpy(), problem.reg

    def numpy_pinv():
        rs = np.random.RandomState(0)
        x = problem.W0.numpy().ravel().copy()
        for _ in range(STEPS):
            g = D.T @ (D @ x - b) / len(b) + reg * 2 * x / (1 + x**2) ** 2
            G = g.reshape(M, N)
            if rs.binomial(1, P):
                B = rs.randn(M, RANK)
                H = B @ np.linalg.pinv(B.T @ B) @ B.T
                G = H @ G
            else:
                A = rs.randn(RANK, N)
                H = A.T @ np.linalg.pinv(A @ A.T) @ A
                G = G @ H
            x = x - gamma * G.ravel()
        return x

    t_lk, t_inline, t_np = _best(lorakit_run), _best(inline_torch), _best(numpy_pinv)
    print(
        f"\nBernoulli-LoRA-GD, linear regression {M}x{N}, r={RANK}, N={problem.n_samples}: per step"
        f"\n  lorakit          {t_lk * 1e6:8.1f} us"
        f"\n  inline torch     {t_inline * 1e6:8.1f} us   lorakit / inline = {t_lk / t_inline:.2f}"
        f" (target <= 1.2)"
        f"\n  numpy pinv (authors' form) {t_np * 1e6:8.1f} us   numpy / lorakit = {t_np / t_lk:.2f}"
    )
    assert t_lk <= 1.2 * t_inline
