"""Server rounds of federated LoRA at matrix scale: FSLoRA and the baselines of the same shape.

The server holds one rank-r adapter (B ∈ ℝ^{m×r}, A ∈ ℝ^{r×n}) over a frozen W0. Each round
(FSLoRA Algorithm 1):

1. a cohort of clients is sampled (all of them by default: the paper's full participation);
2. client i gets an index set I_i of k_i components and the sketch S_i = c_i·diag(1_{I_i}):
   FSLoRA draws I_i uniformly with c_i = r/k_i (Definition 3.1, so E[S] = I); HeteroLoRA takes
   the leading k_i components with c_i = 1 (zero-padding, spec §3.2); k_i = r is FedIT;
3. each client runs H local SGD steps on ℓ(W0 + (α/r)·B S_i A), eq. (4): only B[:, I_i] and
   A[I_i, :] move (Lemma 3.2), and only they are uploaded (optionally top-k sparsified);
4. the server aggregates, eq. (5) — divide by the number of clients that reported (the paper's
   N under full participation), or per entry by how many clients touched it — and applies a
   server optimizer: plain averaging (FedAvg) or Adam (FedAdam, as the FSLoRA code does).

The cohort trains as stacked tensors (the *mask* implementation, batched over clients); the
*slice* implementation trains each client's k_i columns and rows alone, as a device would, and
gives the same trajectory under plain SGD. A client that drops out mid-round uploads nothing; the
round completes with the rest, and the global adapter changes only after every upload is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from .._validation import (
    check_byte_size,
    check_choice,
    check_int,
    check_problem,
    check_real,
    check_seeds,
)
from ..divergence import BLOWUP, DivergenceError, check_blowup, exploded, run_seeds
from ..problems.federated import FederatedProblem
from ..progress import bar as progress_bar
from ..rng import Streams
from ..sketches import kaiming_uniform
from .budgets import Budget, describe, resolve_budgets

__all__ = ["AGGREGATIONS", "SELECTIONS", "SERVER_OPTIMIZERS", "FederatedLoRA", "simulate"]

SELECTIONS = ("random", "leading")
_CACHE_BYTES = 2**21  # per-chunk working set of client iterates (a typical L2 cache)
AGGREGATIONS = ("mean", "count", "svd", "stack")
SERVER_OPTIMIZERS = ("avg", "adam")


@dataclass(frozen=True)
class FederatedLoRA:
    """A federated LoRA configuration; :meth:`run` simulates it on a :class:`FederatedProblem`
    or on a peft model with client data (:class:`~lorakit.adapters.ModelProblem`).

    Parameters
    ----------
    rank : r, the server adapter's rank.
    lr : γ, the clients' SGD learning rate on the factors.
    budgets : k_i per client: an int, a sequence, or a :class:`~lorakit.federated.budgets.Budget`
        drawn once per run; None means k_i = r (FedIT).
    selection : ``"random"`` (FSLoRA: uniform I_i, scale r/k_i) or ``"leading"`` (HeteroLoRA).
    local_steps : H.
    cohort : clients per round (None: all of them).
    dropout : probability that a cohort client drops out mid-round.
    aggregation : how the uploads become the next global adapter:
        ``"mean"`` — average the factor deltas over the clients that reported (eq. (5));
        ``"count"`` — divide each entry by the number of reporting clients whose I_i contains it;
        ``"svd"`` — FlexLoRA: average the products B_i A_i and re-factor by truncated SVD
        (B = U_rΣ_r, A = V_rᵀ; spec fslora.md §3.3);
        ``"stack"`` — FedStackLoRA (FLoRA): merge (α/r)·mean B_i A_i into the base and restart
        the adapter (spec §3.4); clients download the stacked factors.
    server_optimizer, server_lr : ``"avg"`` (X ← X + η_s·Δ) or ``"adam"`` (FedAdam, gradient −Δ).
    topk_ratio : keep this fraction of each upload's entries (top-k by magnitude; FSLoRA App. C.2).
    sigma, batch_size : local gradients with additive noise of variance σ², or minibatches of
        finite-sum clients; neither means exact local gradients.
    alpha : LoRA scaling (the product is scaled by α/r); default α = r.
    download : ``"full"`` (Algorithm 1 line 3 broadcasts the whole adapter) or ``"slice"``.
    impl : ``"mask"`` (the cohort batched as stacked tensors) or ``"slice"`` (client by client).
    bytes_per_float, bytes_per_index : message accounting.
    """

    rank: int
    lr: float
    budgets: int | tuple | Budget | None = None
    selection: str = "random"
    local_steps: int = 1
    cohort: int | None = None
    dropout: float = 0.0
    aggregation: str = "mean"
    server_optimizer: str = "avg"
    server_lr: float = 1.0
    topk_ratio: float | None = None
    sigma: float | None = None
    batch_size: int | None = None
    alpha: float | None = None
    download: str = "full"
    impl: str = "mask"
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    method: str = "fslora"
    adam_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "rank", check_int("rank", self.rank, low=1))
        set_(self, "lr", check_real("lr", self.lr, low=0.0, low_open=True))
        check_choice("selection", self.selection, SELECTIONS)
        set_(self, "local_steps", check_int("local_steps", self.local_steps, low=1))
        if self.cohort is not None:
            set_(self, "cohort", check_int("cohort", self.cohort, low=1))
        # dropout = 1 drops every client in every round: nothing would ever train.
        set_(
            self, "dropout", check_real("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        )
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        if self.aggregation in ("svd", "stack") and (
            self.selection != "leading" or self.server_optimizer != "avg"
        ):
            raise ValueError(
                f"aggregation={self.aggregation!r} (FlexLoRA/FedStackLoRA) trains the leading k_i "
                "components and replaces the adapter: use selection='leading', server_optimizer='avg'"
            )
        check_choice("server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
        set_(self, "server_lr", check_real("server_lr", self.server_lr, low=0.0, low_open=True))
        if self.topk_ratio is not None:
            check_real("topk_ratio", self.topk_ratio, low=0.0, high=1.0, low_open=True)
        if self.sigma is not None:
            check_real("sigma", self.sigma, low=0.0)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, low=1)
        if self.alpha is not None:
            check_real("alpha", self.alpha, low=0.0, low_open=True)
        check_choice("download", self.download, ("full", "slice"))
        check_choice("impl", self.impl, ("mask", "slice"))
        set_(self, "bytes_per_float", check_byte_size("bytes_per_float", self.bytes_per_float))
        set_(self, "bytes_per_index", check_byte_size("bytes_per_index", self.bytes_per_index))

    def client_budgets(self, num_clients: int, seed: int) -> torch.Tensor:
        """The k_i a run with ``seed`` gives its clients (drawn once, from the ``budget`` stream)."""
        budgets = self.budgets if self.budgets is not None else self.rank
        return resolve_budgets(budgets, num_clients, self.rank, Streams(seed)["budget"])

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rank": self.rank,
            "budgets": str(self.budgets if self.budgets is not None else self.rank),
            "local_steps": self.local_steps,
            "server_optimizer": self.server_optimizer,
        }

    # ------------------------------------------------------------------------------------------
    def run(
        self,
        problem,
        rounds: int,
        seeds=0,
        *,
        log_every: int = 1,
        messages: bool = False,
        on_divergence: str = "raise",
        blowup: float = BLOWUP,
        progress: bool = False,
    ):
        """Simulate ``rounds`` server rounds per seed.

        ``problem`` is a :class:`FederatedProblem` or a :class:`~lorakit.adapters.ModelProblem`
        with clients (a peft model and its data, ``problem.split(M)``): the latter runs the same
        rounds on every LoRA module of the model, each client training only its k_i slice
        (:mod:`lorakit.adapters.federated`, whose docstring lists the model-scale conventions).
        ``progress=True`` shows a ``tqdm.auto`` bar over the seeds (matrix scale) or over the
        rounds of each seed (model scale).

        Returns the history, one row per logged round and seed: ``round``, ``loss`` and ``gap`` of
        f(W0 + (α/r)BA), ``grad_norm_sq`` = ‖∇_B f‖² + ‖∇_A f‖², ``reported`` and ``dropped``
        clients, ``bytes_up``/``bytes_down`` of the round and cumulative ``mb_up``/``mb_down``, and
        the budget summary ρ_1, ρ_2 (FSLoRA Theorem 4.4). With ``messages=True`` also a frame of
        every message: ``round``, ``client``, ``k``, ``bytes_up``, ``bytes_down``, ``dropped``.

        Divergence (:func:`simulate`): a non-finite or exploding aggregate, or a loss above
        ``blowup``·max(1, |f(W^0)|) (default 10³; a finite number > 1), stops the seed.
        """
        if getattr(problem, "stateful", False):  # peft is imported only on this path
            from ..adapters.federated import run_federated

            return run_federated(
                self, problem, rounds, seeds, log_every=log_every, messages=messages,
                on_divergence=on_divergence, blowup=blowup, progress=progress,
            )  # fmt: skip
        return simulate(
            self, problem, rounds, seeds, log_every, messages, _Run, on_divergence, progress,
            blowup=blowup,
        )  # fmt: skip


def simulate(
    cfg,
    problem,
    rounds: int,
    seeds,
    log_every: int,
    messages: bool,
    runner,
    on_divergence: str = "raise",
    progress: bool = False,
    *,
    blowup: float = BLOWUP,
):
    """The seed loop shared by the federated methods: validate, run each seed, build the frames.

    ``runner(cfg, problem, seed).run(rounds, log_every)`` returns (history rows, message rows).
    A seed whose loss exceeds ``blowup``·max(1, |f(W^0)|) (:func:`lorakit.divergence.exploded`)
    or whose aggregate is not finite or explodes raises :class:`DivergenceError` (its ``frame``
    carries the configuration columns and every finished seed's rows,
    :func:`lorakit.divergence.run_seeds`) or, with ``on_divergence="stop"``, keeps its rows up to
    the last good round and is listed in ``frame.attrs["diverged"]`` (seed → round) while the other
    seeds run on. At model scale the model is put back to its last good state.

    ``problem`` is a :class:`FederatedProblem` or a :class:`~lorakit.adapters.ModelProblem` with
    clients; a model-scale ``runner`` checks the configuration against the model's LoRA sites and
    shows its own bar over rounds, so ``progress`` here is the bar over seeds at matrix scale.
    """
    model_scale = getattr(problem, "stateful", False)
    if not model_scale:
        check_problem(
            problem,
            FederatedProblem,
            "a FederatedProblem or a lorakit.adapters.ModelProblem with clients",
        )
    if model_scale and problem.clients is None:
        raise ValueError(
            "a federated run needs clients: split the ModelProblem with problem.split(num_clients)"
        )
    rounds = check_int("rounds", rounds, low=1)
    log_every = check_int("log_every", log_every, low=1)
    check_choice("on_divergence", on_divergence, ("raise", "stop"))
    blowup = check_blowup(blowup)
    if not model_scale:
        check_int("rank", cfg.rank, low=1, high=min(problem.m, problem.n))
    if cfg.cohort is not None:
        check_int("cohort", cfg.cohort, low=1, high=problem.M)
    seeds = check_seeds(seeds)

    def with_config(rows) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        for key, value in reversed(cfg.describe().items()):
            frame.insert(0, key, value)
        return frame

    frame, runs = run_seeds(
        progress_bar(seeds, enabled=progress and not model_scale, desc=cfg.method),
        lambda seed: runner(cfg, problem, check_int("seed", seed, low=0)),
        lambda run: run.run(rounds, log_every)[0],
        with_config,
        on_divergence=on_divergence,
        blowup=blowup,
    )
    msgs = [m for run in runs for m in run.messages]  # a diverged seed's messages survive
    return (frame, pd.DataFrame(msgs)) if messages else frame


class _Run:
    """One seeded simulation: the server adapter, its optimizer, and the round loop."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: FederatedLoRA, problem: FederatedProblem, seed: int):
        self.cfg, self.problem, self.seed = cfg, problem, seed
        self.streams = Streams(seed)
        self.W0 = problem.W0.clone()  # the base; FedStackLoRA merges into it every round
        m, n, r, kw = (
            problem.m,
            problem.n,
            cfg.rank,
            {"dtype": problem.dtype, "device": problem.device},
        )
        self.k = cfg.client_budgets(problem.M, seed)
        # peft's initialisation: A Kaiming-uniform, B = 0, so the first adapter is W0 itself.
        self.A = kaiming_uniform().sample((r, n), self.streams["init"], side="right", **kw)
        self.B = torch.zeros(m, r, **kw)
        self.opt = None
        if cfg.server_optimizer == "adam":
            self.B.requires_grad_(True)
            self.A.requires_grad_(True)
            self.opt = torch.optim.Adam([self.B, self.A], lr=cfg.server_lr, **cfg.adam_kwargs)
        self.mb_up = self.mb_down = 0.0

    # -- one round -----------------------------------------------------------------------------
    def cohort(self) -> torch.Tensor:
        M, C = self.problem.M, self.cfg.cohort
        if C is None or C == M:
            return torch.arange(M)
        return torch.randperm(M, generator=self.streams["cohort"])[:C].sort().values

    def sketch(self, k: torch.Tensor) -> torch.Tensor:
        """(C, r) diagonals of S_i: c_i on I_i, 0 elsewhere (one I_i per client and round)."""
        r, C = self.cfg.rank, k.numel()
        if self.cfg.selection == "leading":
            return (torch.arange(r) < k[:, None]).to(self.problem.dtype)
        keys = torch.rand(C, r, generator=self.streams["sketch"])
        rank_of = keys.argsort(dim=1).argsort(dim=1)  # a uniform random k_i-subset per row
        chosen = rank_of < k[:, None]
        return chosen.to(self.problem.dtype) * (r / k[:, None].to(self.problem.dtype))

    def local_gradient(self, W: torch.Tensor, clients: torch.Tensor) -> torch.Tensor:
        p, cfg = self.problem, self.cfg
        idx = None
        if cfg.batch_size is not None:
            idx = []
            for l in clients.tolist():
                N_l = p.clients[l].n_samples
                if N_l is None:
                    raise ValueError(f"client {l} is not a finite sum: batch_size needs data")
                perm = torch.randperm(N_l, generator=self.streams["data"])
                idx.append(perm[: min(cfg.batch_size, N_l)].to(p.device))
        G = p.local_grads(W, clients.to(p.device), idx)
        if cfg.sigma:
            noise = torch.randn(G.shape, generator=self.streams["noise"], dtype=G.dtype)
            G = G + (cfg.sigma / math.sqrt(p.m * p.n)) * noise.to(G.device)
        return G

    def local_train(self, clients: torch.Tensor, svec: torch.Tensor):
        """H local SGD steps of eq. (4); returns the deltas (C, m, r), (C, r, n)."""
        if self.cfg.impl == "slice":
            return self._local_train_slices(clients, svec)
        # Chunks of clients small enough that a chunk's (m×n) iterates stay in cache.
        p = self.problem
        chunk = max(1, _CACHE_BYTES // (p.m * p.n * p.W0.element_size()))
        parts = [
            self._local_train_batch(clients[i : i + chunk], svec[i : i + chunk])
            for i in range(0, clients.numel(), chunk)
        ]
        return torch.cat([d for d, _ in parts]), torch.cat([d for _, d in parts])

    def _local_train_batch(self, clients: torch.Tensor, svec: torch.Tensor):
        s, lr, W0 = self.cfg.scale, self.cfg.lr, self.W0
        with torch.no_grad():
            B0, A0 = self.B.detach(), self.A.detach()
            C = clients.numel()
            B = B0.expand(C, *B0.shape).clone()
            A = A0.expand(C, *A0.shape).clone()
            for _ in range(self.cfg.local_steps):
                BS = B * svec[:, None, :]
                W = torch.baddbmm(W0.expand(C, *W0.shape), BS, A, alpha=s)
                G = self.local_gradient(W, clients)
                gB = (G @ A.mT).mul_(svec[:, None, :] * s)  # ∇_B = s·G Aᵀ Sᵀ (Lemma 3.2)
                gA = (B.mT @ G).mul_(svec[:, :, None] * s)  # ∇_A = s·Sᵀ Bᵀ G
                B, A = B - lr * gB, A - lr * gA
            return B - B0, A - A0

    def _local_train_slices(self, clients: torch.Tensor, svec: torch.Tensor):
        """Client by client on the k_i active columns and rows only (what a device computes)."""
        s, lr, W0 = self.cfg.scale, self.cfg.lr, self.W0
        with torch.no_grad():
            B0, A0 = self.B.detach(), self.A.detach()
            dB, dA = [], []
            for c in range(clients.numel()):
                I = svec[c].nonzero().flatten()
                factor = float(svec[c, I[0]])  # r/k_i (FSLoRA) or 1 (HeteroLoRA)
                B, A = B0[:, I].clone(), A0[I, :].clone()
                for _ in range(self.cfg.local_steps):
                    G = self.local_gradient((W0 + s * factor * B @ A)[None], clients[c : c + 1])[0]
                    B, A = B - lr * s * factor * (G @ A.T), A - lr * s * factor * (B.T @ G)
                full_B, full_A = torch.zeros_like(B0), torch.zeros_like(A0)
                full_B[:, I], full_A[I, :] = B - B0[:, I], A - A0[I, :]
                dB.append(full_B)
                dA.append(full_A)
            return torch.stack(dB), torch.stack(dA)

    def upload(self, dB: torch.Tensor, dA: torch.Tensor, k: torch.Tensor):
        """Top-k sparsification of each client's active entries, and the bytes each sends."""
        m, n = self.problem.m, self.problem.n
        floats = k * (m + n)
        indices = torch.zeros_like(k)
        ratio = self.cfg.topk_ratio
        if ratio is not None and ratio < 1:
            keep = torch.ceil(ratio * floats.double()).long()
            flat = torch.cat([dB.flatten(1), dA.flatten(1)], dim=1)
            order = flat.abs().argsort(dim=1, descending=True).argsort(dim=1)
            flat = torch.where(order < keep[:, None].to(flat.device), flat, 0.0)
            dB = flat[:, : m * self.cfg.rank].reshape(dB.shape)
            dA = flat[:, m * self.cfg.rank :].reshape(dA.shape)
            floats, indices = keep, keep
        sent = floats * self.cfg.bytes_per_float + indices * self.cfg.bytes_per_index
        return dB, dA, sent

    def download_bytes(self, k: torch.Tensor) -> torch.Tensor:
        m, n, r = self.problem.m, self.problem.n, self.cfg.rank
        if self.cfg.aggregation == "stack":  # the stacked factors of every client of the last round
            floats = torch.full_like(k, int(self.k.sum()) * (m + n))
        elif self.cfg.download == "full":
            floats = torch.full_like(k, r * (m + n))
        else:
            floats = k * (m + n)
        # FSLoRA's server also names I_i: k_i indices (none when I_i is everything, as in FedIT,
        # or always the leading k_i components).
        named = (k < r) & (self.cfg.selection == "random")
        indices = torch.where(named, k, torch.zeros_like(k))
        return floats * self.cfg.bytes_per_float + indices * self.cfg.bytes_per_index

    def aggregate(self, dB, dA, svec, reported):
        """Eq. (5) over the clients that reported; None if nobody did."""
        if not bool(reported.any()):
            return None
        w = reported.to(dB.dtype)
        if self.cfg.aggregation in ("svd", "stack"):
            # Product space: the clients' own adapters (their active components only).
            keep = (svec != 0).to(dB.dtype)
            B = (self.B.detach() + dB) * keep[:, None, :]
            A = self.A.detach() + dA
            mean_product = ((B @ A) * w[:, None, None]).sum(0) / w.sum()
            return (mean_product,)
        sum_B = (dB * w[:, None, None]).sum(0)
        sum_A = (dA * w[:, None, None]).sum(0)
        if self.cfg.aggregation == "mean":
            return sum_B / w.sum(), sum_A / w.sum()
        count = ((svec != 0).to(dB.dtype) * w[:, None]).sum(
            0
        )  # (r,) clients touching each component
        safe = torch.where(count > 0, count, torch.ones_like(count))
        return sum_B / safe[None, :], sum_A / safe[:, None]

    def server_step(self, delta) -> None:
        """Apply the aggregate in one step, after every upload is in."""
        cfg, r = self.cfg, self.cfg.rank
        if cfg.aggregation == "svd":  # FlexLoRA: the best rank-r factorisation of the mean product
            U, S, Vh = torch.linalg.svd(delta[0], full_matrices=False)
            self.B, self.A = U[:, :r] * S[:r], Vh[:r, :]
            return
        if cfg.aggregation == "stack":  # FedStackLoRA: merge into the base, restart the adapter
            self.W0 = self.W0 + cfg.scale * delta[0]
            self.A = kaiming_uniform().sample(
                (r, self.problem.n),
                self.streams["init"],
                side="right",
                dtype=self.problem.dtype,
                device=self.problem.device,
            )
            self.B = torch.zeros_like(self.B)
            return
        dB, dA = delta
        if self.opt is None:
            self.B = self.B + cfg.server_lr * dB
            self.A = self.A + cfg.server_lr * dA
            return
        self.B.grad, self.A.grad = -dB, -dA  # FedAdam treats −Δ as the gradient
        self.opt.step()

    def check_finite(self, t: int, delta, rows) -> None:
        """Refuse a non-finite or exploding aggregate before it touches the global adapter."""
        size = max(float(d.abs().max()) for d in delta)
        scale = 1e6 * (
            1.0 + max(float(self.B.detach().abs().max()), float(self.A.detach().abs().max()))
        )
        if not (math.isfinite(size) and size <= scale):
            what = "not finite" if not math.isfinite(size) else f"of size {size:.3g}"
            self.diverged(
                t, f"the clients' updates are {what}; the global adapter keeps round {t - 1}", rows
            )

    def diverged(self, t: int, what: str, rows) -> None:
        raise DivergenceError(
            f"{self.cfg.method} diverged in round {t} (seed {self.seed}): {what}. Lower "
            f"lr = {self.cfg.lr:g}: each client's sketched objective is (r/k_i)²·L-smooth "
            "(FSLoRA Proposition D.4)",
            step=t,
            seed=self.seed,
            frame=pd.DataFrame(rows),
        )

    # -- the loop ------------------------------------------------------------------------------
    def run(self, rounds: int, log_every: int):
        rows = [self.log(0, 0, 0, 0.0, 0.0)]
        msgs = self.messages = []  # kept on the run: a diverged seed's messages survive
        for t in range(1, rounds + 1):
            clients = self.cohort()
            k = self.k[clients]
            svec = self.sketch(k).to(self.problem.device)
            dB, dA = self.local_train(clients, svec)
            dB, dA, up = self.upload(dB, dA, k)
            down = self.download_bytes(k)
            dropped = (
                torch.rand(clients.numel(), generator=self.streams["dropout"]) < self.cfg.dropout
            )
            reported = ~dropped
            up = torch.where(reported, up, torch.zeros_like(up))
            delta = self.aggregate(dB, dA, svec, reported.to(dB.device))
            if delta is not None:
                self.check_finite(t, delta, rows)
                self.server_step(delta)
            self.mb_up += float(up.sum()) / 2**20
            self.mb_down += float(down.sum()) / 2**20
            msgs.extend(
                {"seed": self.seed, "round": t, "client": int(c), "k": int(kc), "bytes_up": int(u),
                 "bytes_down": int(d), "dropped": bool(x)}
                for c, kc, u, d, x in zip(clients, k, up, down, dropped, strict=True)
            )  # fmt: skip
            if t % log_every == 0 or t == rounds:
                rows.append(self.log(t, int(reported.sum()), int(dropped.sum()),
                                     float(up.sum()), float(down.sum())))  # fmt: skip
                loss = rows[-1]["loss"]
                if exploded(loss, rows[0]["loss"], self.blowup):
                    self.diverged(t, f"the loss is {loss:g}", rows)
        return rows, msgs

    def log(self, t: int, reported: int, dropped: int, up: float, down: float) -> dict:
        p, s = self.problem, self.cfg.scale
        with torch.no_grad():
            B, A = self.B.detach(), self.A.detach()
            W = self.W0 + s * (B @ A)
            loss = float(p.loss(W))
            G = p.grad(W)
            grad_sq = float((s * (G @ A.T)).square().sum() + (s * (B.T @ G)).square().sum())
        return {
            "seed": self.seed, "round": t, "loss": loss,
            "gap": loss - p.f_star if p.f_star is not None else math.nan,
            "grad_norm_sq": grad_sq, "reported": reported, "dropped": dropped,
            "bytes_up": up, "bytes_down": down, "mb_up": self.mb_up, "mb_down": self.mb_down,
            **describe(self.k, self.cfg.rank),
        }  # fmt: skip
