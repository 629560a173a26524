"""Certified worst cases next to the bounds: one performance-estimation problem (PEP) per theorem.

A theorem's check (:mod:`lorakit.theory.scenarios`) runs its method on one problem; the PEP of the
same configuration (method, p, estimator, γ, the constants L, μ, Δ^0, σ², and the function class of
the theorem's assumptions) computes the worst value of the left-hand side over the **whole class**
(:mod:`lorakit.theory.pep_model`). So each row reads measured ≤ certified worst case ≤ bound, and
:attr:`Certificate.status` says how far the bound is from the worst case:

* ``tight``: the bound is within 1% of the certified worst case;
* ``loose by x%``: bound / worst case − 1 = x%;
* ``printed bound below certified worst case``: a counterexample to the printed form (only from an
  exact PEP: a relaxed value is an upper bound, so a bound below it proves nothing, and the status
  says ``bound below relaxed value (inconclusive)``).

**Finite-support sketch.** The theorems use the sketch only through λ_min(E[H]) and H being an
orthogonal projector, so a coordinate sketch is a fair instance of every one of them. The PEP
keeps r of m block-rows (left) or of n block-columns (right) on the smallest block grid with the
run's λ = p·r/m + (1 − p)·r/n (m, n, r divided by their gcd): the run's 6 × 8, r = 2 becomes
3 × 4, r = 1. The outcome tree grows as (outcomes per step)^T, so the PEP horizon T is small:
one step for the linear-rate theorems (PL), T = 2 (``fast``) or 3 for the non-convex ones.

A theorem the PEP cannot pose gets a row with the reason (:attr:`PepRow.why`) instead of a value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .._validation import check_choice
from .pep_model import BlockSketch, FunctionClass, Initial, Measure, Method, solve_pep

__all__ = [
    "PEP_ROWS",
    "TIGHT",
    "Certificate",
    "PepRow",
    "certify",
    "grid_for",
    "pep_columns",
    "pep_row",
]

#: A bound within this fraction of the certified worst case is ``tight``.
TIGHT = 0.01
#: The solver's relative tolerance, allowed when comparing a bound with a certified value.
SOLVER_SLACK = 1e-6


@dataclass(frozen=True)
class PepRow:
    """The PEP of one theorem's configuration, or why there is none (``why`` non-empty).

    ``constants`` are the theorem's constants at the PEP's horizon (what :meth:`Theorem.bound`
    takes); ``relaxation`` says which necessary conditions replace missing interpolation
    conditions (empty when the PEP is exact, i.e. its value is attained by a function of the class).
    """

    key: str
    config: str
    method: Method | None = None
    fclass: FunctionClass | None = None
    measure: Measure | None = None
    initial: Initial | None = None
    constants: dict | None = None
    relaxation: str = ""
    why: str = ""
    power: int = 1
    #: A PEP that is not a chain method (FSLoRA's rounds): ``solve()`` returns its value.
    solve: Callable[[], float] | None = None

    @property
    def posed(self) -> bool:
        return not self.why


@dataclass(frozen=True)
class Certificate:
    """A theorem's certified worst case beside its bound (corrected form) and printed form."""

    key: str
    value: float
    bound: float
    printed: float | None
    exact: bool
    note: str
    seconds: float = 0.0
    T: int = 0

    @property
    def status(self) -> str:
        if math.isnan(self.value):
            return "not posed"
        tol = SOLVER_SLACK * max(1.0, abs(self.value))
        for label, b in (("printed bound", self.printed), ("bound", self.bound)):
            if b is not None and not math.isnan(b) and b < self.value - tol:
                if not self.exact:
                    return f"{label} below relaxed value (inconclusive)"
                return f"{label} below certified worst case"
        if self.bound <= (1 + TIGHT) * self.value + tol:
            return "tight"
        return f"loose by {100 * (self.bound / self.value - 1):.0f}%"


def grid_for(m: int, n: int, r: int) -> tuple[int, int, int]:
    """The smallest block grid (m', n', r') with r'/m' = r/m and r'/n' = r/n: the same λ^p."""
    g = math.gcd(m, n, r)
    return m // g, n // g, r // g


# --------------------------------------------------------------------------------------------
# Rows: built from the theorem's scenario (the check's own configuration)
# --------------------------------------------------------------------------------------------
#: theorem key → ``build(fast) -> PepRow``.
PEP_ROWS: dict[str, Callable[[bool], PepRow]] = {}

