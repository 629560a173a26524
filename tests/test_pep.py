"""Certified worst cases (lorakit.theory.pep, lorakit.theory.pep_model) against closed forms, and
the ordering measured ≤ certified worst case ≤ bound on the registered rows.

Closed forms (derived here, not by the code under test): for a random orthogonal projector H with
E[H] = λI, E‖x − γHg − x*‖² = (1 − λ)‖x − x*‖² + λ‖x − γg − x*‖², so one step of any such sketch on
L-smooth μ-strongly convex functions has the tight rate 1 − λ + λ·ρ², ρ = max(|1 − γμ|, |1 − γL|)
(GD: λ = 1; randomized block coordinate descent over d blocks: λ = 1/d, as in PEPit's
randomized-coordinate-descent example; Bernoulli-LoRA: λ = p·r/m + (1 − p)·r/n).
Tolerance: the SDP is solved by Clarabel to relative gap 1e-9; values are compared to 1e-6.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lorakit import problems as pb
from lorakit.methods import run
from lorakit.theory import checks  # noqa: F401  (registers the theorems' scenarios)
from lorakit.theory.pep import (
    PEP_ROWS,
    TIGHT,
    Certificate,
    certify,
    grid_for,
    pep_columns,
    pep_row,
)
from lorakit.theory.pep_model import (
    BlockCompressor,
    BlockSketch,
    FunctionClass,
    Initial,
    Measure,
    Method,
    solve_pep,
)
from lorakit.theory.theorem import THEOREMS
from lorakit.widgets.pep import PEP_FAMILIES, pep_app, pep_frame

TOL = 1e-6
SC = FunctionClass("strongly_convex", L=1.0, mu=0.1)


def _one_step_dist(sketch: BlockSketch, gamma: float) -> float:
    return solve_pep(Method(sketch, gamma), SC, Measure("dist", 1), Initial(R0=1.0))


def _rate(lam: float, gamma: float, L: float = 1.0, mu: float = 0.1) -> float:
    rho = max(abs(1 - gamma * mu), abs(1 - gamma * L))
    return 1 - lam + lam * rho**2


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.8])
def test_gd_one_step_is_the_tight_rate(gamma):
    """d = 1 block kept always: plain GD, worst case max(|1 − γμ|, |1 − γL|)²."""
    value = _one_step_dist(BlockSketch(1, 1, 1, 1.0), gamma)
    assert value == pytest.approx(_rate(1.0, gamma), abs=TOL)


def test_randomized_block_coordinate_descent_one_step():
    """A right sketch keeping 1 of 3 block-columns is uniform block coordinate descent, d = 3."""
    value = _one_step_dist(BlockSketch(1, 3, 1, 0.0), 1.0)
    assert value == pytest.approx(1 - 1 / 3 + (1 / 3) * 0.81, abs=TOL)


def test_bernoulli_lora_gd_one_step_issue_value():
    """m = n = 2 blocks, r = 1, λ = ½, L = 1, μ = 0.1, γ = 1/L: 0.905 (issue 15's trial run)."""
    sketch = BlockSketch(2, 2, 1, 0.5)
    assert sketch.lam == 0.5
    assert _one_step_dist(sketch, 1.0) == pytest.approx(0.905, abs=TOL)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_bernoulli_lora_gd_one_step_every_p(p):
    """On a 2 × 3 grid λ = p/2 + (1 − p)/3 moves with p; the rate follows it."""
    sketch = BlockSketch(2, 3, 1, p)
    assert _one_step_dist(sketch, 1.0) == pytest.approx(_rate(p / 2 + (1 - p) / 3, 1.0), abs=TOL)


def test_pep_is_deterministic():
    args = (Method(BlockSketch(2, 2, 1, 0.5), 1.0), SC, Measure("gap", 1), Initial(Delta0=1.0))
    assert solve_pep(*args) == solve_pep(*args)


def test_grid_keeps_lambda():
    assert grid_for(6, 8, 2) == (3, 4, 1)
    assert grid_for(8, 12, 2) == (4, 6, 1)
    assert grid_for(5, 7, 3) == (5, 7, 3)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="p must"):
        BlockSketch(2, 2, 1, 1.5)
    with pytest.raises(ValueError, match="mu must"):
        FunctionClass("strongly_convex", L=1.0, mu=1.0)
    with pytest.raises(ValueError, match="kind must"):
        FunctionClass("convex", L=1.0)
    with pytest.raises(ValueError, match="which must"):
        certify("rac_lora.theorem_5.5", which="primal")
    with pytest.raises(ValueError, match="which='lower' needs a subclass"):
        certify("rac_lora.theorem_5.5", which="lower")  # μ = L: no strongly convex subclass


