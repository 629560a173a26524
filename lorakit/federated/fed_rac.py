"""Fed-RAC-LoRA (RAC-LoRA Algorithm 2) at matrix scale: a chain of LoRA links trained by a cohort.

Each server round t (spec ``rac_lora.md`` §2.8):

1. the server samples a cohort S^t of C clients uniformly without replacement (``cohort`` stream;
   all M clients when C = M) and ONE sketch for the round, shared by the cohort (round t's
   own ``sketch`` stream, ``substream("sketch", t − 1)``): B_S ∈ ℝ^{m×r} (``side="left"``,
   Option 1: the clients train A) or A_S ∈ ℝ^{r×n} (``side="right"``, Option 2: they train B);
2. client m starts its trained factor at zero on W^t and runs one epoch of random reshuffling over
   its N_m components (``data`` stream): N_m exact sub-problem steps, which in W-space are the
   projected steps of eq. (16),

       W_{m,i+1} = W_{m,i} − γ·H_B ∇f_{m,π_i}(W_{m,i})      (left; right: − γ·∇f_{m,π_i}(W_{m,i})·H_A)

   and in factor space Â ← Â − (γr/α)·(B_SᵀB_S)^† B_Sᵀ ∇f_{m,π_i}(W^t + (α/r)B_SÂ) (RAC-LoRA eq. (3));
   a client that is a single problem (``n_samples`` None, as in :func:`heterogeneous_quadratics`)
   is one component: N_m = 1 and its step uses its full local gradient;
3. it uploads its trained factor Â_m = (r/α)(B_SᵀB_S)^† B_Sᵀ (W_m − W^t) (r×n; right: B̂_m, m×r);
4. the server merges (Algorithm 2 line 11) W^{t+1} = W^t + β·(α/r)·B_S·(1/C) Σ_m Â_m, which in
   W-space is W^{t+1} = W^t + β·(1/C) Σ_m (W_m − W^t).

With N components per client the theory's server step is η̃ = β·γ·N (spec §2.8): Theorem F.2's
condition γN ≤ η̃ is β ≥ 1. With C = M, β = 1 and single-component clients a round is exactly the
RAC-LoRA chain step W − γ H_B ∇f(W) on the federated average, drawn from the same per-link
``sketch`` stream (round t ↔ link t − 1), so the two trajectories coincide; with a full-rank sketch (H = I) both are GD.

A cohort of single-component clients of a stacked-quadratic :class:`FederatedProblem` trains as
one batched tensor (``problem.local_grads``); finite-sum clients are stepped client by client.

Bytes (per client and round, ``bytes_per_float`` each float):

* up: the trained factor, r·n floats (left) or m·r (right);
* down: the sketch of the round, r·m floats for B_S (r·n for A_S), or ``bytes_per_seed`` when
  ``sketch_as_seed`` (the client regenerates it), plus the model: ``download="adapter"`` sends the
  previous round's merged update as its two factors (the previous sketch, as floats or a seed, and
  the averaged trained factor, r·n or m·r floats; nothing in round 1), which a client holding
  W^{t−1} needs to form W^t; ``download="full"`` sends W^t itself (m·n floats), as Algorithm 2
  line 5 literally reads. The adapter count assumes every client applies every broadcast (full
  participation, or clients that track the broadcasts); one that skipped rounds would also need
  the adapters it missed, which is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from .._validation import check_byte_size, check_choice, check_int, check_real
from ..divergence import BLOWUP, DivergenceError, exploded
from ..problems.federated import FederatedProblem
from ..rng import Streams
from ..sketches import Sketch, gram_pinv, make_sketch
from .lora import simulate

__all__ = ["DOWNLOADS", "FedRACLoRA"]

DOWNLOADS = ("adapter", "full")


@dataclass(frozen=True)
class FedRACLoRA:
    """A Fed-RAC-LoRA configuration; :meth:`run` simulates it on a :class:`FederatedProblem`
    or on a peft model with client data (:class:`~lorakit.adapters.ModelProblem`).

    Parameters
    ----------
    rank : r, the sketch's rank (1 ≤ r ≤ min(m, n), checked at run time).
    lr : γ, the W-space local step: the coefficient of H∇f_{m,i} in eq. (16).
    cohort : C, clients per round, sampled uniformly without replacement (None: all M).
    server_lr : β, the server step of Algorithm 2 line 11 (η̃ = β·γ·N).
    side : ``"left"`` (Option 1: frozen B_S, trained A) or ``"right"`` (Option 2).
    sketch : the distribution of the frozen factor (a :class:`~lorakit.sketches.Sketch` or a
        registered name); default Gaussian, E[H_B] = (r/m)·I, E[H_A] = (r/n)·I.
    alpha : LoRA scaling α (the product is scaled by α/r); default α = r. It rescales the
        uploaded factor, never the W-space trajectory.
    download, sketch_as_seed, bytes_per_float, bytes_per_seed : message accounting (module
        docstring).
    """

    rank: int
    lr: float
    cohort: int | None = None
    server_lr: float = 1.0
    side: str = "left"
    sketch: Sketch | str = "gaussian"
    alpha: float | None = None
    download: str = "adapter"
    sketch_as_seed: bool = False
    bytes_per_float: int = 4
    bytes_per_seed: int = 8
    method: str = "fed_rac_lora"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "rank", check_int("rank", self.rank, low=1))
        set_(self, "lr", check_real("lr", self.lr, low=0.0, low_open=True))
        if self.cohort is not None:
            set_(self, "cohort", check_int("cohort", self.cohort, low=1))
        set_(self, "server_lr", check_real("server_lr", self.server_lr, low=0.0, low_open=True))
        check_choice("side", self.side, ("left", "right"))
        set_(self, "sketch", make_sketch(self.sketch))
        if self.alpha is not None:
            set_(self, "alpha", check_real("alpha", self.alpha, low=0.0, low_open=True))
        check_choice("download", self.download, DOWNLOADS)
        if not isinstance(self.sketch_as_seed, bool):
            raise ValueError(f"sketch_as_seed must be True or False, got {self.sketch_as_seed!r}")
        set_(self, "bytes_per_float", check_byte_size("bytes_per_float", self.bytes_per_float))
        set_(self, "bytes_per_seed", check_byte_size("bytes_per_seed", self.bytes_per_seed))

    @property
    def scale(self) -> float:
        """α/r."""
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def eta_tilde(self, N: int = 1) -> float:
        """η̃ = β·γ·N, the server step of RAC-LoRA Theorems F.2/F.3 for N components per client."""
        return self.server_lr * self.lr * check_int("N", N, low=1)

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
        """Simulate ``rounds`` server rounds per seed.

        ``problem`` is a :class:`FederatedProblem` or a :class:`~lorakit.adapters.ModelProblem`
        with clients: the latter draws one frozen sketch per LoRA module and round and merges into
        every module's base weight (:mod:`lorakit.adapters.federated`). ``progress=True`` shows a
        ``tqdm.auto`` bar over the seeds (matrix scale) or over the rounds of each seed (model).

        Returns the history, one row per logged round and seed: ``round``, ``loss`` and ``gap`` of
        f(W^t), ``grad_norm_sq`` = ‖∇f(W^t)‖² (the full gradient of the federated average),
        ``reported`` (clients in the cohort), ``local_steps`` (their mean N_m), ``bytes_up`` /
        ``bytes_down`` of the round and cumulative ``mb_up``/``mb_down``. With ``messages=True``
        also a frame of every message: ``round``, ``client``, ``local_steps``, ``bytes_up``,
        ``bytes_down``.

        Divergence: a non-finite or exploding merge, or a loss above ``blowup``·max(1, |f(W^0)|)
        (default 10³; a finite number > 1), stops the seed (:func:`~lorakit.federated.lora.
        simulate`: the error's frame keeps every finished seed; a model is put back to its last
        good state).
        """
        if getattr(problem, "stateful", False):  # peft is imported only on this path
            from ..adapters.federated import run_fed_rac

            return run_fed_rac(
                self, problem, rounds, seeds, log_every=log_every, messages=messages,
                on_divergence=on_divergence, blowup=blowup, progress=progress,
            )  # fmt: skip
        return simulate(
            self, problem, rounds, seeds, log_every, messages, _FedRACRun, on_divergence,
            progress, blowup=blowup,
        )  # fmt: skip


class _FedRACRun:
    """One seeded simulation: the merged weight W^t and the round loop."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: FedRACLoRA, problem: FederatedProblem, seed: int):
        self.cfg, self.problem, self.seed = cfg, problem, seed
        self.streams = Streams(seed)
        self.W = problem.W0.clone()
        # N_m per client: a finite-sum client has n_samples components, any other client is one.
        self.N = torch.tensor([c.n_samples or 1 for c in problem.clients])
        self.single = all(c.n_samples is None for c in problem.clients)
        self.mb_up = self.mb_down = 0.0
        self.f0 = float(problem.loss(self.W))

    # -- one round -----------------------------------------------------------------------------
    def cohort(self) -> torch.Tensor:
        M, C = self.problem.M, self.cfg.cohort
        if C is None or C == M:
            return torch.arange(M)
        return torch.randperm(M, generator=self.streams["cohort"])[:C].sort().values

    def draw_sketch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Round t's frozen factor and its preconditioner for the trained factor.

        Drawn from ``streams.substream("sketch", t − 1)``: round t is the chain's link t − 1, so
        the identity with the RAC-LoRA chain holds draw by draw (:mod:`lorakit.rng`).

        Left: B_S (m×r) and P = (B_SᵀB_S)^† B_Sᵀ (r×m), so Â ← Â − (γ/s)·P G.
        Right: A_S (r×n) and P = A_Sᵀ (A_SA_Sᵀ)^† (n×r), so B̂ ← B̂ − (γ/s)·G P.
        """
        p, r, side = self.problem, self.cfg.rank, self.cfg.side
        shape = (p.m, r) if side == "left" else (r, p.n)
        gen = self.streams.substream("sketch", t - 1)
        X = self.cfg.sketch.sample(shape, gen, side=side, dtype=p.dtype, device=p.device)
        if side == "left":
            return X, gram_pinv(X, "left") @ X.mT
        return X, X.mT @ gram_pinv(X, "right")

    def permutations(self, clients: torch.Tensor) -> list:
        """One reshuffled order per finite-sum client of the cohort (None for a single one)."""
        perms = []
        for l in clients.tolist():
            N_l = self.problem.clients[l].n_samples
            if N_l is None:
                perms.append(None)
            else:
                perms.append(torch.randperm(N_l, generator=self.streams["data"]))
        return perms

    def gradients(self, Wc: torch.Tensor, clients: torch.Tensor, i: int, perms: list):
        """∇f_{m,π_i}(W_{m,i}) for every cohort client (zero once its epoch is over)."""
        p = self.problem
        if self.single:
            return p.local_grads(Wc, clients.to(p.device))
        out = []
        for c, l in enumerate(clients.tolist()):
            perm = perms[c]
            if perm is None:
                G = p.clients[l].grad(Wc[c]) if i == 0 else torch.zeros_like(Wc[c])
            elif i < perm.numel():
                G = p.clients[l].grad(Wc[c], perm[i : i + 1].to(p.device))
            else:
                G = torch.zeros_like(Wc[c])
            out.append(G)
        return torch.stack(out)

    def local_train(self, clients: torch.Tensor, X: torch.Tensor, P: torch.Tensor):
        """Each client's epoch from W^t; returns the trained factors (C, r, n) or (C, m, r)."""
        cfg, p, s, gamma = self.cfg, self.problem, self.cfg.scale, self.cfg.lr
        C, r = clients.numel(), cfg.rank
        kw = {"dtype": p.dtype, "device": p.device}
        left = cfg.side == "left"
        hat = torch.zeros(C, r, p.n, **kw) if left else torch.zeros(C, p.m, r, **kw)
        perms = self.permutations(clients)
        steps = int(self.N[clients].max())
        Wc = self.W.expand(C, p.m, p.n)
        with torch.no_grad():
            for i in range(steps):
                G = self.gradients(Wc, clients, i, perms)
                hat = hat - (gamma / s) * ((P @ G) if left else (G @ P))
                Wc = self.W + s * ((X @ hat) if left else (hat @ X))
        return hat

    def upload_bytes(self) -> int:
        p, r = self.problem, self.cfg.rank
        return (r * p.n if self.cfg.side == "left" else p.m * r) * self.cfg.bytes_per_float

    def download_bytes(self, t: int) -> int:
        p, cfg, r = self.problem, self.cfg, self.cfg.rank
        sketch_floats = p.m * r if cfg.side == "left" else r * p.n
        sketch = cfg.bytes_per_seed if cfg.sketch_as_seed else sketch_floats * cfg.bytes_per_float
        if cfg.download == "full":
            return p.m * p.n * cfg.bytes_per_float + sketch
        if t == 1:  # clients hold W^0
            return sketch
        return 2 * sketch + (self.upload_bytes())  # previous sketch + mean factor, new sketch

    def check_finite(self, t: int, delta: torch.Tensor, rows) -> None:
        """Refuse a non-finite or exploding merge before it touches W."""
        size = float(delta.abs().max())
        scale = 1e6 * (1.0 + float(self.W.abs().max()))
        if not (math.isfinite(size) and size <= scale):
            what = "not finite" if not math.isfinite(size) else f"of size {size:.3g}"
            self.diverged(t, f"the merged update is {what}; W keeps round {t - 1}", rows)

    def diverged(self, t: int, what: str, rows) -> None:
        cfg = self.cfg
        raise DivergenceError(
            f"{cfg.method} diverged in round {t} (seed {self.seed}): {what}. Lower lr = "
            f"{cfg.lr:g} or server_lr = {cfg.server_lr:g}: RAC-LoRA Theorem F.2 (corrected) needs "
            "γN ≤ η̃ = βγN ≤ λ_min/(4L) and γ ≤ 1/(4NL)",
            step=t,
            seed=self.seed,
            frame=pd.DataFrame(rows),
        )

    # -- the loop ------------------------------------------------------------------------------
    def run(self, rounds: int, log_every: int):
        cfg, s = self.cfg, self.cfg.scale
        rows = [self.log(0, 0, 0.0, 0.0, 0.0)]
        msgs = self.messages = []  # kept on the run: a diverged seed's messages survive
        for t in range(1, rounds + 1):
            clients = self.cohort()
            X, P = self.draw_sketch(t)
            hat = self.local_train(clients, X, P)
            with torch.no_grad():
                mean_hat = hat.mean(dim=0)
                delta = cfg.server_lr * s * ((X @ mean_hat) if cfg.side == "left" else mean_hat @ X)
            self.check_finite(t, delta, rows)
            self.W = self.W + delta
            C = clients.numel()
            up, down = self.upload_bytes(), self.download_bytes(t)
            self.mb_up += C * up / 2**20
            self.mb_down += C * down / 2**20
            N = self.N[clients]
            msgs.extend(
                {"seed": self.seed, "round": t, "client": int(l), "local_steps": int(n),
                 "bytes_up": up, "bytes_down": down}
                for l, n in zip(clients.tolist(), N.tolist(), strict=True)
            )  # fmt: skip
            if t % log_every == 0 or t == rounds:
                rows.append(self.log(t, C, float(N.double().mean()), C * up, C * down))
                loss = rows[-1]["loss"]
                if exploded(loss, self.f0, self.blowup):
                    self.diverged(t, f"the loss is {loss:g}", rows)
        return rows, msgs

    def log(self, t: int, reported: int, steps: float, up: float, down: float) -> dict:
        p = self.problem
        with torch.no_grad():
            loss = float(p.loss(self.W))
            G = p.grad(self.W)
            grad_sq = float((G * G).sum())
        return {
            "seed": self.seed, "round": t, "loss": loss,
            "gap": loss - p.f_star if p.f_star is not None else math.nan,
            "grad_norm_sq": grad_sq, "reported": reported, "local_steps": steps,
            "bytes_up": float(up), "bytes_down": float(down), "mb_up": self.mb_up,
            "mb_down": self.mb_down,
        }  # fmt: skip
