"""Federated problems f = (1/M) Σ_l f_l over M clients (Bernoulli-LoRA eq. (4); RAC-LoRA App. F).

A :class:`FederatedProblem` stacks M client problems of one shape. It is itself a finite sum with
``n_samples = M`` (``grad(W, idx)`` is the mean of the clients' gradients over ``idx``), so SGD,
random reshuffling and PAGE run on it unchanged, and the federated estimators of
:mod:`lorakit.estimators` (``qgd``, ``marina``, ``ef21``) read the per-client gradients from
:meth:`FederatedProblem.client_grads`.

Constants (Bernoulli-LoRA Assumptions 3, 11; RAC-LoRA Assumption F.1):

* ``L`` — every f_l is L-smooth: the *maximum* of the clients' constants, which the proofs of
  Lemmas 15–17 use (‖∇f_l‖² ≤ 2L(f_l − f_l*)); ``L_f`` is the smoothness constant of f itself;
* ``mu`` — the PL constant of f; ``f_star`` = inf f; ``client_f_star`` = (f_l*)_l;
* ``delta_star`` — Δ* = f* − (1/M) Σ_l f_l* (eq. (124)), ≥ 0;
* ``sigma2`` — (1/M) Σ_l ‖∇f_l(W) − ∇f(W)‖² when it does not depend on W, else None.

When every client is a :class:`~lorakit.problems.quadratics.DiagonalQuadratic`,
f_l(W) = ½⟨W − C_l, Λ_l ∘ (W − C_l)⟩ + c_l, the clients are stored as stacked tensors (Λ, C, c),
every evaluation is one tensor operation over the client axis, and the constants are closed form:
W* = (Σ_l Λ_l ∘ C_l)/(Σ_l Λ_l) entry-wise, f* = f(W*), L_f = max Λ̄, μ = min Λ̄ with Λ̄ = mean Λ_l;
if all Λ_l are equal, ∇f_l − ∇f = Λ ∘ (C̄ − C_l) and σ² is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .._validation import check_choice, check_device, check_dtype, check_int, check_real
from ..rng import Streams
from .base import MatrixProblem
from .quadratics import DiagonalQuadratic, check_W, matrix_arg

__all__ = ["FederatedProblem", "heterogeneous_quadratics"]

CURVATURES = ("shared", "heterogeneous")
_CACHE_BYTES = 2**20  # a group of clients' (m×n) temporaries in the loss (a typical L2 cache)
DELTA_M_READINGS = ("printed", "corrected")


@dataclass(eq=False)
class FederatedProblem(MatrixProblem):
    """f(W) = (1/M) Σ_l f_l(W) over ``clients`` (M problems of shape m×n, one dtype and device).

    Build it with :meth:`from_clients` (or give m, n, W0 and ``clients``). Unset constants are
    filled in: ``L`` = max_l L_l, ``n_samples`` = M, and, for diagonal-quadratic clients, W*, f*,
    ``L_f``, μ and σ² in closed form (module docstring). ``client_f_star`` comes from the clients'
    ``f_star``; ``delta_star`` = f* − mean f_l* whenever both are known.

    Batched evaluation: ``loss``/``grad`` take W of shape (..., m, n); ``client_losses`` returns
    (..., M) and ``client_grads`` (..., M, m, n). Diagonal-quadratic clients are stacked tensors
    (module docstring); clients whose class has a ``stacked(clients)`` classmethod
    (:meth:`~lorakit.problems.softmax.SoftmaxRegression.stacked`) are evaluated through the
    object it returns (``losses(W)``, ``grads(W, clients)``) for one W of shape (m, n) and in
    ``local_grads``, so a round's logging and a cohort's local steps are one pass over the
    clients; otherwise, and for W with leading batch dimensions, client by client.
    """

    clients: Sequence[MatrixProblem] = ()
    L_f: float | None = None
    client_f_star: torch.Tensor | None = None
    delta_star: float | None = None
    sigma2: float | None = None
    name: str = field(default="federated")
    #: Evaluate the clients in one pass where their class can stack them (``stacked``); False
    #: keeps the client-by-client loop (the reference path the benchmarks compare against).
    batch_clients: bool = True

    def __post_init__(self):
        clients = tuple(self.clients)
        if not clients:
            raise ValueError("clients must be a non-empty sequence of MatrixProblem")
        for l, c in enumerate(clients):
            if not isinstance(c, MatrixProblem):
                raise ValueError(f"clients[{l}] must be a MatrixProblem, got {type(c)}")
            if (c.m, c.n) != (self.m, self.n):
                raise ValueError(
                    f"clients[{l}] has shape ({c.m}, {c.n}); every client must have shape "
                    f"({self.m}, {self.n})"
                )
            if c.dtype != self.W0.dtype or c.device != self.W0.device:
                raise ValueError(
                    f"clients[{l}] lives in {c.dtype} on {c.device}; W0 in {self.W0.dtype} on "
                    f"{self.W0.device}"
                )
        self.clients = clients
        self.smooth = all(c.smooth for c in clients)
        if self.n_samples is None:
            self.n_samples = len(clients)
        elif self.n_samples != len(clients):
            raise ValueError(f"n_samples must equal M = {len(clients)}, got {self.n_samples}")
        self._stack = None
        if all(isinstance(c, DiagonalQuadratic) for c in clients):
            lam = clients[0].curvature
            if all(torch.equal(c.curvature, lam) for c in clients):
                # One Λ for all: a stride-0 view (M, m, n) keeps the reads of a cohort's
                # gradient in cache; the same numbers as a stack of copies.
                lam = lam.expand(len(clients), *lam.shape)
            else:
                lam = torch.stack([c.curvature for c in clients])
            self._stack = (
                lam,  # Λ (M, m, n)
                torch.stack([c.W_star for c in clients]),  # C (M, m, n)
                torch.tensor([c.offset for c in clients], dtype=self.dtype, device=self.device),
            )
        if not isinstance(self.batch_clients, bool):
            raise ValueError(f"batch_clients must be True or False, got {self.batch_clients!r}")
        # Clients whose class can stack them (SoftmaxRegression.stacked) are evaluated in one
        # batched pass too; the hook is duck-typed so this module imports no client class.
        self._batch = None
        stacked = getattr(type(clients[0]), "stacked", None)
        if self.batch_clients and self._stack is None and stacked is not None:
            if all(type(c) is type(clients[0]) for c in clients):
                self._batch = stacked(clients)
        super().__post_init__()
        if self.L is None and all(c.L is not None for c in clients):
            self.L = max(float(c.L) for c in clients)
        if self.client_f_star is None and all(c.f_star is not None for c in clients):
            self.client_f_star = torch.tensor(
                [float(c.f_star) for c in clients], dtype=torch.float64
            )
        if self._stack is not None:
            self._closed_forms()
        if self.f_lower is None and self.f_star is not None:
            self.f_lower = self.f_star
        if self.delta_star is None and self.f_star is not None and self.client_f_star is not None:
            self.delta_star = float(self.f_star) - float(self.client_f_star.mean())

    @classmethod
    def from_clients(
        cls,
        clients: Sequence[MatrixProblem],
        *,
        W0: torch.Tensor | None = None,
        name: str = "federated",
        **constants,
    ) -> FederatedProblem:
        """The federated average of ``clients``; W0 defaults to the first client's W0."""
        clients = tuple(clients)
        if not clients or not isinstance(clients[0], MatrixProblem):
            raise ValueError("clients must be a non-empty sequence of MatrixProblem")
        first = clients[0]
        W0 = first.W0.clone() if W0 is None else W0
        W0 = matrix_arg("W0", W0, first.m, first.n, first.dtype, first.device)
        return cls(m=first.m, n=first.n, W0=W0, clients=clients, name=name, **constants)

    def _closed_forms(self) -> None:
        lam, C, _ = self._stack
        lam_bar = lam.mean(dim=0)
        total = lam.sum(dim=0)
        if self.W_star is None:
            num = (lam * C).sum(dim=0)
            # Entries where every Λ_l vanishes do not enter f: any value minimises; take 0.
            self.W_star = torch.where(total > 0, num / torch.where(total > 0, total, 1.0), 0.0)
        if self.f_star is None:
            self.f_star = float(self.loss(self.W_star))
        if self.L_f is None:
            self.L_f = float(lam_bar.max())
        if self.mu is None and float(lam_bar.min()) > 0:
            self.mu = float(lam_bar.min())
        if self.sigma2 is None and bool((lam == lam[:1]).all()):
            # ∇f_l − ∇f = Λ ∘ (C̄ − C_l), independent of W.
            dev = lam * (C.mean(dim=0) - C)
            self.sigma2 = float((dev * dev).sum(dim=(-2, -1)).mean())

    # -- evaluation ----------------------------------------------------------------------------
    @property
    def M(self) -> int:
        """The number of clients."""
        return len(self.clients)

    def client_size(self, client: int) -> int | None:
        """n_samples of client ``client`` (None when it is not a finite sum)."""
        return self.clients[client].n_samples

    def client_losses(self, W: torch.Tensor) -> torch.Tensor:
        """(f_l(W))_l, shape (..., M)."""
        check_W(W, self.m, self.n)
        if self._stack is not None:
            lam, C, c = self._stack
            if W.dim() > 2:
                return 0.5 * _weighted_squares(lam, W.unsqueeze(-3) - C) + c
            # One W: clients in groups whose temporaries stay in cache (the same numbers).
            step = max(1, _CACHE_BYTES // (C[0].numel() * C.element_size()))
            out = C.new_empty(self.M, dtype=torch.promote_types(W.dtype, C.dtype))
            for i in range(0, self.M, step):
                out[i : i + step] = _weighted_squares(lam[i : i + step], W - C[i : i + step])
            return 0.5 * out + c
        if self._batch is not None and W.dim() == 2:
            return self._batch.losses(W)
        return torch.stack([cl.loss(W) for cl in self.clients], dim=-1)

    def client_grads(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(∇f_l(W))_l stacked, shape (..., M, m, n); with ``idx``, only clients l ∈ idx."""
        check_W(W, self.m, self.n)
        if self._stack is not None:
            lam, C, _ = self._stack
            if idx is not None:
                lam, C = lam[idx], C[idx]
            return (W.unsqueeze(-3) - C).mul_(lam)  # in place: one (M, m, n) temporary, not two
        if self._batch is not None and W.dim() == 2:
            return self._batch.grads(W, None if idx is None else torch.as_tensor(idx).flatten())
        clients = self.clients if idx is None else [self.clients[int(i)] for i in idx]
        return torch.stack([cl.grad(W) for cl in clients], dim=-3)

    def local_grads(
        self,
        W: torch.Tensor,
        clients: torch.Tensor,
        idx: list | None = None,
        *,
        overwrite: bool = False,
    ) -> torch.Tensor:
        """∇f_{clients[c]}(W[c]) for a stack of per-client weights W of shape (C, m, n).

        This is what a cohort's local steps evaluate: each client at its own iterate. ``idx``
        optionally gives each client's minibatch (a list of index tensors, for finite-sum clients).
        ``overwrite=True`` says W is the caller's scratch: diagonal-quadratic clients write the
        gradients into it (the same numbers, one (C, m, n) temporary fewer per local step).
        """
        check_W(W, self.m, self.n)
        if self._stack is not None and idx is None:
            lam, C, _ = self._stack
            first, count = int(clients[0]), clients.numel()
            if bool((clients == torch.arange(first, first + count, device=clients.device)).all()):
                lam, C = lam[first : first + count], C[first : first + count]  # views, no copy
            else:
                lam, C = lam[clients], C[clients]
            inplace = overwrite and W.dtype == torch.promote_types(W.dtype, C.dtype)
            return (W.sub_(C) if inplace else W - C).mul_(lam)
        if self._batch is not None and idx is None and W.dim() == 3:
            return self._batch.grads(W, clients)
        return torch.stack(
            [
                self.clients[int(l)].grad(W[c], None if idx is None else idx[c])
                for c, l in enumerate(clients)
            ]
        )

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """f(W) = (1/M) Σ_l f_l(W)."""
        return self.client_losses(W).mean(dim=-1)

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """∇f(W) = mean of ``client_grads(W)``; with ``idx``, the mean over the clients in idx."""
        self._check_idx(idx)
        return self.client_grads(W, idx).mean(dim=-3)

    def weighted_f_star(self, weights) -> float | None:
        """min_W Σ_l w_l f_l(W) for client weights w (summing to 1; RW-LoRA eq. (5) with w = π):
        ``f_star`` for uniform w; for diagonal-quadratic clients the closed form at
        W*_w = Σ_l w_l Λ_l ∘ C_l / Σ_l w_l Λ_l (entry-wise); None when unknown."""
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if torch.allclose(w, torch.full_like(w, 1.0 / self.M), rtol=0.0, atol=1e-15):
            return self.f_star
        if self._stack is None:
            return None
        lam, C, _ = self._stack
        w = w.to(lam)[:, None, None]
        total, num = (w * lam).sum(0), (w * lam * C).sum(0)
        W_star = torch.where(total > 0, num / torch.where(total > 0, total, 1.0), 0.0)
        return float((self.client_losses(W_star) * w.flatten()).sum())

    # -- RAC-LoRA Assumption F.1 ---------------------------------------------------------------
    def delta_m_star(self, reading: str = "printed") -> torch.Tensor:
        """Δ_m* of RAC-LoRA Assumption F.1 for each client m, shape (M,), in both readings.

        Each client here is a *single* component (N = 1, f_{m,1} = f_m), so
        (1/N) Σ_i f_{m,i}* = f_m*, and:

        * ``"printed"``: Δ_m* = f* − (1/N) Σ_i f_{m,i}* = f* − f_m*, as the paper prints it (with f*
          the global optimum). Its mean over clients is Δ*. Entries can be negative.
        * ``"corrected"``: Δ_m* = f_m* − (1/N) Σ_i f_{m,i}* = 0, the within-client dissimilarity the
          spec's note suspects was meant; with one component per client it vanishes.

        Clients that are themselves finite sums (``n_samples`` set) are refused: their
        components' optima are not known here.
        """
        check_choice("reading", reading, DELTA_M_READINGS)
        multi = [l for l, c in enumerate(self.clients) if c.n_samples is not None]
        if multi:
            raise ValueError(
                f"delta_m_star treats each client as one component, but clients {multi} are "
                "finite sums whose components' optima f_{m,i}* are unknown"
            )
        if self.client_f_star is None:
            raise ValueError(f"{self.name}: the clients' optima f_m* are unknown")
        if reading == "corrected":
            return torch.zeros(self.M, dtype=torch.float64)
        if self.f_star is None:
            raise ValueError(f"{self.name}: f* is unknown, so the printed Δ_m* is too")
        return float(self.f_star) - self.client_f_star


def _weighted_squares(lam: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """Σ_ij Λ_ij·diff_ij² per client, as ``(lam * diff * diff).sum`` with one temporary fewer."""
    return (lam * diff).mul_(diff).sum(dim=(-2, -1))


def _log_uniform_curvature(m: int, n: int, L: float, mu: float, gen) -> torch.Tensor:
    """Λ as in :func:`~lorakit.problems.quadratics.quadratic`: isotropic L if mu == L, else
    log-uniform entries on [mu, L] with one entry exactly mu and one exactly L (float64, CPU)."""
    if mu == L:
        return torch.full((m, n), L, dtype=torch.float64)
    u = torch.rand(m * n, generator=gen, dtype=torch.float64)
    lam = mu * (L / mu) ** u
    ends = torch.randperm(m * n, generator=gen)[:2]
    lam[ends[0]] = mu
    lam[ends[1]] = L
    return lam.reshape(m, n)


def heterogeneous_quadratics(
    M: int,
    m: int,
    n: int,
    *,
    L: float = 1.0,
    mu: float | None = None,
    spread: float = 1.0,
    curvature: str = "shared",
    W0: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> FederatedProblem:
    """M clients f_l(W) = ½ Σ_ij Λ_l,ij (W − C_l)_ij², f_l* = 0 (Bernoulli-LoRA §6 item 10(c);
    RAC-LoRA §5 item 10: heterogeneous quadratics with Δ* in closed form).

    Centres C_l = C + spread·Z_l, with C and Z_l standard normal; ``spread`` = 0 gives identical
    clients (Δ* = σ² = 0).

    * ``curvature="shared"``: every Λ_l = Λ, with Λ ≡ L when ``mu`` is None or equal to L, else
      log-uniform on [mu, L] with both endpoints present, exactly as :func:`quadratic` with the same
      ``seed`` draws it (so ``spread=0`` reproduces ``quadratic``: same Λ, same W* = C). Then
      ∇f_l − ∇f = Λ ∘ (C̄ − C_l) is constant and ``sigma2`` = (1/M) Σ_l ‖Λ ∘ (C̄ − C_l)‖² is exact;
      W* = C̄ and f* = Δ* = (1/M) Σ_l ½⟨Λ, (C̄ − C_l)²⟩.
    * ``curvature="heterogeneous"``: client l has its own Λ_l, log-uniform on [mu, L] with both
      endpoints present (needs mu < L and m·n ≥ 2); ``sigma2`` is None (the spread of the
      gradients depends on W).

    Closed forms: W* = (Σ_l Λ_l ∘ C_l)/(Σ_l Λ_l) entry-wise, f* = f(W*), f_l* = 0, Δ* = f*.
    Every client is L-smooth and mu-strongly convex (``L`` = L); ``mu`` and ``L_f`` are f's own
    constants, min and max of Λ̄ = mean Λ_l.

    Randomness, from :class:`lorakit.rng.Streams` ``(seed)``, drawn on the CPU in float64: C from
    ``"init"``, Λ (Λ_1, …, Λ_M in turn) from ``"data"``, the offsets Z from ``"noise"``. W0
    defaults to zeros.
    """
    M = check_int("M", M, low=1)
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    L = check_real("L", L, low=0.0, low_open=True)
    check_choice("curvature", curvature, CURVATURES)
    if mu is None:
        if curvature == "heterogeneous":
            raise ValueError("curvature='heterogeneous' needs mu in (0, L)")
        mu = L
    mu = check_real("mu", mu, low=0.0, high=L, low_open=True)
    if curvature == "heterogeneous" and mu == L:
        raise ValueError(f"curvature='heterogeneous' needs mu < L, got mu = L = {L:g}")
    if mu < L and m * n < 2:
        raise ValueError(f"mu < L needs m*n >= 2 entries (for mu and L), got m*n={m * n}")
    spread = check_real("spread", spread, low=0.0)
    seed = check_int("seed", seed, low=0)
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    device = torch.device(device)
    streams = Streams(seed)
    C = torch.randn(m, n, generator=streams["init"], dtype=torch.float64)
    if curvature == "shared":
        lam = _log_uniform_curvature(m, n, L, mu, streams["data"]).expand(M, m, n)
    else:
        lam = torch.stack([_log_uniform_curvature(m, n, L, mu, streams["data"]) for _ in range(M)])
    Z = torch.randn(M, m, n, generator=streams["noise"], dtype=torch.float64)
    centres = C + spread * Z
    W0 = matrix_arg("W0", W0, m, n, dtype, device)
    kw = {"dtype": dtype, "device": device}
    clients = [
        DiagonalQuadratic(
            m=m,
            n=n,
            W0=W0,
            W_star=centres[l].to(**kw),
            curvature=lam[l].to(**kw),
            offset=0.0,
            L=L,
            mu=mu,
            f_star=0.0,
            name=f"client{l}",
        )
        for l in range(M)
    ]
    return FederatedProblem.from_clients(clients, W0=W0, name="heterogeneous_quadratics")
