"""A cohort of clients in one forward pass: the model-scale batched factor gradients.

At matrix scale a stack of clients is one tensor operation (``MatrixProblem.local_grads`` on
stacked weights). At model scale the clients share the base weights W0 and differ in their adapter
(B_c, A_c) and their rows, so a cohort trains in one pass of the model: the clients' rows side by
side in one batch, the base layers applied once to all of them, and at every LoRA site a grouped
product per client, x_c ↦ s_c·B_c·A_c·x_c (a batched matmul over the clients' row blocks), in
place of peft's ``lora_B(lora_A(x))·s``. One backward pass then gives every client's
(∇_B f_c, ∇_A f_c): client c's factors touch only its own rows.

The batch's loss is the mean over its N rows (the contract of
:class:`~lorakit.adapters.ModelProblem`'s ``loss_fn``, by which it already weighs a client's
chunks), so the pass computes Σ_c (b_c/N)·f_c over the clients' b_c rows and client c's gradient
is rescaled by N/b_c: exactly the per-client gradients of
:meth:`~lorakit.adapters.ModelProblem.factor_grads` up to rounding. Clients with different numbers
of rows share a pass: the grouped product pads each client's block of rows with zero rows to the
largest block (the zero rows give zero products and zero gradients, and the base layers never see
them). A pass holds at most ``cohort_rows`` rows (a client with more spans several passes), so
memory and cache use stay bounded.

Why it is faster, and by how much. The arithmetic is the same as client by client (the same
products, on the same rows): a pass saves the per-operation overhead of many small passes (on a GPU,
kernel launches) and lets one GEMM serve every client at the base layers. The grouped products
keep the rank k in the fast place of the GEMM kernels (:func:`_bmm`), and each client's scaling is
folded into its k-column B. On a CPU the round of a small model is bound by that arithmetic, so the
gain is at most the share of overhead in the client-by-client round
(tests/benchmarks/bench_peft_fslora.py measures the floor of the bare passes beside it).

When it applies (:attr:`~lorakit.adapters.ModelProblem.cohort_fallback` says why not, and the
caller trains client by client, as it would without the cohort pass):

* every site is a :class:`~lorakit.adapters.LinearSite` (``nn.Linear``, GPT-2's ``Conv1D``) with
  plain LoRA (:func:`cohort_blocker`): peft calls its ``lora_A``/``lora_B`` modules, which the
  grouped products stand in for. Embedding and conv sites read their factors as tensors inside
  peft's forward; DoRA and a LoRA bias change the product;
* the forward draws no randomness. Dropout (LoRA's or the model's) in one pass would draw one mask
  for the whole batch, where the clients trained one after another draw theirs client by client
  from the run's ``model`` stream: the two cannot give the same numbers, so with any active
  dropout module (:func:`draws_randomness`) the clients train one after another, exactly as
  without the cohort pass. A forward that draws from the generator anyway (a functional dropout)
  is found by :func:`cohort_probe`, once per problem before any training (a warning), and, should
  the probe miss it, by every pass (:class:`CohortRefused`: the generator is put back and the
  stack is evaluated client by client);
* the model is row-wise: every LoRA site sees the batch's rows along its first dimension, and
  rows do not interact (no batch statistics, as any chunked evaluation already assumes). A site
  whose input's first dimension is not the batch's rows is found the same way.

Randomness that is the run's own (minibatches, additive noise) is drawn by the local trainer
(:mod:`lorakit.local`) for the stack, client after client within each step, as for a matrix
problem's stack; the clients trained one after another (FSLoRA's ``impl="slice"``) draw all of a
client's steps first, so with minibatches the two see other rows (same distribution).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..tree import PerSite
from .sites import LinearSite

if TYPE_CHECKING:
    from .problem import ModelProblem

__all__ = [
    "CohortRefused",
    "cohort_blocker",
    "cohort_factor_grads",
    "cohort_probe",
    "draws_randomness",
]

_DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


class CohortRefused(Exception):
    """The model turned out, during a cohort pass, not to allow one (the message says why); the
    model and the generator are as they were before the pass."""


NOT_ROW_WISE = "a LoRA site saw an input whose first dimension is not the batch's rows"
DRAWS = "the forward pass drew from the random generator (a dropout)"


class _NotRowWise(Exception):
    """A LoRA site saw an input whose first dimension is not the batch's rows."""


def draws_randomness(model: nn.Module) -> str | None:
    """The name of the first dropout module that is active (training mode, p > 0), or None."""
    for name, module in model.named_modules():
        if isinstance(module, _DROPOUTS) and module.training and module.p > 0:
            return name
    return None


