"""Split a finite-sum problem's rows among clients: the Foundation problems, federated.

:func:`split` turns a :class:`~lorakit.problems.regression.LinearRegression`,
:class:`~lorakit.problems.regression.LogisticRegression` or
:class:`~lorakit.problems.softmax.SoftmaxRegression` into a
:class:`~lorakit.problems.federated.FederatedProblem` whose client l is the *same* problem class
on its own rows (D, b or X, y), with the same W0 and ``reg``; the rows are assigned by
:func:`lorakit.problems.partition.partition` (``"iid"``, ``"dirichlet"`` label skew,
``"quantity"`` skew; the FSLoRA spec §10 item 7 and the Federated issue §1–§3).

Objective. FederatedProblem's f = (1/M) Σ_l f_l weighs the *clients* uniformly (Bernoulli-LoRA
eq. (4); FSLoRA eq. (1)), and f_l is the mean over client l's N_l rows, so a row of client l weighs
1/(M·N_l). The pooled problem weighs every row 1/N. The two agree when every N_l = N/M (an
``"iid"`` split with M dividing N; otherwise sizes differ by one and so do the losses, slightly);
under quantity or Dirichlet skew they differ: small clients' rows count more. f*, W* and ``L_f``
below are those of the uniform-client objective.

Constants:

* each client's own (``L`` from its rows: λ_max(D_lᵀD_l/N_l) + 2·reg, λ_max(X_lᵀX_l)/(4N_l) + reg,
  λ_max(X_lᵀX_l)/(2N_l) + reg), so the federated ``L`` = max_l L_l (FederatedProblem's rule);
* ``L_f`` = the same formula with the weighted Gram Σ_i ω_i x_i x_iᵀ, ω_i = 1/(M·N_l);
* logistic and softmax regression with reg > 0 are reg-strongly convex: ``mu`` = reg, and with
  ``solve`` W*, f* of the federated objective (L-BFGS-B then Newton on the flattened W with the
  closed-form gradient and Hessian, as the problem modules solve theirs) and every client's f_l*
  (so ``client_f_star`` and Δ* = f* − mean f_l*);
* linear regression (non-convex regulariser): ``f_star`` None, ``f_lower`` = 0.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_int
from ..rng import Streams
from .federated import FederatedProblem
from .partition import check_partition, partition
from .regression import LinearRegression, LogisticRegression, solve_logistic
from .softmax import SoftmaxRegression, newton, one_blas_thread, solve_softmax

__all__ = ["split"]

SPLITTABLE = (LinearRegression, LogisticRegression, SoftmaxRegression)


def split(
    problem: LinearRegression | LogisticRegression | SoftmaxRegression,
    num_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    labels=None,
    seed: int = 0,
    min_size: int = 1,
    bins: int = 10,
    draw: str = "class",
    parts=None,
    solve: bool = True,
) -> FederatedProblem:
    """``problem``'s rows split among ``num_clients`` clients, as a :class:`FederatedProblem`.

    Parameters
    ----------
    problem : a :class:`LinearRegression` (rows of D, b), :class:`LogisticRegression` (X, y) or
        :class:`SoftmaxRegression` (X, y).
    num_clients, scheme, alpha, min_size, draw : passed to
        :func:`lorakit.problems.partition.partition` (``scheme`` ∈ ``"iid"``, ``"dirichlet"``,
        ``"quantity"``), which draws from the ``"partition"`` stream of
        :class:`lorakit.rng.Streams` ``(seed)``.
    labels : the labels that ``"dirichlet"`` skews, one per row. ``None``: the class labels of a
        classification problem (y; logistic y ∈ {−1, +1} becomes {0, 1}), and for linear regression
        the **quantile bin** of the target b: rows sorted by b are cut into ``bins`` equal-count
        bins (ties in sort order), so label skew means each client sees a band of targets.
    parts : a given partition (one index array per client) instead of a drawn one; it overrides
        ``num_clients`` and must cover every row exactly once with no empty client.
    solve : for strongly convex problems (logistic/softmax with reg > 0), solve W*, f* of the
        federated objective and each client's f_l* (module docstring).

    Client l is named ``client{l}``. The result carries ``partition`` (the index tensors),
    ``labels`` (the labels used), ``pooled`` (``problem``), ``scheme`` and ``alpha``.
    """
    if not isinstance(problem, SPLITTABLE):
        names = ", ".join(c.__name__ for c in SPLITTABLE)
        raise ValueError(f"problem must be a finite-sum {names}, got {type(problem).__name__}")
    if not isinstance(solve, bool):
        raise ValueError(f"solve must be True or False, got {solve!r}")
    seed = check_int("seed", seed, low=0)
    rows, target = _data(problem)
    N = rows.shape[0]
    if labels is None:
        labels = _default_labels(problem, target, check_int("bins", bins, low=1, high=N))
    else:
        labels = torch.as_tensor(labels)
        if labels.shape != (N,):
            raise ValueError(
                f"labels must have one entry per row, shape ({N},), got {labels.shape}"
            )
    if parts is None:
        gen = Streams(seed)["partition"]
        parts = partition(
            labels, num_clients, scheme, alpha=alpha, min_size=min_size, generator=gen, draw=draw
        )
    else:
        parts = check_partition(parts, N)
        scheme, alpha = "given", None
    M = len(parts)
    solve = solve and not isinstance(problem, LinearRegression) and problem.reg > 0
    clients = [
        _client(problem, part.to(rows.device), f"client{l}", solve) for l, part in enumerate(parts)
    ]

    # Row weights of the uniform-client objective: ω_i = 1/(M·N_l) for a row of client l.
    omega = torch.empty(N, dtype=torch.float64)
    for part in parts:
        omega[part] = 1.0 / (M * part.numel())
    constants = {"L_f": _weighted_L(problem, rows, omega)}
    if isinstance(problem, LinearRegression):
        constants["f_lower"] = 0.0
    elif problem.reg > 0:
        constants["mu"] = problem.reg
    if solve:
        x = _solve_weighted(problem, rows, target, omega)
        W_star = torch.from_numpy(x.reshape(problem.m, problem.n))
        constants["f_star"] = _uniform_loss(problem, W_star, rows, target, parts)
        constants["W_star"] = W_star.to(dtype=problem.dtype, device=problem.device)
    fed = FederatedProblem.from_clients(
        clients, W0=problem.W0.clone(), name=f"{problem.name}_split", **constants
    )
    fed.partition = parts
    fed.labels = labels
    fed.pooled = problem
    fed.scheme = scheme
    fed.alpha = alpha
    return fed


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _data(problem):
    """(rows, targets): (D, b) or (X, y)."""
    if isinstance(problem, LinearRegression):
        return problem.D, problem.b
    return problem.X, problem.y


def _default_labels(problem, target: torch.Tensor, bins: int) -> torch.Tensor:
    if isinstance(problem, SoftmaxRegression):
        return target.detach().cpu().long()
    if isinstance(problem, LogisticRegression):
        return (target.detach().cpu() > 0).long()
    # Linear regression: equal-count quantile bins of b.
    N = target.numel()
    order = torch.argsort(target.detach().cpu(), stable=True)
    labels = torch.empty(N, dtype=torch.long)
    labels[order] = torch.arange(N) * bins // N
    return labels


def _client(problem, idx: torch.Tensor, name: str, solve: bool):
    common = {"m": problem.m, "n": problem.n, "W0": problem.W0, "reg": problem.reg, "name": name}
    if isinstance(problem, LinearRegression):
        return LinearRegression(D=problem.D[idx], b=problem.b[idx], **common)
    if isinstance(problem, SoftmaxRegression):
        return SoftmaxRegression(X=problem.X[idx], y=problem.y[idx], solve=solve, **common)
    X, y = problem.X[idx], problem.y[idx]
    if not solve:
        return LogisticRegression(X=X, y=y, **common)
    X64, y64 = X.detach().cpu().double(), y.detach().cpu().double()
    x = solve_logistic(X64.numpy(), y64.numpy(), problem.reg, what=name)
    xt = torch.from_numpy(x)
    f_star = float(_logistic_loss(xt, X64, y64, problem.reg))
    W_star = xt.reshape(problem.m, problem.n).to(dtype=problem.dtype, device=problem.device)
    return LogisticRegression(X=X, y=y, W_star=W_star, f_star=f_star, **common)


def _weighted_L(problem, rows: torch.Tensor, omega: torch.Tensor) -> float:
    """λ_max(Σ_i ω_i x_i x_iᵀ) times the problem's curvature factor, + its regulariser's."""
    R = rows.detach().cpu().double() * omega.sqrt()[:, None]
    N, d = R.shape
    G = R.T @ R if d <= N else R @ R.T
    lam = float(torch.linalg.eigvalsh(G)[-1])
    if isinstance(problem, LinearRegression):
        return lam + 2 * problem.reg
    if isinstance(problem, LogisticRegression):
        return lam / 4 + problem.reg
    return lam / 2 + problem.reg


def _logistic_loss(x, X, y, reg):
    """The weighted logistic loss Σ_i ω_i log(1 + exp(−y_i x_iᵀx)) + (reg/2)‖x‖² (ω = 1/N)."""
    return torch.nn.functional.softplus(-y * (X @ x)).mean() + 0.5 * reg * (x @ x)


def _uniform_loss(problem, W_star, rows, target, parts) -> float:
    """(1/M) Σ_l f_l(W*) in float64 on the CPU, with the problem class's own formula."""
    rows, target = rows.detach().cpu().double(), target.detach().cpu()
    losses = []
    for part in parts:
        X, y = rows[part], target[part]
        if isinstance(problem, LogisticRegression):
            losses.append(_logistic_loss(W_star.reshape(-1), X, y.double(), problem.reg))
        else:
            client = SoftmaxRegression(
                m=problem.m, n=problem.n, W0=W_star, X=X, y=y, reg=problem.reg, solve=False
            )
            losses.append(client.loss(W_star))
    return float(torch.stack(losses).mean())


