"""Server rounds of federated LoRA: FSLoRA and the baselines of its shape, at both scales.

The server holds one rank-r adapter B_l ∈ ℝ^{m_l×r}, A_l ∈ ℝ^{r×n_l} over a frozen W0_l per site l
(README "Architecture"), scaled by s_l (:func:`~lorakit.problems.protocol.site_scalings`). Each
round (FSLoRA Algorithm 1):

1. a cohort of clients is sampled (default all: full participation);
2. client i gets, per site, an index set I_i of k_i components, the sketch S_i = c_i·diag(1_{I_i}):
   FSLoRA draws I_i uniformly, c_i = r/k_i (Definition 3.1, E[S] = I); HeteroLoRA takes the
   leading k_i, c_i = 1 (spec §3.2); k_i = r is FedIT. One I per site (spec §10.3; one for all
   with ``shared_index``), the same for B and A (prior_art.md §A.1);
3. it takes H local steps on ℓ(W0 + s·B S_i A), eq. (4) (:func:`lorakit.local.train`): only
   B[:, I_i] and A[I_i, :] move (Lemma 3.2), a rank-k_i adapter scaled by s·c_i (spec §2.5);
4. it uploads ΔB[:, I], ΔA[I, :] per site, one message of k_i(m + n) entries, through the upload
   compressor (:mod:`lorakit.compressors`); a client that drops out uploads nothing;
5. once every upload is in, the server pads them to (m, r)/(r, n), aggregates (eq. (5),
   ``aggregation``) and steps (FedAvg or FedAdam, ``server_optimizer``).

Bytes per client and round, over the sites: up, the compressor's payload; down, r(m + n) floats
(``download="full"``, Algorithm 1 line 3), k_i(m + n) (``"slice"``) or, FedStackLoRA, the last
round's reports' factors (Σ_j k_j)(m + n); plus the k_i indices of each I that FSLoRA draws.

A ``batched`` problem (``impl="mask"``) or a model whose cohort takes one pass (``batched_factors``)
trains the cohort as one stack, each client's factors zero outside I_i (the slice problem exactly);
otherwise each client trains its slices alone (swapped into the one peft model), as a device does.
Streams: ``budget``, ``init``, ``cohort``, ``sketch``, ``data``, ``noise``, ``compression``,
``dropout`` (a model's dropout: ``model``). A seed starts from ``problem.reset()`` with peft's init
(B = 0, A Kaiming-uniform); a model holds the global state after every round, after a divergence
the last good one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import pandas as pd
import torch

from .._validation import check_byte_size, check_choice, check_flag, check_int, check_real
from ..compressors import Compressor, make_compressor, top_k
from ..config import Config, deprecated
from ..divergence import BLOWUP, DivergenceError, check_run, iterate, run_seeds
from ..estimators import Estimator
from ..local import Local, init_adapter, local_estimator, train
from ..problems.protocol import check_problem_protocol, site_scalings
from ..rng import Streams
from ..tree import leaves, sq_norm, tree_like, tree_map
from .budgets import Budget, describe, resolve_budgets

__all__ = [
    "AGGREGATIONS",
    "SELECTIONS",
    "SERVER_OPTIMIZERS",
    "FederatedLoRA",
    "FederatedRun",
    "ServerRun",
    "Upload",
    "client_update",
    "simulate",
    "svd_factors",
]

SELECTIONS = ("random", "leading")
_CACHE_BYTES = 2**21  # per-chunk working set of client iterates (a typical L2 cache)
AGGREGATIONS = ("mean", "count", "svd", "stack")
SERVER_OPTIMIZERS = ("avg", "adam")


@dataclass(frozen=True)
class FederatedLoRA(Config):
    """A federated LoRA configuration; :meth:`run` simulates it on a problem with clients.

    Parameters
    ----------
    rank : r, the server adapter's rank (a model's peft rank).
    gamma : γ, the clients' SGD step size on the factors.
    budgets : k_i per client: an int, a sequence, or a :class:`~lorakit.federated.budgets.Budget`
        drawn once per run; None means k_i = r (FedIT).
    selection : ``"random"`` (FSLoRA: uniform I_i, scale r/k_i) or ``"leading"`` (HeteroLoRA).
    local_steps, cohort, dropout : H; clients per round (None: all); the probability that a
        cohort client drops out mid-round.
    aggregation : ``"mean"`` (eq. (5): over the clients that reported), ``"count"`` (each entry
        over the reporting clients whose I_i contains it), ``"svd"`` (FlexLoRA: the mean product
        B_i A_i re-factored, B = U_rΣ_r, A = V_rᵀ; spec fslora.md §3.3) or ``"stack"``
        (FedStackLoRA: s·mean B_i A_i merged into the base, then a fresh adapter; §3.4).
    server_optimizer, server_lr, adam_kwargs : ``"avg"`` (X ← X + η_s·Δ) or ``"adam"`` (FedAdam:
        ``torch.optim.Adam`` on the gradient −Δ).
    topk_ratio : keep ⌈ratio·k_i(m + n)⌉ entries of each site's upload (top-k by magnitude,
        :func:`~lorakit.compressors.top_k`; FSLoRA App. C.2).
    compressor : the upload compressor when ``topk_ratio`` is unset (default the identity).
    estimator : the clients' oracle (:mod:`lorakit.local`): ``"gd"``, ``sgd(batch_size=b)`` or
        ``sgd(sigma=σ)``; ``sigma=``/``batch_size=`` are its deprecated shorthand.
    alpha : LoRA scaling (the product is scaled by α/r); default α = r (a model: its own).
    download : ``"full"`` (the whole adapter, Algorithm 1 line 3) or ``"slice"``.
    impl : ``"mask"`` (the cohort as stacked tensors) or ``"slice"`` (client by client).
    bytes_per_float, bytes_per_index, method : the messages; the name in the frame.
    """

    rank: int
    gamma: float
    budgets: int | tuple | Budget | None = None
    selection: str = "random"
    local_steps: int = 1
    cohort: int | None = None
    dropout: float = 0.0
    aggregation: str = "mean"
    server_optimizer: str = "avg"
    server_lr: float = 1.0
    topk_ratio: float | None = None
    compressor: Compressor | str = "identity"
    estimator: Estimator | str = "gd"
    alpha: float | None = None
    download: str = "full"
    impl: str = "mask"
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    method: str = "fslora"
    adam_kwargs: dict = field(default_factory=dict)
    sigma: float | None = deprecated()
    batch_size: int | None = deprecated()

    def __post_init__(self):
        set_ = object.__setattr__
        for name in ("rank", "local_steps"):
            set_(self, name, check_int(name, getattr(self, name), low=1))
        for name in ("gamma", "server_lr"):
            set_(self, name, check_real(name, getattr(self, name), low=0.0, low_open=True))
        check_choice("selection", self.selection, SELECTIONS)
        if self.cohort is not None:
            set_(self, "cohort", check_int("cohort", self.cohort, low=1))
        # dropout = 1 drops every client in every round: nothing would ever train.
        dropout = check_real("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        set_(self, "dropout", dropout)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        replaces = self.aggregation in ("svd", "stack")
        if replaces and (self.selection, self.server_optimizer) != ("leading", "avg"):
            raise ValueError(
                f"aggregation={self.aggregation!r} (FlexLoRA/FedStackLoRA) trains the leading k_i "
                "components and replaces the adapter: use selection='leading', server_optimizer='avg'"
            )
        check_choice("server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
        if self.topk_ratio is not None:
            check_real("topk_ratio", self.topk_ratio, low=0.0, high=1.0, low_open=True)
        set_(self, "compressor", make_compressor(self.compressor))
        if self.topk_ratio is not None and not self.compressor.is_identity:
            raise ValueError("give topk_ratio or compressor, not both")
        shorthand = self.sigma, self.batch_size  # deprecated: folded into the estimator
        set_(self, "estimator", local_estimator(self.estimator, *shorthand, owner="make_federated"))
        set_(self, "sigma", None)
        set_(self, "batch_size", None)
        if self.alpha is not None:
            check_real("alpha", self.alpha, low=0.0, low_open=True)
        check_choice("download", self.download, ("full", "slice"))
        check_choice("impl", self.impl, ("mask", "slice"))
        for name in ("bytes_per_float", "bytes_per_index"):
            set_(self, name, check_byte_size(name, getattr(self, name)))

    def local(self) -> Local:
        """The clients' local trainer: H plain SGD steps of size γ (eq. (4))."""
        return Local(self.local_steps, self.gamma, estimator=self.estimator)

    def client_budgets(self, num_clients: int, seed: int) -> torch.Tensor:
        """The k_i a run with ``seed`` gives its clients (drawn once, ``budget`` stream)."""
        budgets = self.budgets if self.budgets is not None else self.rank
        return resolve_budgets(budgets, num_clients, self.rank, Streams(seed)["budget"])

    def upload_compressor(self, d: int) -> Compressor:
        """The compressor of one site's upload of d = k_i(m + n) entries."""
        if self.topk_ratio is not None and self.topk_ratio < 1:
            return top_k(math.ceil(self.topk_ratio * d))
        return self.compressor

    @property
    def compresses(self) -> bool:
        """False when every upload is sent as it is (the identity)."""
        return not self.upload_compressor(1).is_identity

    @property
    def scale(self) -> float:
        """α/r of a matrix problem."""
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rank": self.rank,
            "budgets": str(self.budgets if self.budgets is not None else self.rank),
            "estimator": str(self.estimator),
            "local_steps": self.local_steps,
            "server_optimizer": self.server_optimizer,
        }

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
        shared_index: bool = False,
        trace=None,
    ):
        """Simulate ``rounds`` server rounds per seed on ``problem`` (a FederatedProblem, or a
        ModelProblem split among clients). ``progress=True`` shows a bar over each seed's rounds;
        ``shared_index=True`` draws one index set per client and round for every site;
        ``trace(upload)`` sees every :class:`Upload` the server receives, in cohort order.

        Returns the history, one row per logged round and seed: ``round``, ``loss`` and ``gap`` of
        f(W0 + s·BA) (on a model its own loss, ``gap`` NaN, the gradients by autograd through
        peft), ``grad_norm_sq`` = Σ_l ‖∇_{B_l} f‖² + ‖∇_{A_l} f‖², ``reported`` and ``dropped``
        clients, ``bytes_up``/``bytes_down`` of the round, cumulative ``mb_up``/``mb_down``, and
        the budget summary ρ_1, ρ_2 (FSLoRA Theorem 4.4). With ``messages=True`` also a frame of
        every message: ``round``, ``client``, ``k``, ``bytes_up``, ``bytes_down``, ``dropped``.
        Divergence (a non-finite or exploding aggregate, too): see :mod:`lorakit.divergence`.
        """
        check_flag("shared_index", shared_index)
        if trace is not None and not callable(trace):
            raise ValueError(f"trace must be a callable or None, got {type(trace).__name__}")
        runner = partial(FederatedRun, shared_index=shared_index, trace=trace)
        options = (log_every, messages, runner, on_divergence, progress, blowup)
        return simulate(self, problem, rounds, seeds, *options)