# ---------------------------------------------------------------------------------------------
# measured (lorakit, finite-support sketch) ≤ certified ≤ bound
# ---------------------------------------------------------------------------------------------
def test_measured_below_certified_below_bound_pl():
    """Bernoulli-LoRA GD, one step, coordinate sketch on a 2 × 3 μ-strongly convex quadratic (a PL
    function): the mean over 400 seeds (3 SE slack) ≤ the PEP ≤ Theorem 9's (1 − γμλ)Δ^0."""
    L, mu, p, gamma = 1.0, 0.1, 0.3, 1.0
    problem = pb.quadratic(2, 3, L=L, mu=mu, seed=0)
    delta0 = float(problem.loss(problem.W0)) - problem.f_star
    frame = run("bernoulli_lora", problem, 1, seeds=list(range(400)), rank=1, p=p, gamma=gamma,
                sketch="coordinate")  # fmt: skip
    gap = frame[frame.step == 1].gap
    measured, se = gap.mean(), gap.std() / math.sqrt(len(gap))
    sketch = BlockSketch(2, 3, 1, p)
    certified = solve_pep(
        Method(sketch, gamma), FunctionClass("pl", L, mu), Measure("gap", 1), Initial(Delta0=delta0)
    )
    bound = THEOREMS["bernoulli_lora.theorem_9"].bound(
        gamma=gamma, L=L, mu=mu, lam_min=sketch.lam, Delta0=delta0, T=1
    )
    assert measured - 3 * se <= certified
    assert certified <= bound + TOL


def test_measured_below_certified_nonconvex():
    """RAC-LoRA GD (left coordinate sketch, r = 1 of 3 rows) on the smooth non-convex 3 × 3 sum,
    L = 2, γ = 1/L: (1/2)Σ_{t<2} E‖∇f(W^t)‖² over 400 seeds ≤ the PEP ≤ Theorem 5.3's bound."""
    problem = pb.smooth_nonconvex(3, 3, seed=0)
    L, gamma = problem.L, 1 / problem.L
    delta0 = float(problem.loss(problem.W0)) - problem.f_star
    frame = run("rac_lora", problem, 1, seeds=list(range(400)), rank=1, gamma=gamma,
                sketch="coordinate")  # fmt: skip
    per_seed = frame.groupby("seed").grad_norm_sq.mean()
    measured, se = per_seed.mean(), per_seed.std() / math.sqrt(len(per_seed))
    certified = solve_pep(
        Method(BlockSketch(3, 3, 1, 1.0), gamma),
        FunctionClass("smooth", L),
        Measure("avg_grad", 2),
        Initial(Delta0=delta0),
    )
    bound = THEOREMS["rac_lora.theorem_5.3"].bound(
        gamma=gamma, L=L, lam_min=1 / 3, Delta0=delta0, T=2
    )
    assert measured - 3 * se <= certified <= bound + TOL


POSED = [key for key in PEP_ROWS if pep_row(key, fast=True).posed]
CARDS = Path(__file__).parents[1] / "theory"


def test_every_chain_federated_and_fslora_theorem_is_posed():
    fslora = ["fslora.theorem_4.4", "fslora.corollary_4.5"]
    fed = [f"bernoulli_lora.theorem_{n}" for n in (5, 18, 6, 20, 21, 22)]
    assert sorted(POSED) == sorted(fslora + fed + [
        f"{paper}.theorem_{n}" for paper, ns in
        (("rac_lora", ("5.3", "5.5", "e.2", "e.3")), ("bernoulli_lora", ("1", "2", "8", "9")))
        for n in ns
    ])  # fmt: skip


