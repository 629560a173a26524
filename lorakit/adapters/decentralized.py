"""RW-LoRA and gossip Dec-LoRA at model scale: the graph's nodes are a ModelProblem's clients.

:meth:`RWLoRA.run <lorakit.decentralized.walk.RWLoRA.run>` and :meth:`GossipLoRA.run
<lorakit.decentralized.gossip.GossipLoRA.run>` hand a :class:`~lorakit.adapters.ModelProblem` to
:class:`ModelWalk` / :class:`ModelGossip`, subclasses of the matrix simulations that keep their
walk, failure, mixing, byte and logging code and replace only the algebra: a "factor" is a tuple
with one tensor per LoRA site (module order) instead of one matrix.

* **RW-LoRA** (RW-LoRA Algorithm 1). The token is every site's (A_l, B_l) (and AdamW's state when
  it travels); it walks with the matrix engine's transition matrix and random streams, so a model
  run visits exactly the nodes a matrix run with the same seed, graph and configuration visits. At
  node v the ``local_steps`` steps (7)–(8) use node v's rows (all of them, or ``batch_size`` drawn
  without replacement from the ``data`` stream): both factor gradients at the same W (eq. (12)),
  by autograd on the token's tensors swapped into the model (:func:`~lorakit.adapters.swapped`).
* **Gossip** ([4]/[14], spec rw_lora.md §5). Node i's adapter lives in per-site stacks outside the
  model, A_l (N, r, n_l) and B_l (N, m_l, r); for its local steps node i's slices are swapped in.
  Mixing is the matrix engine's A_l ← M A_l, B_l ← M B_l on every site's factors (factor gossip,
  not product averaging; the mismatch columns combine the sites' Frobenius norms).

Model-scale conventions (those of :mod:`lorakit.adapters.chain`)
------------------------------------------------------------------
* The problem needs ``clients`` (:meth:`ModelProblem.split`): node v owns the rows
  ``clients[v]`` and f_v is the mean loss over them. The walk's objective is Σ_v π_v f_v (eq. (5);
  π = ``"sizes"`` uses the clients' row counts), gossip's (1/N) Σ_i f_i; ``loss`` and
  ``grad_norm_sq`` are evaluated on every row (in chunks of ``eval_batch_size``). ``gap`` is NaN
  (a model has no known f*).
* ``rank`` must equal every site's peft rank r (and be ≤ min(m_l, n_l)); site l uses its own peft
  scaling s_l, and ``alpha`` may be left unset or must give every s_l.
* ``init``/``init_std``: A^(0) of every site is drawn from the ``init`` stream (site order) as at
  matrix scale and B^(0) = 0; the model's own adapter values are not used.
* ``sigma``: additive noise ξ_l on each site's G_l = ∇_{W_l} f, entries N(0, σ²/D) with
  D = Σ_l m_l n_l (so E Σ_l‖ξ_l‖² = σ²), entering as ∇_A += s_l B_lᵀξ_l, ∇_B += s_l ξ_l A_lᵀ.
* Autograd through the model handles LoRA dropout; the model's randomness (dropout) is drawn from
  the ``model`` stream in a forked RNG state, so the same seed gives the same numbers.
* Every seed starts from :meth:`ModelProblem.reset`; the model is not modified during a run.
  Afterwards it holds the last seed's result in its adapter: the token (walk) or the average
  adapter (Ā_l, B̄_l) of the nodes (gossip). After a divergence it holds those of the last logged
  hop/round whose loss passed the check (with ``log_every=1`` the one before the diverged one):
  the model a run of that many hops/rounds leaves.
* A transfer carries Σ_l r(m_l + n_l) floats (peft's adapter state dict, :func:`state_bytes`),
  3× that + 1 with AdamW's travelling state, as :meth:`RWLoRA.floats_per_transfer`.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch.linalg import matrix_norm

from ..decentralized.gossip import GossipSimulation
from ..decentralized.mismatch import bilinear_mismatch
from ..decentralized.walk import WalkSimulation, _draw_A, _factor_step, _zero_state
from ..divergence import DivergenceError, restored_note
from ..progress import bar as progress_bar
from .grads import model_rng
from .problem import ModelProblem
from .sites import swapped

__all__ = ["ModelGossip", "ModelWalk", "check_model_config"]


# -- validation ----------------------------------------------------------------------------------
def check_model_config(cfg, problem: ModelProblem) -> None:
    """Check an RWLoRA / GossipLoRA configuration against the model's clients and sites."""
    if problem.clients is None:
        raise ValueError(
            "problem has no clients: the graph's nodes are the problem's clients; split it first "
            "(problem.split(N))"
        )
    r = cfg.rank
    for site in problem.sites:
        (m, n) = site.shape
        if site.rank != r:
            raise ValueError(
                f"rank = {r} differs from the peft adapter rank r = {site.rank} of site "
                f"{site.name}: use rank={site.rank} or build the adapter with LoraConfig(r={r})"
            )
        if r > min(m, n):
            raise ValueError(f"rank = {r} exceeds min(m, n) = {min(m, n)} of site {site.name}")
        if cfg.alpha is not None and not math.isclose(cfg.alpha / r, site.scaling, rel_tol=1e-9):
            raise ValueError(
                f"alpha = {cfg.alpha:g} gives the scaling alpha/r = {cfg.alpha / r:g}, but site "
                f"{site.name} has the peft scaling s = {site.scaling:g}: leave alpha unset (each "
                "site's own scaling is used) or set lora_alpha in the LoraConfig"
            )


