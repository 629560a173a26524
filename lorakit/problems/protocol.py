"""The problem protocol every engine is written against (README "Architecture", principle 2).

An engine sees a problem only through these members, over per-site weights (:mod:`lorakit.tree`):
a :class:`~lorakit.problems.base.MatrixProblem` is a one-site problem (a bare tensor), a peft model
(:class:`lorakit.adapters.ModelProblem`) an N-site one (a :class:`~lorakit.tree.PerSite`).

``name``, ``dtype``, ``device``, ``f_star`` (None when unknown), ``n_samples`` (None: not a finite
sum), ``M`` (clients; 1 without a split), ``shapes`` ((m_l, n_l) per site, in site order)
``ranks``, ``scalings``  each site's fixed LoRA rank and scaling (peft's r and α/r or α/√r), or
                  None: any rank fits, the engine's α/r (:func:`site_scalings` applies either)
``batched``       ``local_grads`` takes a stack of clients in one tensor operation (the
                  many-client fast path); False: it loops (a model)
``batched_factors``  ``factor_grads`` takes a stack of clients (``client`` a 1-D tensor, B and A
                  stacked, per-client scalings and ``idx`` lists) in one pass of a model
                  (:mod:`lorakit.adapters.cohort`); False at matrix scale, where stacks go through
                  ``local_grads`` (:func:`lorakit.local.factor_grads` picks the route)
``tree(mats)``     the tree of one matrix per site (a bare tensor at matrix scale)
``client_size(c)``  client c's number of rows (None when it is not a finite sum)
``reset()``, ``start()``  back to the state as built (every seed starts there); W^0 as a tree
``seeded(streams)``  a context drawing the problem's own randomness (a model's dropout) from the
                  run's ``model`` stream
``loss(W)``, ``grad(W, idx=None)``         f and ∇_W f (rows ``idx`` of a finite sum)
``client_losses(W)``                       (f_c(W))_c, a length-M tensor
``local_grads(W, clients, idx=None)``      ∇f_{clients[c]}(W[c]) for a stack of per-client trees
                  (a ``batched`` problem also takes ``overwrite=True``: W is the caller's scratch,
                  and the gradients may be written into it)
``factor_grads(W0, B, A, scalings, client=None, idx=None)``  (∇_B f, ∇_A f) at W = W0 + s·B·A:
                  s·G·Aᵀ and s·BᵀG (RAC-LoRA eqs. (3)–(4)) at matrix scale, autograd through peft
                  at model scale (so LoRA dropout stays right)
``factor_loss(W0, B, A, scalings)``  f at W0 + s·B·A as the problem computes it (a model: through
                  the adapter, equal to its own loss to the last digit)
``weighted_f_star(weights)``  inf Σ_c w_c f_c where known in closed form, else None (RW-LoRA's f*_π)
``stateful``      a run changes the problem (a model holds its weights; a diverged run says what
                  it put back)
``adapter_dropout``  the first site whose LoRA dropout is active (the W-space updates refuse it),
                  or None
``commit(W, B=None, A=None)``  write a run's result back: nothing at matrix scale; a model's base
                  weights ← W, its adapter ← (B, A) where a pattern keeps the factors
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from .._validation import ArgumentTypeError, check_int

__all__ = ["Problem", "check_problem_protocol", "site_scalings"]


@runtime_checkable
class Problem(Protocol):
    """A function of per-site weights, as the engines see it (module docstring)."""

    name: str
    shapes: tuple
    ranks: tuple | None
    scalings: tuple | None
    batched: bool

    def tree(self, mats): ...
    def reset(self) -> None: ...
    def start(self): ...
    def seeded(self, streams): ...
    def loss(self, W): ...
    def grad(self, W, idx=None): ...
    def factor_grads(self, W0, B, A, scalings, client=None, idx=None): ...
    def commit(self, W, B=None, A=None) -> None: ...


def check_problem_protocol(problem, *, clients: bool = False, name: str = "problem"):
    """``problem`` if it implements :class:`Problem` (and has clients when ``clients``)."""
    if not isinstance(problem, Problem) or (clients and not hasattr(problem, "client_losses")):
        model = "lorakit.adapters.ModelProblem"
        what = (
            f"a FederatedProblem or a {model} with clients"
            if clients
            else f"a MatrixProblem from lorakit.problems or a {model} (a lorakit problem)"
        )
        raise ArgumentTypeError(f"{name} must be {what}, got {type(problem).__name__}")
    if clients and getattr(problem, "clients", None) is None:
        raise ValueError(
            f"{name} has no clients, and this method needs clients (they are the problem's "
            "clients): split it first with problem.split(M)"
        )
    return problem


def site_scalings(problem, rank: int, alpha: float | None) -> tuple[float, ...]:
    """Each site's LoRA scaling for rank ``rank`` and scaling ``alpha``: the one place α/r is
    applied. A problem's fixed scalings (a peft model's s_l, α/r or α/√r with rsLoRA) are kept and
    ``alpha``, if given, must agree; else s = α/r with α = r by default (s = 1, the papers'
    unscaled factors). ``rank`` must fit every site (r ≤ min(m_l, n_l)) and equal a fixed rank."""
    check_int("rank", rank, low=1)
    fixed = problem.ranks or (None,) * len(problem.shapes)
    for l, ((m, n), r_l) in enumerate(zip(problem.shapes, fixed, strict=True)):
        where = "" if len(problem.shapes) == 1 else f" of site {l}"
        if rank > min(m, n):
            raise ValueError(f"rank = {rank} exceeds min(m, n) = {min(m, n)}{where} ({m}×{n})")
        if r_l is not None and r_l != rank:
            raise ValueError(
                f"rank = {rank} differs from the peft adapter rank r = {r_l}{where}: use "
                f"rank={r_l} or build the adapter with LoraConfig(r={rank})"
            )
    if problem.scalings is None:
        return ((alpha if alpha is not None else rank) / rank,) * len(problem.shapes)
    if alpha is not None:
        for l, s in enumerate(problem.scalings):
            if not math.isclose(alpha / rank, s, rel_tol=1e-9):
                raise ValueError(
                    f"alpha = {alpha:g} gives the scaling alpha/r = {alpha / rank:g}, but site {l} "
                    f"has the peft scaling s = {s:g}: leave alpha unset (each site's own scaling "
                    "is used) or set lora_alpha in the LoraConfig"
                )
    return tuple(problem.scalings)
