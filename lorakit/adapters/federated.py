"""Federated LoRA on a peft model: the FSLoRA family at model scale.

:meth:`FederatedLoRA.run <lorakit.federated.lora.FederatedLoRA.run>` hands a
:class:`~lorakit.adapters.ModelProblem` with clients (``problem.split(M)``) to this module, which
runs the matrix engine's rounds (:mod:`lorakit.federated.lora`) on every LoRA site of the model,
with the same configurations, streams and tables. (Fed-RAC-LoRA runs on a model through the
problem protocol: :mod:`lorakit.federated.fed_rac`.)

The FSLoRA family (FSLoRA Algorithm 1; :class:`FederatedModelRun`)
--------------------------------------------------------------------
The server's global adapter is the peft model's own: for every site (a peft ``LoraLayer``,
:class:`~lorakit.adapters.Site`) the factors B (m×r) and A (r×n) over the frozen base W0. A round:

1. the cohort, the budgets k_i (``cfg.client_budgets``) and the dropout coins come from the same
   streams as at matrix scale (``cohort``, ``budget``, ``dropout``);
2. one index set I ⊂ {0, …, r−1}, |I| = k_i, per client and per **module**, from the ``sketch``
   stream: the paper's S_i = (r/k_i)·diag(1_I), the **same I for B and A** of a module (the authors'
   code re-draws it per parameter tensor, a defect: prior_art.md §A.1). Each module gets a fresh I
   (a block-diagonal sketch, which the theory covers: spec fslora.md §10.3); ``shared_index=True``
   gives a client one I for every module. Per module, in site order, the draw is the matrix
   engine's ``sketch`` (uniform k_i-subsets; HeteroLoRA/FlexLoRA/FedStackLoRA take the leading
   k_i, no draw), so a one-site model draws exactly the index sets of the matrix engine;
3. the client trains **only its k_i slice**: B[:, I] and A[I, :] are cloned and swapped into the
   model as the LoRA parameters (:func:`~lorakit.adapters.swapped`) with the scaling s·r/k_i
   (FSLoRA: W0 + s·B S A = W0 + s(r/k_i)·B_I A_I, spec §2.5) or s (the leading-k_i methods, no
   rescaling), and runs H plain SGD steps of eq. (4) by autograd on the sliced tensors alone
   (:func:`~lorakit.adapters.freeze` guards them; they are the only tensors differentiated and
   stepped). Their gradients are Lemma 3.2's restricted to I; nothing outside I is touched and no
   copy of the model or mask is made;
4. the upload is the slice deltas ΔB[:, I] (m×k_i) and ΔA[I, :] (k_i×n) of every module
   (optionally top-k sparsified per module, FSLoRA App. C.2): a peft state dict — the keys of
   ``get_peft_model_state_dict`` (:func:`~lorakit.adapters.adapter_state`, the message format of
   lorakit), the values the slices — plus I (:class:`Upload`; pass ``trace`` to see every one);
5. the server pads them into (m, r)/(r, n) and aggregates as the matrix engine does: ``mean``
   (eq. (5)), ``count``, ``svd`` (FlexLoRA: truncated SVD of the mean product) or ``stack``
   (FedStackLoRA: merge s·mean B_iA_i into W0, restart with peft's init — A Kaiming-uniform from
   the ``init`` stream, B = 0 — so the model's outputs are unchanged at the restart); then the
   server optimizer (``avg``: X ← X + η_s Δ; ``adam``: FedAdam with gradient −Δ). The global adapter
   changes only after every upload is in, and a non-finite or exploding aggregate raises
   :class:`~lorakit.DivergenceError` before any module is written; a finite update whose logged
   loss explodes (threshold ``blowup``) stops the run, as at matrix scale. Either way the model is
   put back to its last good state (:class:`~lorakit.adapters.checkpoint.LastGood`): the last
   logged round whose loss passed, with ``log_every=1`` the round before the diverged one.

Minibatches: with ``batch_size`` b each local step draws b of the client's rows without replacement
from the ``data`` stream, in the matrix engine's order (step by step, client by client); None
means the client's full data. Messages per client and round: up Σ_modules k_i(m + n) floats (top-k:
⌈ratio·k_i(m + n)⌉ floats and as many indices per module); down Σ_modules r(m + n) floats
(``download="full"``), k_i(m + n) (``"slice"``) or the stacked factors (``stack``), plus the k_i
indices of each module's I (one I with ``shared_index``) when FSLoRA draws them at random.

Model-scale conventions
-----------------------
* ``rank`` must equal every site's peft rank r and be ≤ min(m, n); ``alpha``, if given, must give
  every site's peft scaling (each site uses its own s, α/√r with rsLoRA).
* Options without a model-scale counterpart raise ``ValueError`` naming them: ``sigma`` (additive
  gradient noise; the minibatches are the noise). ``impl`` is a matrix-scale choice: a model
  always trains the slices (the ``"slice"`` implementation).
* Randomness: the named streams as at matrix scale; the model's own (dropout) from the ``model``
  stream in a forked global RNG. Every seed starts from :meth:`ModelProblem.reset`; afterwards the
  model holds the last seed's result with both factors marked trainable.
* Logged rows: ``loss`` = ``problem.loss()`` (every row), ``gap`` NaN, ``grad_norm_sq`` = Σ_sites
  ‖∇_B f‖² + ‖∇_A f‖² (∇_B = s·G Aᵀ, ∇_A = s·BᵀG from G = ∇_W f on the full data).
* Dropped clients do not train (their minibatch draws are still made, so the streams stay aligned).
* The initial adapter is the model's (after ``reset``); the matrix engine draws its A from the
  ``init`` stream, so FedStackLoRA's k-th restart here uses the matrix run's (k+1)-th draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from ..divergence import BLOWUP, DivergenceError, exploded
from ..federated.budgets import describe
from ..federated.lora import FederatedLoRA, _Run, simulate
from ..progress import bar as progress_bar
from ..progress import stop_requested
from ..rng import Streams
from ..sketches import kaiming_uniform
from .checkpoint import LastGood
from .grads import backward, full_batches, model_rng
from .problem import ModelProblem
from .sites import Site, freeze, swapped

__all__ = [
    "FederatedModelRun",
    "Upload",
    "check_model_federated",
    "peft_keys",
    "run_federated",
]


# -- entry points ----------------------------------------------------------------------------------
def run_federated(
    cfg: FederatedLoRA,
    problem: ModelProblem,
    rounds: int,
    seeds=0,
    *,
    log_every: int = 1,
    messages: bool = False,
    on_divergence: str = "raise",
    blowup: float = BLOWUP,
    progress: bool = False,
    shared_index: bool = False,
    trace: Callable | None = None,
):
    """:meth:`FederatedLoRA.run` on a peft model (module docstring), with two model-scale options.

    ``shared_index=True`` draws one index set per client and round for every module (default: one
    per module). ``trace(upload)`` is called with every :class:`Upload` the server receives (in
    cohort order; dropped clients send none); it must not modify the tensors.
    """
    if not isinstance(shared_index, bool):
        raise ValueError(f"shared_index must be True or False, got {shared_index!r}")
    if trace is not None and not callable(trace):
        raise ValueError(f"trace must be a callable or None, got {type(trace).__name__}")
    runner = partial(FederatedModelRun, shared_index=shared_index, trace=trace, progress=progress)
    return simulate(
        cfg, problem, rounds, seeds, log_every, messages, runner, on_divergence, blowup=blowup
    )


# -- validation ------------------------------------------------------------------------------------
def check_model_federated(cfg, problem: ModelProblem) -> None:
    """Check a federated configuration against the model's sites (module docstring)."""
    if cfg.sigma is not None:
        raise ValueError(
            "sigma (additive gradient noise) has no model-scale counterpart: the clients' "
            "minibatches are the noise; use batch_size"
        )
    for site in problem.sites:
        (m, n), r = site.shape, cfg.rank
        if r > min(m, n):
            raise ValueError(
                f"rank = {r} exceeds min(m, n) = {min(m, n)} of site {site.name} ({m}×{n})"
            )
        if site.rank != r:
            raise ValueError(
                f"rank = {r} differs from the peft adapter rank r = {site.rank} of site "
                f"{site.name}: the server adapter is the model's, use rank={site.rank}"
            )
        if cfg.alpha is not None and not math.isclose(cfg.alpha / r, site.scaling, rel_tol=1e-9):
            raise ValueError(
                f"alpha = {cfg.alpha:g} gives the scaling alpha/r = {cfg.alpha / r:g}, but site "
                f"{site.name} has the peft scaling s = {site.scaling:g}: leave alpha unset (each "
                "site's own scaling is used) or set lora_alpha in the LoraConfig"
            )


