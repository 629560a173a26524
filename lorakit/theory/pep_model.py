"""The performance estimation problem (PEP) of a chain method on a finite-support block sketch.

A PEP (Drori & Teboulle 2014; Taylor, Hendrickx & Glineur 2017) asks for the worst value of a
method's performance measure over a whole function class, given its initial conditions. For a
fixed-step first-order method it is a small semidefinite program over the Gram matrix of the
iterates and gradients; PEPit builds and solves it. This module poses the chain methods of
RAC-LoRA and Bernoulli-LoRA (README "The idea": sketch, coin, estimator) as PEPs:

* **W is a grid of m × n blocks** (:class:`BlockSketch`; PEPit's ``declare_block_partition``): a
  left sketch of rank r keeps r block-rows, a right sketch r block-columns, so H is a random
  orthogonal projector with E[H] = (p·r/m + (1 − p)·r/n)·I. The theorems use the sketch only through
  λ_min(E[H]) and H being an orthogonal projector (RAC-LoRA Assumption 5.1, Bernoulli-LoRA
  Assumption 1); with one entry per block this is the rank-r coordinate sketch of an m × n matrix
  (``sketch="coordinate"``), a finite-support instance of every theorem.
* **The randomness is enumerated**: the coin and the sketch (and the compressor's masks, the noise
  of a finite sum, MARINA's coin) have finite support, so an expectation is the
  probability-weighted mean over the outcome tree, as in PEPit's randomized coordinate descent
  examples. The tree has (outcomes per step)^T leaves: PEPs stay small only for small T.
* **The function class** comes from the theorem's assumptions (:class:`FunctionClass`). PEPit has
  exact interpolation conditions for smooth (non-convex), smooth strongly convex and convex
  Lipschitz functions; for PL functions, for a lower bound f* that need not be attained, and for
  the federated constants Δ* it has none, and :func:`solve_pep` imposes necessary conditions at the
  points the method visits instead: a *relaxation*, whose value is an upper bound on the worst
  case. A subclass with exact conditions (convex for non-convex, strongly convex for PL) gives a
  certified lower bound.

:func:`solve_pep` returns the dual value (an upper bound on the SDP's optimum) for the class and
the primal value (attained by a Gram matrix) for an exact subclass, solved by Clarabel with fixed
tolerances, so a value is the same on every run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from .._validation import check_choice, check_int, check_real

__all__ = [
    "CLASSES",
    "ESTIMATORS",
    "MEASURES",
    "SOLVER",
    "SOLVER_OPTIONS",
    "SOLVER_RETRY",
    "BlockCompressor",
    "BlockSketch",
    "FunctionClass",
    "Initial",
    "Measure",
    "Method",
    "solve_pep",
]

#: The SDP solver (open source, interior point: deterministic) and its fixed tolerances.
SOLVER = "CLARABEL"
SOLVER_OPTIONS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 400}
#: The retry when Clarabel reports a numerical error: a larger static regularisation.
SOLVER_RETRY = {**SOLVER_OPTIONS, "static_regularization_constant": 1e-7}

#: Function classes: L-smooth (non-convex), L-smooth μ-PL, L-smooth μ-strongly convex, convex L0-Lipschitz.
CLASSES = ("smooth", "pl", "strongly_convex", "convex_lipschitz")
#: Gradient estimators of the chain (lorakit.estimators) posed here.
ESTIMATORS = ("gd", "sgd", "sgd_sum", "qgd", "marina", "ef21", "subgradient")
#: Performance measures: the theorems' left-hand sides.
MEASURES = ("gap", "dist", "avg_grad", "min_grad", "weighted_grad", "avg_iterate_gap")


@dataclass(frozen=True)
class BlockSketch:
    """The finite-support sketch of a Bernoulli-LoRA / RAC-LoRA link on an m × n grid of blocks.

    With probability ``p`` a left sketch keeps r of the m block-rows (uniformly), otherwise a right
    sketch keeps r of the n block-columns: H_B = diag(1_S) ⊗ I_n or I_m ⊗ diag(1_S). Each block is
    kept with probability λ = p·r/m + (1 − p)·r/n, so E[H] = λ·I and λ^p_min = λ^p_max = λ
    (Bernoulli-LoRA Assumption 1; RAC-LoRA's left sketch is p = 1, the right one p = 0).
    """

    m: int
    n: int
    r: int
    p: float

    def __post_init__(self):
        check_int("m", self.m, low=1, high=12)
        check_int("n", self.n, low=1, high=12)
        check_int("r", self.r, low=1, high=min(self.m, self.n) if 0 < self.p < 1 else 12)
        check_real("p", self.p, low=0.0, high=1.0)
        if (self.p > 0 and self.r > self.m) or (self.p < 1 and self.r > self.n):
            raise ValueError(f"r must be at most the sketched dimension, got r={self.r}")

    @property
    def d(self) -> int:
        """The number of blocks."""
        return self.m * self.n

    @property
    def lam(self) -> float:
        """λ = p·r/m + (1 − p)·r/n: E[H] = λ·I."""
        return self.p * self.r / self.m + (1 - self.p) * self.r / self.n

    def outcomes(self) -> tuple[tuple[float, tuple[int, ...]], ...]:
        """(probability, kept blocks) for every outcome of the coin and the sketch; block (i, j) is
        number i·n + j."""
        out = []
        if self.p > 0:
            rows = list(itertools.combinations(range(self.m), self.r))
            for S in rows:
                kept = tuple(i * self.n + j for i in S for j in range(self.n))
                out.append((self.p / len(rows), kept))
        if self.p < 1:
            cols = list(itertools.combinations(range(self.n), self.r))
            for S in cols:
                kept = tuple(i * self.n + j for i in range(self.m) for j in S)
                out.append(((1 - self.p) / len(cols), kept))
        return tuple(out)


@dataclass(frozen=True)
class BlockCompressor:
    """Rand-k over the d blocks of a message: keep k uniformly random blocks, scaled by d/k
    (``scaled=True``: unbiased, ω = d/k − 1, lorakit's ``rand_k``) or not (contractive,
    β = k/d, lorakit's ``scaled_rand_k``). Every k-subset is one outcome of probability 1/C(d, k).
    """

    k: int
    unbiased: bool = True

    def masks(self, d: int) -> tuple[tuple[int, ...], ...]:
        if not 1 <= self.k <= d:
            raise ValueError(f"k must be in [1, {d}] (the number of blocks), got {self.k}")
        return tuple(itertools.combinations(range(d), self.k))

    def scale(self, d: int) -> float:
        return d / self.k if self.unbiased else 1.0

    def omega(self, d: int) -> float:
        return d / self.k - 1

    def beta(self, d: int) -> float:
        return self.k / d


@dataclass(frozen=True)
class Method:
    """A chain method: the block sketch, the step γ, the estimator and its parameters.

    ``clients`` is M (qgd, marina, ef21) or the number N of components of a finite sum whose
    components differ by constants, f_i = f + ⟨c_i, ·⟩ with Σ c_i = 0 (sgd: additive noise of
    finite support), or of a general finite sum f = (1/N) Σ f_i, each f_i of the class, one
    component drawn uniformly per step (sgd_sum: PEPit's finite-sum pattern; with f_i* lower bounds
    and Δ* = f* − (1/N) Σ f_i*, E‖∇f_i‖² ≤ 2L(f − f*) + 2LΔ*, i.e. (A_1, B_1, C_1) = (L, 0, 2LΔ*),
    Khaled & Richtárik's expected smoothness). ``init`` is EF21's G_l^0 (``"grad"`` or ``"zero"``),
    ``q`` MARINA's coin.
    """

    sketch: BlockSketch
    gamma: float
    estimator: str = "gd"
    clients: int = 1
    compressor: BlockCompressor | None = None
    q: float = 1.0
    init: str = "grad"

    def __post_init__(self):
        check_real("gamma", self.gamma, low=0.0, low_open=True)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_int("clients", self.clients, low=1, high=4)
        check_choice("init", self.init, ("grad", "zero"))
        check_real("q", self.q, low=0.0, high=1.0, low_open=True)
        if self.estimator in ("qgd", "marina", "ef21") and self.compressor is None:
            raise ValueError(f"estimator {self.estimator!r} needs a compressor")

    @property
    def federated(self) -> bool:
        return self.estimator in ("qgd", "marina", "ef21")

    @property
    def components(self) -> int:
        """The number of functions the PEP declares: M clients or N finite-sum components."""
        return self.clients if self.federated or self.estimator == "sgd_sum" else 1


@dataclass(frozen=True)
class FunctionClass:
    """The theorem's function class: ``kind`` in :data:`CLASSES` with its constants."""

    kind: str
    L: float = 1.0
    mu: float = 0.0
    L0: float = 1.0

    def __post_init__(self):
        check_choice("kind", self.kind, CLASSES)
        check_real("L", self.L, low=0.0, low_open=True)
        if self.kind == "strongly_convex":
            check_real("mu", self.mu, low=0.0, high=self.L, low_open=True, high_open=True)
        if self.kind == "pl":  # μ = L is the class of ½L‖x − x*‖² (its PEP is a relaxation anyway)
            check_real("mu", self.mu, low=0.0, high=self.L, low_open=True)


@dataclass(frozen=True)
class Measure:
    """The left-hand side: ``gap`` E f(W^T) − f*; ``dist`` E‖W^T − W*‖²; ``avg_grad`` (1/T) Σ_{t<T} E‖∇f(W^t)‖²;
    ``min_grad`` min_{t<T} E‖∇f(W^t)‖²; ``weighted_grad`` Σ_{t<T} w_t E‖∇f(W^t)‖² with
    w_t ∝ (1 + growth)^{−t}; ``avg_iterate_gap`` E f(W̄^T) − f*, W̄^T = (1/T) Σ_{t<T} W^t."""

    kind: str
    T: int
    growth: float = 0.0

    def __post_init__(self):
        check_choice("kind", self.kind, MEASURES)
        check_int("T", self.T, low=1, high=6)

    @property
    def steps(self) -> int:
        """The steps the tree needs: T for the gap at W^T, T − 1 for averages over t < T."""
        return self.T if self.kind in ("gap", "dist") else self.T - 1


@dataclass(frozen=True)
class Initial:
    """Initial conditions: f(W^0) − f* ≤ Delta0, ‖W^0 − W*‖ ≤ R0, E‖c_i‖² ≤ sigma2 (finite-sum
    noise), f* − (1/M) Σ_l f_l* ≤ Delta_star, (1/M) Σ_l ‖G_l^0 − ∇f_l(W^0)‖² ≤ G0 (EF21)."""

    Delta0: float | None = None
    R0: float | None = None
    sigma2: float | None = None
    Delta_star: float | None = None
    G0: float | None = None


# ---------------------------------------------------------------------------------------------
# Vectors as lists of blocks: only leaf vectors (gradients, noise) are partitioned by PEPit
# ---------------------------------------------------------------------------------------------
class _Blocks:
    """A vector as its d blocks (None for a zero block), built from partitioned leaf points."""

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def __add__(self, other):
        return _Blocks(_add(a, b) for a, b in zip(self.blocks, other.blocks, strict=True))

    def __sub__(self, other):
        return self + other.scaled(-1.0)

    def scaled(self, c: float):
        return _Blocks(None if a is None else c * a for a in self.blocks)

    def keep(self, kept, scale: float = 1.0):
        kept = set(kept)
        return _Blocks(
            (scale * a if scale != 1.0 else a) if (i in kept and a is not None) else None
            for i, a in enumerate(self.blocks)
        )

    def total(self):
        """The vector itself (None when every block is zero)."""
        out = None
        for a in self.blocks:
            out = _add(out, a)
        return out


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _mean(items):
    items = list(items)
    out = items[0]
    for x in items[1:]:
        out = out + x
    return out / len(items) if not isinstance(out, _Blocks) else out.scaled(1 / len(items))


@dataclass
class _Node:
    x: object
    prob: float
    path: tuple
    state: object = None


@dataclass
class _Model:
    """One PEP under construction: the functions, f*, the partition and the oracle cache."""

    pep: object
    leaves: list
    fclass: FunctionClass
    exact: bool
    d: int
    partition: object = None
    f_star: object = None
    x_star: object = None
    leaf_stars: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    blocks_of: dict = field(default_factory=dict)
    visited: list = field(default_factory=list)
    points: dict = field(default_factory=dict)

    def unique(self, x):
        """One Point per distinct combination of leaves: two outcome paths can reach the same
        iterate (MARINA: a mask that drops one block, then a sketch that keeps it); as distinct
        Points their interpolation conditions would force equal gradients, an equality with no
        interior on which Clarabel fails."""
        key = frozenset(
            (leaf.counter, round(c, 12)) for leaf, c in x.decomposition_dict.items() if c != 0
        )
        return self.points.setdefault(key, x)

    def oracle(self, x):
        """[(∇f_l(x), f_l(x))] for every leaf, evaluated once per point."""
        key = id(x)
        if key not in self.cache:
            self.cache[key] = [leaf.oracle(x) for leaf in self.leaves]
            self.visited.append(x)
        return self.cache[key]

    def grad(self, x):
        return _mean([g for g, _ in self.oracle(x)])

    def value(self, x):
        return _mean([f for _, f in self.oracle(x)])

    def blocks(self, v) -> _Blocks:
        """The blocks of a leaf vector (a gradient or a noise vector), partitioned once."""
        if self.d == 1:
            return _Blocks([v])
        if id(v) not in self.blocks_of:
            self.blocks_of[id(v)] = _Blocks(self.partition.get_block(v, b) for b in range(self.d))
        return self.blocks_of[id(v)]

    def client_blocks(self, x):
        return [self.blocks(g) for g, _ in self.oracle(x)]


def _functions(pep, fclass: FunctionClass, M: int, exact: bool):
    """Declare the leaves of the class (or of its exact subclass) and return (leaves, exact)."""
    from PEPit.functions import (
        ConvexLipschitzFunction,
        SmoothConvexFunction,
        SmoothFunction,
        SmoothStronglyConvexFunction,
    )

    kind = fclass.kind
    if kind == "convex_lipschitz":
        return [pep.declare_function(ConvexLipschitzFunction, M=fclass.L0) for _ in range(M)], True
    if kind == "strongly_convex" or (kind == "pl" and exact):
        cls, kw = SmoothStronglyConvexFunction, {"L": fclass.L, "mu": fclass.mu}
        return [pep.declare_function(cls, **kw) for _ in range(M)], True
    if kind == "smooth" and exact:
        return [pep.declare_function(SmoothConvexFunction, L=fclass.L) for _ in range(M)], True
    return [pep.declare_function(SmoothFunction, L=fclass.L) for _ in range(M)], False


def _stars(model: _Model, M: int) -> None:
    """f* and, for M > 1, the f_l*: stationary points where the class guarantees a global minimum
    (convex classes; PL, whose stationary points are global minima), free scalars otherwise."""
    from PEPit import Expression

    convex_like = model.exact or model.fclass.kind == "pl"
    if convex_like:
        if M == 1:
            model.x_star, _, model.f_star = model.leaves[0].stationary_point(
                return_gradient_and_function_value=True
            )
        else:
            total = model.leaves[0]
            for leaf in model.leaves[1:]:
                total = total + leaf
            model.x_star, _, f_total = total.stationary_point(
                return_gradient_and_function_value=True
            )
            model.f_star = f_total / M
    else:
        model.f_star = Expression()
    if M > 1:
        if model.exact:
            model.leaf_stars = [
                leaf.stationary_point(return_gradient_and_function_value=True)[2]
                for leaf in model.leaves
            ]
        else:
            model.leaf_stars = [Expression() for _ in model.leaves]


def _necessary_conditions(model: _Model, M: int, bounded_stars: bool) -> None:
    """What the relaxation imposes at every visited point x (all hold for every function of the
    class): f(x) − f* ≥ ‖∇f(x)‖²/(2L) and f_l(x) − f_l* ≥ ‖∇f_l(x)‖²/(2L) (descent lemma at a
    lower bound), and for PL f(x) − f* ≤ ‖∇f(x)‖²/(2μ)."""
    fc = model.fclass
    for x in model.visited:
        g, f = model.grad(x), model.value(x)
        model.pep.add_constraint(f - model.f_star >= g**2 / (2 * fc.L))
        if fc.kind == "pl":
            model.pep.add_constraint(f - model.f_star <= g**2 / (2 * fc.mu))
        if M > 1 and bounded_stars:  # with f_l* free (no Δ*) these conditions are void
            for (gl, fl), fl_star in zip(model.oracle(x), model.leaf_stars, strict=True):
                model.pep.add_constraint(fl - fl_star >= gl**2 / (2 * fc.L))


# ---------------------------------------------------------------------------------------------
# Estimators: the branches (probability, G as blocks, next state) at a node
# ---------------------------------------------------------------------------------------------
def _branches(model: _Model, method: Method, node: _Node, t: int, noise):
    est, d = method.estimator, model.d
    if est in ("gd", "subgradient"):
        return [(1.0, model.blocks(_single_grad(model, node.x)), None)]
    if est == "sgd_sum":  # ∇f_i(W) with i uniform over the N components
        grads = model.client_blocks(node.x)
        return [(1 / len(grads), g, None) for g in grads]
    if est == "sgd":
        g = model.blocks(_single_grad(model, node.x))
        return [(1 / len(noise), g + c, None) for c in noise]
    comp = method.compressor
    masks = comp.masks(d)
    scale = comp.scale(d)
    grads = model.client_blocks(node.x)
    M = len(grads)
    combos = list(itertools.product(masks, repeat=M))
    if est == "qgd":
        return [
            (
                1 / len(combos),
                _mean([g.keep(S, scale) for g, S in zip(grads, c, strict=True)]),
                None,
            )
            for c in combos
        ]
    if est == "marina":
        if t == 0:  # G_l^0 = ∇f_l(W^0) (lorakit's MARINA)
            return [(1.0, _mean(grads), (grads, grads))]
        prev_grads, prev_G = node.state
        out = [(method.q, _mean(grads), (grads, grads))]
        for c in combos:
            G = [
                G0 + (g - g0).keep(S, scale)
                for G0, g, g0, S in zip(prev_G, grads, prev_grads, c, strict=True)
            ]
            out.append(((1 - method.q) / len(combos), _mean(G), (grads, G)))
        return out
    # EF21: G_l^t = G_l^{t−1} + C(∇f_l(W^t) − G_l^{t−1}); G_l^0 = ∇f_l(W^0) or 0
    if t == 0:
        G = grads if method.init == "grad" else [_Blocks([None] * d) for _ in grads]
        return [(1.0, _mean(G), G)]
    out = []
    for c in combos:
        G = [G0 + (g - G0).keep(S, scale) for G0, g, S in zip(node.state, grads, c, strict=True)]
        out.append((1 / len(combos), _mean(G), G))
    return out


def _single_grad(model: _Model, x):
    return model.oracle(x)[0][0]


# ---------------------------------------------------------------------------------------------
# The PEP
# ---------------------------------------------------------------------------------------------
def solve_pep(
    method: Method,
    fclass: FunctionClass,
    measure: Measure,
    initial: Initial,
    exact_subclass: bool = False,
) -> float:
    """The worst value of ``measure`` for ``method`` over ``fclass`` under ``initial``.

    ``exact_subclass=False``: the class as stated (exact where PEPit has interpolation conditions,
    else relaxed: an upper bound); the dual value is returned. ``exact_subclass=True``: its convex
    (non-convex class) or strongly convex (PL class) subclass with exact conditions; the primal
    value, attained by a Gram matrix, is returned: a certified lower bound on the class's worst case.
    Raises ``ValueError`` when the solver finds no finite worst case.

    Every measure and every initial quantity (Δ^0, R0², σ², Δ*, G^0) is quadratic: f ↦ f(√s·)/s
    keeps L, μ and γ and divides them all by s. So the PEP is solved with the largest of them
    scaled to 1 and its value multiplied back (Clarabel loses digits, or fails, on Δ* ≈ 70).
    """
    scale = max(
        [abs(v) for v in (initial.Delta0, initial.sigma2, initial.Delta_star, initial.G0) if v]
        + ([initial.R0**2] if initial.R0 else []),
        default=1.0,
    )
    if scale != 1.0:
        quadratic = ("Delta0", "sigma2", "Delta_star", "G0")
        scaled = {
            k: getattr(initial, k) / scale for k in quadratic if getattr(initial, k) is not None
        }
        if initial.R0 is not None:
            scaled["R0"] = initial.R0 / math.sqrt(scale)
        return scale * solve_pep(
            method, fclass, measure, replace(initial, **scaled), exact_subclass
        )
    from PEPit import PEP

    M = method.components
    pep = PEP()
    leaves, exact = _functions(pep, fclass, M, exact_subclass)
    d = method.sketch.d
    model = _Model(pep, leaves, fclass, exact, d)
    if d > 1:
        model.partition = pep.declare_block_partition(d=d)
    _stars(model, M)
    x0 = pep.set_initial_point()
    noise = _noise(model, method, initial)
    root = _Node(x0, 1.0, (x0,))
    levels = [[root]]
    for t in range(measure.steps):
        nxt = []
        for node in levels[-1]:
            for pq, G, state in _branches(model, method, node, t, noise):
                if all(b is None for b in G.blocks):  # G = 0 (EF21's zero start): W stays
                    nxt.append(_Node(node.x, node.prob * pq, (*node.path, node.x), state))
                    continue
                for ps, kept in method.sketch.outcomes():
                    step = G.keep(kept).total()
                    x = node.x if step is None else model.unique(node.x - method.gamma * step)
                    nxt.append(_Node(x, node.prob * pq * ps, (*node.path, x), state))
        levels.append(nxt)
    _set_measure(model, measure, levels)
    _set_initial(model, method, initial, x0, M)
    if not exact:
        _necessary_conditions(model, M, initial.Delta_star is not None)
    import cvxpy

    which = "primal" if exact_subclass else "dual"
    # Clarabel stops on a NumericalError on the two-round MARINA PEPs (M = 2); a larger static
    # regularisation (deterministic too) solves them, agreeing with SCS to 1e-6. Each option set
    # is tried in turn, MARINA's first.
    attempts = [SOLVER_OPTIONS, SOLVER_RETRY]
    if method.estimator == "marina":
        attempts.reverse()
    for options in attempts:
        try:
            value = pep.solve(wrapper="cvxpy", solver=SOLVER, verbose=0,
                              return_primal_or_dual=which, **options)  # fmt: skip
            break
        except cvxpy.error.SolverError as error:
            failure = error
    else:
        raise ValueError(f"the SDP solver {SOLVER} failed on this PEP ({failure})") from None
    if value is None or not math.isfinite(value):
        raise ValueError("the PEP has no finite worst case for this configuration")
    return float(value)


def _noise(model: _Model, method: Method, initial: Initial):
    """The finite-sum noise c_1..c_N (Σ c_i = 0, (1/N) Σ ‖c_i‖² ≤ σ²) as blocks (sgd only)."""
    if method.estimator != "sgd":
        return None
    from PEPit import Point

    if initial.sigma2 is None:
        raise ValueError("sgd needs initial.sigma2, the noise level")
    N = method.clients
    if N < 2:
        raise ValueError(f"clients must be at least 2 for sgd (the finite sum's N), got {N}")
    free = [Point() for _ in range(N - 1)]
    last = free[0] * -1.0
    for c in free[1:]:
        last = last - c
    vectors = [*free, last]
    model.pep.add_constraint(_mean([c**2 for c in vectors]) <= initial.sigma2)
    return [model.blocks(c) for c in free] + [
        _sum_blocks([model.blocks(c) for c in free]).scaled(-1.0)
    ]


def _sum_blocks(items):
    out = items[0]
    for b in items[1:]:
        out = out + b
    return out


def _set_measure(model: _Model, measure: Measure, levels) -> None:
    pep, kind, T = model.pep, measure.kind, measure.T
    if kind == "gap":
        pep.set_performance_metric(
            _weighted([(n.prob, model.value(n.x) - model.f_star) for n in levels[T]])
        )
        return
    if kind == "dist":
        if model.x_star is None:
            raise ValueError("measure 'dist' needs a class with a minimiser (convex or PL)")
        pep.set_performance_metric(
            _weighted([(n.prob, (n.x - model.x_star) ** 2) for n in levels[T]])
        )
        return
    if kind == "avg_iterate_gap":
        leaves = levels[T - 1]
        pep.set_performance_metric(
            _weighted([(n.prob, model.value(_mean(list(n.path))) - model.f_star) for n in leaves])
        )
        return
    per_t = [_weighted([(n.prob, model.grad(n.x) ** 2) for n in levels[t]]) for t in range(T)]
    if kind == "min_grad":
        for expr in per_t:
            pep.set_performance_metric(expr)
        return
    w = np.ones(T) if kind == "avg_grad" else (1 + measure.growth) ** -np.arange(T, dtype=float)
    w = w / w.sum()
    pep.set_performance_metric(_weighted(list(zip(w, per_t, strict=True))))


def _weighted(terms):
    out = None
    for w, e in terms:
        out = w * e if out is None else out + w * e
    return out


def _set_initial(model: _Model, method: Method, initial: Initial, x0, M: int) -> None:
    pep = model.pep
    if initial.Delta0 is not None:
        pep.set_initial_condition(model.value(x0) - model.f_star <= initial.Delta0)
    if initial.R0 is not None:
        if model.x_star is None:
            raise ValueError("R0 needs a class with a minimiser (convex or PL)")
        pep.set_initial_condition((x0 - model.x_star) ** 2 <= initial.R0**2)
    if initial.Delta_star is not None:
        if M == 1:
            raise ValueError(
                "Delta_star needs several functions (clients > 1: federated or sgd_sum)"
            )
        pep.add_constraint(model.f_star - _mean(model.leaf_stars) <= initial.Delta_star)
    if initial.G0 is not None and method.estimator == "ef21" and method.init == "zero":
        pep.add_constraint(_mean([g**2 for g, _ in model.oracle(x0)]) <= initial.G0)


def lam_fraction(sketch: BlockSketch) -> Fraction:
    """λ as an exact fraction (for labels)."""
    p = Fraction(sketch.p).limit_denominator(1000)
    return p * Fraction(sketch.r, sketch.m) + (1 - p) * Fraction(sketch.r, sketch.n)
