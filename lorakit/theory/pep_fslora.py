"""The performance estimation problem (PEP) of FSLoRA's rounds with random-k sketches.

FSLoRA (Fang et al.; spec ``fslora.md`` §1–2, §4–5) trains X = (B, A). Client i draws an index set
I_i of k_i of the r rank-1 components, S_i = (r/k_i)·diag(1_{I_i}) (Definition 3.1), and its
sketched objective is f̃_i(X; S) = f_i(BS, A) = f_i(M_S X) with M_S: (B, A) ↦ (BS, A)
(Proposition D.4), so ∇f̃_i(X; S) = M_S ∇f_i(M_S X). With H = 1 local step and exact local
gradients (σ_g² = 0) a round is eq. (10):

    X^{t+1} = X^t − (γ/N) Σ_i M_{S_i} ∇f_i(M_{S_i} X^t),

and Theorem 4.4 bounds (1/T) Σ_{t<T} E‖∇f^S(X^t)‖², f^S(X) = (1/N) Σ_i E_{S∼𝒮(r,k_i)} f_i(M_S X).

**As a PEP.** X is r + 1 blocks (PEPit's ``declare_block_partition``): the r columns of B and A,
so M_S scales block j by s_j and keeps A. The k-subsets are finite support, so the expectation over
the sketches is the mean over the enumerated outcomes (Π_i C(r, k_i) per round), and f^S and
∇f^S are exact means over every S of every client. Each f_i is L-smooth (Assumption 4.1; PEPit's
exact interpolation conditions for smooth non-convex functions). Three assumptions hold at
every X of the class but are imposed at the visited iterates only (a *relaxation*: the value is an
upper bound on the class's worst case): f* is a lower bound of the ρ_1L-smooth f^S (Proposition
D.4), so f^S(X) − f* ≥ ‖∇f^S(X)‖²/(2ρ_1L); the sketch variance E_S‖∇f̃_i(X; S) − ∇f_i^S(X)‖² ≤ σ_s²
(Assumption 4.2); and the dissimilarity ‖∇f_i^S(X) − ∇f^S(X)‖² ≤ c_h‖∇f^S(X)‖² + σ_h²
(Assumption 4.3). The proof of Theorem 4.4 uses them at the iterates only.

The paper's factorised loss ℓ(W0 + BSA) also zeroes ∇_A outside the rows I (Lemma 3.2); the
theorem does not use that structure (f_i is any L-smooth function of X), and neither does the PEP.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .._validation import check_int, check_real
from .pep_model import SOLVER, SOLVER_OPTIONS

__all__ = ["FSLoRASketch", "solve_fslora_pep"]


@dataclass(frozen=True)
class FSLoRASketch:
    """Rank r and the clients' budgets k_i (client i draws S ∈ 𝒮(r, k_i), Definition 3.1)."""

    r: int
    budgets: tuple[int, ...]

    def __post_init__(self):
        check_int("r", self.r, low=1, high=4)
        check_int("len(budgets)", len(self.budgets), low=1, high=3)
        for k in self.budgets:
            check_int("budgets[i]", k, low=1, high=self.r)

    @property
    def N(self) -> int:
        return len(self.budgets)

    @property
    def rho1(self) -> float:
        """ρ_1 = (1/N) Σ_i r/k_i (L̄ = ρ_1L)."""
        return sum(self.r / k for k in self.budgets) / self.N

    @property
    def rho2(self) -> float:
        """ρ_2 = (1/N) Σ_i (r/k_i)² (L̃ = ρ_2L)."""
        return sum((self.r / k) ** 2 for k in self.budgets) / self.N

    def diagonals(self, i: int) -> tuple[tuple[float, ...], ...]:
        """The diagonals of every S ∈ 𝒮(r, k_i), each of probability 1/C(r, k_i)."""
        r, k = self.r, self.budgets[i]
        return tuple(
            tuple(r / k if j in I else 0.0 for j in range(r))
            for I in itertools.combinations(range(r), k)
        )

    def outcomes_per_round(self) -> int:
        return math.prod(math.comb(self.r, k) for k in self.budgets)


def _combine(terms):
    """Σ c·v over (c, v) pairs of block lists (None: a zero block)."""
    out = None
    for c, blocks in terms:
        scaled = [None if b is None or c == 0 else c * b for b in blocks]
        out = scaled if out is None else [_add(a, b) for a, b in zip(out, scaled, strict=True)]
    return out


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def _total(blocks):
    out = None
    for b in blocks:
        out = _add(out, b)
    return out


def _sq(blocks):
    v = _total(blocks)
    return 0.0 if v is None else v**2