# -- data and gradients --------------------------------------------------------------------------
def _rows(problem: ModelProblem, gen: torch.Generator, batch_size: int | None, client: int):
    """Client's rows, or ``batch_size`` of them without replacement (ModelProblem.sample's draw)."""
    rows = problem.indices(client)
    if batch_size is not None and batch_size < rows.numel():
        rows = rows[torch.randperm(rows.numel(), generator=gen)[:batch_size]]
    return rows


def _batches(problem: ModelProblem, rows: torch.Tensor, weight: float = 1.0):
    """``rows`` in chunks of ``eval_batch_size``, each with weight·(its share of the rows)."""
    size = problem.eval_batch_size
    for start in range(0, rows.numel(), size):
        chunk = rows[start : start + size]
        yield problem.batch(chunk), weight * chunk.numel() / rows.numel()


def _objective_batches(problem: ModelProblem, weights) -> itertools.chain:
    """Every client's rows, client v weighted by ``weights[v]``: Σ_v w_v f_v (zero weights skipped)."""
    return itertools.chain.from_iterable(
        _batches(problem, problem.indices(v), float(w)) for v, w in enumerate(weights) if w > 0
    )


def weighted_grads(problem: ModelProblem, batches, inputs: list) -> tuple[float, list]:
    """(Σ_c w_c f(batch_c), its gradient with respect to ``inputs``), one chunk at a time."""
    total, grads = 0.0, None
    with torch.enable_grad():
        for batch, w in batches:
            loss = problem.objective(batch)
            g = torch.autograd.grad(loss * w, inputs)
            total += w * float(loss.detach())
            grads = list(g) if grads is None else [a + b for a, b in zip(grads, g, strict=True)]
    return total, grads


def factor_grads(problem: ModelProblem, A: tuple, B: tuple, batches):
    """(loss, (∇_A f per site), (∇_B f per site)) with the factors (A_l, B_l) swapped into the
    model: autograd gives s_l B_lᵀ G_l and s_l G_l A_lᵀ, both at the same W (RW-LoRA eq. (12))."""
    sites = problem.sites
    with swapped(sites, list(zip(B, A, strict=True))):
        for site in sites:
            site.A.requires_grad_(True)
            site.B.requires_grad_(True)
        inputs = [t for site in sites for t in (site.A, site.B)]
        loss, g = weighted_grads(problem, batches, inputs)
    return loss, tuple(g[0::2]), tuple(g[1::2])