def peft_keys(site: Site) -> tuple[str, str]:
    """The keys of ``site``'s B and A in ``get_peft_model_state_dict`` (adapter name stripped)."""
    return f"{site.name}.lora_B.weight", f"{site.name}.lora_A.weight"


# -- the message -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """One client's upload in one round (FSLoRA Algorithm 1 line 7).

    ``index`` maps each site's name to its I (sorted, k entries; shared by B and A); ``state`` is
    a peft state dict (:func:`peft_keys`) of the slice deltas ΔB[:, I] (m×k) and ΔA[I, :] (k×n),
    after top-k sparsification if configured.
    """

    round: int
    client: int
    k: int
    index: dict
    state: dict

    def padded(self, problem: ModelProblem) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per site, the deltas zero-padded to (m, r) and (r, n), as the server aggregates them."""
        out = []
        for site in problem.sites:
            key_B, key_A = peft_keys(site)
            out.append(site.pad(self.state[key_B], self.state[key_A], self.index[site.name]))
        return out


def _max_abs(tensors) -> float:
    return max(float(t.detach().abs().max()) for t in tensors)


# -- the FSLoRA family -----------------------------------------------------------------------------
class _ModelRounds:
    """The round loop of the model-scale runs: reset, rounds under the model RNG, a row per
    logged round, the factors left trainable (peft's default) whatever happens."""

    def start(self) -> None:
        self.problem.reset()

    def run(self, rounds: int, log_every: int):
        self.start()
        self.messages = []  # kept on the run: a diverged seed's messages survive
        desc = f"{self.cfg.method} seed {self.seed}"
        bar = progress_bar(enabled=self.progress, total=rounds, desc=desc)
        with model_rng(self.streams, self.problem.device), bar:
            try:
                return self._loop(rounds, log_every, bar), self.messages
            finally:
                freeze(self.sites, "both")

    def _loop(self, rounds: int, log_every: int, bar) -> list[dict]:
        rows = [self.log(0, 0, 0, 0.0, 0.0)]
        good = LastGood(self.sites, "round")  # round 0, then every logged round that passed
        counts = ()
        try:
            for t in range(1, rounds + 1):
                if stop_requested(bar):  # cancelled (report_progress): log the last round done
                    if t > 1 and rows[-1]["round"] < t - 1:
                        rows.append(self.log(t - 1, *counts))
                    break
                counts = self.round(t, rows)
                if t % log_every == 0 or t == rounds:
                    rows.append(self.log(t, *counts))
                    loss = rows[-1]["loss"]
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    if exploded(loss, rows[0]["loss"], self.blowup):
                        self.diverged(t, f"the loss is {loss:g}", rows)
                    good.keep(t)
                bar.update()
        except DivergenceError as error:
            good.rollback(error)
            raise
        return rows