@pytest.mark.parametrize("key", POSED)
def test_registered_rows_certified_below_bound_as_the_card_says(key):
    """Each covered theorem's own configuration: certified worst case ≤ corrected bound, and the
    theory card's "Worst case" line states this status and value."""
    cert = certify(key, fast=True)
    assert math.isfinite(cert.value)
    assert cert.value <= cert.bound * (1 + TOL)
    paper, _ = key.split(".", 1)
    card = (CARDS / f"{paper}.md").read_text(encoding="utf-8")
    section = card[card.index(f"`{key}`") :].split("\n## ")[0]
    line = next(x for x in section.splitlines() if x.startswith("Worst case (PEP"))
    assert f"**{cert.status}**" in line
    if "inconclusive" in cert.status:  # only with a counterexample the card names
        assert key == "bernoulli_lora.theorem_18" and "counterexample" in line
    else:
        assert cert.status == "tight" or cert.status.startswith("loose by")
    if cert.status != "tight":
        assert f"{cert.value:.4g}" in line


def test_isotropic_pl_rows_are_tight():
    """½‖W − W*‖² at γ = 1/L attains (1 − γμλ)Δ^0 (μ = L): the certified value equals the bound."""
    for key in ("rac_lora.theorem_5.5", "bernoulli_lora.theorem_9"):
        cert = certify(key, fast=True)
        assert cert.value == pytest.approx(cert.bound, rel=1e-6)


def test_status_words():
    def c(value, bound, printed=None, exact=True):
        return Certificate("k", value, bound, printed, exact, "").status

    assert c(1.0, 1.0 + TIGHT / 2) == "tight"
    assert c(1.0, 1.5) == "loose by 50%"
    assert c(1.0, 1.5, printed=0.9) == "printed bound below certified worst case"
    assert (
        c(1.0, 1.5, printed=0.9, exact=False) == "printed bound below relaxed value (inconclusive)"
    )
    assert c(math.nan, 1.0) == "not posed"


def test_unposed_row_says_why():
    row = pep_row("fslora.no_such_theorem")
    assert not row.posed and row.why


def test_pep_columns_and_table():
    """``lorakit verify --pep``'s columns: a value and status for a posed theorem, the reason for
    one that cannot be posed, nothing for a check that is not a theorem."""
    import pandas as pd

    from lorakit.cli import table

    keys = ["rac_lora.theorem_5.3", "rac_lora.theorem_d.2", "full_rank_chain_is_gd"]
    frame = pd.DataFrame(
        {"paper": "RAC-LoRA", "claim": keys, "check": keys, "measured": 1.0, "relation": "<=",
         "bound": 2.0, "printed_bound": None, "status": "holds"}
    )  # fmt: skip
    out = pep_columns(frame, fast=True)
    posed, unposed, other = out.to_dict(orient="records")
    assert posed["pep_T"] == 2 and posed["worst_case"] <= posed["pep_bound"]
    assert posed["pep"].startswith("loose by")
    assert unposed["pep"].startswith("not posed: random reshuffling")
    assert math.isnan(unposed["worst_case"]) and other["pep"] == ""
    lines = table(out, pep=True).splitlines()
    assert lines[0].split()[-5:] == ["T_pep", "worst", "case", "bound@T_pep", "pep"]
    assert "loose by" in lines[1] and "not posed" in lines[2]


@pytest.mark.parametrize("family", list(PEP_FAMILIES))
def test_notebook_chart_orders_measured_certified_bound(family):
    """Notebook 03's chart: at every γ, measured (coordinate sketch, 40 seeds, 3 SE) ≤ certified
    worst case ≤ corrected bound."""
    frame = pep_frame(family, 0.3, seeds=40)
    assert len(frame) == 5
    assert (frame.measured - 3 * frame.stderr <= frame.certified).all()
    assert (frame.certified <= frame.bound * (1 + TOL)).all()


def test_pep_app_redraws_and_refuses_bad_input():
    with pytest.raises(ValueError, match="family must"):
        pep_frame("GD, convex")
    with pytest.raises(ValueError, match="p must"):
        pep_frame(next(iter(PEP_FAMILIES)), 1.5)
    app = pep_app(p=0.3)
    assert "certified worst case" in app.status.value and len(app.charts) == 1
    app.controls["step"].value = 0.4
    assert "at γ = 0.4" in app.status.value