def cohort_blocker(problem: ModelProblem) -> str | None:
    """Why ``problem``'s clients cannot train in one pass (module docstring), or None."""
    for site in problem.sites:
        if not isinstance(site, LinearSite):
            return f"site {site.name} is a {site.kind} site (only linear sites are grouped)"
        layer, adapter = site.layer, site.adapter
        if adapter in getattr(layer, "lora_variant", {}):
            return f"site {site.name} is a LoRA variant (DoRA)"
        if layer.lora_B[adapter].bias is not None:
            return f"site {site.name} has a LoRA bias"
    dropout = draws_randomness(problem.model)
    if dropout is not None:
        return f"dropout {dropout or 'of the model'} is active (each client draws its own masks)"
    return None


def _bmm(a: torch.Tensor, b: torch.Tensor, narrow: bool) -> torch.Tensor:
    """a @ b per block; ``narrow``: the product's last dimension is the rank k, and (bᵀaᵀ)ᵀ then
    runs several times faster on a CPU (a k-column output is a poor shape for the GEMM kernels;
    tests/benchmarks/bench_peft_fslora.py). The same sums either way, in another order."""
    return torch.bmm(b.mT, a.mT).mT if narrow else torch.bmm(a, b)


class _GroupedProduct(torch.autograd.Function):
    """Y_j = X_j·W_jᵀ for every block j, with a backward that puts the rank k in the fast place
    (:func:`_bmm`): W_j is (k, n) at a LoRA A and (m, k) at a LoRA B."""

    @staticmethod
    def forward(ctx, xs, weight):  # xs (S, L, in), weight (S, out, in)
        ctx.save_for_backward(xs, weight)
        out, inn = weight.shape[-2:]
        return _bmm(xs, weight.mT, out < inn)

    @staticmethod
    def backward(ctx, grad):  # grad (S, L, out)
        xs, weight = ctx.saved_tensors
        out, inn = weight.shape[-2:]
        grad_x = _bmm(grad, weight, inn < out) if ctx.needs_input_grad[0] else None
        grad_w = _bmm(grad.mT, xs, inn < out) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


class _Grouped(nn.Module):
    """Stands in for a LoRA site's ``lora_A`` or ``lora_B`` (an ``nn.Linear`` without bias) in a
    cohort pass: row block j of the input times ``weight[j]``ᵀ (B's blocks carry their scaling)."""

    def __init__(self, weight: torch.Tensor, plan: _Pass):
        super().__init__()
        self.weight, self.plan = weight, plan  # weight: (S, out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        if x.shape[0] != plan.rows:
            raise _NotRowWise
        S, inner, n = len(plan.sizes), x.shape[1:-1], x.shape[-1]
        if plan.equal:  # row blocks of one size: a view, no padding
            xs = x.reshape(S, -1, n)
        else:  # each block padded with zero rows to the largest
            padded = x.new_zeros(S, plan.longest, *x.shape[1:]).index_put((plan.block, plan.pos), x)
            xs = padded.reshape(S, -1, n)
        y = _GroupedProduct.apply(xs, self.weight)
        if plan.equal:
            return y.reshape(*x.shape[:-1], y.shape[-1])
        return y.reshape(S, plan.longest, *inner, y.shape[-1])[plan.block, plan.pos]


class _Pass:
    """One forward pass: row blocks (position in the stack, rows) side by side."""

    def __init__(self, blocks: list[tuple[int, torch.Tensor]], device):
        self.clients = torch.tensor([k for k, _ in blocks], device=device)
        self.sizes = [rows.numel() for _, rows in blocks]
        self.rows, self.longest = sum(self.sizes), max(self.sizes)
        self.equal = len(set(self.sizes)) == 1
        self.indices = torch.cat([rows for _, rows in blocks])
        sizes = torch.tensor(self.sizes, device=device)
        self.block = torch.repeat_interleave(torch.arange(len(blocks), device=device), sizes)
        starts = torch.cumsum(sizes, 0) - sizes
        self.pos = torch.arange(self.rows, device=device) - starts[self.block]


def _passes(rows: list[torch.Tensor], capacity: int, device) -> list[_Pass]:
    """The clients' rows, in order, packed into passes of at most ``capacity`` rows."""
    passes, current, used = [], [], 0
    for k, r in enumerate(rows):
        start = 0
        while start < r.numel():
            take = min(r.numel() - start, capacity - used)
            current.append((k, r[start : start + take]))
            used, start = used + take, start + take
            if used == capacity:
                passes.append(_Pass(current, device))
                current, used = [], 0
    if current:
        passes.append(_Pass(current, device))
    return passes