_PL_RELAX = (
    "PL: PEPit has no interpolation conditions for PL functions; the PEP imposes f − f* ≥ "
    "‖∇f‖²/(2L) and f − f* ≤ ‖∇f‖²/(2μ) at the visited points (upper bound)"
)
_NC_RELAX = (
    "f* is a lower bound, not attained: f − f* ≥ ‖∇f‖²/(2L) at the visited points (upper bound)"
)


def _row(key: str):
    def wrap(build):
        PEP_ROWS[key] = build
        return build

    return wrap


def _sketch_of(spec) -> tuple[BlockSketch, str]:
    """The finite-support block sketch with the run's λ, and its description."""
    opts = spec.options
    r = opts["rank"]
    if spec.method == "rac_lora":
        p = 0.0 if opts.get("side", "left") == "right" else 1.0
    else:
        p = float(opts.get("p", 0.5))
    m, n, r_ = grid_for(spec.problem.m, spec.problem.n, r)
    sketch = BlockSketch(m, n, r_, p)
    return sketch, f"{m}×{n} blocks, r={r_}, p={p:g} (λ={sketch.lam:.4g})"


def _chain_row(key: str, fast: bool, kind: str) -> PepRow:
    """GD/SGD chain rows: PL one-step contraction, or the non-convex average over t < T."""
    from .scenarios import get_scenario

    scenario = get_scenario(key)
    spec = scenario.spec
    base = spec.base
    sketch, grid = _sketch_of(spec)
    gamma = float(scenario.reference_gamma())
    est = spec.options.get("estimator")
    sgd = est is not None
    sigma2 = base.get("C1") if sgd else None
    method = Method(sketch, gamma, "sgd" if sgd else "gd", clients=2 if sgd else 1)
    initial = Initial(Delta0=base["Delta0"], sigma2=sigma2)
    noise = f", noise ±c with ‖c‖² ≤ σ²={sigma2:g}" if sgd else ""
    power = 1
    if kind == "pl":
        T = 1
        if not sgd:  # homogeneous: the one-step ratio ρ holds from every W^t, so ρ^T bounds T steps
            power = scenario.T
        fclass = FunctionClass("pl", base["L"], base["mu"])
        measure = Measure("gap", T)
        relaxation = _PL_RELAX
    else:
        # The tree has outcomes^(T−1) leaves of d blocks each: T = 3 only where that stays small.
        outcomes = len(sketch.outcomes()) * (2 if sgd else 1)
        T = 2 if fast or outcomes**2 * sketch.d > 100 else 3
        fclass = FunctionClass("smooth", base["L"])
        lhs = scenario.theorem.lhs
        measure = Measure("min_grad" if lhs.startswith("min") else "avg_grad", T)
        relaxation = _NC_RELAX
    constants = scenario.theorem.select({**base, "gamma": gamma, "T": T * power})
    config = f"{grid}, γ={gamma:.4g}, L={base['L']:g}" + (
        f", μ={base['mu']:g}" if kind == "pl" else ""
    )
    if power > 1:
        relaxation = (
            f"{relaxation}; the T={power} value is Δ^0·ρ^T with ρ the certified one-step "
            "contraction (an upper bound on the T-step worst case)"
        )
    return PepRow(key, f"{config}{noise}, T={T}", method, fclass, measure, initial, constants,
                  relaxation, power=power)  # fmt: skip


# GD (RAC-LoRA 5.3/5.5, Bernoulli-LoRA 1/9) and SGD with additive noise (E.2/E.3, 2/8): the
# noise becomes ±c with ‖c‖² ≤ σ², a finite-support instance of (A_1, B_1, C_1) = (0, 1, σ²).
for _key in ("rac_lora.theorem_5.5", "bernoulli_lora.theorem_9", "rac_lora.theorem_e.3",
             "bernoulli_lora.theorem_8"):  # fmt: skip
    _row(_key)(lambda fast, _key=_key: _chain_row(_key, fast, "pl"))
for _key in ("rac_lora.theorem_5.3", "bernoulli_lora.theorem_1", "rac_lora.theorem_e.2",
             "bernoulli_lora.theorem_2"):  # fmt: skip
    _row(_key)(lambda fast, _key=_key: _chain_row(_key, fast, "nonconvex"))


def _not_posed(key: str, why: str) -> None:
    _row(key)(lambda fast: PepRow(key, "", why=why))