@pytest.mark.parametrize("key", ["bernoulli_lora.theorem_1", "bernoulli_lora.theorem_8"])
def test_exact_subclass_is_a_lower_bound(key):
    """The exact PEP over the convex (non-convex class) or strongly convex (PL class) subclass is
    attained by a function of the class, so it lies below the relaxed upper bound."""
    low, high = certify(key, fast=True, which="lower"), certify(key, fast=True)
    assert low.exact and not high.exact
    assert 0 < low.value <= high.value * (1 + TOL)


# ---------------------------------------------------------------------------------------------
# Federated estimators (pep_model's clients, compressors and the Δ* condition)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["qgd", "marina", "ef21"])
def test_federated_estimators_with_identity_compressor_are_gd(estimator):
    """Rand-1 of 1 block keeps everything, so Fed-QGD/MARINA/EF21 (G^0 = ∇f_l) take a GD step on
    f = mean of two μ-strongly convex clients: the worst case is GD's ρ² = 0.81 (f_1 = f_2 = f
    attains it; f is μ-strongly convex, so nothing does worse)."""
    method = Method(BlockSketch(1, 1, 1, 1.0), 1.0, estimator, clients=2,
                    compressor=BlockCompressor(1), q=0.5)  # fmt: skip
    assert solve_pep(method, SC, Measure("dist", 1), Initial(R0=1.0)) == pytest.approx(
        0.81, abs=TOL
    )


def test_fed_qgd_needs_heterogeneity_bound_and_stays_below_theorem_18():
    """Rand-1 of 2 blocks (ω = 1) on two strongly convex clients: without a bound on Δ* the
    compressed gradients at W* are unbounded, so is the worst case; with Δ* = 0.1 the exact PEP
    (a lower bound on Theorem 18's PL class) stays below the corrected bound at an admissible γ."""
    sketch, omega, M, gamma = BlockSketch(1, 2, 1, 0.0), 1.0, 2, 0.1
    method = Method(sketch, gamma, "qgd", clients=M, compressor=BlockCompressor(1))
    # Clarabel reports the unbounded SDP as unbounded or fails on it, depending on γ
    with pytest.raises(ValueError, match=r"no finite worst case|solver CLARABEL failed"):
        solve_pep(method, SC, Measure("dist", 1), Initial(R0=1.0))
    value = solve_pep(method, SC, Measure("gap", 1), Initial(Delta0=1.0, Delta_star=0.1))
    constants = dict(gamma=gamma, L=1.0, mu=0.1, M=M, omega=omega, lam_min=sketch.lam,
                     lam_max=sketch.lam, Delta_star=0.1, Delta0=1.0, T=1)  # fmt: skip
    bound = THEOREMS["bernoulli_lora.theorem_18"].bound(**constants)
    assert 0 < value <= bound


def test_pep_certifies_the_theorem_e3_erratum():
    """RAC-LoRA Theorem E.3 prints (1 − γμλ)^T Δ^0 with no noise floor. Started at W* (Δ^0 = 0),
    one SGD step with noise ±c, ‖c‖² ≤ σ² = 1, right sketch on 3 × 4 blocks (λ = 1/4), γ = 1/2,
    L = 1, μ = 1/2: the exact PEP over strongly convex functions (attained by a function of the
    PL class) is (L/2)γ²λσ² = 1/32 (f = (L/2)‖W − W*‖², E‖Hc‖² = λ‖c‖²), above the printed 0 and
    below the corrected bound."""
    sketch = BlockSketch(3, 4, 1, 0.0)
    method = Method(sketch, 0.5, "sgd", clients=2)
    pl = FunctionClass("pl", 1.0, 0.5)
    initial = Initial(Delta0=0.0, sigma2=1.0)
    value = solve_pep(method, pl, Measure("gap", 1), initial, exact_subclass=True)
    assert value == pytest.approx(0.5 * 0.25 * 0.25, abs=TOL)
    thm = THEOREMS["rac_lora.theorem_e.3"]
    constants = dict(gamma=0.5, L=1.0, mu=0.5, lam_min=0.25, lam_max=0.25, A1=0.0, B1=1.0,
                     C1=1.0, Delta0=0.0, T=1)  # fmt: skip
    assert thm.bound("printed", **constants) == 0.0 < value <= thm.bound(**constants)