def solve_fslora_pep(
    sketch: FSLoRASketch,
    gamma: float,
    T: int,
    *,
    L: float = 1.0,
    F0: float = 1.0,
    sigma_s2: float = 0.0,
    sigma_h2: float = 0.0,
    c_h: float = 0.0,
) -> float:
    """The worst (relaxed: an upper bound) value of (1/T) Σ_{t<T} E‖∇f^S(X^t)‖² after T − 1 FSLoRA
    rounds (H = 1, σ_g² = 0) over L-smooth f_1..f_N with f^S(X^0) − f* ≤ F0 and Assumptions
    4.2–4.3 at the iterates (FSLoRA Theorem 4.4's left-hand side; module docstring).
    Raises ``ValueError`` when the solver finds no finite worst case."""
    import cvxpy
    from PEPit import PEP, Expression
    from PEPit.functions import SmoothFunction

    check_real("gamma", gamma, low=0.0, low_open=True)
    check_int("T", T, low=1, high=3)
    check_real("L", L, low=0.0, low_open=True)
    for name, value in (("F0", F0), ("sigma_s2", sigma_s2), ("sigma_h2", sigma_h2), ("c_h", c_h)):
        check_real(name, value, low=0.0)
    N, r = sketch.N, sketch.r
    pep = PEP()
    fs = [pep.declare_function(SmoothFunction, L=L) for _ in range(N)]
    part = pep.declare_block_partition(d=r + 1)
    f_star = Expression()

    def blocks(v):
        return [part.get_block(v, b) for b in range(r + 1)]

    def visit(X):
        """Per client and S: M_S∇f_i(M_S X) as blocks and f_i(M_S X); then ∇f^S(X), f^S(X) and
        the assumptions at X."""
        per_client, grads_i, values_i = [], [], []
        for i, f in enumerate(fs):
            diags = sketch.diagonals(i)
            out = []
            for s in diags:
                g, fx = f.oracle(_total(_combine([(1.0, _scale(s, X))])))
                out.append((_scale(s, blocks(g)), fx))
            w = 1 / len(diags)
            grads_i.append(_combine([(w, g) for g, _ in out]))
            values_i.append(_mean_expr([fx for _, fx in out]))
            if len(diags) > 1:  # Assumption 4.2 (a single S = I has no sketch variance)
                var = [_sq(_combine([(1.0, g), (-1.0, grads_i[-1])])) for g, _ in out]
                pep.add_constraint(_mean_expr(var) <= sigma_s2)
            per_client.append(out)
        grad = _combine([(1 / N, g) for g in grads_i])
        value = _mean_expr(values_i)
        grad_sq = _sq(grad)
        pep.add_constraint(value - f_star >= grad_sq / (2 * sketch.rho1 * L))
        if N > 1:  # Assumption 4.3
            for g in grads_i:
                diff = _sq(_combine([(1.0, g), (-1.0, grad)]))
                pep.add_constraint(diff <= c_h * grad_sq + sigma_h2)
        return per_client, grad_sq, value

    x0 = pep.set_initial_point()
    level = [(1.0, blocks(x0))]
    per_t = []
    for t in range(T):
        nxt, terms = [], []
        for prob, X in level:
            per_client, grad_sq, value = visit(X)
            terms.append((prob, grad_sq))
            if t == 0:
                pep.set_initial_condition(value - f_star <= F0)
            if t == T - 1:
                continue
            choices = [range(len(sketch.diagonals(i))) for i in range(N)]
            for pick in itertools.product(*choices):
                step = [(-gamma / N, per_client[i][j][0]) for i, j in enumerate(pick)]
                p = prob * math.prod(1 / len(c) for c in choices)
                nxt.append((p, _combine([(1.0, X), *step])))
        per_t.append(_weighted(terms))
        level = nxt
    pep.set_performance_metric(_weighted([(1 / T, e) for e in per_t]))
    try:
        value = pep.solve(wrapper="cvxpy", solver=SOLVER, verbose=0, **SOLVER_OPTIONS)
    except cvxpy.error.SolverError as error:
        raise ValueError(f"the SDP solver {SOLVER} failed on this PEP ({error})") from None
    if value is None or not math.isfinite(value):
        raise ValueError("the PEP has no finite worst case for this configuration")
    return float(value)


def _scale(s, X):
    """M_S X on blocks: column j of B times s_j, A unchanged."""
    return [None if X[j] is None or s[j] == 0 else s[j] * X[j] for j in range(len(s))] + [X[-1]]


def _mean_expr(items):
    out = items[0]
    for x in items[1:]:
        out = out + x
    return out / len(items)


def _weighted(terms):
    out = None
    for w, e in terms:
        out = w * e if out is None else out + w * e
    return out