# -- shared by both simulations ------------------------------------------------------------------
class _ModelScale:
    """Run wrapper of the model simulations: progress bar, forked model RNG, write-back."""

    problem: ModelProblem

    def _setup(self, problem: ModelProblem, progress: bool) -> None:
        problem.reset()
        self.sites = problem.sites
        self.scalings = [site.scaling for site in self.sites]
        self.D = sum(m * n for m, n in (site.shape for site in self.sites))
        self.progress, self.bar = progress, None

    def rng(self):
        """The model's own randomness (dropout) from the ``model`` stream, in a forked RNG."""
        return model_rng(self.streams, self.problem.device)

    def run(self, count: int, log_every: int = 1) -> list[dict]:
        bar = progress_bar(
            enabled=self.progress, total=count, desc=f"{self.cfg.method} seed {self.seed}"
        )
        with bar:
            self.bar = bar
            try:
                return super().run(count, log_every)
            except DivergenceError as error:  # write back the last good state, not this one
                t, self.A, self.B = self.checked
                error.append(restored_note(self.unit, t))
                raise
            finally:
                self.bar = None
                self.write_back()

    def tick(self, record: dict) -> dict:
        if self.bar is not None:
            self.bar.update()
        return record

    def noisy(self, A: tuple, B: tuple, gA: tuple, gB: tuple, batch: tuple = ()):
        """Add ξ_l (entries N(0, σ²/D), ``noise`` stream) to every G_l through eq. (12)."""
        if not self.cfg.sigma:
            return gA, gB
        std = self.cfg.sigma / math.sqrt(self.D)
        outA, outB = [], []
        for site, s, a, b, ga, gb in zip(self.sites, self.scalings, A, B, gA, gB, strict=True):
            shape = (*batch, *site.shape)
            xi = torch.randn(shape, generator=self.streams["noise"], dtype=a.dtype).to(a.device)
            xi = std * xi
            outA.append(ga + s * (b.mT @ xi))
            outB.append(gb + s * (xi @ a.mT))
        return tuple(outA), tuple(outB)

    def steps(self, A: tuple, B: tuple, gA: tuple, gB: tuple, state):
        """The matrix engine's simultaneous step (SGD or AdamW) on every site."""
        states = state if state is not None else (None,) * len(A)
        out = [_factor_step(self.cfg, *x) for x in zip(A, B, gA, gB, states, strict=True)]
        new_state = tuple(o[2] for o in out) if state is not None else None
        return tuple(o[0] for o in out), tuple(o[1] for o in out), new_state

    def init_A(self) -> list:
        """A^(0) of every site from the ``init`` stream (site order), as at matrix scale."""
        gen, r, p = self.streams["init"], self.cfg.rank, self.problem
        return [
            _draw_A(self.cfg, (r, site.shape[1]), gen, p.dtype, p.device) for site in self.sites
        ]

    def zero_state(self, A, B) -> tuple:
        return tuple(_zero_state(a, b) for a, b in zip(A, B, strict=True))

    def transfer_floats(self) -> int:
        m = sum(site.shape[0] for site in self.sites)
        n = sum(site.shape[1] for site in self.sites)
        return self._floats(m, n)

    def write_back(self) -> None:
        with torch.no_grad():
            for site, (B, A) in zip(self.sites, self.result(), strict=True):
                site.set_factors(B, A)


def _norm(tensors) -> float:
    """The Frobenius norm of a tuple of tensors, as one vector."""
    return math.sqrt(sum(float(t.square().sum()) for t in tensors))


# -- RW-LoRA -------------------------------------------------------------------------------------
class ModelWalk(_ModelScale, WalkSimulation):
    """One seeded RW-LoRA run on a model: ``A``, ``B`` are per-site tuples (module order)."""

    unit = "hop"

    def __init__(self, cfg, problem: ModelProblem, seed, P, pi, record=True, progress=False):
        self._setup(problem, progress)
        super().__init__(cfg, problem, seed, P, pi, record)

    def _floats(self, m: int, n: int) -> int:
        return self.cfg.floats_per_transfer(m, n)

    def init_token(self) -> tuple:
        A = tuple(self.init_A())
        return A, tuple(
            torch.zeros(site.shape[0], self.cfg.rank).to(a)
            for site, a in zip(self.sites, A, strict=True)
        )

    def optimum(self) -> float:
        return math.nan  # no closed-form f* for a model

    def local_update(self, v: int):
        """``local_steps`` steps (7)–(8) on node v's data; the new (A, B, state)."""
        cfg, p = self.cfg, self.problem
        A, B, state = self.A, self.B, self.visit_state(v)
        for _ in range(cfg.local_steps):
            rows = _rows(p, self.streams["data"], cfg.batch_size, v)
            with self.rng():
                _, gA, gB = factor_grads(p, A, B, _batches(p, rows))
            gA, gB = self.noisy(A, B, gA, gB)
            A, B, state = self.steps(A, B, gA, gB, state)
        return A, B, state

    def hop(self) -> dict:
        return self.tick(super().hop())

    def measure(self) -> tuple[float, float, float, float]:
        """Σ_v π_v f_v of the token on every row, its factor-gradient norm², ‖A‖_F, ‖B‖_F."""
        p = self.problem
        with self.rng():
            loss, gA, gB = factor_grads(p, self.A, self.B, _objective_batches(p, self.pi))
        return loss, _norm(gA) ** 2 + _norm(gB) ** 2, _norm(self.A), _norm(self.B)

    def result(self):
        return zip(self.B, self.A, strict=True)