# ---------------------------------------------------------------------------------------------
# FSLoRA's rounds (lorakit.theory.pep_fslora)
# ---------------------------------------------------------------------------------------------
def _fslora_one_round(r, budgets, gamma, seed=0, block=2):
    """An independent numpy FSLoRA round (H = 1, exact gradients, eq. (10)) on PSD quadratics
    f_i(X) = ½(x − c_i)ᵀQ_i(x − c_i), λ_max(Q_i) = 1, X = r + 1 blocks of ``block`` entries (the
    columns of B, then A), every sketch enumerated. Returns the left-hand side at T = 2 and the
    constants of the instance: σ_s², σ_h² the maxima over the visited iterates and clients,
    F_0 = f^S(X^0) − min f^S."""
    rng = np.random.default_rng(seed)
    dim = (r + 1) * block
    Qs, cs = [], []
    for _ in budgets:
        G = rng.standard_normal((dim, dim))
        Q = G @ G.T
        Qs.append(Q / np.linalg.eigvalsh(Q).max())
        cs.append(rng.standard_normal(dim))
    masks = [
        [np.repeat([*(r / k if j in I else 0.0 for j in range(r)), 1.0], block)
         for I in itertools.combinations(range(r), k)]
        for k in budgets
    ]  # fmt: skip

    def sketched(i, x):  # [∇f̃_i(x; S)] over S: M_S Q_i (M_S x − c_i)
        return [m * (Qs[i] @ (m * x - cs[i])) for m in masks[i]]

    def grad_fS(x):
        return np.mean([np.mean(sketched(i, x), axis=0) for i in range(len(budgets))], axis=0)

    A = np.mean([np.mean([np.outer(m, m) * Q for m in ms], axis=0) for ms, Q in zip(masks, Qs, strict=True)],
                axis=0)  # fmt: skip
    b = np.mean([np.mean([m * (Q @ c) for m in ms], axis=0) for ms, Q, c in zip(masks, Qs, cs, strict=True)],
                axis=0)  # fmt: skip
    const = np.mean([0.5 * c @ Q @ c for Q, c in zip(Qs, cs, strict=True)])

    def fS(x):  # f^S is the quadratic ½xᵀAx − bᵀx + const
        return 0.5 * x @ A @ x - b @ x + const

    f_star = fS(np.linalg.lstsq(A, b, rcond=None)[0])
    x0 = rng.standard_normal(dim)
    picks = list(itertools.product(*(range(len(ms)) for ms in masks)))
    x1s = [x0 - gamma / len(budgets) * sum(sketched(i, x0)[j] for i, j in enumerate(p))
           for p in picks]  # fmt: skip
    lhs = 0.5 * (grad_fS(x0) @ grad_fS(x0) + np.mean([grad_fS(x) @ grad_fS(x) for x in x1s]))
    s2, h2 = 0.0, 0.0
    for x in [x0, *x1s]:
        g = grad_fS(x)
        for i in range(len(budgets)):
            gi = sketched(i, x)
            mean = np.mean(gi, axis=0)
            s2 = max(s2, np.mean([(v - mean) @ (v - mean) for v in gi]))
            h2 = max(h2, (mean - g) @ (mean - g))
    return lhs, dict(F0=fS(x0) - f_star, sigma_s2=s2, sigma_h2=h2)


