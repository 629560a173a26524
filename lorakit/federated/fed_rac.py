"""Fed-RAC-LoRA (RAC-LoRA Algorithm 2): a chain of LoRA links trained by a cohort of clients.

The server's weight W^t is a tree of per-site matrices from ``problem.start()`` (README
"Architecture"). Each server round t (spec ``rac_lora.md`` §2.8):

1. the server samples a cohort of C clients uniformly without replacement (``cohort`` stream) and
   ONE frozen factor per site for the cohort, from ``substream("sketch", t − 1)``:
   B_S ∈ ℝ^{m×r} (``side="left"``, Option 1: clients train A) or A_S ∈ ℝ^{r×n} (Option 2: B);
2. client m starts its trained factor at zero on W^t and runs one epoch of random reshuffling over
   its N_m rows (``data`` stream) in steps of ``batch_size`` rows (None: one step on all), each
   the exact sub-problem step Â ← Â − (γ/s)·(B_SᵀB_S)^† B_Sᵀ ∇f_{m,π_i}(W^t + s·B_SÂ) (RAC-LoRA
   eq. (3), s the site's α/r), in W-space the projected step of eq. (16),

       W_{m,i+1} = W_{m,i} − γ·H_B ∇f_{m,π_i}(W_{m,i})      (right: − γ·∇f_{m,π_i}(W_{m,i})·H_A);

   a client that is not a finite sum (``client_size`` None) takes one full-gradient step;
3. it uploads Â_m (r×n per site; right: B̂_m, m×r) through ``compressor`` (one message per site);
4. the server merges (Algorithm 2 line 11) W^{t+1} = W^t + β·s·B_S·(1/C) Σ_m Â_m per site.

The server step is η̃ = β·γ·N for N components per client (spec §2.8; Theorem F.2 needs β ≥ 1);
with C = M, β = 1 and single-component clients a round is the RAC-LoRA chain's step on the
federated average, from the same draws (round t ↔ link t − 1). The scaling s rescales the
uploaded factor, never the W-space trajectory; LoRA dropout never enters.

Bytes per client and round, over sites: up, the compressor's payload of each trained factor; down,
the round's sketch (``bytes_per_seed`` with ``sketch_as_seed``) plus, with ``download="adapter"``,
the last round's sketch and mean factor (assuming every client applies every broadcast), or with
``"full"`` W^t (Algorithm 2 line 5). A model ends with the last good W as its base (B = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .._validation import check_byte_size, check_choice, check_flag, check_int, check_real
from ..compressors import Compressor, make_compressor
from ..config import Config
from ..divergence import BLOWUP
from ..sketches import Sketch, gram_pinv, make_sketch
from ..tree import leaves, sq_norm, tree_map
from .lora import ServerRun, simulate

__all__ = ["DOWNLOADS", "FedRACLoRA", "FedRACRun", "simulate"]

DOWNLOADS = ("adapter", "full")


@dataclass(frozen=True)
class FedRACLoRA(Config):
    """A Fed-RAC-LoRA configuration; :meth:`run` runs it on a problem with clients.

    Parameters
    ----------
    rank : r, the sketch's rank (1 ≤ r ≤ min(m, n) of every site; a peft model's rank).
    gamma : γ, the W-space local step: the coefficient of H∇f_{m,i} in eq. (16).
    cohort : C, clients per round, sampled uniformly without replacement (None: all M).
    server_lr : β, the server step of Algorithm 2 line 11 (η̃ = β·γ·N).
    side : ``"left"`` (Option 1: frozen B_S, trained A) or ``"right"`` (Option 2).
    sketch : the distribution of the frozen factor (a :class:`~lorakit.sketches.Sketch` or a
        registered name); default Gaussian, E[H_B] = (r/m)·I, E[H_A] = (r/n)·I.
    alpha : LoRA scaling α (s = α/r; default α = r; a peft model's own s when None).
    batch_size : rows per local step of the reshuffled epoch (1: one component; None: all rows).
    compressor : the upload's compressor (a :class:`~lorakit.compressors.Compressor` or name).
    download, sketch_as_seed, bytes_per_float, bytes_per_index, bytes_per_seed : the messages
        (module docstring).
    method : the name in the frame.
    """

    rank: int
    gamma: float
    cohort: int | None = None
    server_lr: float = 1.0
    side: str = "left"
    sketch: Sketch | str = "gaussian"
    alpha: float | None = None
    batch_size: int | None = 1
    compressor: Compressor | str = "identity"
    download: str = "adapter"
    sketch_as_seed: bool = False
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    bytes_per_seed: int = 8
    method: str = "fed_rac_lora"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "rank", check_int("rank", self.rank, low=1))
        for name in ("gamma", "server_lr"):
            set_(self, name, check_real(name, getattr(self, name), low=0.0, low_open=True))
        for name in ("cohort", "batch_size"):  # None: all clients, all rows
            if getattr(self, name) is not None:
                set_(self, name, check_int(name, getattr(self, name), low=1))
        check_choice("side", self.side, ("left", "right"))
        set_(self, "sketch", make_sketch(self.sketch))
        if self.alpha is not None:
            set_(self, "alpha", check_real("alpha", self.alpha, low=0.0, low_open=True))
        set_(self, "compressor", make_compressor(self.compressor))
        check_choice("download", self.download, DOWNLOADS)
        check_flag("sketch_as_seed", self.sketch_as_seed)
        for name in ("bytes_per_float", "bytes_per_index", "bytes_per_seed"):
            set_(self, name, check_byte_size(name, getattr(self, name)))

    def eta_tilde(self, N: int = 1) -> float:
        """η̃ = β·γ·N, the server step of RAC-LoRA Theorems F.2/F.3 for N components per client."""
        return self.server_lr * self.gamma * check_int("N", N, low=1)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rank": self.rank,
            "side": self.side,
            "cohort": str(self.cohort if self.cohort is not None else "all"),
            "server_lr": self.server_lr,
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
    ):
        """Run ``rounds`` server rounds per seed on ``problem`` (a :class:`FederatedProblem` or a
        ``ModelProblem`` with clients); ``progress=True`` shows a bar over each seed's rounds.

        Returns the history, one row per logged round and seed: ``round``, ``loss`` and ``gap`` of
        f(W^t) (``gap`` NaN where f* is unknown), ``grad_norm_sq`` = ‖∇f(W^t)‖² (Σ over sites, the
        full gradient of the federated average), ``reported`` (clients in the cohort),
        ``local_steps`` (their mean N_m), ``bytes_up`` / ``bytes_down`` of the round and
        cumulative ``mb_up``/``mb_down``. With ``messages=True`` also a frame of every message:
        ``round``, ``client``, ``local_steps``, ``bytes_up``, ``bytes_down``.
        Divergence (a non-finite or exploding merge, too): see :mod:`lorakit.divergence`.
        """
        options = (log_every, messages, FedRACRun, on_divergence, progress, blowup)
        return simulate(self, problem, rounds, seeds, *options)


class FedRACRun(ServerRun):
    """One seed of a :class:`FedRACLoRA`: the server's W^t (a tree) and its rounds."""

    hint = (
        "Lower gamma = {cfg.gamma:g} or server_lr = {cfg.server_lr:g}: RAC-LoRA Theorem F.2 "
        "(corrected) needs γN ≤ η̃ = βγN ≤ λ_min/(4L) and γ ≤ 1/(4NL)"
    )
    message_columns = ("client", "local_steps", "bytes_up", "bytes_down")
    counts: ClassVar[dict] = {"reported": 0, "local_steps": 0.0, "bytes_up": 0.0, "bytes_down": 0.0}

    def __init__(self, cfg: FedRACLoRA, problem, seed: int):
        super().__init__(cfg, problem, seed)
        self.s = problem.tree(self.scalings)
        self.left = left = cfg.side == "left"
        r, per_float, shapes = cfg.rank, cfg.bytes_per_float, problem.shapes
        factors = [r * n if left else m * r for m, n in shapes]  # the trained factors
        payloads = [cfg.compressor.payload(d) for d in factors]
        self.up = sum(p.floats * per_float + p.indices * cfg.bytes_per_index for p in payloads)
        sketch = sum(m * r if left else r * n for m, n in shapes) * per_float
        sketch = cfg.bytes_per_seed if cfg.sketch_as_seed else sketch
        if cfg.download == "full":  # (round 1, later rounds)
            self.down = (sum(m * n for m, n in shapes) * per_float + sketch,) * 2
        else:  # clients hold W^0; then the previous sketch + mean factor, and the new sketch
            self.down = sketch, 2 * sketch + sum(factors) * per_float

    def run(self, rounds: int, log_every: int, progress: bool = False):
        self.problem.reset()
        self.W = self.problem.start()
        out = super().run(rounds, log_every, progress)
        self.problem.commit(self.W)
        return out

    def state(self):
        return self.W  # a tree: a value

    def commit(self, t: int, W) -> None:
        self.problem.commit(W)

    def round(self, t: int, rows: list):
        """Round t: W^t becomes W^{t+1}; returns (cohort size, mean N_m, bytes up, bytes down)."""
        W = self.W
        clients = self.cohort()
        X, P = self.draw_sketches(t)
        steps, hats = self.local_train(W, clients, X, P)
        with torch.no_grad():  # Algorithm 2 line 11: W ← W + β·s·B_S·mean Â (right: mean B̂·A_S)
            mean = tree_map(lambda h: h.mean(dim=0), self.compress(hats))
            delta = self.merged_update(X, mean)
        what = "the merged update is {size}; W keeps round {last}"
        self.check_finite(t, leaves(delta), leaves(W), what, rows)
        C, up, down = clients.numel(), self.up, self.down[t > 1]
        self.record(t, clients.tolist(), steps.tolist(), [up] * C, [down] * C)
        self.W = W + delta
        return C, float(steps.double().mean()), float(C * up), float(C * down)

    def compress(self, hats):
        """The uploads as received: each client's factor per site through the compressor."""
        gen = self.streams["compression"]
        return tree_map(lambda h: self.cfg.compressor(h, gen, batch_dims=1), hats)

    def merged_update(self, X, mean):
        """Algorithm 2 line 11's update β·s·B_S·mean Â per site (right: β·s·mean B̂·A_S)."""
        return tree_map(lambda x, h, s: self.cfg.server_lr * s * self.times(x, h), X, mean, self.s)

    def times(self, x, y):
        """x·y on the left side (B_S·Â, P·G), y·x on the right (B̂·A_S, G·P)."""
        return x @ y if self.left else y @ x

    def draw_sketches(self, t: int):
        """Round t's frozen factor X of every site (site order) and the preconditioner P of the
        trained factor, from ``substream("sketch", t − 1)`` (round t is the chain's link t − 1).
        Left: B_S (m×r), P = (B_SᵀB_S)^† B_Sᵀ; right: A_S (r×n), P = A_Sᵀ (A_SA_Sᵀ)^†."""
        p, r, side = self.problem, self.cfg.rank, self.cfg.side
        gen = self.streams.substream("sketch", t - 1)
        shapes = [(m, r) if self.left else (r, n) for m, n in p.shapes]
        sample = self.cfg.sketch.sample
        X = p.tree([sample(s, gen, side=side, dtype=p.dtype, device=p.device) for s in shapes])
        return X, self.preconditioners(X)

    def preconditioners(self, X):
        """P of each site's frozen factor X (:meth:`draw_sketches`)."""
        return tree_map(lambda x: self.times(gram_pinv(x, self.cfg.side), x.mT), X)

    def local_train(self, W, clients: torch.Tensor, X, P):
        """Every cohort client's reshuffled epoch from W^t (module docstring, step 2), each step
        the gradients G at W^t + s·X·Â, then Â ← Â − (γ/s)·P G (right: B̂ ← B̂ − (γ/s)·G P).
        Returns (N_m per client, the trained factors per site: (C, r, n) left, (C, m, r) right)."""
        p, b, r, C = self.problem, self.cfg.batch_size, self.cfg.rank, clients.numel()
        sizes, data = [p.client_size(int(c)) for c in clients], self.streams["data"]
        perms = [None if N is None else torch.randperm(N, generator=data) for N in sizes]
        steps = [1 if N is None or b is None else -(-N // b) for N in sizes]

        def rows(c: int, i: int):  # client c's rows of step i (None: all of them)
            if perms[c] is not None and b is not None:
                return perms[c][i * b : (i + 1) * b].to(p.device)

        shape = (lambda w: (C, r, w.shape[1])) if self.left else (lambda w: (C, w.shape[0], r))
        hats = tree_map(lambda w: w.new_zeros(shape(w)), W)
        # A batched problem steps the cohort as one stack; a model one client at a time.
        groups = [list(range(C))] if p.batched else [[c] for c in range(C)]
        with torch.no_grad():
            for group, i in ((g, i) for g in groups for i in range(max(steps[c] for c in g))):
                active = [c for c in group if i < steps[c]]
                idx = [rows(c, i) for c in active]
                idx = None if all(x is None for x in idx) else idx
                sel = slice(None) if len(active) == C else torch.tensor(active)
                mine = tree_map(lambda h: h[sel], hats)  # noqa: B023
                if i == 0:  # Â = 0: the gradients at W^t
                    Wc = tree_map(lambda w, h: w.expand(h.shape[0], *w.shape), W, mine)
                else:
                    Wc = tree_map(lambda w, x, h, s: w + s * self.times(x, h), W, X, mine, self.s)
                G = p.local_grads(Wc, clients[sel].to(p.device), idx)
                trees = (hats, mine, G, P)
                for h, a, g, q, s in zip(*map(leaves, trees), self.scalings, strict=True):
                    h[sel] = a - (self.cfg.gamma / s) * self.times(q, g)
        return torch.tensor(steps), hats

    def log(self, t: int, counts: tuple) -> dict:
        p, W = self.problem, self.W
        return self.row(t, float(p.loss(W)), sq_norm(p.grad(W)), counts)
