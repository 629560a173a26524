"""Asynchronous federated learning at model scale: :class:`~lorakit.asynchronous.AsyncFL` on a
ModelProblem whose clients are the async clients.

:meth:`AsyncFL.run <lorakit.asynchronous.AsyncFL.run>` hands a :class:`~lorakit.adapters.ModelProblem`
to :class:`ModelAsync`, a subclass of the matrix simulator (:mod:`lorakit.asynchronous.clock`)
that keeps its virtual clock, compute-time model, crashes, staleness weights s(τ), buffer and
server rules *as written*, on the model's per-site weights W_l = W0_l + s_l·B_l·A_l held as a
:class:`PerSite` tuple (entrywise arithmetic), the model-scale analogue of the matrix engine's W:

* ``fedasync`` (Xie et al. 2019): W ← W + α·s(τ)·(W_start + ΔW − W), site by site;
* ``fedbuff`` (Nguyen et al. 2022): W ← W + η_s·Σ_i s(τ_i)ΔW_i / K;
* ``fedavg`` (McMahan et al. 2017): the synchronous mean of a cohort's ΔW.

A job trains from the global model it downloaded (stale by τ when it arrives), on its client's
rows, with the exact local gradient G_l = ∇_{W_l} f_c (every row of client c, in chunks of
``eval_batch_size``), as the matrix engine's ``local_grads``:

* ``adapter=None``: local SGD on every W_l, upload ΔW_l = W_l − W_start,l;
* ``adapter=r``: a fresh adapter per site (B_l = 0, A_l Kaiming-uniform from the ``init`` stream)
  trained on W_start,l + B_l A_l by the matrix rule (B ← B − η G Aᵀ, A ← A − η Bᵀ G, unscaled as at
  matrix scale); upload B_l and A_l, the server forms ΔW_l = B_l A_l.

Compression (spec async_fl.md §3–4): each uploaded matrix passes through ``compressor`` site by
site. A :class:`~lorakit.lowrank.LowRank` (PCA/QRCP/CUR) approximates each (m_l × n_l) update at
rank k_l = min(k, m_l, n_l) — the paper's own clipping, k = min(10, rank) (spec §3.6) — so a rank
≥ every site's size leaves the update unchanged; its bytes are ``payload_shape(m_l, n_l)``
(its ``shape`` field is ignored: every site has its own).

Conventions:

* The objective is f = (1/M) Σ_c f_c (f_c the mean loss of client c), the matrix engine's
  ``loss``; ``loss`` and ``grad_norm_sq`` = Σ_l ‖∇_{W_l} f‖² are evaluated on every row; ``gap``
  is NaN. The clock does not depend on the problem: a model run has the matrix run's event times.
* To evaluate f at per-site weights W the model's base weights are set to W_l with a zero adapter
  swapped in (so LoRA dropout plays no part), then restored: the model is unchanged during a run.
* A candidate global model is checked whole before it replaces the old one: any non-finite entry
  in any site, or an exploding loss, raises :class:`~lorakit.chain.DivergenceError` and the
  global model keeps its previous value (all-or-nothing).
* Every seed starts from :meth:`ModelProblem.reset`; afterwards the model holds the last seed's
  global model merged into its base weights with a zero adapter product (B = 0), as
  :mod:`lorakit.adapters.chain` leaves it — also after a divergence (the last good model).
* ``sigma``: noise with entries N(0, σ²/D), D = Σ_l m_l n_l, on every G_l (``noise`` stream).
* Memory: every pending job holds its W_start and ΔW, two copies of the adapted weights.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from .._validation import check_int
from ..asynchronous.clock import AsyncFL, _Sim
from ..divergence import DivergenceError, restored_note
from ..lowrank import LowRank
from ..progress import bar as progress_bar
from ..sketches import kaiming_uniform
from .grads import PerSite, at_weights, model_rng
from .problem import ModelProblem

__all__ = ["ModelAsync", "PerSite", "check_model_async"]


def _objective_batches(problem: ModelProblem, weights):
    """Every client's rows in chunks, client v weighted by ``weights[v]``: Σ_v w_v f_v."""
    size = problem.eval_batch_size
    for v, w in enumerate(weights):
        rows = problem.indices(v)
        for start in range(0, rows.numel(), size):
            chunk = rows[start : start + size]
            yield problem.batch(chunk), float(w) * chunk.numel() / rows.numel()


def _weighted_grads(problem: ModelProblem, batches, inputs: list) -> tuple[float, list]:
    """(Σ_c w_c f(batch_c), its gradient with respect to ``inputs``), one chunk at a time."""
    total, grads = 0.0, None
    with torch.enable_grad():
        for batch, w in batches:
            loss = problem.objective(batch)
            g = torch.autograd.grad(loss * w, inputs)
            total += w * float(loss.detach())
            grads = list(g) if grads is None else [a + b for a, b in zip(grads, g, strict=True)]
    return total, grads


def check_model_async(cfg: AsyncFL, problem: ModelProblem) -> None:
    """Check an AsyncFL configuration against the model's clients and sites."""
    if problem.clients is None:
        raise ValueError(
            "problem has no clients: the async clients are the problem's clients; split it first "
            "(problem.split(M))"
        )
    if cfg.adapter is not None:
        for site in problem.sites:
            check_int(f"adapter (site {site.name})", cfg.adapter, low=1, high=min(site.shape))