# Federated rows (Fed-QGD, Fed-MARINA, Fed-EF21) on the smallest instance with the check's λ and
# ω (or β): M = 2 clients, not the check's M = 10; W as 1 × 2 blocks, rand-1 of the 2 blocks.
# One round of M clients has C(d, k)^M compressor outcomes per sketch outcome: the check's 4 × 4
# grid as 2 × 2 blocks with rand-2 (ω = 1) is 4·6² = 144 outcomes a round, and that SDP did not
# finish in 5 minutes on 2 cores; here it is 2·2² = 8 (Fed-QGD) or 3·2² = 12 (EF21).
_FED_M = 2
_FED_RELAX = (
    "f* and the f_l* are lower bounds: f − f* ≥ ‖∇f‖²/(2L) and f_l − f_l* ≥ ‖∇f_l‖²/(2L) at the "
    "visited points (upper bound)"
)
#: key → (estimator, class, measure, PEP horizon T, sketch p, what the compressor keeps)
_FED_SPECS = {
    "bernoulli_lora.theorem_5": ("qgd", "smooth", "weighted_grad", 2),
    "bernoulli_lora.theorem_18": ("qgd", "pl", "gap", 1),
    "bernoulli_lora.theorem_6": ("marina", "smooth", "avg_grad", 3),
    "bernoulli_lora.theorem_20": ("marina", "pl", "gap", 2),
    "bernoulli_lora.theorem_21": ("ef21", "smooth", "avg_grad", 3),
    "bernoulli_lora.theorem_22": ("ef21", "pl", "gap", 2),
}


def _fed_row(key: str, fast: bool) -> PepRow:
    """A federated row: the check's constants (L, μ, Δ^0, Δ*, G^0, q, γ when the step condition
    allows it at M = 2, else the corrected cap) on a 1 × 2 block grid with rand-1 compressors.

    The theorems use the sketch only through λ and the compressor only through ω (unbiased) or β
    (contractive): λ = ½ is a right sketch keeping 1 of the 2 block-columns (p = 0), λ = ¾ is
    p = ½ (the left sketch keeps the one block-row); rand-1 of 2 blocks has ω = 1, and unscaled
    rand-1 has β = ½ (a finite-support β-contractive compressor in place of EF21's top-k)."""
    from .pep_model import BlockCompressor
    from .scenarios import get_scenario

    est, kind, measure_kind, T = _FED_SPECS[key]
    scenario = get_scenario(key)
    base = dict(scenario.spec.base)
    lam = base["lam_min"]
    if lam not in (0.5, 0.75):  # pragma: no cover - the registered checks use these two
        raise ValueError(f"no 1 × 2 block sketch has λ = {lam}")
    p = 0.0 if lam == 0.5 else 0.5
    sketch = BlockSketch(1, 2, 1, p)
    compressor = BlockCompressor(1, unbiased=est != "ef21")
    kept = ""
    if est == "ef21":
        base["beta"] = compressor.beta(2)
        kept = f"unscaled rand-1 of 2 blocks (β={base['beta']:g}; the check's top-k has β=0.5)"
    else:
        omega = compressor.omega(2)
        kept = f"rand-1 of 2 blocks (ω={omega:g}; the check's ω={base['omega']:g})"
        base["omega"] = omega
    if "M" in base:
        base["M"] = _FED_M
    thm = scenario.theorem
    gamma = float(scenario.reference_gamma())
    values = thm.select({**base, "gamma": gamma, "T": T})
    if not thm.admissible("corrected", **values):
        gamma = float(
            thm.step_cap("corrected", **{k: v for k, v in values.items() if k != "gamma"})
        )
    constants = thm.select({**base, "gamma": gamma, "T": T})
    method = Method(sketch, gamma, est, clients=_FED_M, compressor=compressor,
                    q=base.get("q", 1.0), init="zero" if est == "ef21" else "grad")  # fmt: skip
    growth = gamma**2 * base["L"] ** 2 * base["lam_max"] * base.get("omega", 0) / _FED_M
    measure = Measure(measure_kind, T, growth=growth if measure_kind == "weighted_grad" else 0.0)
    fclass = FunctionClass(kind, base["L"], base.get("mu", 0.0))
    initial = Initial(Delta0=base["Delta0"], Delta_star=base.get("Delta_star"),
                      G0=base.get("G0") if est == "ef21" else None)  # fmt: skip
    config = (
        f"M={_FED_M} clients (the check has M=10), 1×2 blocks, r=1, p={p:g} (λ={sketch.lam:g}, "
        f"as the check), {kept}, γ={gamma:.4g}, L={base['L']:g}"
        + (f", μ={base['mu']:.4g}" if kind == "pl" else "")
        + (f", q={base['q']:g}" if est == "marina" else "")
        + f", T={T}"
    )
    relaxation = _PL_RELAX if kind == "pl" else _FED_RELAX
    return PepRow(key, config, method, fclass, measure, initial, constants, relaxation)