class FederatedModelRun(_ModelRounds, _Run):
    """One seed of a :class:`FederatedLoRA` on a peft model: the global adapter, the server
    optimizer and the round loop (module docstring). It reuses the matrix run's ``cohort``,
    ``sketch`` (the index draws) and ``diverged``; everything that touches the weights is here."""

    def __init__(
        self,
        cfg: FederatedLoRA,
        problem: ModelProblem,
        seed: int,
        *,
        shared_index: bool = False,
        trace: Callable | None = None,
        progress: bool = False,
    ):
        check_model_federated(cfg, problem)
        self.cfg, self.problem, self.seed = cfg, problem, seed
        self.streams = Streams(seed)
        self.shared_index, self.trace, self.progress = shared_index, trace, progress
        self.sites = problem.sites
        self.k = cfg.client_budgets(problem.M, seed)
        self.opt, self.messages = None, []
        self.mb_up = self.mb_down = 0.0

    # -- one round -------------------------------------------------------------------------------
    def index_sets(self, k: torch.Tensor) -> list[list[torch.Tensor]]:
        """[client][site] → I (sorted): per module, the matrix engine's k_i-subset draw."""
        draws = 1 if self.shared_index else len(self.sites)
        masks = [self.sketch(k) != 0 for _ in range(draws)]
        sets = [[mask[c].nonzero().flatten() for mask in masks] for c in range(k.numel())]
        return [s * len(self.sites) if self.shared_index else s for s in sets]

    def schedule(self, clients: torch.Tensor) -> list[list[torch.Tensor]]:
        """[client][step] → rows of the client's minibatch (the matrix engine's draw order)."""
        cfg, p = self.cfg, self.problem
        rows = [p.indices(int(l)) for l in clients]
        if cfg.batch_size is None:
            return [[r] * cfg.local_steps for r in rows]
        out = [[] for _ in rows]
        for _ in range(cfg.local_steps):
            for c, r in enumerate(rows):
                perm = torch.randperm(r.numel(), generator=self.streams["data"])
                out[c].append(r[perm[: min(cfg.batch_size, r.numel())]])
        return out

    def local_train(self, index: list[torch.Tensor], factor: float, batches: list) -> list[tuple]:
        """H SGD steps of eq. (4) on the k_i slice of every module; returns the slice deltas.

        The slice B[:, I], A[I, :] is the model's LoRA parameter during the steps (scaling
        s·factor), so autograd gives Lemma 3.2's gradients restricted to I.
        """
        p, lr = self.problem, self.cfg.lr
        start = [s.slice(I) for s, I in zip(self.sites, index, strict=True)]
        scalings = [s.scaling * factor for s in self.sites]
        with swapped(self.sites, [(B.clone(), A.clone()) for B, A in start], scalings):
            trained = freeze(self.sites, "both")  # the slices: the only tensors stepped
            for rows in batches:
                grads = torch.autograd.grad(p.objective(p.batch(rows)), trained)
                with torch.no_grad():
                    for x, g in zip(trained, grads, strict=True):
                        x.sub_(lr * g)
            end = [(s.B.detach(), s.A.detach()) for s in self.sites]
        return [(B - B0, A - A0) for (B, A), (B0, A0) in zip(end, start, strict=True)]

    def sparsify(self, deltas: list[tuple]) -> list[tuple]:
        """Top-k per module: keep ⌈ratio·k(m + n)⌉ entries of the upload by magnitude."""
        ratio = self.cfg.topk_ratio
        if ratio is None or ratio >= 1:
            return deltas
        out = []
        for dB, dA in deltas:
            flat = torch.cat([dB.flatten(), dA.flatten()])
            keep = math.ceil(ratio * flat.numel())
            kept = torch.zeros_like(flat)
            top = flat.abs().topk(keep).indices
            kept[top] = flat[top]
            out.append((kept[: dB.numel()].view_as(dB), kept[dB.numel() :].view_as(dA)))
        return out

    def upload_bytes(self, k: torch.Tensor) -> torch.Tensor:
        floats, indices = torch.zeros_like(k), torch.zeros_like(k)
        ratio = self.cfg.topk_ratio
        for site in self.sites:
            f = k * sum(site.shape)
            if ratio is not None and ratio < 1:
                f = torch.ceil(ratio * f.double()).long()
                indices = indices + f
            floats = floats + f
        return floats * self.cfg.bytes_per_float + indices * self.cfg.bytes_per_index

    def download_bytes(self, k: torch.Tensor) -> torch.Tensor:
        cfg, r = self.cfg, self.cfg.rank
        width = sum(sum(site.shape) for site in self.sites)  # Σ_modules (m + n)
        if cfg.aggregation == "stack":  # every client's stacked factors
            floats = torch.full_like(k, int(self.k.sum()) * width)
        elif cfg.download == "full":
            floats = torch.full_like(k, r * width)
        else:
            floats = k * width
        named = (k < r) & (cfg.selection == "random")
        sets = 1 if self.shared_index else len(self.sites)
        indices = torch.where(named, k * sets, torch.zeros_like(k))
        return floats * cfg.bytes_per_float + indices * cfg.bytes_per_index

    def round(self, t: int, rows=()) -> tuple[int, int, float, float]:
        """One server round; returns (reported, dropped, bytes up, bytes down)."""
        cfg = self.cfg
        clients = self.cohort()
        k = self.k[clients]
        index, batches = self.index_sets(k), self.schedule(clients)
        dropped = torch.rand(clients.numel(), generator=self.streams["dropout"]) < cfg.dropout
        up = torch.where(dropped, 0, self.upload_bytes(k))
        down = self.download_bytes(k)
        agg = _Aggregate(self.sites, cfg.aggregation)
        for c, l in enumerate(clients.tolist()):
            if bool(dropped[c]):
                continue
            kc = int(k[c])
            factor = cfg.rank / kc if cfg.selection == "random" else 1.0
            deltas = self.sparsify(self.local_train(index[c], factor, batches[c]))
            if self.trace is not None:
                self.trace(self.upload(t, l, kc, index[c], deltas))
            agg.add(index[c], deltas)
        if agg.reported:
            delta = agg.result()
            self.check_finite(t, delta, rows)
            self.server_step(delta)
        self.mb_up += float(up.sum()) / 2**20
        self.mb_down += float(down.sum()) / 2**20
        self.messages.extend(
            {"seed": self.seed, "round": t, "client": int(c), "k": int(kc), "bytes_up": int(u),
             "bytes_down": int(d), "dropped": bool(x)}
            for c, kc, u, d, x in zip(clients, k, up, down, dropped, strict=True)
        )  # fmt: skip
        return agg.reported, int(dropped.sum()), float(up.sum()), float(down.sum())

    def upload(self, t, client, k, index, deltas) -> Upload:
        state = {}
        for site, (dB, dA) in zip(self.sites, deltas, strict=True):
            key_B, key_A = peft_keys(site)
            state[key_B], state[key_A] = dB, dA
        names = [s.name for s in self.sites]
        return Upload(t, client, k, dict(zip(names, index, strict=True)), state)

    def check_finite(self, t: int, delta: list[tuple], rows) -> None:
        """Refuse a non-finite or exploding aggregate before it touches any module."""
        size = max(_max_abs(d) for d in delta)
        scale = 1e6 * (1.0 + max(_max_abs((s.B, s.A)) for s in self.sites))
        if not (math.isfinite(size) and size <= scale):
            what = "not finite" if not math.isfinite(size) else f"of size {size:.3g}"
            self.diverged(
                t, f"the clients' updates are {what}; the global adapter keeps round {t - 1}", rows
            )

    def server_step(self, delta: list[tuple]) -> None:
        """Write the aggregate into every module (the matrix engine's ``server_step``)."""
        cfg, r = self.cfg, self.cfg.rank
        if cfg.aggregation in ("svd", "stack"):
            for site, (P,) in zip(self.sites, delta, strict=True):
                (_svd if cfg.aggregation == "svd" else self._stack)(site, P, r)
            return
        if cfg.server_optimizer == "avg":
            for site, (dB, dA) in zip(self.sites, delta, strict=True):
                B, A = site.B.detach(), site.A.detach()
                site.set_factors(B + cfg.server_lr * dB, A + cfg.server_lr * dA)
            return
        if self.opt is None:
            params = [x for site in self.sites for x in (site.B, site.A)]
            self.opt = torch.optim.Adam(params, lr=cfg.server_lr, **cfg.adam_kwargs)
        for site, (dB, dA) in zip(self.sites, delta, strict=True):
            site.B.grad, site.A.grad = -dB, -dA  # FedAdam treats −Δ as the gradient
        self.opt.step()
        for site in self.sites:
            site.B.grad = site.A.grad = None

    def _stack(self, site: Site, P: torch.Tensor, r: int) -> None:
        """FedStackLoRA: W0 ← W0 + s·mean B_iA_i, then peft's init (A Kaiming-uniform, B = 0)."""
        n = site.shape[1]
        A = kaiming_uniform().sample(
            (r, n), self.streams["init"], side="right", dtype=site.A.dtype, device=site.A.device
        )
        site.W0 = site.W0 + site.scaling * P
        site.set_factors(torch.zeros_like(site.B), A)

    def log(self, t: int, reported: int, dropped: int, up: float, down: float) -> dict:
        p = self.problem
        loss = p.loss()
        G = backward(p, full_batches(p), "none", True)
        with torch.no_grad():
            grad_sq = 0.0
            for site, g in zip(self.sites, G, strict=True):
                B, A, s = site.B.detach(), site.A.detach(), site.scaling
                grad_sq += float((s * (g @ A.T)).square().sum() + (s * (B.T @ g)).square().sum())
        return {
            "seed": self.seed, "round": t, "loss": loss, "gap": math.nan,
            "grad_norm_sq": grad_sq, "reported": reported, "dropped": dropped,
            "bytes_up": up, "bytes_down": down, "mb_up": self.mb_up, "mb_down": self.mb_down,
            **describe(self.k, self.cfg.rank),
        }  # fmt: skip


