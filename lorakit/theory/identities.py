"""Symbolic proofs (sympy) of the algebraic facts the convergence proofs rely on.

Each function returns ``True`` once sympy has certified its identity, ``False`` if a step fails.
Identities are certified by reducing ``lhs − rhs`` to zero: with :func:`sympy.simplify` for
expressions with radicals, and by exact arithmetic in a polynomial ring (``DomainMatrix``) for the
symbolic projectors — zero is decided exactly there, and it is far faster than simplifying the
rational functions entry by entry. An inequality ``g ≥ 0`` on a domain is certified by a rewrite
``g = c`` with ``simplify(g − c) == 0``, where ``c`` is manifestly non-negative on the domain (a
square, or a product of non-negative factors) and sympy's assumption system confirms
``c.is_nonnegative`` for symbols declared with the domain's sign constraints.

:data:`IDENTITIES` maps a name to ``(statement, source, function)``; :func:`verify_all` runs them.
Sources: RAC-LoRA spec §5 item 1 (projectors) and item 4 (tightness); Bernoulli-LoRA spec §5.9
(step sizes) and §6 items 5 and 9 (Lemma 12, Lyapunov-function algebra).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from sympy.polys.matrices import DomainMatrix

__all__ = ["IDENTITIES", "verify_all"]

#: name → (statement, source, function returning True when sympy verifies it).
IDENTITIES: dict[str, tuple[str, str, Callable[[], bool]]] = {}


def _identity(name: str, statement: str, source: str):
    def wrap(fn: Callable[[], bool]) -> Callable[[], bool]:
        IDENTITIES[name] = (statement, source, fn)
        return fn

    return wrap


def _zero(expr) -> bool:
    return sp.simplify(expr) == 0


def _nonneg(expr) -> bool:
    """sympy's assumption system proves ``expr ≥ 0`` (None, i.e. unknown, counts as failure)."""
    return sp.sympify(expr).is_nonnegative is True


def _symbolic(rows: int, cols: int, name: str) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}{i}{j}", real=True))


# --------------------------------------------------------------------------------------------
# Projectors (RAC-LoRA §5 item 1; eqs. (3)–(4); Bernoulli-LoRA Lemma 10)
# --------------------------------------------------------------------------------------------
def _projector_certificate(Bc: sp.Matrix) -> bool:
    """H = Bc(BcᵀBc)⁻¹Bcᵀ is a rank-r orthogonal projector fixing Bc, for symbolic Bc (d×r).

    With G = BcᵀBc, δ = det G and N = Bc·adj(G)·Bcᵀ we have (BcᵀBc)⁻¹ = adj(G)/δ and H = N/δ.
    δ ≠ 0 exactly when Bc has full column rank, so for such Bc the claims are polynomial
    identities in the entries of Bc: G·adj(G) = δI (the inverse), N² = δN (H² = H), Nᵀ = N
    (Hᵀ = H), tr N = rδ (tr H = r), N·Bc = δBc (HBc = Bc). They are checked in the polynomial
    ring ZZ[entries], where equality is decided exactly.
    """
    d, r = Bc.shape
    B = DomainMatrix.from_Matrix(Bc)
    G = B.transpose() * B
    adj, delta = G.adjugate(), G.det()
    N = B * adj * B.transpose()
    ring = B.domain
    identity_r = DomainMatrix.eye(r, ring)
    trace = sum((N[i, i].element for i in range(d)), ring.zero)
    return bool(
        (G * adj - identity_r * delta).is_zero_matrix  # adj(G)/δ is the inverse of G
        and (N * N - N * delta).is_zero_matrix  # H² = H
        and (N.transpose() - N).is_zero_matrix  # Hᵀ = H
        and trace == ring.convert(r) * delta  # tr H = r
        and (N * B - B * delta).is_zero_matrix  # H Bc = Bc
    )


@_identity(
    "projector_left",
    "H_B = B(BᵀB)⁻¹Bᵀ: H² = H, Hᵀ = H, tr H = r, H B = B for symbolic full-column-rank B "
    "(3×1 and 4×2)",
    "RAC-LoRA §5 item 1; eq. (3)",
)
def projector_left() -> bool:
    return all(_projector_certificate(_symbolic(d, r, "b")) for d, r in ((3, 1), (4, 2)))


@_identity(
    "projector_right",
    "H_A = Aᵀ(AAᵀ)⁻¹A: H² = H, Hᵀ = H, tr H = r, A H = A for symbolic full-row-rank A "
    "(1×3 and 2×4)",
    "RAC-LoRA §5 item 1; eq. (4)",
)
def projector_right() -> bool:
    # H_A is H_B of Bc = Aᵀ, and A H_A = A is the transpose of H_A Aᵀ = Aᵀ (H_A symmetric).
    ok = all(_projector_certificate(_symbolic(r, n, "a").T) for r, n in ((1, 3), (2, 4)))
    # The direct form for the 1×3 case, simplified entry by entry.
    A = _symbolic(1, 3, "a")
    H = A.T * (A * A.T).inv() * A
    return ok and all(_zero(e) for e in (A * H - A)) and all(_zero(e) for e in (H * H - H))