for _key in _FED_SPECS:
    _row(_key)(lambda fast, _key=_key: _fed_row(_key, fast))
for _key in ("theorem_13", "theorem_14", "theorem_15", "theorem_16"):
    _not_posed(
        f"bernoulli_lora.{_key}",
        "estimator with memory over T ≥ 30 steps: the horizon is too long for an outcome tree",
    )
for _key in ("theorem_d.2", "theorem_d.3"):
    _not_posed(f"rac_lora.{_key}", "random reshuffling of N = 5: 5!·outcomes per link, too large")
for _key in ("theorem_f.2", "theorem_f.3"):
    _not_posed(f"rac_lora.{_key}", "federated RR local steps: the outcome tree is too large")
for _key in ("constant_step", "optimal_step", "polyak_step"):
    _not_posed(
        f"bernoulli_lora.theorem_10_{_key}",
        "T ≥ 100 subgradient steps: the horizon is too long (the Polyak step is not fixed)",
    )


# FSLoRA Theorem 4.4 and Corollary 4.5 (lorakit.theory.pep_fslora): one round (T = 2) on the
# smallest instance with two of the check's sketching ratios k_i/r (the check's r = 4 with
# k = (1, 2, 4) has 4·6 = 24 outcomes a round on 5 blocks; r = 4 with k = (1, 4) alone did not
# finish in 2 minutes on 2 cores). Unit constants: the check's are empirical, measured on its runs.
_FS_CONF = dict(r=2, budgets=(1, 2), L=1.0, F0=1.0, sigma_s2=1.0, sigma_h2=1.0, c_h=0.0, T=2)
_FS_RELAX = (
    "f* is a lower bound of f^S (f^S − f* ≥ ‖∇f^S‖²/(2ρ_1L)) and Assumptions 4.2–4.3 (σ_s², "
    "σ_h²) are imposed at the visited iterates only (upper bound)"
)


def _fslora_row(key: str, corollary: bool) -> PepRow:
    from .pep_fslora import FSLoRASketch, solve_fslora_pep
    from .theorem import THEOREMS

    c = _FS_CONF
    sketch = FSLoRASketch(c["r"], c["budgets"])
    N, T, L = sketch.N, c["T"], c["L"]
    if corollary:
        # T ≥ 36NHL(c_h + 1) at T = 2 needs L ≤ T/(36N(c_h + 1)): the corollary's step then is
        # γ = √(N/(THL̃)), its T-threshold met with equality.
        L = T / (36 * N * (1 + c["c_h"]))
        gamma = math.sqrt(N / (T * sketch.rho2 * L))
    else:
        gamma = THEOREMS["fslora.theorem_4.4"].step_cap(
            "corrected", L=L, H=1, N=N, rho1=sketch.rho1, rho2=sketch.rho2, c_h=c["c_h"]
        )
    kw = dict(L=L, F0=c["F0"], sigma_s2=c["sigma_s2"], sigma_h2=c["sigma_h2"], c_h=c["c_h"])
    constants = THEOREMS[key].select(
        dict(kw, gamma=gamma, T=T, H=1, N=N, rho1=sketch.rho1, rho2=sketch.rho2, sigma_g2=0.0)
    )
    config = (
        f"FSLoRA N={N} clients, r={sketch.r}, k={sketch.budgets} (ratios 1/2 and 1 of the check's "
        f"1/4, 1/2, 1; ρ_1={sketch.rho1:g}, ρ_2={sketch.rho2:g}), X = 3 blocks (2 columns of B, A), "
        f"{sketch.outcomes_per_round()} outcomes a round, H=1, σ_g²=0, γ={gamma:.4g}, L={L:.4g}, "
        f"F_0={c['F0']:g}, σ_s²={c['sigma_s2']:g}, σ_h²={c['sigma_h2']:g}, c_h={c['c_h']:g}, T={T}"
    )
    return PepRow(key, config, constants=constants, relaxation=_FS_RELAX,
                  solve=lambda: solve_fslora_pep(sketch, gamma, T, **kw))  # fmt: skip


_row("fslora.theorem_4.4")(lambda fast: _fslora_row("fslora.theorem_4.4", False))
_row("fslora.corollary_4.5")(lambda fast: _fslora_row("fslora.corollary_4.5", True))
for _key in ("lemma_d.3", "proposition_d.4"):
    _not_posed(f"fslora.{_key}", "a property of the sketch or of f^S, not a method's rate")