class _Aggregate:
    """Eq. (5) over the uploads as they arrive: padded sums (and per-component counts) or the sum
    of the clients' products B_iA_i (FlexLoRA, FedStackLoRA), one entry per site."""

    def __init__(self, sites: list[Site], how: str):
        self.sites, self.how, self.reported = sites, how, 0
        if how in ("svd", "stack"):
            self.sums = [(s.W0.new_zeros(s.shape),) for s in sites]
        else:
            self.sums = [(s.B.new_zeros(s.B.shape), s.A.new_zeros(s.A.shape)) for s in sites]
            self.counts = [s.B.new_zeros(s.rank) for s in sites]

    def add(self, index: list[torch.Tensor], deltas: list[tuple]) -> None:
        self.reported += 1
        with torch.no_grad():
            for j, (site, I, (dB, dA)) in enumerate(zip(self.sites, index, deltas, strict=True)):
                if self.how in ("svd", "stack"):  # the client's adapter: its active components
                    B, A = site.B.detach()[:, I] + dB, site.A.detach()[I, :] + dA
                    self.sums[j][0].add_(B @ A)
                    continue
                sum_B, sum_A = self.sums[j]
                sum_B[:, I] += dB
                sum_A[I, :] += dA
                self.counts[j][I] += 1

    def result(self) -> list[tuple]:
        n = float(self.reported)
        if self.how in ("svd", "stack"):
            return [(P / n,) for (P,) in self.sums]
        if self.how == "mean":
            return [(B / n, A / n) for B, A in self.sums]
        out = []  # count: each component divided by the number of reporting clients touching it
        for (B, A), count in zip(self.sums, self.counts, strict=True):
            safe = torch.where(count > 0, count, torch.ones_like(count))
            out.append((B / safe[None, :], A / safe[:, None]))
        return out


def _svd(site: Site, P: torch.Tensor, r: int) -> None:
    """FlexLoRA: the best rank-r factorisation of the mean product, B = U_rΣ_r, A = V_rᵀ."""
    U, S, Vh = torch.linalg.svd(P, full_matrices=False)
    site.set_factors(U[:, :r] * S[:r], Vh[:r, :])
