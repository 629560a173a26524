"""Measured checks of the papers' claims, collected into the table ``lorakit verify`` prints.

A check runs a method on a problem whose constants are known and reports the measured value next
to the bound or the identity it should satisfy. Each is registered with the paper and claim it
tests; :func:`verify` runs a selection and returns a pandas frame (one row per check).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from . import problems as pb
from .estimators import gd, mvr, page, sgd
from .methods import run
from .theory.registry import CHECKS, Check, Result, papers, register, resolve_paper

__all__ = ["CHECKS", "Check", "Result", "papers", "resolve_paper", "verify"]


def verify(paper: str | None = None, fast: bool = False, names=None) -> pd.DataFrame:
    """Run the registered checks (optionally one paper's, or the named ones) into a table.

    ``paper`` is read by :func:`resolve_paper` (``"rac_lora"``, ``"RAC-LoRA"``, ...).
    """
    paper = None if paper is None else resolve_paper(paper)
    selected = [
        c
        for c in CHECKS.values()
        if (paper is None or c.paper == paper) and (names is None or c.name in names)
    ]
    if not selected:
        raise ValueError(f"names must name registered checks of paper {paper!r}, got {names!r}")
    rows = []
    for c in selected:
        start = time.perf_counter()
        res = c.run(fast)
        rows.append(
            {
                "paper": c.paper,
                "claim": c.claim,
                "check": c.name,
                "measured": res.measured,
                "stderr": res.stderr,
                "relation": res.relation,
                "bound": res.bound,
                "printed_bound": res.printed,
                "status": res.status,
                "detail": res.detail,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Chain identities and rates (RAC-LoRA, Bernoulli-LoRA)
# --------------------------------------------------------------------------------------------
def _max_diff(a: pd.DataFrame, b: pd.DataFrame, column: str = "loss") -> float:
    return float(np.abs(a[column].to_numpy() - b[column].to_numpy()).max())


@register("full_rank_chain_is_gd", "RAC-LoRA", "§5.1: r = m = n gives H = I, so the chain is GD")
def _full_rank(fast: bool) -> Result:
    problem = pb.logistic_regression(5, 5, n_samples=200)
    gamma, steps = 1 / problem.L, 30
    W, gd_loss = problem.W0.clone(), []
    for _ in range(steps + 1):
        gd_loss.append(float(problem.loss(W)))
        W = W - gamma * problem.grad(W)
    frame = run("bernoulli_lora", problem, steps, seeds=[0, 1], rank=5, gamma=gamma, p=0.5)
    diff = max(float(np.abs(g.loss.to_numpy() - gd_loss).max()) for _, g in frame.groupby("seed"))
    return Result(diff, 1e-10, "<=", "max |f(chain) − f(GD)| over 30 steps, 2 seeds, float64")


@register("factor_step_is_projected_step", "Bernoulli-LoRA", "Lemma 10: factor step = −γ H G")
def _factor_is_projected(fast: bool) -> Result:
    problem = pb.linear_regression(6, 5, n_pretrain=200, n_finetune=60)
    kw = dict(rank=2, gamma=1 / problem.L, p=0.4, steps_per_link=3, seeds=[0, 7])
    a = run("bernoulli_lora", problem, 40, **kw)
    b = run("bernoulli_lora", problem, 40, update="factor", **kw)
    return Result(_max_diff(a, b), 1e-10, "<=", "max |f(projected) − f(factor)|, float64")


@register(
    "one_step_contraction", "Bernoulli-LoRA", "Thm 9 tight: E f(W⁺)/f(W) = 1 − λ^p on ½‖W − W*‖²"
)
def _contraction(fast: bool) -> Result:
    m, n, r, p = 8, 12, 2, 0.3
    lam = p * r / m + (1 - p) * r / n
    frame = run(
        "bernoulli_lora",
        pb.quadratic(m, n, seed=1),
        25,
        seeds=range(20 if fast else 200),
        rank=r,
        gamma=1.0,
        p=p,
    )
    loss = np.stack([g.loss.to_numpy() for _, g in frame.groupby("seed")])
    ratios = (loss[:, 1:] / loss[:, :-1]).ravel()
    se = ratios.std(ddof=1) / math.sqrt(ratios.size)
    return Result(
        float(ratios.mean()),
        1 - lam,
        "≈",
        f"mean of f(W^(t+1))/f(W^t) over steps and seeds (m={m}, n={n}, r={r}, p={p})",
        stderr=float(se),
        slack=4.0,
    )


def _counterexample_gap(method: str, fast: bool, **kw) -> float:
    problem = pb.counterexample()
    kw = {"gamma": 1 / problem.L, **kw}
    frame = run(
        method, problem, 1500 if fast else 5000, seeds=[0, 1, 2], rank=1, log_every=500, **kw
    )
    return frame.groupby("seed").gap.last()


@register(
    "counterexample_lora_stalls",
    "RAC-LoRA",
    "Fig. 1: LoRA stalls above f* (rank-1 cannot reach W*)",
)
def _lora_stalls(fast: bool) -> Result:
    gap = _counterexample_gap("lora", fast, gamma=0.5 / pb.counterexample().L)
    return Result(float(gap.min()), 0.28, ">=", "min gap over 3 seeds; best rank-1 gap is 0.2889")


@register("counterexample_asymm_lora_stalls", "RAC-LoRA", "Fig. 1: AsymmLoRA stalls above f*")
def _asymm_stalls(fast: bool) -> Result:
    gap = _counterexample_gap("asymm_lora", fast)
    return Result(float(gap.min()), 0.28, ">=", "min gap over 3 seeds at γ = 1/L")


@register("counterexample_rac_lora_converges", "RAC-LoRA", "Fig. 1: RAC-LoRA reaches f*")
def _rac_converges(fast: bool) -> Result:
    gap = _counterexample_gap("rac_lora", fast)
    return Result(float(gap.max()), 1e-10, "<=", "max gap over 3 seeds at γ = 1/L")


@register(
    "counterexample_bernoulli_converges", "Bernoulli-LoRA", "Thm 9: Bernoulli-LoRA reaches f*"
)
def _bernoulli_converges(fast: bool) -> Result:
    gap = _counterexample_gap("bernoulli_lora", fast, p=0.5)
    return Result(float(gap.max()), 1e-10, "<=", "max gap over 3 seeds at γ = 1/L, p = 0.5")


def _identity(a_kw: dict, b_kw: dict, detail: str) -> Result:
    problem = pb.linear_regression(5, 6, n_pretrain=200, n_finetune=80)
    base = dict(rank=2, gamma=0.5 / problem.L, seeds=[3, 4])
    a = run(a_kw.pop("method"), problem, 30, **base, **a_kw)
    b = run(b_kw.pop("method"), problem, 30, **base, **b_kw)
    return Result(_max_diff(a, b), 0.0, "==", detail)


@register("bernoulli_p1_is_rac_left", "Bernoulli-LoRA", "§2: p = 1 is RAC-LoRA (left sketch)")
def _p1(fast: bool) -> Result:
    return _identity(
        {"method": "bernoulli_lora", "p": 1.0},
        {"method": "rac_lora", "side": "left"},
        "max |Δf| between the trajectories, same seeds",
    )


@register("bernoulli_p0_is_rac_right", "Bernoulli-LoRA", "§2: p = 0 is RAC-LoRA (right sketch)")
def _p0(fast: bool) -> Result:
    return _identity(
        {"method": "bernoulli_lora", "p": 0.0},
        {"method": "rac_lora", "side": "right"},
        "max |Δf| between the trajectories, same seeds",
    )


@register("page_q1_is_gd", "Bernoulli-LoRA", "Alg. 6: PAGE with q = 1 is GD")
def _page(fast: bool) -> Result:
    return _identity(
        {"method": "bernoulli_lora", "estimator": page(1.0, batch_size=4)},
        {"method": "bernoulli_lora", "estimator": gd()},
        "max |Δf| between the trajectories, same seeds",
    )


@register("mvr_b1_is_sgd", "Bernoulli-LoRA", "Alg. 5: MVR with b = 1 is SGD")
def _mvr(fast: bool) -> Result:
    return _identity(
        {"method": "bernoulli_lora", "estimator": mvr(1.0, batch_size=4)},
        {"method": "bernoulli_lora", "estimator": sgd(batch_size=4)},
        "max |Δf| between the trajectories, same seeds",
    )


# The theorem checks register themselves on import.
from .theory import checks as _theory_checks  # noqa: E402, F401