@pytest.mark.parametrize("budgets", [(1, 2), (1,)])
def test_fslora_round_measured_below_certified_below_bound(budgets):
    """r = 2 (ratios k/r = 1/2 and 1, the registered row's sketch; and one client at 1/2), one
    round at the corrected cap: the exact expectation on a quadratic instance ≤ the PEP with that
    instance's F_0, σ_s², σ_h² (the instance is feasible for it: f_i 1-smooth, f^S convex with
    minimum f*) ≤ bound (6) of Theorem 4.4."""
    from lorakit.theory.pep_fslora import FSLoRASketch, solve_fslora_pep

    sketch = FSLoRASketch(2, budgets)
    thm = THEOREMS["fslora.theorem_4.4"]
    base = dict(L=1.0, H=1, N=sketch.N, rho1=sketch.rho1, rho2=sketch.rho2, c_h=0.0)
    gamma = thm.step_cap("corrected", **base)
    measured, c = _fslora_one_round(2, budgets, gamma)
    certified = solve_fslora_pep(sketch, gamma, 2, L=1.0, **c)
    bound = thm.bound(**base, gamma=gamma, T=2, sigma_g2=0.0, **c)
    assert measured <= certified * (1 + TOL) and certified <= bound


def test_fslora_pep_one_client_without_sketch_is_gd():
    """k = r, one client: FSLoRA is GD on f, and at T = 1 the worst ‖∇f(X^0)‖² given
    f(X^0) − f* ≤ F_0 is 2LF_0 (attained by ½L‖X‖², F_0 = ½L‖X^0‖²); with k = 1 of r = 2 the
    smoothness of f^S is ρ_1L = 2L, and the worst case doubles (attained by ½‖BS‖² + ½‖A‖²)."""
    from lorakit.theory.pep_fslora import FSLoRASketch, solve_fslora_pep

    assert solve_fslora_pep(FSLoRASketch(2, (2,)), 0.5, 1, L=1.0, F0=1.0) == pytest.approx(
        2.0, abs=TOL
    )
    value = solve_fslora_pep(FSLoRASketch(2, (1,)), 0.5, 1, L=1.0, F0=1.0, sigma_s2=10.0)
    assert value == pytest.approx(4.0, abs=TOL)


def test_fslora_rows_are_posed_and_refuse_a_lower_bound():
    cert = certify("fslora.theorem_4.4", fast=True)
    assert 0 < cert.value <= cert.bound and cert.status.startswith("loose by")
    assert "N=2 clients, r=2, k=(1, 2)" in cert.note and "relaxed" in cert.note
    with pytest.raises(ValueError, match="which='lower' needs a subclass"):
        certify("fslora.theorem_4.4", which="lower")
    assert not pep_row("fslora.lemma_d.3").posed


# ---------------------------------------------------------------------------------------------
# Federated rows: M = 2 clients on 1 × 2 blocks with rand-1 (not the checks' M = 10)
# ---------------------------------------------------------------------------------------------
FED = ["bernoulli_lora.theorem_18", "bernoulli_lora.theorem_22", "bernoulli_lora.theorem_20"]


@pytest.mark.parametrize("key", FED)
def test_federated_row_measured_below_certified(key):
    """The row's own method (M = 2, coordinate sketch on a 1 × 2 matrix: one entry per block,
    rand-1 of the 2 entries) on two heterogeneous quadratics ½‖Λ^½(W − C_l)‖² with the row's L
    and μ: E f(W^T) − f* over 600 seeds (3 SE slack) ≤ the certified worst case for this run's
    Δ^0, Δ* and G^0, which is ≤ the corrected bound."""
    from dataclasses import replace

    from lorakit.compressors import rand_k, scaled_rand_k
    from lorakit.estimators import EF21, MARINA, QGD

    row = pep_row(key)
    fc, meth, T = row.fclass, row.method, row.measure.T
    problem = pb.heterogeneous_quadratics(2, 1, 2, L=fc.L, mu=fc.mu, spread=0.5, seed=1)
    W0 = problem.W_star + torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    problem = pb.heterogeneous_quadratics(2, 1, 2, L=fc.L, mu=fc.mu, spread=0.5, seed=1, W0=W0)
    f_star = float(problem.f_star)
    delta0 = float(problem.loss(problem.W0)) - f_star
    grads = [c.grad(problem.W0) for c in problem.clients]
    estimator = {
        "qgd": lambda: QGD(compressor=rand_k(1)),
        "marina": lambda: MARINA(q=meth.q, compressor=rand_k(1)),
        "ef21": lambda: EF21(compressor=scaled_rand_k(1), init_mode="zero"),
    }[meth.estimator]()
    frame = run("bernoulli_lora", problem, T, seeds=list(range(600)), rank=1, p=meth.sketch.p,
                gamma=meth.gamma, sketch="coordinate", estimator=estimator)  # fmt: skip
    gap = frame[frame.step == T].gap
    measured, se = gap.mean(), gap.std() / math.sqrt(len(gap))
    initial = replace(
        row.initial,
        Delta0=delta0,
        Delta_star=None if row.initial.Delta_star is None else float(problem.delta_star),
        G0=None if row.initial.G0 is None else float(np.mean([float((g**2).sum()) for g in grads])),
    )
    certified = solve_pep(meth, fc, row.measure, initial)
    constants = {**row.constants, "Delta0": delta0}
    for name in ("Delta_star", "G0"):
        if name in constants and getattr(initial, name) is not None:
            constants[name] = getattr(initial, name)
    bound = THEOREMS[key].bound(**constants)
    assert measured - 3 * se <= certified <= bound * (1 + TOL)