@_identity(
    "projector_rank_one",
    "rank 1: B(BᵀB)⁻¹Bᵀ = bbᵀ/(bᵀb) for a symbolic column b ∈ R³",
    "RAC-LoRA §5 item 1",
)
def projector_rank_one() -> bool:
    b = _symbolic(3, 1, "b")
    H = b * (b.T * b).inv() * b.T
    return all(_zero(e) for e in (H - b * b.T / (b.T * b)[0, 0]))


# --------------------------------------------------------------------------------------------
# Lyapunov-function algebra (Bernoulli-LoRA §6 item 9)
# --------------------------------------------------------------------------------------------
_b, _q, _beta = sp.symbols("b q beta", real=True)


@_identity(
    "mvr_momentum_identity",
    "b(2 − b) + (1 − b)² = 1",
    "Bernoulli-LoRA §6 item 9 (MVR Lyapunov function)",
)
def mvr_momentum_identity() -> bool:
    return _zero(_b * (2 - _b) + (1 - _b) ** 2 - 1)


@_identity(
    "mvr_momentum_inequality",
    "½b(2 − b) + (1 − b)² = 1 − b + b²/2 ≤ 1 − b/2 for b ∈ [0, 1]",
    "Bernoulli-LoRA §6 item 9 (MVR Lyapunov function)",
)
def mvr_momentum_inequality() -> bool:
    lhs = sp.Rational(1, 2) * _b * (2 - _b) + (1 - _b) ** 2
    equality = _zero(lhs - (1 - _b + _b**2 / 2))
    # (1 − b/2) − lhs = b(1 − b)/2: a product of factors that are non-negative on [0, 1]. Write
    # the domain as b = u, 1 − b = v with u, v ≥ 0 and let sympy sign the certificate.
    certificate = _b * (1 - _b) / 2
    rewrite = _zero((1 - _b / 2) - lhs - certificate)
    u, v = sp.symbols("u v", nonnegative=True)
    signed = _nonneg(u * v / 2)  # certificate with b → u and 1 − b → v
    factors = _zero(certificate - (u * v / 2).subs({u: _b, v: 1 - _b}))
    return equality and rewrite and signed and factors


@_identity(
    "page_probability_identity",
    "q/2 + (1 − q) = 1 − q/2",
    "Bernoulli-LoRA §6 item 9 (PAGE / MARINA Lyapunov functions)",
)
def page_probability_identity() -> bool:
    return _zero(_q / 2 + (1 - _q) - (1 - _q / 2))


@_identity(
    "ef21_sqrt_identity",
    "(1 − √(1−β))/2 + √(1−β) = (1 + √(1−β))/2",
    "Bernoulli-LoRA §6 item 9 (EF21 Lyapunov function)",
)
def ef21_sqrt_identity() -> bool:
    s = sp.sqrt(1 - _beta)
    return _zero((1 - s) / 2 + s - (1 + s) / 2)


@_identity(
    "ef21_sqrt_inequality",
    "1 − √(1−β) ≥ β/2 for β ∈ [0, 1]",
    "Bernoulli-LoRA §6 item 9 (EF21 Lyapunov function)",
)
def ef21_sqrt_inequality() -> bool:
    # On [0, 1] write t = √(1−β) ∈ [0, 1], β = 1 − t². Then
    # 1 − √(1−β) − β/2 = (1 − t)²/2, a square: certify the rewrite and its sign.
    beta = sp.Symbol("beta", nonnegative=True)
    t = sp.Symbol("t", nonnegative=True)
    gap = 1 - sp.sqrt(1 - beta) - beta / 2
    in_t = gap.subs(beta, 1 - t**2)  # √(t²) = t since t ≥ 0
    certificate = (1 - t) ** 2 / 2
    return _zero(in_t - certificate) and _nonneg(certificate) and _zero(sp.sqrt(t**2) - t)


# --------------------------------------------------------------------------------------------
# Step-size lemma (Bernoulli-LoRA §5.9)
# --------------------------------------------------------------------------------------------
@_identity(
    "stepsize_lemma",
    "c ≥ 0, 0 ≤ x ≤ 1/(1+√c) ⇒ 1 − x − c x² ≥ 0",
    "Bernoulli-LoRA §5.9 (step-size condition algebra, x = γL)",
)
def stepsize_lemma() -> bool:
    # Write c = s² with s = √c ≥ 0. g(x) = 1 − x − s²x² has g'(x) = −(1 + 2s²x) < 0 for x ≥ 0, so
    # g is decreasing on [0, x₀], x₀ = 1/(1+s), and g ≥ g(x₀) = s/(1+s)² ≥ 0 there.
    s, x = sp.symbols("s x", nonnegative=True)
    g = 1 - x - s**2 * x**2
    x0 = 1 / (1 + s)
    decreasing = _zero(sp.diff(g, x) + (1 + 2 * s**2 * x)) and bool((1 + 2 * s**2 * x).is_positive)
    endpoint = _zero(g.subs(x, x0) - s / (1 + s) ** 2) and _nonneg(s / (1 + s) ** 2)
    # The spec's form of the same fact: x₀(1 + c·x₀) = (1 + √c + c)/(1 + √c)² ≤ 1, since
    # 1 − (1 + s + s²)/(1 + s)² = s/(1 + s)².
    spec_form = _zero(x0 * (1 + s**2 * x0) - (1 + s + s**2) / (1 + s) ** 2) and _zero(
        1 - (1 + s + s**2) / (1 + s) ** 2 - s / (1 + s) ** 2
    )
    return decreasing and endpoint and spec_form