def _solve_weighted(problem, rows, target, omega) -> np.ndarray:
    """argmin of Σ_i ω_i ℓ_i(x) + (reg/2)‖x‖² as vec(W), float64 (logistic or softmax)."""
    X = rows.detach().cpu().double().numpy()
    w = omega.numpy()
    if isinstance(problem, SoftmaxRegression):
        y = target.detach().cpu().numpy()
        return solve_softmax(X, y, problem.m, problem.reg, weights=w, what=f"split {problem.name}")
    return _solve_weighted_logistic(X, target.detach().cpu().double().numpy(), w, problem.reg)


def _solve_weighted_logistic(X, y, omega, reg, *, tol: float = 1e-12) -> np.ndarray:
    """L-BFGS-B warm start, then damped Newton with the exact Hessian, to ‖∇‖ ≤ ``tol``."""
    from scipy.special import expit

    d = X.shape[1]

    def fun(x):
        margins = y * (X @ x)
        f = omega @ np.logaddexp(0.0, -margins) + 0.5 * reg * (x @ x)
        g = X.T @ (omega * -y * expit(-margins)) + reg * x
        return f, g

    def newton_step(x, g):
        s = expit(y * (X @ x))
        H = (X.T * (omega * s * (1 - s))) @ X + reg * np.eye(d)
        return -np.linalg.solve(H, g)

    with one_blas_thread():
        x = newton(fun, newton_step, d, tol, 200, 200)
    if x is None:
        raise RuntimeError(f"split: could not solve the federated logistic problem to {tol:g}")
    return x