# -- gossip --------------------------------------------------------------------------------------
class ModelGossip(_ModelScale, GossipSimulation):
    """One seeded gossip run on a model: ``A``, ``B`` are per-site stacks (N, r, n_l), (N, m_l, r)."""

    unit = "round"

    def __init__(self, cfg, problem: ModelProblem, seed, M, adjacency, record=True, progress=False):
        self._setup(problem, progress)
        super().__init__(cfg, problem, seed, M, adjacency, record)

    def _floats(self, m: int, n: int) -> int:
        return self.cfg.rank * (m + n)

    def init_nodes(self) -> tuple:
        """One A^(0) per site shared by every node, B = 0."""
        A = tuple(a.expand(self.N, *a.shape).clone() for a in self.init_A())
        B = tuple(
            torch.zeros(self.N, site.shape[0], self.cfg.rank).to(a)
            for site, a in zip(self.sites, A, strict=True)
        )
        return A, B

    def node(self, X: tuple, i: int) -> tuple:
        return tuple(x[i] for x in X)

    def local_steps(self):
        """Every node's ``local_steps`` steps from its own adapter on its own data."""
        cfg, p = self.cfg, self.problem
        A, B, state = self.A, self.B, self.state
        for _ in range(cfg.local_steps):
            per_node = []
            for i in range(self.N):
                rows = _rows(p, self.streams["data"], cfg.batch_size, i)
                with self.rng():
                    per_node.append(
                        factor_grads(p, self.node(A, i), self.node(B, i), _batches(p, rows))
                    )
            gA = tuple(torch.stack(g) for g in zip(*(g[1] for g in per_node), strict=True))
            gB = tuple(torch.stack(g) for g in zip(*(g[2] for g in per_node), strict=True))
            gA, gB = self.noisy(A, B, gA, gB, batch=(self.N,))
            A, B, state = self.steps(A, B, gA, gB, state)
        return A, B, state

    def round(self) -> dict:
        return self.tick(super().round())

    def mix(self, A: tuple, B: tuple, M: torch.Tensor) -> tuple:
        """Factor gossip on every site; mismatches combine the sites' Frobenius norms."""
        with torch.no_grad():
            local = sum(
                matrix_norm(bilinear_mismatch(b, a, M)).square() for a, b in zip(A, B, strict=True)
            )
            glob = sum(
                float(matrix_norm(bilinear_mismatch(b, a)).square())
                for a, b in zip(A, B, strict=True)
            )
            A = tuple(torch.einsum("ij,jrn->irn", M, a) for a in A)  # A_i ← Σ_j M_ij A_j
            B = tuple(torch.einsum("ij,jmr->imr", M, b) for b in B)  # B_i ← Σ_j M_ij B_j
        return float(local.max().sqrt()), math.sqrt(glob), A, B

    def measure(self) -> tuple[float, float, float, float, float]:
        """As the matrix engine: the average adapter's f and factor-gradient norm², the (N, N)
        table f_l(W_i) (node means and diagonal), the consensus distance."""
        p, N = self.problem, self.N
        A_bar = tuple(a.mean(0) for a in self.A)
        B_bar = tuple(b.mean(0) for b in self.B)
        with self.rng():
            loss, gA, gB = factor_grads(p, A_bar, B_bar, _objective_batches(p, [1.0 / N] * N))
            losses = torch.zeros(N, N, dtype=torch.float64)
            for i in range(N):
                factors = list(zip(self.node(self.B, i), self.node(self.A, i), strict=True))
                with swapped(self.sites, factors):
                    losses[i] = torch.tensor(
                        [p.loss(client=l) for l in range(N)], dtype=torch.float64
                    )
        consensus = sum(float((x - x.mean(0)).square().sum()) for x in (*self.A, *self.B)) / N
        grad_sq = _norm(gA) ** 2 + _norm(gB) ** 2
        return loss, float(losses.mean()), float(torch.diagonal(losses).mean()), grad_sq, consensus

    def result(self):
        """The average adapter (B̄_l, Ā_l) of every site."""
        return ((b.mean(0), a.mean(0)) for a, b in zip(self.A, self.B, strict=True))