def test_fed_qgd_printed_theorem_18_counterexample():
    """Fed-QGD from W* (Δ^0 = 0) with f_l = (L/2)‖W − C_l‖² + a_l (each L-smooth, f L-PL):
    ∇f_l(W*) = ±Le with (L/2)‖e‖² = Δ*, so G = (L/2)(C_1(e) − C_2(e)) and, in closed form,
    E f(W^1) − f* = ½L²γ²λωΔ* (E‖C_1e − C_2e‖² = 2ω‖e‖², E‖Hv‖² = λ‖v‖²): 1.1065 here, above
    the printed bound (which lacks Δ*) and at most the certified value (solver accuracy 1e-4 at
    μ = L, where the PL relaxation's two conditions meet)."""
    row = pep_row("bernoulli_lora.theorem_18")
    c = row.constants
    closed = 0.5 * c["L"] ** 2 * c["gamma"] ** 2 * c["lam_min"] * c["omega"] * c["Delta_star"]
    cert = certify("bernoulli_lora.theorem_18")
    thm = THEOREMS["bernoulli_lora.theorem_18"]
    assert thm.bound("printed", **c) < closed <= cert.value * (1 + 1e-4)
    assert cert.value <= thm.bound(**c)


def test_sgd_finite_sum_pattern_theorem_8():
    """PEPit's finite-sum SGD: f = ½(f_1 + f_2), each f_i 1-smooth, one component drawn per step,
    Δ* = f* − ½(f_1* + f_2*) = ½, so (A_1, B_1, C_1) = (L, 0, 2LΔ*) (expected smoothness). One step
    of Bernoulli-LoRA SGD (λ = ½) at Theorem 8's cap γ = 1/4 with Δ^0 = 1: the instance
    f_i = ½‖W − C_i‖² gives, in closed form, Δ^0(1 − 2γLλ + γ²L²λ) + γ²L²λΔ* = 0.796875 (each
    f_i is L-PL, hence ½-PL); it is ≤ the exact PEP over strongly convex components (a lower bound
    on the class's worst case) ≤ the relaxed PL value (an upper bound) ≤ Theorem 8's bound."""
    L, mu, lam, gamma, delta0, delta_star = 1.0, 0.5, 0.5, 0.25, 1.0, 0.5
    thm = THEOREMS["bernoulli_lora.theorem_8"]
    c = dict(L=L, mu=mu, lam_min=lam, lam_max=lam, A1=L, B1=0.0, C1=2 * L * delta_star,
             Delta0=delta0, T=1)  # fmt: skip
    assert gamma == thm.step_cap(**c)
    method = Method(BlockSketch(1, 2, 1, 0.0), gamma, "sgd_sum", clients=2)
    args = (method, FunctionClass("pl", L, mu), Measure("gap", 1))
    initial = Initial(Delta0=delta0, Delta_star=delta_star)
    closed = delta0 * (1 - 2 * gamma * L * lam + gamma**2 * L**2 * lam)
    closed += gamma**2 * L**2 * lam * delta_star
    assert closed == pytest.approx(0.796875)
    low = solve_pep(*args, initial, exact_subclass=True)
    high = solve_pep(*args, initial)
    assert closed <= low * (1 + TOL) and low <= high * (1 + TOL)
    assert high <= thm.bound(**c, gamma=gamma)