def simulate(
    cfg,
    problem,
    rounds: int,
    seeds=0,
    log_every: int = 1,
    messages: bool = False,
    runner=None,
    on_divergence: str = "raise",
    progress: bool = False,
    blowup: float = BLOWUP,
):
    """The seed loop of every federated method (:func:`lorakit.divergence.run_seeds`): each seed
    runs ``runner(cfg, problem, seed)`` (default :class:`FederatedRun`); its messages are kept."""
    check_problem_protocol(problem, clients=True)
    rounds, seeds, log_every, blowup = check_run(
        "rounds", rounds, seeds, log_every, on_divergence, blowup, messages=messages,
        progress=progress,
    )  # fmt: skip
    check_int("rank", cfg.rank, low=1, high=min(min(shape) for shape in problem.shapes))
    if cfg.cohort is not None:
        check_int("cohort", cfg.cohort, low=1, high=problem.M)
    runner = FederatedRun if runner is None else runner
    frame, runs = run_seeds(
        seeds,
        lambda seed: runner(cfg, problem, seed),
        lambda run: run.run(rounds, log_every, progress)[0],
        cfg.frame,
        on_divergence=on_divergence,
        blowup=blowup,
    )
    msgs = [m for run in runs for m in run.messages]
    return (frame, pd.DataFrame(msgs)) if messages else frame