class ModelAsync(_Sim):
    """One seeded asynchronous run on a model; ``W`` is the global :class:`PerSite` model."""

    def __init__(self, cfg: AsyncFL, problem: ModelProblem, seed: int, *, progress=False):
        problem.reset()
        self.sites = problem.sites
        self.D = sum(m * n for m, n in (site.shape for site in self.sites))
        self.progress, self.bar, self.cache = progress, None, None
        super().__init__(cfg, problem, seed)

    # -- the model at given per-site weights ---------------------------------------------------
    @contextmanager
    def at(self, W: PerSite):
        """The model computing W_l at every site (base ← W_l, zero adapter); restored after."""
        with at_weights(self.sites, W), model_rng(self.streams, self.p.device):
            yield

    def w_grads(self, W: PerSite, batches) -> tuple[float, PerSite]:
        """(Σ_c w_c f(batch_c), ∇_{W_l} of it per site) at W, by autograd on the base weights."""
        with self.at(W):
            for site in self.sites:
                site.track_W(True)
            try:
                loss, g = _weighted_grads(self.p, batches, [site.base for site in self.sites])
            finally:
                for site in self.sites:
                    site.track_W(False)
        return loss, PerSite(
            x.T if site.transposed else x for site, x in zip(self.sites, g, strict=True)
        )

    # -- hooks of the matrix simulator ---------------------------------------------------------
    def start(self) -> PerSite:
        return PerSite(site.W().clone() for site in self.sites)

    def evaluate(self, W: PerSite) -> float:
        """f(W) (NaN if any site has a non-finite entry); its gradient norm² is kept for the row."""
        if not W.finite():
            return math.nan
        M = self.p.M
        loss, G = self.w_grads(W, _objective_batches(self.p, [1.0 / M] * M))
        self.cache = (W, loss, sum(float(g.square().sum()) for g in G))
        return loss

    def measure(self) -> tuple[float, float]:
        if self.cache is None or self.cache[0] is not self.W:
            self.evaluate(self.W)
        return self.cache[1], self.cache[2]

    def grad(self, W: PerSite, client: int) -> PerSite:
        """∇_W f_c on every row of client c, plus N(0, σ²/D) noise per entry."""
        _, G = self.w_grads(W, self.p.chunks(client))
        if not self.cfg.sigma:
            return G
        std = self.cfg.sigma / math.sqrt(self.D)
        gen = self.streams["noise"]
        return PerSite(
            g + std * torch.randn(g.shape, generator=gen, dtype=g.dtype).to(g.device) for g in G
        )

    def compress_one(self, X: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One uploaded matrix through the compressor (LowRank at rank min(k, m, n)); its bytes."""
        cfg, comp = self.cfg, self.cfg.compressor
        if isinstance(comp, LowRank):
            comp = LowRank(comp.method, min(comp.rank, *X.shape))
            pay = comp.payload_shape(*X.shape)
        else:
            pay = comp.payload(X.numel())
        sent = pay.floats * cfg.bytes_per_float + pay.indices * cfg.bytes_per_index
        return comp(X, self.streams["compression"]), float(sent)

    def compress(self, X: PerSite) -> tuple[PerSite, float]:
        out = [self.compress_one(x) for x in X]
        return PerSite(x for x, _ in out), sum(b for _, b in out)

    def local_train(self, W_start: PerSite, client: int) -> tuple[PerSite, float]:
        """The client's job: ΔW per site (full, or B_l A_l of its adapters), compressed; bytes."""
        cfg, lr = self.cfg, self.cfg.lr
        with torch.no_grad():
            if cfg.adapter is None:
                W = W_start
                for _ in range(cfg.local_steps):
                    W = W - lr * self.grad(W, client)
                return self.compress(W - W_start)
            r, gen = cfg.adapter, self.streams["init"]
            A = [
                kaiming_uniform().sample((r, w.shape[1]), gen, side="right", dtype=w.dtype).to(w)
                for w in W_start
            ]
            B = [torch.zeros(w.shape[0], r).to(w) for w in W_start]
            for _ in range(cfg.local_steps):
                G = self.grad(
                    PerSite(w + b @ a for w, b, a in zip(W_start, B, A, strict=True)), client
                )
                B, A = (
                    [b - lr * (g @ a.T) for b, a, g in zip(B, A, G, strict=True)],
                    [a - lr * (b.T @ g) for b, a, g in zip(B, A, G, strict=True)],
                )
            sent = 0.0
            delta = []
            for b, a in zip(B, A, strict=True):
                (b, sent_b), (a, sent_a) = self.compress_one(b), self.compress_one(a)
                delta.append(b @ a)
                sent += sent_b + sent_a
            return PerSite(delta), sent

    def log(self, stale: list[int]) -> None:
        super().log(stale)
        if self.bar is not None and self.version > 0:
            self.bar.update()

    # -- the loop ------------------------------------------------------------------------------
    def run(self, updates, time_budget) -> None:
        desc = f"{self.cfg.method} seed {self.seed}"
        with progress_bar(enabled=self.progress, total=updates, desc=desc) as bar:
            self.bar = bar
            try:
                super().run(updates, time_budget)
            except DivergenceError as error:  # W is the last accepted (checked) global model
                error.append(restored_note("server update", self.version))
                raise
            finally:
                self.bar = None
                self.write_back()

    def write_back(self) -> None:
        """The global model merged into the base weights (W0_l ← W_l, B_l = 0)."""
        with torch.no_grad():
            for site, W in zip(self.sites, self.W, strict=True):
                site.W0 = W
                site.B.zero_()