@contextmanager
def _grouped(sites, B, A, scales, plan: _Pass):
    """Every site computing s_c·B_c·A_c·x_c on client c's rows (per-block factors); restored after.
    peft's forward is ``result + lora_B(lora_A(dropout(x))) * scaling``: the grouped modules take
    the place of lora_A and lora_B, and the scaling, folded into each block's B (a k-column
    matrix, not the m-column output), is set to 1."""
    saved = []
    try:
        for site, b, a, s in zip(sites, B, A, scales, strict=True):
            layer, key = site.layer, site.adapter
            saved.append((layer, key, layer.lora_A[key], layer.lora_B[key], layer.scaling[key]))
            layer.lora_A[key] = _Grouped(a, plan)
            layer.lora_B[key] = _Grouped(b * s[:, None, None], plan)
            layer.scaling[key] = 1.0
        yield
    finally:
        for layer, key, lora_A, lora_B, scaling in saved:
            layer.lora_A[key], layer.lora_B[key], layer.scaling[key] = lora_A, lora_B, scaling


@contextmanager
def _rng_watch(device: torch.device):
    """Yields a list that gets True when the model's generator was drawn from (it is put back)."""
    cuda = device.type == "cuda"
    state = torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state()
    drawn = []
    yield drawn
    now = torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state()
    if not torch.equal(now, state):
        drawn.append(True)
        if cuda:
            torch.cuda.set_rng_state(state, device)
        else:
            torch.set_rng_state(state)


def cohort_probe(problem: ModelProblem) -> str | None:
    """Why a cohort pass fails on this model's code, found by one small forward pass (no gradient)
    of two rows as two clients with zero rank-1 adapters: a forward that draws randomness (a
    functional dropout no module shows) or a LoRA site whose input is not row-wise. None: the
    pass works. Run once per problem before any training, so a run takes one route throughout
    (the generator is put back)."""
    device, dtype = problem.device, problem.dtype
    rows = problem.indices()[:2].to(device)
    plan = _Pass([(k, rows[k : k + 1]) for k in range(rows.numel())], device)
    S = len(plan.sizes)
    zeros = [(torch.zeros(S, m, 1, dtype=dtype, device=device),
              torch.zeros(S, 1, n, dtype=dtype, device=device)) for m, n in problem.shapes]  # fmt: skip
    ones = [torch.ones(S, dtype=dtype, device=device)] * len(zeros)
    with torch.no_grad(), _rng_watch(device) as drawn:
        try:
            with _grouped(problem.sites, [b for b, _ in zeros], [a for _, a in zeros], ones, plan):
                problem.objective(problem.batch(plan.indices))
        except _NotRowWise:
            return NOT_ROW_WISE
    return DRAWS if drawn else None


def cohort_factor_grads(
    problem: ModelProblem, B: PerSite, A: PerSite, scalings, clients: torch.Tensor, idx=None
) -> tuple[PerSite, PerSite] | None:
    """(∇_B f_c, ∇_A f_c) for every client c of ``clients`` (stacks (C, m, k) and (C, k, n) per
    site) at W = W0 + s_c·B_c·A_c, the base weights being the model's, in passes of at most
    ``problem.cohort_rows`` rows (module docstring). ``scalings``: per site a float or a length-C
    tensor of per-client scalings (any shape with C entries); ``idx``: per client the positions
    of its rows to use (None: all). Raises :class:`CohortRefused`, with the generator as it was,
    when the model turns out not to allow a cohort pass (randomness drawn, a site not row-wise).
    """
    sites, device, dtype = problem.sites, problem.device, problem.dtype
    C = clients.numel()
    rows = [problem.indices(int(c)).to(device) for c in clients.tolist()]
    if idx is not None:
        rows = [r if i is None else r[i.to(device)] for r, i in zip(rows, idx, strict=True)]
    size = torch.tensor([r.numel() for r in rows], dtype=dtype, device=device)
    scales = [
        torch.as_tensor(s, dtype=dtype, device=device).reshape(-1).expand(C) for s in scalings
    ]
    gB = [torch.zeros_like(b) for b in B]
    gA = [torch.zeros_like(a) for a in A]
    with torch.enable_grad():
        for plan in _passes(rows, problem.cohort_rows, device):
            first, last = int(plan.clients[0]), int(plan.clients[-1]) + 1
            local = plan.clients - first  # each block's client among this pass's clients
            Bp = [b[first:last].detach().requires_grad_() for b in B]
            Ap = [a[first:last].detach().requires_grad_() for a in A]
            with _rng_watch(device) as drawn:
                try:
                    with _grouped(
                        sites,
                        [b[local] for b in Bp],
                        [a[local] for a in Ap],
                        [s[plan.clients] for s in scales],
                        plan,
                    ):
                        loss = problem.objective(problem.batch(plan.indices))
                except _NotRowWise as e:
                    raise CohortRefused(NOT_ROW_WISE) from e
            if drawn:
                raise CohortRefused(DRAWS)
            grads = torch.autograd.grad(loss, Bp + Ap)
            # the pass's loss weighs client c by (its rows here)/N: rescale to ∇f_c's weight
            weight = (plan.rows / size[first:last])[:, None, None]
            for l in range(len(sites)):
                gB[l][first:last] += grads[l] * weight
                gA[l][first:last] += grads[len(sites) + l] * weight
    return PerSite(gB), PerSite(gA)
