"""The matrix-problem interface every algorithm is written against (README "Architecture",
principle 2).

A problem is a function f of one weight matrix W (m×n) with known constants. Methods only call
``loss`` and ``grad``; theory checks read ``L``, ``mu``, ``f_star`` and friends.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from .._validation import (
    ArgumentTypeError,
    check_device,
    check_device_match,
    check_dtype,
    check_int,
    check_shape,
)

__all__ = ["MatrixProblem"]


@dataclass(eq=False)
class MatrixProblem:
    """Base class: f(W) for W ∈ R^{m×n}, with the constants the theorems use.

    Subclasses implement :meth:`loss` and :meth:`grad`. Both accept ``W`` with any leading batch
    dimensions (``(..., m, n)``) and return ``(...)`` and ``(..., m, n)``, so Monte Carlo over
    sketches and many simulated clients evaluate in one call.

    Attributes
    ----------
    m, n : the weight's shape (peft convention: m = out features, n = in features).
    W0 : the pre-trained starting point W^0.
    L : smoothness constant of f (Assumption 3.1 / Assumption 3); for non-smooth problems, None.
    mu : PL constant (Assumption 5.4 / 6) where one exists, else None.
    f_star : inf f where known, else None.
    f_lower : a valid lower bound on f (used for Δ^0 when f_star is unknown).
    W_star : a minimiser where known, else None.
    L0 : Lipschitz constant of f (Assumption 9) for non-smooth problems, else None.
    n_samples : N for finite sums f = (1/N) Σ f_i (minibatch gradients allowed), else None.
    smooth : False for problems whose ``grad`` returns a subgradient.
    """

    m: int
    n: int
    W0: torch.Tensor
    L: float | None = None
    mu: float | None = None
    f_star: float | None = None
    f_lower: float | None = None
    W_star: torch.Tensor | None = None
    L0: float | None = None
    n_samples: int | None = None
    smooth: bool = True
    name: str = field(default="problem")

    def __post_init__(self):
        self.m = check_int("m", self.m, low=1)
        self.n = check_int("n", self.n, low=1)
        if not isinstance(self.W0, torch.Tensor):
            raise ArgumentTypeError(f"W0 must be a torch.Tensor, got {type(self.W0).__name__}")
        check_dtype("W0.dtype", self.W0.dtype)
        check_device_match(check_device("W0.device", self.W0.device), W_star=self.W_star)
        check_shape("W0", self.W0, (self.m, self.n))
        if self.W_star is not None:
            check_shape("W_star", self.W_star, (self.m, self.n))
        if self.f_lower is None and self.f_star is not None:
            self.f_lower = self.f_star

    # -- interface -----------------------------------------------------------------------------
    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """f(W), shape ``W.shape[:-2]``."""
        raise NotImplementedError

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """∇f(W) (a subgradient if not smooth); with ``idx``, the minibatch mean of ∇f_i, i ∈ idx."""
        raise NotImplementedError

    # -- the problem protocol (lorakit.problems.protocol): a matrix problem is one site ---------
    #: Any rank r ≤ min(m, n) fits; the scaling is the method's α/r; evaluation is batched.
    ranks = None
    scalings = None
    batched = True
    #: A stack of clients goes through ``local_grads`` (``batched``), not ``factor_grads``.
    batched_factors = False
    M = 1
    #: No LoRA dropout: ∇_W f is also the factors' gradient through W = W0 + s·B·A.
    adapter_dropout = None
    #: A run's result is its frame: ``commit`` writes nothing the caller keeps.
    stateful = False

    @property
    def shapes(self) -> tuple[tuple[int, int]]:
        return ((self.m, self.n),)

    def tree(self, mats):
        """The tree of one site's matrix: the matrix itself."""
        (only,) = mats
        return only

    def reset(self) -> None:
        """Nothing to reset: a matrix problem holds no state."""

    def start(self) -> torch.Tensor:
        """W^0 (a copy)."""
        return self.W0.clone()

    def seeded(self, streams):
        """A matrix problem draws nothing of its own."""
        return nullcontext()

    def factor_loss(self, W0, B, A, scalings) -> torch.Tensor:
        """f(W0 + s·B·A)."""
        return self.loss(W0 + self.tree(scalings) * (B @ A))

    def factor_grads(self, W0, B, A, scalings, client=None, idx=None):
        """(∇_B f, ∇_A f) at W = W0 + s·B·A by the chain rule: s·G·Aᵀ and s·BᵀG, G = ∇_W f
        (of client ``client``'s f_c when given; its rows ``idx`` of a finite sum).

        B and A may carry leading batch dimensions (then so does W0 or it broadcasts).
        """
        s = self.tree(scalings)
        W = W0 + s * (B @ A)
        G = self.grad(W, idx) if client is None else self.clients[client].grad(W, idx)
        return s * (G @ A.mT), s * (B.mT @ G)

    def commit(self, W, B=None, A=None) -> None:
        """Nothing to write: a matrix run's result is its frame."""

    # -- conveniences --------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.W0.dtype

    @property
    def device(self) -> torch.device:
        return self.W0.device

    def gap(self, W: torch.Tensor) -> torch.Tensor | None:
        """f(W) − f*, or None when f* is unknown."""
        return None if self.f_star is None else self.loss(W) - self.f_star

    def _check_idx(self, idx: torch.Tensor | None) -> None:
        if idx is not None and self.n_samples is None:
            raise ValueError(f"{self.name} is not a finite sum: idx must be None")