# --------------------------------------------------------------------------------------------
# Tightness on the isotropic quadratic (RAC-LoRA §5 item 4; Bernoulli-LoRA §6 items 5–6)
# --------------------------------------------------------------------------------------------
def _frob(X: sp.Matrix, Y: sp.Matrix):
    return (X.T * Y).trace()


@_identity(
    "projector_residual",
    "‖(I−H)V‖² = ⟨V, (I−H)V⟩ and ‖HV‖² = ⟨V, HV⟩ for a projector H (symbolic B 3×2, V 3×2), "
    "hence E‖(I−H)V‖² = ⟨V, (I − E H)V⟩; checked exactly for coordinate sampling (d = 3, r = 1, 2)",
    "Bernoulli-LoRA Lemma 12 / §6 item 5; RAC-LoRA §5 item 4",
)
def projector_residual() -> bool:
    V = _symbolic(3, 2, "v")
    B = _symbolic(3, 2, "b")
    G = B.T * B
    # H = N/δ (see _projector_certificate); multiply through by δ² to stay polynomial.
    N, delta = B * G.adjugate() * B.T, G.det()
    I3 = sp.eye(3)
    residual = sp.expand(
        _frob((delta * I3 - N) * V, (delta * I3 - N) * V) - delta * _frob(V, (delta * I3 - N) * V)
    )
    image = sp.expand(_frob(N * V, N * V) - delta * _frob(V, N * V))
    single = residual == 0 and image == 0
    # The expectation: the right side is linear in H, so E‖(I−H)V‖² = ⟨V, (I − E H)V⟩. Check it
    # by exact enumeration over uniform coordinate sketches, where E H = (r/3)·I.
    import itertools

    expectation = True
    for r in (1, 2):
        subsets = list(itertools.combinations(range(3), r))
        lhs = 0
        for S in subsets:
            H = sp.diag(*[1 if i in S else 0 for i in range(3)])
            lhs += _frob((I3 - H) * V, (I3 - H) * V)
        EH = sp.Rational(r, 3) * I3
        expectation &= _zero(lhs / len(subsets) - _frob(V, (I3 - EH) * V))
    return single and expectation


@_identity(
    "isotropic_contraction",
    "‖(I−γH)V‖² = ‖V‖² − γ(2−γ)⟨V, HV⟩ (H² = H), so with E H = (r/m)·I: "
    "E f(W⁺) = (1 − γ(2−γ)·r/m)·f(W) for f = ½‖W − W*‖², equal to 1 − γμλ at γ = 1/L = 1",
    "RAC-LoRA §5 item 4 (Theorem 5.5 is tight); Bernoulli-LoRA §6 item 6",
)
def isotropic_contraction() -> bool:
    gamma, r, m = sp.symbols("gamma r m", positive=True)
    V = _symbolic(3, 2, "v")
    B = _symbolic(3, 2, "b")
    G = B.T * B
    N, delta = B * G.adjugate() * B.T, G.det()
    I3 = sp.eye(3)
    # δ²‖(I − γN/δ)V‖² = δ²‖V‖² − γ(2−γ)·δ⟨V, NV⟩, using N² = δN.
    per_sample = sp.expand(
        _frob((delta * I3 - gamma * N) * V, (delta * I3 - gamma * N) * V)
        - (delta**2 * _frob(V, V) - gamma * (2 - gamma) * delta * _frob(V, N * V))
    )
    # Take expectations (linear in H) with E H = (r/m)·I, V = W − W*, f = ½‖V‖².
    norm2 = _frob(V, V)
    expected = norm2 - gamma * (2 - gamma) * _frob(V, (r / m) * I3 * V)
    rate = 1 - gamma * (2 - gamma) * r / m
    contraction = _zero(expected / 2 - rate * norm2 / 2)
    at_one = _zero(rate.subs(gamma, 1) - (1 - r / m))  # Theorem 5.5 rate, γ = 1/L, μ = L = 1
    return per_sample == 0 and contraction and at_one


def verify_all() -> list[tuple[str, str, str, bool]]:
    """Run every identity: a list of (name, statement, source, passed)."""
    return [(name, stmt, src, bool(fn())) for name, (stmt, src, fn) in IDENTITIES.items()]
