"""Finite-sum regression problems with a pre-training phase that defines W0.

* :func:`linear_regression` — Bernoulli-LoRA (Hounie et al. 2025), Section 7.1 and App. J.1:
  least squares with the non-convex regulariser λ Σ_j x_j²/(1 + x_j²), pre-trained on one
  ``make_regression`` data set and fine-tuned on a shifted one (spec ``bernoulli_lora.md`` §7,
  §8.1).
* :func:`logistic_regression` — RAC-LoRA (Malinovsky et al. 2024), Appendix A.1, Figure 3:
  ℓ2-regularised logistic regression on synthetic Gaussian data, d = 100 as 10×10, N = 2000,
  regularisation 0.1 (spec ``rac_lora.md`` §7.2).

Both are finite sums f = (1/N) Σ_i f_i with x = vec(W) in row-major order
(``x = W.reshape(..., m*n)``); ``grad(W, idx)`` is the minibatch mean of ∇f_i over ``idx``
(repeated indices count repeatedly). Data are generated with NumPy/scikit-learn/scipy at
construction only; afterwards everything is torch on ``device``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.sparse.linalg import LinearOperator, eigsh

from .._validation import check_device, check_dtype, check_int, check_real
from . import least_squares
from .base import MatrixProblem
from .quadratics import check_W

__all__ = ["LinearRegression", "LogisticRegression", "linear_regression", "logistic_regression"]


# ---------------------------------------------------------------------------------------------
# Linear regression with a non-convex regulariser (Bernoulli-LoRA §7.1)
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class LinearRegression(MatrixProblem):
    """f(x) = 1/(2N)‖Dx − b‖² + reg·Σ_j x_j²/(1 + x_j²), x = vec(W) (Bernoulli-LoRA §7.1).

    f_i(x) = ½(d_iᵀx − b_i)² + reg·Σ_j φ(x_j). Unset constants are filled in:
    ``lambda_max`` = λ_max(DᵀD/N), ``L`` = lambda_max + 2·reg (|φ''| ≤ 2, attained at x = 0),
    ``n_samples`` = N, ``f_lower`` = 0. f is non-convex for reg > 0: ``f_star`` and ``mu`` are None.

    ``pretrain`` is the pre-training problem (a :class:`LinearRegression` on the pre-training data,
    starting from 0) when built by :func:`linear_regression`; W0 is its approximate minimiser.
    """

    D: torch.Tensor | None = None
    b: torch.Tensor | None = None
    reg: float = 0.0
    lambda_max: float | None = None
    pretrain: LinearRegression | None = None
    pretrain_L: float | None = None

    def __post_init__(self):
        super().__post_init__()
        d = self.m * self.n
        _check_data("D", "b", self.D, self.b, d)
        self.reg = check_real("reg", self.reg, low=0.0)
        N = self.D.shape[0]
        if self.n_samples is None:
            self.n_samples = N
        if self.n_samples != N:
            raise ValueError(f"n_samples must equal the number of rows of D ({N})")
        if self.lambda_max is None:
            self.lambda_max = lambda_max_torch(self.D)
        if self.L is None:
            self.L = self.lambda_max + 2 * self.reg
        if self.f_lower is None:
            self.f_lower = 0.0
        if self.pretrain is not None and self.pretrain_L is None:
            self.pretrain_L = self.pretrain.L

    @cached_property
    def _D_read(self) -> torch.Tensor:
        """The D the one-pass kernel reads: a float32 copy when that rounds nothing. Made on the
        first kernel call, so a problem that never takes the kernel (a pre-training problem kept
        for its constants) pays neither the check nor the copy."""
        return least_squares.storage(self.D)

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        check_W(W, self.m, self.n)
        x = W.reshape(*W.shape[:-2], self.m * self.n)
        if least_squares.supports(self.D, x):  # one pass over D on the CPU
            r = least_squares.residuals(self._D_read, x, self.b)
        else:
            r = x @ self.D.T - self.b
        x2 = x.square()
        return 0.5 * r.square().mean(dim=-1) + self.reg * (x2 / (1 + x2)).sum(dim=-1)

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        check_W(W, self.m, self.n)
        x = W.reshape(*W.shape[:-2], self.m * self.n)
        rows = slice(None) if idx is None else as_index(idx, self.n_samples, self.D.device)
        b = self.b[rows]
        if least_squares.supports(self.D, x):  # one pass over D on the CPU
            g = least_squares.normal_grad(self._D_read[rows], x, b)
        else:
            D = self.D[rows]
            g = (x @ D.T - b) @ D
        g = g / b.shape[0] + self.reg * 2 * x / (1 + x.square()).square()
        return g.reshape(W.shape)


def linear_regression(
    m: int = 8,
    n: int = 8,
    *,
    n_pretrain: int = 900,
    n_finetune: int = 100,
    reg: float | None = None,
    pretrain_reg: float | None = None,
    seed: int = 42,
    dtype: torch.dtype = torch.float64,
    data_dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> LinearRegression:
    """Bernoulli-LoRA linear regression with non-convex regularisation (Sec. 7.1, App. J.1).

    d = m·n features, x = vec(W) row-major. The paper's problem is m = n = 64 (d = 4096, its
    reshape is unstated; 64×64 is the likely reading), ``n_pretrain = 90000``,
    ``n_finetune = 10000``, ``seed = 42``; the defaults here are a small instance.

    Data, exactly the paper's ``make_regression`` recipe (App. J.1) at size d:

    * pre-training: ``make_regression(n_samples=n_pretrain, n_features=d, n_informative=d,
      noise=20.0, bias=0.0, tail_strength=0.8, effective_rank=max(2, d//64),
      random_state=seed)``, then ``StandardScaler`` ("followed by standard scaling");
    * fine-tuning: ``make_regression(n_samples=n_finetune, n_features=d,
      n_informative=max(1, d//2), noise=50.0, bias=10.0, tail_strength=0.9,
      effective_rank=max(1, d//128), random_state=seed + 42)``, then ``StandardScaler``, then
      the "biased scaling (mean 1, standard deviation 2)" as 2z + 1 per column (reproduces the
      paper's λ̂ ≈ 4101.7 to 0.04%; spec §8.1).
    * targets: each target vector is standardised (mean 0, std 1). This is **lorakit's choice**:
      the paper does not say whether b̃, b̂ are scaled.

    Loss (both phases): f(x) = 1/(2N)‖Dx − b‖² + λ Σ_j x_j²/(1 + x_j²). ``reg`` (fine-tuning λ̂)
    and ``pretrain_reg`` (λ̃) default to the paper's choice λ = "‖D‖₂", which means
    λ_max(DᵀD/N) of that phase's data (spec §7), so L = λ_max(DᵀD/N) + 2λ = 3λ_max.

    Pre-training minimises f̃ from x = 0 with ``scipy.optimize.minimize(method="L-BFGS-B",
    jac=True)`` until ‖∇f̃‖² ≤ 1e-8 (the paper's tolerance); W0 is that point reshaped. The
    pre-training problem is kept as ``.pretrain`` (its constants: ``pretrain_L``,
    ``.pretrain.lambda_max``, ``.pretrain.reg``).

    ``data_dtype=torch.float32`` rounds both phases' features D to float32 values after scaling,
    before anything else is computed (a relative change below 6e-8, against noise of 20 and 50):
    the problem is then exactly that of the rounded data, in ``dtype``. Its gradient reads D from
    a float32 copy with float64 sums (:mod:`lorakit.problems.least_squares`), half the memory
    traffic of float64 data, at the paper's size and above.

    Constants: ``L`` = lambda_max + 2·reg, ``lambda_max`` = λ_max(D̂ᵀD̂/N̂), ``mu = f_star = None``
    (non-convex), ``f_lower = 0``, ``n_samples = n_finetune``.
    """
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    n_pretrain = check_int("n_pretrain", n_pretrain, low=2)
    n_finetune = check_int("n_finetune", n_finetune, low=2)
    if reg is not None:
        reg = check_real("reg", reg, low=0.0, low_open=True)
    if pretrain_reg is not None:
        pretrain_reg = check_real("pretrain_reg", pretrain_reg, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0, high=2**32 - 1 - 42)
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    data_dtype = check_dtype("data_dtype", data_dtype)
    device = torch.device(device)

    from sklearn.datasets import make_regression
    from sklearn.preprocessing import StandardScaler

    d = m * n
    Dp, bp = make_regression(
        n_samples=n_pretrain,
        n_features=d,
        n_informative=d,
        noise=20.0,
        bias=0.0,
        tail_strength=0.8,
        effective_rank=max(2, d // 64),
        random_state=seed,
    )
    Dp = StandardScaler().fit_transform(Dp)
    bp = _standardize(bp)
    Df, bf = make_regression(
        n_samples=n_finetune,
        n_features=d,
        n_informative=max(1, d // 2),
        noise=50.0,
        bias=10.0,
        tail_strength=0.9,
        effective_rank=max(1, d // 128),
        random_state=seed + 42,
    )
    Df = 2.0 * StandardScaler().fit_transform(Df) + 1.0
    bf = _standardize(bf)
    if data_dtype == torch.float32:
        Dp, Df = (D.astype(np.float32).astype(np.float64) for D in (Dp, Df))

    lam_p = _lambda_max_np(Dp)
    lam_f = _lambda_max_np(Df)
    reg_p = lam_p if pretrain_reg is None else pretrain_reg
    reg_f = lam_f if reg is None else reg

    def pretrain_objective(x):
        r = Dp @ x - bp
        x2 = x * x
        f = 0.5 * (r @ r) / n_pretrain + reg_p * np.sum(x2 / (1 + x2))
        g = Dp.T @ r / n_pretrain + reg_p * 2 * x / (1 + x2) ** 2
        return f, g

    x0 = _lbfgs(pretrain_objective, np.zeros(d), grad_sq_tol=1e-8, what="pre-training")

    def tensor(a):
        return torch.as_tensor(a, dtype=dtype, device=device)

    pre = LinearRegression(
        m=m,
        n=n,
        W0=torch.zeros(m, n, dtype=dtype, device=device),
        D=tensor(Dp),
        b=tensor(bp),
        reg=reg_p,
        lambda_max=lam_p,
        name="linear_regression_pretrain",
    )
    return LinearRegression(
        m=m,
        n=n,
        W0=tensor(x0).reshape(m, n),
        D=tensor(Df),
        b=tensor(bf),
        reg=reg_f,
        lambda_max=lam_f,
        pretrain=pre,
        name="linear_regression",
    )


# ---------------------------------------------------------------------------------------------
# Logistic regression (RAC-LoRA App. A.1)
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class LogisticRegression(MatrixProblem):
    """f(x) = 1/N Σ_i log(1 + exp(−y_i x_iᵀx)) + (reg/2)‖x‖², x = vec(W) (RAC-LoRA App. A.1).

    f_i(x) = log(1 + exp(−y_i x_iᵀx)) + (reg/2)‖x‖², labels y ∈ {−1, +1}. Unset constants are
    filled in: ``L`` = λ_max(XᵀX)/(4N) + reg, ``mu`` = reg, ``n_samples`` = N.
    """

    X: torch.Tensor | None = None
    y: torch.Tensor | None = None
    reg: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _check_data("X", "y", self.X, self.y, self.m * self.n)
        if not bool(((self.y == 1) | (self.y == -1)).all()):
            raise ValueError("y must have entries in {-1, +1}")
        self.reg = check_real("reg", self.reg, low=0.0)
        N = self.X.shape[0]
        if self.n_samples is None:
            self.n_samples = N
        if self.n_samples != N:
            raise ValueError(f"n_samples must equal the number of rows of X ({N})")
        if self.L is None:
            self.L = lambda_max_torch(self.X) / 4 + self.reg
        if self.mu is None and self.reg > 0:
            self.mu = self.reg
        if self.f_lower is None:
            self.f_lower = 0.0

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        check_W(W, self.m, self.n)
        x = W.reshape(*W.shape[:-2], self.m * self.n)
        margins = self.y * (x @ self.X.T)
        data = torch.nn.functional.softplus(-margins).mean(dim=-1)
        return data + 0.5 * self.reg * x.square().sum(dim=-1)

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        check_W(W, self.m, self.n)
        x = W.reshape(*W.shape[:-2], self.m * self.n)
        X, y = self.X, self.y
        if idx is not None:
            idx = as_index(idx, self.n_samples, X.device)
            X, y = X[idx], y[idx]
        # d/dz log(1 + exp(−y z)) = −y σ(−y z)
        s = -y * torch.sigmoid(-y * (x @ X.T))
        g = (s @ X) / X.shape[0] + self.reg * x
        return g.reshape(W.shape)


def logistic_regression(
    m: int = 10,
    n: int = 10,
    *,
    n_samples: int = 2000,
    reg: float = 0.1,
    label_noise: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> LogisticRegression:
    """RAC-LoRA logistic regression (Appendix A.1, Figure 3; spec ``rac_lora.md`` §7.2).

    The paper's setting is the default: d = 100 as a 10×10 matrix, 2000 samples, regularisation
    0.1. Its data and its notion of "pre-training" are unspecified; lorakit's recipe, all drawn
    from one ``torch.Generator`` seeded with ``seed`` (CPU, float64):

    * features X ∈ R^{N×d} with iid N(0, 1) entries;
    * a pre-training teacher w_pre ~ N(0, I_d) and a fine-tuning teacher
      w_ft = (w_pre + ξ)/√2, ξ ~ N(0, I_d) (a related but different task, cosine ≈ 0.7);
    * labels y = sign(X w) with a random ``label_noise`` fraction (rounded to a count) flipped;
    * the pre-training task uses a separate draw of N samples with teacher w_pre, and
      W0 = argmin of its (same-form, same ``reg``) objective.

    f(x) = 1/N Σ_i log(1 + exp(−y_i x_iᵀx)) + (reg/2)‖x‖² (the ½ convention, so μ = reg).
    L = λ_max(XᵀX)/(4N) + reg, mu = reg. W_star and f_star (and W0) come from
    ``scipy.optimize.minimize(method="L-BFGS-B")`` polished by Newton steps to ‖∇f‖ ≤ 1e-12, so
    gaps f(W) − f* are meaningful down to ~1e-20. Finite sum: n_samples = N, f_i includes the
    regulariser.
    """
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    n_samples = check_int("n_samples", n_samples, low=1)
    reg = check_real("reg", reg, low=0.0, low_open=True)
    label_noise = check_real("label_noise", label_noise, low=0.0, high=0.5)
    seed = check_int("seed", seed, low=0)
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    device = torch.device(device)
    d, N = m * n, n_samples

    gen = torch.Generator(device="cpu").manual_seed(seed)
    w_pre = torch.randn(d, generator=gen, dtype=torch.float64)
    w_ft = (w_pre + torch.randn(d, generator=gen, dtype=torch.float64)) / math.sqrt(2)

    def task(w):
        X = torch.randn(N, d, generator=gen, dtype=torch.float64)
        y = torch.where(X @ w >= 0, 1.0, -1.0).to(torch.float64)
        n_flip = round(label_noise * N)
        flip = torch.randperm(N, generator=gen)[:n_flip]
        y[flip] = -y[flip]
        return X.numpy(), y.numpy()

    X_ft, y_ft = task(w_ft)
    X_pre, y_pre = task(w_pre)
    x0 = solve_logistic(X_pre, y_pre, reg, what="pre-training")
    x_star = solve_logistic(X_ft, y_ft, reg, what="fine-tuning")
    # f* in float64 with the same torch formula as ``loss``, so that gap(W_star) is ~0.
    f_star = float(
        torch.nn.functional.softplus(-torch.from_numpy(y_ft * (X_ft @ x_star))).mean()
        + 0.5 * reg * float(x_star @ x_star)
    )

    def tensor(a):
        return torch.as_tensor(a, dtype=dtype, device=device)

    return LogisticRegression(
        m=m,
        n=n,
        W0=tensor(x0).reshape(m, n),
        W_star=tensor(x_star).reshape(m, n),
        f_star=f_star,
        L=_lambda_max_np(X_ft) / 4 + reg,
        mu=reg,
        X=tensor(X_ft),
        y=tensor(y_ft),
        reg=reg,
        name="logistic_regression",
    )


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _check_data(dname, bname, D, b, d) -> None:
    if not isinstance(D, torch.Tensor) or D.dim() != 2 or D.shape[1] != d or D.shape[0] < 1:
        got = tuple(D.shape) if isinstance(D, torch.Tensor) else type(D)
        raise ValueError(f"{dname} must be a tensor of shape (N, m*n) = (N, {d}), got {got}")
    if not isinstance(b, torch.Tensor) or tuple(b.shape) != (D.shape[0],):
        got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b)
        raise ValueError(f"{bname} must be a tensor of shape ({D.shape[0]},), got {got}")


def as_index(idx, N: int, device) -> torch.Tensor:
    """``idx`` as a 1-D long tensor on ``device`` with entries in [0, N − 1]."""
    idx = torch.as_tensor(idx, device=device)
    if idx.dtype == torch.bool or idx.dtype.is_floating_point or idx.dtype.is_complex:
        raise ValueError(f"idx must hold integer sample indices, got dtype {idx.dtype}")
    if idx.dim() != 1 or idx.numel() == 0:
        raise ValueError(f"idx must be a non-empty 1-D tensor, got shape {tuple(idx.shape)}")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= N:
        raise ValueError(f"idx entries must be in [0, {N - 1}], got min {lo}, max {hi}")
    return idx.long()


def _standardize(v: np.ndarray) -> np.ndarray:
    std = v.std()
    if not std > 0:
        raise ValueError("the generated targets are constant; increase the number of samples")
    return (v - v.mean()) / std


def _lambda_max_np(D: np.ndarray) -> float:
    """λ_max(DᵀD/N): dense for small problems, ARPACK (matrix-free) otherwise."""
    N, d = D.shape
    if min(N, d) <= 1000:
        G = D.T @ D if d <= N else D @ D.T
        return float(np.linalg.eigvalsh(G / N)[-1])
    op = LinearOperator((d, d), matvec=lambda v: D.T @ (D @ v) / N, dtype=np.float64)
    v0 = np.ones(d) / math.sqrt(d)  # deterministic start
    return float(eigsh(op, k=1, which="LA", tol=0, v0=v0, return_eigenvectors=False)[0])


def lambda_max_torch(D: torch.Tensor) -> float:
    """λ_max(DᵀD/N) of an N×d data matrix (through the smaller Gram matrix)."""
    N, d = D.shape
    G = D.T @ D if d <= N else D @ D.T
    return float(torch.linalg.eigvalsh(G / N)[-1])


def _lbfgs(
    fun, x0: np.ndarray, *, grad_sq_tol: float, what: str, rounds: int = 20, strict: bool = True
) -> np.ndarray:
    """scipy L-BFGS-B from ``x0``, restarted until ‖∇‖² ≤ ``grad_sq_tol``.

    If the target is not reached: RuntimeError when ``strict``, else the last iterate.
    """
    x = x0
    # scipy's gtol bounds max|g_j|; ‖g‖² ≤ d·max|g_j|², so this gtol implies the target.
    gtol = 0.5 * math.sqrt(grad_sq_tol / x0.size)
    options = {"gtol": gtol, "ftol": 0.0, "maxiter": 50_000, "maxfun": 100_000, "maxcor": 20}
    for _ in range(rounds):
        x = minimize(fun, x, jac=True, method="L-BFGS-B", options=options).x
        g = fun(x)[1]
        if g @ g <= grad_sq_tol:
            return x
    if not strict:
        return x
    raise RuntimeError(f"{what}: L-BFGS-B did not reach ||grad||^2 <= {grad_sq_tol:g}")


def solve_logistic(X: np.ndarray, y: np.ndarray, reg: float, *, what: str) -> np.ndarray:
    """argmin of the ℓ2-regularised logistic loss: L-BFGS-B, then Newton to ‖∇f‖ ≤ 1e-12."""
    from scipy.special import expit

    N, d = X.shape

    def fun(x):
        margins = y * (X @ x)
        f = np.mean(np.logaddexp(0.0, -margins)) + 0.5 * reg * (x @ x)
        g = X.T @ (-y * expit(-margins)) / N + reg * x
        return f, g

    x = _lbfgs(fun, np.zeros(d), grad_sq_tol=1e-16, what=what, rounds=3, strict=False)
    # Newton polish (strongly convex, already close): quadratic convergence to float64 accuracy.
    for _ in range(20):
        g = fun(x)[1]
        if np.linalg.norm(g) <= 1e-13:
            break
        s = expit(y * (X @ x))
        H = (X.T * (s * (1 - s))) @ X / N + reg * np.eye(d)
        x = x - np.linalg.solve(H, g)
    if not np.linalg.norm(fun(x)[1]) <= 1e-12:
        raise RuntimeError(f"{what}: could not solve the logistic problem to ||grad|| <= 1e-12")
    return x