def svd_factors(P: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexLoRA's re-factorisation B = U_r Σ_r, A = V_rᵀ (truncated SVD of P), each singular pair's
    sign fixed as scikit-learn's ``svd_flip`` does, so that P's rounded differently agree."""
    U, S, Vh = torch.linalg.svd(P, full_matrices=False)
    U, S, Vh = U[:, :r], S[:r], Vh[:r]
    pivot = U.gather(0, U.abs().argmax(0, keepdim=True))[0]
    sign = torch.where(pivot < 0, -1.0, 1.0).to(U)
    return U * (S * sign), Vh * sign[:, None]


def client_update(problem, W0, B, A, scalings, client, local: Local, streams):
    """One client's round (FSLoRA Algorithm 1 lines 4–6, eq. (4)), in process or on a Flower node:
    ``local``'s steps on its k_i columns B = B[:, I] and rows A = A[I, :] per site, scaled by
    s·c_i, on its rows (or a stack's, :func:`lorakit.local.train`); returns its upload before
    compression, (ΔB[:, I], ΔA[I, :]) per site."""
    new_B, new_A, _ = train(problem, W0, B, A, scalings, client, local, streams)
    return new_B - B, new_A - A


@dataclass(frozen=True)
class Upload:
    """One client's upload in one round (FSLoRA Algorithm 1 line 7), per site (trees in site
    order): ``index`` I (sorted, k entries; shared by B and A), ``dB`` = ΔB[:, I] (m×k) and
    ``dA`` = ΔA[I, :] (k×n), after compression."""

    round: int
    client: int
    k: int
    index: object
    dB: object
    dA: object

    def padded(self, rank: int):
        """(ΔB, ΔA) zero-padded to (m, r) and (r, n) per site, as the server aggregates them."""
        return _padded(self.dB, self.dA, self.index, rank)


class ServerRun:
    """One seed's server, what every federated method shares: streams, scalings, the cohort, the
    rounds (:func:`lorakit.divergence.iterate`), the message table and the divergence checks."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)
    hint = ""  # the divergence error's advice, formatted with ``cfg``
    message_columns: tuple = ()  # a message row's per-client columns
    counts: ClassVar[dict] = {}  # the names of what ``round`` returns, and their values at round 0

    def __init__(self, cfg, problem, seed: int):
        self.cfg, self.problem, self.seed = cfg, problem, seed
        self.streams = Streams(seed)
        self.scalings = site_scalings(problem, cfg.rank, cfg.alpha)
        self.messages, self.mb_up, self.mb_down = [], 0.0, 0.0

    def run(self, rounds: int, log_every: int, progress: bool = False):
        """(rows, messages) of ``rounds`` rounds."""
        return iterate(self, rounds, log_every, unit="round", progress=progress), self.messages

    def cohort(self) -> torch.Tensor:
        """The round's clients, sorted: all M, or C drawn without replacement (``cohort``)."""
        M, C = self.problem.M, self.cfg.cohort
        if C is None or C == M:
            return torch.arange(M)
        return torch.randperm(M, generator=self.streams["cohort"])[:C].sort().values

    def record(self, t: int, *columns: list) -> None:
        """Round t's message rows from per-client ``columns`` (:attr:`message_columns`), and MB."""
        names = self.message_columns
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        self.mb_up += sum(row["bytes_up"] for row in rows) / 2**20
        self.mb_down += sum(row["bytes_down"] for row in rows) / 2**20
        self.messages.extend({"seed": self.seed, "round": t, **row} for row in rows)

    def row(self, t: int, loss: float, grad_norm_sq: float, counts: tuple) -> dict:
        """The history row after round t (``counts``: what :meth:`round` returned, () at t = 0)."""
        gap = loss - self.problem.f_star if self.problem.f_star is not None else math.nan
        row = dict(seed=self.seed, round=t, loss=loss, gap=gap, grad_norm_sq=grad_norm_sq)
        row.update(zip(self.counts, counts or self.counts.values(), strict=True))
        return {**row, "mb_up": self.mb_up, "mb_down": self.mb_down}

    def check_finite(self, t: int, delta: list, held: list, what: str, rows) -> None:
        """Refuse a non-finite update ``delta`` (matrices), or one 10⁶ times the ``held`` ones,
        before it is applied; ``what`` names it (``{size}``) and the round kept (``{last}``)."""
        size = max(float(d.abs().max()) for d in delta)
        scale = 1e6 * (1.0 + max(float(x.abs().max()) for x in held))
        if not (math.isfinite(size) and size <= scale):
            size = "not finite" if not math.isfinite(size) else f"of size {size:.3g}"
            self.diverged(t, what.format(size=size, last=t - 1), rows)

    def diverged(self, t: int, what: str, rows) -> None:
        hint = self.hint.format(cfg=self.cfg)
        message = f"{self.cfg.method} diverged in round {t} (seed {self.seed}): {what}. {hint}"
        raise DivergenceError(message, step=t, seed=self.seed, frame=pd.DataFrame(rows))


class FederatedRun(ServerRun):
    """One seed of a :class:`FederatedLoRA`: the server state (W0, B, A trees), its optimizer and
    the round loop (module docstring). Building it starts the seed (``problem.reset()``)."""

    hint = (
        "Lower gamma = {cfg.gamma:g}: each client's sketched objective is (r/k_i)²·L-smooth "
        "(FSLoRA Proposition D.4)"
    )
    message_columns = ("client", "k", "bytes_up", "bytes_down", "dropped")
    counts: ClassVar[dict] = {"reported": 0, "dropped": 0, "bytes_up": 0.0, "bytes_down": 0.0}

    def __init__(self, cfg, problem, seed: int, *, shared_index=False, trace=None):
        super().__init__(cfg, problem, seed)
        self.shared_index, self.trace = shared_index, trace
        self.local = cfg.local()
        self.k = cfg.client_budgets(problem.M, seed)
        problem.reset()
        self.W0 = problem.start()
        self.B, self.A = init_adapter(problem, cfg.rank, self.streams["init"])
        self.opt = None
        if cfg.server_optimizer == "adam":
            params = [x.requires_grad_(True) for x in leaves(self.B) + leaves(self.A)]
            self.opt = torch.optim.Adam(params, lr=cfg.server_lr, **cfg.adam_kwargs)
        self.stacked = 0  # FedStackLoRA: Σ k_j of the last round's reports (its download)

    def sketch(self, k: torch.Tensor) -> torch.Tensor:
        """(C, r) diagonals of S_i: c_i on I_i, 0 elsewhere (one I_i per client)."""
        r, C, dtype = self.cfg.rank, k.numel(), self.problem.dtype
        if self.cfg.selection == "leading":
            return (torch.arange(r) < k[:, None]).to(dtype)
        keys = torch.rand(C, r, generator=self.streams["sketch"])
        rank_of = keys.argsort(dim=1).argsort(dim=1)  # a uniform random k_i-subset per row
        return (rank_of < k[:, None]).to(dtype) * (r / k[:, None].to(dtype))

    def index_sets(self, k: torch.Tensor):
        """One :meth:`sketch` per site in site order (one for all sites with ``shared_index``)."""
        sites, shared = len(self.problem.shapes), self.shared_index
        draws = [self.sketch(k).to(self.problem.device) for _ in range(1 if shared else sites)]
        return tree_like(self.B, draws * sites if shared else draws)

    def trained(self, clients: torch.Tensor, svec, dropped=None):
        """H local steps of eq. (4) per cohort client, group by group: yields (positions in the
        cohort, padded deltas per site (C', m, r) and (C', r, n), zero outside each I). ``dropped``
        (C bools) names the clients that drop out after training (Flower's run skips them)."""
        p, B0, A0 = self.problem, _detached(self.B), _detached(self.A)
        if (p.batched or p.batched_factors) and self.cfg.impl == "mask":
            # Chunks whose (m×n) iterates stay in cache (a model sizes its own passes).
            size = sum(m * n for m, n in p.shapes) * leaves(self.W0)[0].element_size()
            chunk = max(1, _CACHE_BYTES // size) if p.batched else clients.numel()
            for i in range(0, clients.numel(), chunk):
                part = slice(i, i + chunk)
                on = tree_map(lambda v: (v[part] != 0).to(v.dtype), svec)  # noqa: B023
                c = leaves(svec)[0][part].amax(dim=1)[:, None, None]  # c_i of each client
                B = tree_map(lambda b, o: b * o[:, None, :], B0, on)
                A = tree_map(lambda a, o: a * o[:, :, None], A0, on)
                scalings = tuple(s * c for s in self.scalings)  # s·c_i, broadcast over the stack
                who = clients[part].to(p.device)
                dB, dA = client_update(p, self.W0, B, A, scalings, who, self.local, self.streams)
                yield part, dB, dA
            return
        # Client by client on the k_i active columns and rows only (what a device computes).
        factor = leaves(svec)[0].amax(dim=1).tolist()  # r/k_i (FSLoRA) or 1 (HeteroLoRA)
        for c, l in enumerate(clients.tolist()):
            I = _index(svec, c)
            scalings = tuple(s * factor[c] for s in self.scalings)
            B_I, A_I = _sliced(B0, A0, I)
            dB, dA = client_update(p, self.W0, B_I, A_I, scalings, l, self.local, self.streams)
            dB, dA = _padded(dB, dA, I, self.cfg.rank)
            yield slice(c, c + 1), tree_map(lambda x: x[None], dB), tree_map(lambda x: x[None], dA)

    def local_train(self, clients: torch.Tensor, svec):
        """The padded deltas of the whole cohort, per site (C, m, r) and (C, r, n)."""
        parts = list(self.trained(clients, svec))
        return tuple(tree_map(lambda *xs: torch.cat(xs), *[p[j] for p in parts]) for j in (1, 2))

    def upload(self, dB, dA, svec) -> None:
        """Compress each client's message per site, in place (the server receives it so)."""
        cfg = self.cfg
        if not cfg.compresses:
            return
        for c in range(leaves(svec)[0].shape[0]):
            for db, da, v in zip(leaves(dB), leaves(dA), leaves(svec), strict=True):
                I = v[c].nonzero().flatten()
                part_B, part_A = db[c][:, I], da[c][I, :]
                message = torch.cat([part_B.flatten(), part_A.flatten()])
                out = cfg.upload_compressor(message.numel())(message, self.streams["compression"])
                db[c][:, I] = out[: part_B.numel()].view_as(part_B)
                da[c][I, :] = out[part_B.numel() :].view_as(part_A)

    def upload_bytes(self, k: torch.Tensor) -> torch.Tensor:
        """The bytes each client of budgets ``k`` uploads (module docstring)."""
        cfg, sent = self.cfg, {}
        for kc in set(k.tolist()):
            sizes = [kc * (m + n) for m, n in self.problem.shapes]
            payloads = [cfg.upload_compressor(d).payload(d) for d in sizes]
            sent[kc] = sum(f * cfg.bytes_per_float + i * cfg.bytes_per_index for f, i in payloads)
        return torch.tensor([sent[kc] for kc in k.tolist()], dtype=torch.long)

    def download_bytes(self, k: torch.Tensor) -> torch.Tensor:
        cfg, r = self.cfg, self.cfg.rank
        width = sum(m + n for m, n in self.problem.shapes)  # Σ_sites (m + n)
        if cfg.aggregation == "stack":  # the stacked factors of the last round's reports
            floats = torch.full_like(k, self.stacked * width)
        elif cfg.download == "full":
            floats = torch.full_like(k, r * width)
        else:
            floats = k * width
        # FSLoRA's server names each I_i it draws: k_i indices per set (FedIT's, leading: none).
        named = (k < r) & (cfg.selection == "random")
        sets = 1 if self.shared_index else len(self.problem.shapes)
        indices = torch.where(named, k * sets, torch.zeros_like(k))
        return floats * cfg.bytes_per_float + indices * cfg.bytes_per_index

    def accumulate(self, sums, dB, dA, svec, w: torch.Tensor):
        """Add a group of uploads (weights w: 1 reported, 0 dropped) to eq. (5)'s sums per site: the
        deltas and per-component counts, or the clients' own products (FlexLoRA, FedStackLoRA)."""

        def wsum(x):  # Σ_i w_i·x_i over the group's clients
            return (x * w.view(-1, *(1,) * (x.dim() - 1))).sum(0)

        def product(B, A, db, da, v):
            return wsum(((B + db) * (v != 0).to(db.dtype)[:, None, :]) @ (A + da))

        if self.cfg.aggregation in ("svd", "stack"):
            part = (tree_map(product, _detached(self.B), _detached(self.A), dB, dA, svec),)
        else:
            counts = tree_map(lambda v: wsum((v != 0).to(w.dtype)), svec)
            part = (tree_map(wsum, dB), tree_map(wsum, dA), counts)
        return part if sums is None else tuple(a + b for a, b in zip(sums, part, strict=True))

    def aggregate(self, sums, n: int):
        """Eq. (5) from the sums over the n clients that reported; None if nobody did."""
        if n == 0:
            return None
        if self.cfg.aggregation != "count":  # the mean (of the deltas, or of the products)
            return tuple(tree_map(lambda x: x / n, part) for part in sums[:2])
        # count: each component divided by the number of reporting clients touching it
        sum_B, sum_A, count = sums
        safe = tree_map(lambda c: torch.where(c > 0, c, torch.ones_like(c)), count)
        B = tree_map(lambda x, c: x / c[None, :], sum_B, safe)
        return B, tree_map(lambda x, c: x / c[:, None], sum_A, safe)

    def server_step(self, delta) -> None:
        """Apply the aggregate in one step, after every upload is in, site by site."""
        cfg, r = self.cfg, self.cfg.rank
        if cfg.aggregation == "svd":  # FlexLoRA: the best rank-r factorisation of the mean product
            B, A = zip(*(svd_factors(P, r) for P in leaves(delta[0])), strict=True)
            self.B, self.A = tree_like(self.B, B), tree_like(self.A, A)
        elif cfg.aggregation == "stack":  # FedStackLoRA: merge into the base, restart the adapter
            s = tree_like(self.W0, self.scalings)
            self.W0 = tree_map(lambda w, P, s: w + s * P, self.W0, delta[0], s)
            self.B, self.A = init_adapter(self.problem, r, self.streams["init"])
        elif self.opt is None:
            self.B, self.A = self.B + cfg.server_lr * delta[0], self.A + cfg.server_lr * delta[1]
        else:
            grads = leaves(delta[0]) + leaves(delta[1])
            for x, d in zip(leaves(self.B) + leaves(self.A), grads, strict=True):
                x.grad = -d  # FedAdam treats −Δ as the gradient
            self.opt.step()

    def round(self, t: int, rows=()) -> tuple[int, int, float, float]:
        """One round (the problem then holds it): (reported, dropped, bytes up, bytes down)."""
        cfg, p = self.cfg, self.problem
        with torch.no_grad():
            clients = self.cohort()
            k = self.k[clients]
            svec = self.index_sets(k)
            dropped = torch.rand(clients.numel(), generator=self.streams["dropout"]) < cfg.dropout
            reported = ~dropped
            w = reported.to(dtype=p.dtype, device=p.device)
            sums = None
            for part, dB, dA in self.trained(clients, svec, dropped):  # every upload, then Δ
                mine = tree_map(lambda v: v[part], svec)  # noqa: B023
                self.upload(dB, dA, mine)
                if self.trace is not None:  # each reported client's Upload
                    for c in range(part.start, part.stop):
                        if reported[c]:
                            I, j = _index(svec, c), c - part.start  # its deltas: at j in the group
                            own = [tree_map(lambda d: d[j], d) for d in (dB, dA)]  # noqa: B023
                            self.trace(Upload(t, int(clients[c]), int(k[c]), I, *_sliced(*own, I)))
                sums = self.accumulate(sums, dB, dA, mine, w[part])
            up = torch.where(reported, self.upload_bytes(k), 0)
            down = self.download_bytes(k)
            self.stacked = int(k[reported].sum())  # what next round's download stacks
            delta = self.aggregate(sums, int(reported.sum()))
            if delta is not None:
                held = leaves(_detached(self.B)) + leaves(_detached(self.A))
                what = "the clients' updates are {size}; the global adapter keeps round {last}"
                self.check_finite(t, [d for x in delta for d in leaves(x)], held, what, rows)
                self.server_step(delta)
                p.commit(*self.state())  # the model holds the global state
        self.record(t, clients.tolist(), k.tolist(), up.tolist(), down.tolist(), dropped.tolist())
        return int(reported.sum()), int(dropped.sum()), float(up.sum()), float(down.sum())

    def state(self) -> tuple:
        """(W0, B, A) now: W0 is replaced, never changed in place; B and A are copied."""
        return self.W0, *(tree_map(lambda x: x.detach().clone(), X) for X in (self.B, self.A))

    def commit(self, t: int, state) -> None:
        """Write ``state`` into the problem (round 0: the problem as it was built)."""
        if t == 0:
            self.problem.reset()
        else:
            self.problem.commit(*state)

    def log(self, t: int, counts: tuple) -> dict:
        p, B, A = self.problem, _detached(self.B), _detached(self.A)
        with torch.no_grad():
            loss = float(p.factor_loss(self.W0, B, A, self.scalings))
        gB, gA = p.factor_grads(self.W0, B, A, self.scalings)
        row = self.row(t, loss, sq_norm(gB) + sq_norm(gA), counts)
        return {**row, **describe(self.k, self.cfg.rank)}


def _detached(tree):
    return tree_map(lambda x: x.detach(), tree)


def _index(svec, c: int):
    """Client c's index sets I (sorted), per site."""
    return tree_map(lambda v: v[c].nonzero().flatten(), svec)


def _sliced(B, A, I):
    """(B[:, I], A[I, :]) per site."""
    return tree_map(lambda b, i: b[:, i], B, I), tree_map(lambda a, i: a[i, :], A, I)


def _padded(B, A, I, rank: int):
    """(m×k, k×n) factors of the components I zero-padded to (m, r) and (r, n), per site."""
    B = tree_map(lambda b, i: b.new_zeros(b.shape[0], rank).index_copy_(1, i, b), B, I)
    return B, tree_map(lambda a, i: a.new_zeros(rank, a.shape[1]).index_copy_(0, i, a), A, I)
