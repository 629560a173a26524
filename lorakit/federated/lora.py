"""Server rounds of federated LoRA: FSLoRA and the baselines of the same shape, at both scales.

The server holds one rank-r adapter over a frozen base: per site l (README "Architecture": one
site for a matrix problem, one per peft ``LoraLayer`` for a model) B_l ∈ ℝ^{m_l×r},
A_l ∈ ℝ^{r×n_l} over W0_l, with the site's scaling s_l (:func:`~lorakit.problems.protocol.
site_scalings`: α/r, or peft's own). Each round (FSLoRA Algorithm 1):

1. a cohort of clients is sampled (all of them by default: the paper's full participation);
2. client i gets, per site, an index set I_i of k_i components and the sketch S_i = c_i·diag(1_{I_i}):
   FSLoRA draws I_i uniformly with c_i = r/k_i (Definition 3.1, so E[S] = I); HeteroLoRA takes
   the leading k_i components with c_i = 1 (zero-padding, spec §3.2); k_i = r is FedIT. Each site
   gets a fresh I (a block-diagonal sketch, spec §10.3; ``shared_index=True``: one I for every
   site), the same I for B and A of a site (the authors' code re-draws it per tensor, a defect:
   prior_art.md §A.1);
3. each client runs H local SGD steps on ℓ(W0 + s·B S_i A), eq. (4), through
   :func:`lorakit.local.train`: only B[:, I_i] and A[I_i, :] move (Lemma 3.2), trained as a
   rank-k_i adapter with the scaling s·c_i (W0 + s·B S A = W0 + s·c_i·B_I A_I, spec §2.5);
4. the upload is, per site, the slice deltas ΔB[:, I] (m×k_i) and ΔA[I, :] (k_i×n) as one message
   of k_i(m + n) entries, through the upload compressor (:mod:`lorakit.compressors`; top-k for
   FSLoRA App. C.2), its bytes from the compressor's payload; ``trace`` sees every
   :class:`Upload`;
5. the server pads the uploads to (m, r)/(r, n) and aggregates, eq. (5): divide by the number of
   clients that reported (the paper's N under full participation) or per entry by how many
   clients touched it; then a server optimizer: plain averaging (FedAvg) or Adam (FedAdam, as the
   FSLoRA code does). FlexLoRA re-factors the mean product B_iA_i by truncated SVD, FedStackLoRA
   merges it into the base and restarts the adapter with peft's init (A Kaiming-uniform from the
   ``init`` stream, B = 0), site by site.

Bytes per client and round, summed over the sites: up, the compressor's payload of each site's
k_i(m + n) entries (``bytes_per_float`` per float, ``bytes_per_index`` per index); down,
r(m + n) floats per site (``download="full"``: Algorithm 1 line 3), k_i(m + n) (``"slice"``) or
the stacked factors of every client, (Σ_j k_j)(m + n) (FedStackLoRA), plus the k_i indices of each
site's I when FSLoRA draws them (one I for all sites with ``shared_index``).

A client that drops out mid-round (after its local steps) uploads nothing; the round completes with
the rest, and the global adapter changes only after every upload is in. On a model ``rank`` is
every site's peft rank and ``alpha``, if given, must give each site's own scaling.

How the cohort trains. On a ``batched`` problem (a matrix problem) with ``impl="mask"`` the cohort
trains as one stack: each client's factors zero outside I_i and scaling s·c_i, which is the slice
problem exactly (the zero rows and columns get zero gradients), in chunks of clients whose iterates
stay in cache. Otherwise (``impl="slice"``, or a model) each client trains its k_i columns and rows
alone, as a device would, client after client (so minibatches are drawn client by client, where
a chunk of the stack draws them step by step). A model is never copied: the slices are swapped into
the one peft model as its LoRA parameters (:meth:`~lorakit.adapters.ModelProblem.factor_grads`),
and the server sums the uploads as they come, so no client's delta is kept.

Randomness: named streams (``budget``, ``init``, ``cohort``, ``sketch``, ``data``, ``noise``,
``compression``, ``dropout``; the model's own dropout from ``model``). Every seed starts from
``problem.reset()``: W0 is the problem's start (a model's adapted weights W0 + s·B·A, any adapter
it holds merged in) and the adapter is peft's initialisation, B = 0 and A Kaiming-uniform from the
``init`` stream, at both scales (so a one-site model runs as its matrix problem). A model holds the
global state after every round that changed it (``commit``): at the end the last seed's result,
after a divergence its last good state (the last logged round that passed; before any, the model as
it was built).
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
    check_real,
)
from ..compressors import Compressor, make_compressor, top_k
from ..config import Config, deprecated
from ..divergence import BLOWUP, DivergenceError, check_run, iterate, run_seeds
from ..estimators import Estimator
from ..local import Local, init_adapter, local_estimator, train
from ..problems.protocol import check_problem_protocol, site_scalings
from ..progress import bar as progress_bar
from ..rng import Streams
from ..tree import leaves, sq_norm, tree_like, tree_map
from .budgets import Budget, describe, resolve_budgets

__all__ = [
    "AGGREGATIONS",
    "SELECTIONS",
    "SERVER_OPTIMIZERS",
    "FederatedLoRA",
    "FederatedRun",
    "Upload",
    "simulate",
]

SELECTIONS = ("random", "leading")
_CACHE_BYTES = 2**21  # per-chunk working set of client iterates (a typical L2 cache)
AGGREGATIONS = ("mean", "count", "svd", "stack")
SERVER_OPTIMIZERS = ("avg", "adam")


@dataclass(frozen=True)
class FederatedLoRA(Config):
    """A federated LoRA configuration; :meth:`run` simulates it on a problem with clients (a
    :class:`~lorakit.problems.federated.FederatedProblem`, or a peft model split among clients).

    Parameters
    ----------
    rank : r, the server adapter's rank (a model's peft rank).
    gamma : γ, the clients' SGD step size on the factors.
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
        ``"stack"`` — FedStackLoRA (FLoRA): merge s·mean B_i A_i into the base and restart
        the adapter (spec §3.4); clients download the stacked factors.
    server_optimizer, server_lr : ``"avg"`` (X ← X + η_s·Δ) or ``"adam"`` (FedAdam, gradient −Δ).
    topk_ratio : keep ⌈ratio·k_i(m + n)⌉ entries of each site's upload (top-k by magnitude,
        :func:`~lorakit.compressors.top_k`; FSLoRA App. C.2).
    compressor : the upload compressor of each site's message when ``topk_ratio`` is unset (a
        :class:`~lorakit.compressors.Compressor` or a name; default the identity).
    estimator : the clients' oracle (:mod:`lorakit.local`): ``"gd"`` (exact local gradients),
        ``sgd(batch_size=b)`` (minibatches of the clients' rows) or ``sgd(sigma=σ)`` (additive
        noise of variance σ²); ``sigma=``/``batch_size=`` are its deprecated shorthand.
    alpha : LoRA scaling (the product is scaled by α/r); default α = r (a model: its own).
    download : ``"full"`` (Algorithm 1 line 3 broadcasts the whole adapter) or ``"slice"``.
    impl : ``"mask"`` (the cohort batched as stacked tensors) or ``"slice"`` (client by client);
        a model always trains client by client.
    bytes_per_float, bytes_per_index : message accounting.
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
        set_(self, "rank", check_int("rank", self.rank, low=1))
        set_(self, "gamma", check_real("gamma", self.gamma, low=0.0, low_open=True))
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
        set_(self, "compressor", make_compressor(self.compressor))
        if self.topk_ratio is not None and not self.compressor.is_identity:
            raise ValueError("give topk_ratio or compressor, not both")
        estimator = local_estimator(
            self.estimator, self.sigma, self.batch_size, owner="make_federated"
        )
        set_(self, "estimator", estimator)
        set_(self, "sigma", None)
        set_(self, "batch_size", None)
        if self.alpha is not None:
            check_real("alpha", self.alpha, low=0.0, low_open=True)
        check_choice("download", self.download, ("full", "slice"))
        check_choice("impl", self.impl, ("mask", "slice"))
        set_(self, "bytes_per_float", check_byte_size("bytes_per_float", self.bytes_per_float))
        set_(self, "bytes_per_index", check_byte_size("bytes_per_index", self.bytes_per_index))

    def local(self) -> Local:
        """The clients' local trainer: H plain SGD steps of size γ (eq. (4))."""
        return Local(self.local_steps, self.gamma, estimator=self.estimator)

    def client_budgets(self, num_clients: int, seed: int) -> torch.Tensor:
        """The k_i a run with ``seed`` gives its clients (drawn once, from the ``budget`` stream)."""
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
        shared_index: bool = False,
        trace=None,
    ):
        """Simulate ``rounds`` server rounds per seed (module docstring).

        ``problem`` has clients: a :class:`~lorakit.problems.federated.FederatedProblem`, or a
        :class:`~lorakit.adapters.ModelProblem` split among clients (``problem.split(M)``), whose
        every LoRA site runs the same rounds. ``progress=True`` shows a ``tqdm.auto`` bar over
        the rounds of each seed. ``shared_index=True`` draws one index set per client and round
        for every site (default: one per site). ``trace(upload)`` is called with every
        :class:`Upload` the server receives (in cohort order; dropped clients send none).

        Returns the history, one row per logged round and seed: ``round``, ``loss`` and ``gap`` of
        f(W0 + s·BA), ``grad_norm_sq`` = Σ_l ‖∇_{B_l} f‖² + ‖∇_{A_l} f‖², ``reported`` and
        ``dropped`` clients, ``bytes_up``/``bytes_down`` of the round and cumulative
        ``mb_up``/``mb_down``, and the budget summary ρ_1, ρ_2 (FSLoRA Theorem 4.4). With
        ``messages=True`` also a frame of every message: ``round``, ``client``, ``k``,
        ``bytes_up``, ``bytes_down``, ``dropped``.

        On a model the ``loss`` is the model's own with the global adapter in place
        (``problem.factor_loss``), ``gap`` is NaN and the factor gradients come by autograd
        through peft (LoRA dropout as in training).

        Divergence (:func:`simulate`): a non-finite or exploding aggregate, or a loss above
        ``blowup``·max(1, |f(W^0)|) (default 10³; a finite number > 1), stops the seed.
        """
        if not isinstance(shared_index, bool):
            raise ValueError(f"shared_index must be True or False, got {shared_index!r}")
        if trace is not None and not callable(trace):
            raise ValueError(f"trace must be a callable or None, got {type(trace).__name__}")

        def runner(cfg, problem, seed):
            return FederatedRun(
                cfg, problem, seed, progress=progress, shared_index=shared_index, trace=trace
            )

        return simulate(
            self, problem, rounds, seeds, log_every, messages, runner, on_divergence, blowup=blowup
        )


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
    seeds run on. ``progress`` draws a bar over the seeds.
    """
    check_problem_protocol(problem, clients=True)
    rounds, seeds, log_every, blowup = check_run(
        "rounds", rounds, seeds, log_every, on_divergence, blowup, messages=messages,
        progress=progress,
    )  # fmt: skip
    check_int("rank", cfg.rank, low=1, high=min(min(shape) for shape in problem.shapes))
    if cfg.cohort is not None:
        check_int("cohort", cfg.cohort, low=1, high=problem.M)

    frame, runs = run_seeds(
        progress_bar(seeds, enabled=progress, desc=cfg.method),
        lambda seed: runner(cfg, problem, check_int("seed", seed, low=0)),
        lambda run: run.run(rounds, log_every)[0],
        cfg.frame,
        on_divergence=on_divergence,
        blowup=blowup,
    )
    msgs = [m for run in runs for m in run.messages]  # a diverged seed's messages survive
    return (frame, pd.DataFrame(msgs)) if messages else frame


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


class FederatedRun:
    """One seed of a :class:`FederatedLoRA`: the server state (W0, B, A trees), its optimizer and
    the round loop (module docstring). Building it starts the seed (``problem.reset()``)."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg, problem, seed: int, *, progress=False, shared_index=False, trace=None):
        self.cfg, self.problem, self.seed = cfg, problem, seed
        self.progress, self.shared_index, self.trace = progress, shared_index, trace
        self.streams = Streams(seed)
        self.scalings = site_scalings(problem, cfg.rank, cfg.alpha)
        self.local = cfg.local()
        self.k = cfg.client_budgets(problem.M, seed)
        problem.reset()
        # peft's initialisation over the problem's start: A Kaiming-uniform, B = 0, so W = W^0
        self.W0 = problem.start()
        self.B, self.A = init_adapter(problem, cfg.rank, self.streams["init"])
        self.opt = None
        if cfg.server_optimizer == "adam":
            params = [x.requires_grad_(True) for x in leaves(self.B) + leaves(self.A)]
            self.opt = torch.optim.Adam(params, lr=cfg.server_lr, **cfg.adam_kwargs)
        self.mb_up = self.mb_down = 0.0
        self.messages = []  # kept on the run: a diverged seed's messages survive

    # -- one round -----------------------------------------------------------------------------
    def cohort(self) -> torch.Tensor:
        M, C = self.problem.M, self.cfg.cohort
        if C is None or C == M:
            return torch.arange(M)
        return torch.randperm(M, generator=self.streams["cohort"])[:C].sort().values

    def sketch(self, k: torch.Tensor) -> torch.Tensor:
        """(C, r) diagonals of S_i: c_i on I_i, 0 elsewhere (one I_i per client)."""
        r, C, dtype = self.cfg.rank, k.numel(), self.problem.dtype
        if self.cfg.selection == "leading":
            return (torch.arange(r) < k[:, None]).to(dtype)
        keys = torch.rand(C, r, generator=self.streams["sketch"])
        rank_of = keys.argsort(dim=1).argsort(dim=1)  # a uniform random k_i-subset per row
        chosen = rank_of < k[:, None]
        return chosen.to(dtype) * (r / k[:, None].to(dtype))

    def index_sets(self, k: torch.Tensor):
        """The tree of per-site sketch diagonals: one :meth:`sketch` draw per site, in site
        order (one for every site with ``shared_index``)."""
        sites = len(self.problem.shapes)
        draws = [self.sketch(k) for _ in range(1 if self.shared_index else sites)]
        draws = [d.to(self.problem.device) for d in draws]
        return tree_like(self.B, draws * sites if self.shared_index else draws)

    def trained(self, clients: torch.Tensor, svec):
        """H local steps of eq. (4) per cohort client, group by group: yields (positions in the
        cohort, padded deltas per site (C', m, r) and (C', r, n), zero outside each I)."""
        p, B0, A0 = self.problem, _detached(self.B), _detached(self.A)
        if p.batched and self.cfg.impl == "mask":
            # Chunks of clients small enough that a chunk's (m×n) iterates stay in cache.
            size = sum(m * n for m, n in p.shapes) * leaves(self.W0)[0].element_size()
            chunk = max(1, _CACHE_BYTES // size)
            for i in range(0, clients.numel(), chunk):
                part = slice(i, i + chunk)
                on = tree_map(lambda v: (v[part] != 0).to(v.dtype), svec)  # noqa: B023
                c = leaves(svec)[0][part].amax(dim=1)[:, None, None]  # c_i of each client
                B = tree_map(lambda b, o: b * o[:, None, :], B0, on)
                A = tree_map(lambda a, o: a * o[:, :, None], A0, on)
                scalings = tuple(s * c for s in self.scalings)  # s·c_i, broadcast over the stack
                new_B, new_A, _ = train(
                    p, self.W0, B, A, scalings, clients[part].to(p.device), self.local, self.streams
                )
                yield part, new_B - B, new_A - A
            return
        # Client by client on the k_i active columns and rows only (what a device computes).
        factor = leaves(svec)[0].amax(dim=1).tolist()  # r/k_i (FSLoRA) or 1 (HeteroLoRA)
        for c, l in enumerate(clients.tolist()):
            I = _index(svec, c)
            B_I, A_I = _sliced(B0, A0, I)
            scalings = tuple(s * factor[c] for s in self.scalings)
            B, A, _ = train(p, self.W0, B_I, A_I, scalings, l, self.local, self.streams)
            dB, dA = _padded(B - B_I, A - A_I, I, self.cfg.rank)
            yield slice(c, c + 1), tree_map(lambda x: x[None], dB), tree_map(lambda x: x[None], dA)

    def local_train(self, clients: torch.Tensor, svec):
        """The padded deltas of the whole cohort, per site (C, m, r) and (C, r, n)."""
        parts = list(self.trained(clients, svec))
        return _cat([dB for _, dB, _ in parts]), _cat([dA for _, _, dA in parts])

    def upload(self, dB, dA, svec, k: torch.Tensor) -> torch.Tensor:
        """Compress each client's message per site (in place) and return the bytes each sends."""
        cfg, shapes = self.cfg, self.problem.shapes
        sent = {}
        for kc in set(k.tolist()):
            payloads = [
                cfg.upload_compressor(kc * (m + n)).payload(kc * (m + n)) for m, n in shapes
            ]
            sent[kc] = sum(f * cfg.bytes_per_float + i * cfg.bytes_per_index for f, i in payloads)
        if cfg.compresses:
            gen = self.streams["compression"]
            for c in range(k.numel()):
                for db, da, v in zip(leaves(dB), leaves(dA), leaves(svec), strict=True):
                    I = v[c].nonzero().flatten()
                    part_B, part_A = db[c][:, I], da[c][I, :]
                    message = torch.cat([part_B.flatten(), part_A.flatten()])
                    out = cfg.upload_compressor(message.numel())(message, gen)
                    db[c][:, I] = out[: part_B.numel()].view_as(part_B)
                    da[c][I, :] = out[part_B.numel() :].view_as(part_A)
        return torch.tensor([sent[kc] for kc in k.tolist()], dtype=torch.long)

    def download_bytes(self, k: torch.Tensor) -> torch.Tensor:
        cfg, r = self.cfg, self.cfg.rank
        width = sum(m + n for m, n in self.problem.shapes)  # Σ_sites (m + n)
        if cfg.aggregation == "stack":  # the stacked factors of every client of the last round
            floats = torch.full_like(k, int(self.k.sum()) * width)
        elif cfg.download == "full":
            floats = torch.full_like(k, r * width)
        else:
            floats = k * width
        # FSLoRA's server also names each I_i: k_i indices per index set (none when I_i is
        # everything, as in FedIT, or always the leading k_i components).
        named = (k < r) & (cfg.selection == "random")
        sets = 1 if self.shared_index else len(self.problem.shapes)
        indices = torch.where(named, k * sets, torch.zeros_like(k))
        return floats * cfg.bytes_per_float + indices * cfg.bytes_per_index

    def accumulate(self, sums, dB, dA, svec, w: torch.Tensor):
        """Add a group of uploads (weights w: 1 reported, 0 dropped) to the running sums of
        eq. (5), site by site: the padded deltas and per-component counts, or the products of the
        clients' own adapters (their components only; FlexLoRA, FedStackLoRA)."""
        if self.cfg.aggregation in ("svd", "stack"):

            def product(B, A, db, da, v):
                P = (((B + db) * (v != 0).to(db.dtype)[:, None, :]) @ (A + da)) * w[:, None, None]
                return P.sum(0)

            part = (tree_map(product, _detached(self.B), _detached(self.A), dB, dA, svec),)
        else:
            part = (
                tree_map(lambda d: (d * w[:, None, None]).sum(0), dB),
                tree_map(lambda d: (d * w[:, None, None]).sum(0), dA),
                tree_map(lambda v: ((v != 0).to(w.dtype) * w[:, None]).sum(0), svec),
            )
        return part if sums is None else tuple(a + b for a, b in zip(sums, part, strict=True))

    def aggregate(self, sums, n: int):
        """Eq. (5) from the sums over the n clients that reported; None if nobody did."""
        if n == 0:
            return None
        if self.cfg.aggregation in ("svd", "stack"):
            return (tree_map(lambda P: P / n, sums[0]),)
        sum_B, sum_A, count = sums
        if self.cfg.aggregation == "mean":
            return tree_map(lambda x: x / n, sum_B), tree_map(lambda x: x / n, sum_A)
        # count: each component divided by the number of reporting clients touching it
        safe = tree_map(lambda c: torch.where(c > 0, c, torch.ones_like(c)), count)
        return (
            tree_map(lambda x, c: x / c[None, :], sum_B, safe),
            tree_map(lambda x, c: x / c[:, None], sum_A, safe),
        )

    def server_step(self, delta) -> None:
        """Apply the aggregate in one step, after every upload is in, site by site."""
        cfg, r = self.cfg, self.cfg.rank
        if cfg.aggregation == "svd":  # FlexLoRA: the best rank-r factorisation of the mean product
            svds = [torch.linalg.svd(P, full_matrices=False) for P in leaves(delta[0])]
            self.B = tree_like(self.B, [U[:, :r] * S[:r] for U, S, _ in svds])
            self.A = tree_like(self.A, [Vh[:r, :] for _, _, Vh in svds])
        elif cfg.aggregation == "stack":  # FedStackLoRA: merge into the base, restart the adapter
            s = tree_like(self.W0, self.scalings)
            self.W0 = tree_map(lambda w, P, s: w + s * P, self.W0, delta[0], s)
            self.B, self.A = init_adapter(self.problem, r, self.streams["init"])
        elif self.opt is None:
            self.B = tree_map(lambda b, d: b + cfg.server_lr * d, self.B, delta[0])
            self.A = tree_map(lambda a, d: a + cfg.server_lr * d, self.A, delta[1])
        else:
            grads = leaves(delta[0]) + leaves(delta[1])
            for x, d in zip(leaves(self.B) + leaves(self.A), grads, strict=True):
                x.grad = -d  # FedAdam treats −Δ as the gradient
            self.opt.step()

    def check_finite(self, t: int, delta, rows) -> None:
        """Refuse a non-finite or exploding aggregate before it touches the global adapter."""
        size = max(float(d.abs().max()) for part in delta for d in leaves(part))
        held = leaves(_detached(self.B)) + leaves(_detached(self.A))
        scale = 1e6 * (1.0 + max(float(x.abs().max()) for x in held))
        if not (math.isfinite(size) and size <= scale):
            what = "not finite" if not math.isfinite(size) else f"of size {size:.3g}"
            self.diverged(
                t, f"the clients' updates are {what}; the global adapter keeps round {t - 1}", rows
            )

    def diverged(self, t: int, what: str, rows) -> None:
        raise DivergenceError(
            f"{self.cfg.method} diverged in round {t} (seed {self.seed}): {what}. Lower "
            f"gamma = {self.cfg.gamma:g}: each client's sketched objective is (r/k_i)²·L-smooth "
            "(FSLoRA Proposition D.4)",
            step=t,
            seed=self.seed,
            frame=pd.DataFrame(rows),
        )

    def round(self, t: int, rows=()) -> tuple[int, int, float, float]:
        """One server round; the problem then holds the new global state. Returns (reported,
        dropped, bytes up, bytes down)."""
        cfg, p = self.cfg, self.problem
        with torch.no_grad():
            clients = self.cohort()
            k = self.k[clients]
            svec = self.index_sets(k)
            dropped = torch.rand(clients.numel(), generator=self.streams["dropout"]) < cfg.dropout
            reported = ~dropped
            w = reported.to(dtype=p.dtype, device=p.device)
            sums, up = None, []
            for part, dB, dA in self.trained(clients, svec):  # every upload is in, then Δ
                mine = tree_map(lambda v: v[part], svec)  # noqa: B023
                up.append(self.upload(dB, dA, mine, k[part]))
                if self.trace is not None:
                    for c in range(part.start, part.stop):
                        if reported[c]:
                            self.trace(self.upload_of(t, clients, k, svec, dB, dA, c, part))
                sums = self.accumulate(sums, dB, dA, mine, w[part])
            up = torch.where(reported, torch.cat(up), 0)
            down = self.download_bytes(k)
            delta = self.aggregate(sums, int(reported.sum()))
            if delta is not None:
                self.check_finite(t, delta, rows)
                self.server_step(delta)
                p.commit(*self.state())  # the model holds the global state
        self.mb_up += float(up.sum()) / 2**20
        self.mb_down += float(down.sum()) / 2**20
        self.messages.extend(
            {"seed": self.seed, "round": t, "client": int(c), "k": int(kc), "bytes_up": int(u),
             "bytes_down": int(d), "dropped": bool(x)}
            for c, kc, u, d, x in zip(clients, k, up, down, dropped, strict=True)
        )  # fmt: skip
        return int(reported.sum()), int(dropped.sum()), float(up.sum()), float(down.sum())

    def upload_of(self, t, clients, k, svec, dB, dA, c: int, part: slice) -> Upload:
        """Cohort client c's :class:`Upload` (its deltas are at c − part.start of the group)."""
        index = _index(svec, c)
        own = tree_map(lambda d: d[c - part.start], dB), tree_map(lambda d: d[c - part.start], dA)
        return Upload(t, int(clients[c]), int(k[c]), index, *_sliced(*own, index))

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> tuple:
        """(W0, B, A) now: W0 is replaced, never changed in place; B and A are copied."""
        return self.W0, _copy(self.B), _copy(self.A)

    def commit(self, t: int, state) -> None:
        """Write ``state`` into the problem (round 0: the problem as it was built)."""
        if t == 0:
            self.problem.reset()
        else:
            self.problem.commit(*state)

    def run(self, rounds: int, log_every: int):
        """(rows, messages) of ``rounds`` rounds (:func:`lorakit.divergence.iterate`)."""
        rows = iterate(self, rounds, log_every, unit="round", progress=self.progress)
        return rows, self.messages

    def log(self, t: int, counts: tuple) -> dict:
        p, (reported, dropped, up, down) = self.problem, counts or (0, 0, 0.0, 0.0)
        B, A = _detached(self.B), _detached(self.A)
        with torch.no_grad():
            loss = float(p.factor_loss(self.W0, B, A, self.scalings))
        gB, gA = p.factor_grads(self.W0, B, A, self.scalings)
        return {
            "seed": self.seed, "round": t, "loss": loss,
            "gap": loss - p.f_star if p.f_star is not None else math.nan,
            "grad_norm_sq": sq_norm(gB) + sq_norm(gA), "reported": reported, "dropped": dropped,
            "bytes_up": up, "bytes_down": down, "mb_up": self.mb_up, "mb_down": self.mb_down,
            **describe(self.k, self.cfg.rank),
        }  # fmt: skip


# -- per-site helpers over trees -------------------------------------------------------------------
def _detached(tree):
    return tree_map(lambda x: x.detach(), tree)


def _copy(tree):
    return tree_map(lambda x: x.detach().clone(), tree)


def _index(svec, c: int):
    """Client c's index sets I (sorted), per site."""
    return tree_map(lambda v: v[c].nonzero().flatten(), svec)


def _sliced(B, A, I):
    """(B[:, I], A[I, :]) per site."""
    return tree_map(lambda b, i: b[:, i], B, I), tree_map(lambda a, i: a[i, :], A, I)


def _padded(B, A, I, rank: int):
    """(m×k, k×n) factors of the components I zero-padded to (m, r) and (r, n), per site."""

    def pad(x, i, dim):
        shape = list(x.shape)
        shape[dim] = rank
        return x.new_zeros(shape).index_copy_(dim, i, x)

    return tree_map(lambda b, i: pad(b, i, 1), B, I), tree_map(lambda a, i: pad(a, i, 0), A, I)


def _cat(trees: list):
    return tree_map(lambda *xs: torch.cat(xs), *trees)