def pep_row(key: str, fast: bool = False) -> PepRow:
    """The PEP row of theorem ``key`` (a row with ``why`` for a theorem without a PEP)."""
    if key not in PEP_ROWS:
        return PepRow(key, "", why="no PEP registered for this theorem")
    return PEP_ROWS[key](fast)


def certify(key: str, fast: bool = False, which: str = "dual") -> Certificate:
    """Solve the PEP of theorem ``key`` and put its value beside the theorem's bounds.

    ``which="dual"``: the class's worst case (exact, or an upper bound where ``relaxation`` says
    so); ``"lower"``: the exact worst case over the subclass with interpolation conditions
    (strongly convex for PL, convex for non-convex), a certified lower bound on the class's.
    """
    from .theorem import THEOREMS

    check_choice("which", which, ("dual", "lower"))
    row = pep_row(key, fast)
    if not row.posed:
        return Certificate(key, math.nan, math.nan, None, False, row.why)
    thm = THEOREMS[key]
    lower = which == "lower"
    if lower and (row.solve is not None or not _has_exact_subclass(row.fclass)):
        what = "FSLoRA's rounds" if row.fclass is None else f"{row.fclass.kind}, μ = L"
        raise ValueError(
            f"which='lower' needs a subclass with interpolation conditions; {key}'s class "
            f"({what}) has none posed here"
        )
    start = time.perf_counter()
    if row.solve is not None:
        value = row.solve()
    else:
        value = solve_pep(row.method, row.fclass, row.measure, row.initial, exact_subclass=lower)
    if row.power > 1:
        delta0 = row.initial.Delta0
        value = delta0 * (value / delta0) ** row.power
        # ρ^T is an upper bound on the T-step worst case even where ρ is exact
    seconds = time.perf_counter() - start
    bound = thm.bound("corrected", outside="evaluate", **row.constants)
    printed = thm.bound("printed", outside="evaluate", **row.constants) if thm.corrected else None
    exact = (lower and row.power == 1) or not row.relaxation
    note = row.config + (
        "; lower bound: exact PEP over the subclass with interpolation conditions"
        if lower
        else ("" if exact else f"; relaxed: {row.relaxation}")
    )
    cert = Certificate(key, value, bound, printed, exact, note, seconds, row.constants.get("T", 0))
    if (
        "inconclusive" in cert.status
        and which == "dual"
        and row.solve is None
        and _has_exact_subclass(row.fclass)
    ):
        # A relaxed value above a bound proves nothing: the exact subclass's worst case (a lower
        # bound on the class's, attained by a function) decides whether it is a counterexample.
        low = certify(key, fast, "lower")
        if "below certified" in low.status:
            return replace(low, seconds=seconds + low.seconds)
    return cert


def _has_exact_subclass(fclass: FunctionClass) -> bool:
    """Strongly convex (μ < L) inside PL, convex inside smooth: PEPit interpolates both exactly."""
    return fclass.kind == "smooth" or (fclass.kind == "pl" and fclass.mu < fclass.L)


def pep_columns(frame, fast: bool = False):
    """``frame`` (:func:`lorakit.checks.verify`'s table) with the columns ``pep_T`` (the PEP's
    horizon), ``pep_bound`` (the corrected bound at that horizon), ``worst_case`` (the certified
    value there, NaN where there is none), ``pep`` (:attr:`Certificate.status`, or ``not
    posed: why``; empty for a check that is not a theorem) and ``pep_note`` (the PEP's
    configuration and relaxation, or the reason in full)."""
    from .theorem import THEOREMS

    values, statuses, notes, Ts, bounds = [], [], [], [], []
    for key in frame["check"]:
        if key not in THEOREMS:
            values.append(math.nan)
            statuses.append("")
            notes.append("")
            Ts.append(math.nan)
            bounds.append(math.nan)
            continue
        try:
            cert = certify(key, fast)
        except ValueError as error:  # the solver found no finite worst case
            cert = Certificate(key, math.nan, math.nan, None, False, str(error))
        values.append(cert.value)
        Ts.append(cert.T if cert.T else math.nan)
        bounds.append(cert.bound)
        statuses.append(cert.status if cert.status != "not posed" else f"not posed: {cert.note}")
        notes.append(cert.note)
    out = frame.copy()
    out["pep_T"] = Ts
    out["pep_bound"] = bounds
    out["worst_case"] = values
    out["pep"] = statuses
    out["pep_note"] = notes
    return out
