"""A peft model and a data set: the model-scale counterpart of a matrix problem.

:class:`ModelProblem` holds a model with LoRA layers (``peft.get_peft_model``), its data as a dict
of equally long tensors (``{"input_ids": …, "labels": …}`` or ``{"x": …, "labels": …}``) and the
loss ``loss_fn(model, batch)`` (default: ``model(**batch).loss``, the Hugging Face convention).
With ``clients`` (one index tensor per client, e.g. from :meth:`ModelProblem.split`) it is a
federated problem: f = mean of the losses over every sample, client l owning the rows
``clients[l]``.

The methods of lorakit run on it with the same names and configurations as at matrix scale
(``lk.run("bernoulli_lora", problem, …)``, ``make_federated("fslora", …).run(problem, …)``, …).
Every run starts from the state the model had when the problem was built (:meth:`reset`), so
seeds are comparable and the same seed gives the same numbers; afterwards the model holds the
last seed's result. Save it with :func:`lorakit.adapters.save_trained` (the adapter, or the merged
model when the run wrote the base weights); a plain ``model.save_pretrained`` warns when the
adapter file would lose training.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .._validation import (
    ArgumentTypeError,
    check_device_match,
    check_disjoint,
    check_dtype,
    check_int,
)
from ..problems.partition import partition
from ..tree import PerSite
from .cohort import CohortRefused, cohort_blocker, cohort_factor_grads, cohort_probe
from .grads import at_weights, backward, dropout_active, model_rng
from .saving import track_base
from .sites import Site, sites, swapped

__all__ = ["ModelProblem", "default_loss"]


@contextmanager
def _on_base(site_list, W0):
    """The sites with base weights W0 (written only where they differ, so a run whose model
    already holds W0 copies nothing); the previous bases are put back after."""
    moved = [(s, w) for s, w in zip(site_list, W0, strict=True) if not torch.equal(s.W0, w)]
    saved = [s.W0.clone() for s, _ in moved]
    try:
        for s, w in moved:
            s.W0 = w
        yield
    finally:
        for (s, _), w in zip(moved, saved, strict=True):
            s.W0 = w


def default_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """``model(**batch).loss``: the mean loss of a Hugging Face (or lorakit zoo) model."""
    return model(**batch).loss


@dataclass(eq=False)
class ModelProblem:
    """f(θ) = mean loss of ``model`` on ``data``; optional client split (module docstring).

    Parameters
    ----------
    model : a model with LoRA layers for ``adapter`` (found by :func:`~lorakit.adapters.sites`),
        in float32 or float64 (float16/bfloat16 are refused: convert with ``model.float()``).
    data : dict of tensors sharing their first dimension N (the samples), on the model's device;
        floating tensors in the model's dtype.
    loss_fn : ``loss_fn(model, batch) -> scalar tensor`` (mean over the batch).
    clients : per-client integer index tensors into ``data``, disjoint (no sample held by two
        clients), or None (one node).
    eval_batch_size : chunk size when the full loss is evaluated.
    name : shown in tables.
    cohort_rows : the most rows one forward pass holds when a cohort of clients trains at once
        (:mod:`~lorakit.adapters.cohort`: their rows side by side, a grouped product per client at
        each LoRA site), ≥ 1; None trains the clients one after another. Memory (activations)
        grows with it; :attr:`cohort_fallback` says why a model trains client by client anyway
        (active dropout, embedding or conv sites, a model that is not row-wise).
    """

    model: nn.Module
    data: dict
    loss_fn: Callable[[nn.Module, dict], torch.Tensor] = default_loss
    clients: Sequence[torch.Tensor] | None = None
    adapter: str = "default"
    eval_batch_size: int = 256
    name: str = "model"
    cohort_rows: int | None = 64
    _initial: dict = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise ArgumentTypeError(
                f"model must be a torch.nn.Module with LoRA layers, got {type(self.model).__name__}"
            )
        if not isinstance(self.data, dict) or not self.data:
            raise ValueError("data must be a non-empty dict of tensors with one row per sample")
        if not all(isinstance(v, torch.Tensor) for v in self.data.values()):
            raise ArgumentTypeError("data must be a dict of torch tensors, one row per sample")
        sizes = {k: len(v) for k, v in self.data.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"data tensors must share their first dimension, got {sizes}")
        self.eval_batch_size = check_int("eval_batch_size", self.eval_batch_size, low=1)
        if self.cohort_rows is not None:
            self.cohort_rows = check_int("cohort_rows", self.cohort_rows, low=1)
        self._refused = None  # why this model's code refuses a cohort pass ("": it does not)
        self.sites: list[Site] = sites(self.model, self.adapter)
        # Half precision: the runners' per-site linear algebra (sketch bases, SVDs) has no CPU
        # float16/bfloat16 kernels and mixes float32 buffers in; convert with model.float().
        check_dtype("the model's dtype (convert with model.float())", self.dtype)
        check_device_match(self.device, **{f"data[{k!r}]": v for k, v in self.data.items()})
        for key, value in self.data.items():  # floating inputs must match the model's dtype
            if value.dtype.is_floating_point and value.dtype != self.dtype:
                raise ValueError(
                    f"data[{key!r}] is {value.dtype} but the model is {self.dtype}: convert one "
                    f"(e.g. data[{key!r}].to({self.dtype}))"
                )
        if self.clients is not None:
            clients = [torch.as_tensor(c) for c in self.clients]
            for l, c in enumerate(clients):
                if c.dtype.is_floating_point or c.dtype.is_complex or c.dtype == torch.bool:
                    raise ArgumentTypeError(
                        f"clients[{l}] must hold integer sample indices, got {c.dtype}"
                    )
            self.clients = [c.long().flatten() for c in clients]
            if not self.clients or any(c.numel() == 0 for c in self.clients):
                raise ValueError("clients must be a non-empty list of non-empty index tensors")
            for l, c in enumerate(self.clients):
                if int(c.min()) < 0 or int(c.max()) >= self.n_samples:
                    raise ValueError(f"clients[{l}] holds indices outside [0, {self.n_samples})")
            check_disjoint("clients", self.clients)
        if self._initial is None:
            self._initial = self._snapshot()
            track_base(self.model)  # the reference of save_trained and of save_pretrained's warning

    # -- shape ---------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return len(next(iter(self.data.values())))

    @property
    def M(self) -> int:
        """Number of clients (1 without a split)."""
        return 1 if self.clients is None else len(self.clients)

    @property
    def device(self) -> torch.device:
        return self.sites[0].base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sites[0].base.dtype

    #: No closed-form optimum at model scale: the ``gap`` column is NaN.
    f_star = None

    def weighted_f_star(self, weights) -> None:
        """min_W Σ_c w_c f_c(W): unknown for a model (None)."""
        return None

    def trainable_params(self, side: str) -> int:
        """Entries of the trained factor(s) over every site (``left`` trains A, ``right`` B)."""
        total = 0
        for s in self.sites:
            (m, n), r = s.shape, s.rank
            total += {"left": r * n, "right": m * r, "both": r * (m + n)}[side]
        return total

    # -- state ---------------------------------------------------------------------------------
    def _snapshot(self) -> dict:
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"state": state, "scalings": [s.scaling for s in self.sites]}

    def reset(self) -> None:
        """Put the model back in the state it had when the problem was built.

        Its base weights are then the reference of :func:`~lorakit.adapters.save_trained` again
        (for the first problem built on the model), so ``save_pretrained`` no longer warns.
        """
        self.model.load_state_dict(self._initial["state"])
        for site, s in zip(self.sites, self._initial["scalings"], strict=True):
            site.scaling = s

    def to(self, device) -> ModelProblem:
        """Move the model and the data (and the snapshot) to ``device``; returns self."""
        self.model.to(device)
        self.data = {k: v.to(device) for k, v in self.data.items()}
        self._initial["state"] = {k: v.to(device) for k, v in self._initial["state"].items()}
        return self

    # -- data ----------------------------------------------------------------------------------
    def batch(self, idx: torch.Tensor) -> dict:
        """The rows ``idx`` of every data tensor."""
        idx = idx.to(next(iter(self.data.values())).device)
        return {k: v[idx] for k, v in self.data.items()}

    def indices(self, client: int | None = None) -> torch.Tensor:
        """Rows of ``client`` (all rows when None)."""
        if client is None:
            return torch.arange(self.n_samples)
        return self.clients[check_int("client", client, low=0, high=self.M - 1)]

    def sample(self, generator: torch.Generator, batch_size: int | None, client=None) -> dict:
        """A minibatch of ``client``'s rows drawn without replacement (all of them when None)."""
        rows = self.indices(client)
        if batch_size is not None and batch_size < rows.numel():
            rows = rows[torch.randperm(rows.numel(), generator=generator)[:batch_size]]
        return self.batch(rows)

    def objective(self, batch: dict) -> torch.Tensor:
        """The loss on ``batch`` (with autograd)."""
        return self.loss_fn(self.model, batch)

    @torch.no_grad()
    def loss(self, W: PerSite | None = None, client: int | None = None) -> float:
        """The mean loss over every row (or ``client``'s rows) at the per-site weights W (the
        model's current weights when None), evaluated in chunks."""
        if W is not None:
            with at_weights(self.sites, W):
                return self.loss(client=client)
        rows = self.indices(client)
        total = 0.0
        for start in range(0, rows.numel(), self.eval_batch_size):
            chunk = rows[start : start + self.eval_batch_size]
            total += float(self.objective(self.batch(chunk))) * chunk.numel()
        return total / rows.numel()

    # -- the problem protocol (lorakit.problems.protocol): one site per LoRA layer ----------
    #: ∇f at stacked weights loops over the clients (``local_grads``: one model, one W at a time).
    batched = False

    @property
    def batched_factors(self) -> bool:
        """True when a cohort's factor gradients take one pass of the model
        (:meth:`factor_grads` with a tensor of clients; :mod:`~lorakit.adapters.cohort` says
        when: linear sites, no active dropout, a row-wise model, ``cohort_rows`` set)."""
        return self.cohort_fallback is None

    @property
    def cohort_fallback(self) -> str | None:
        """Why a cohort trains client by client on this model (None: it takes one pass of the
        model per ``cohort_rows`` rows, :mod:`~lorakit.adapters.cohort`)."""
        if self.cohort_rows is None:
            return "cohort_rows is None"
        blocked = cohort_blocker(self)
        if blocked is None and self._refused is None:  # once: the model's code does not change
            self._refused = cohort_probe(self) or ""
            if self._refused:
                self._warn_refused(self._refused)
        return blocked or self._refused or None

    def _warn_refused(self, why: str) -> None:
        warnings.warn(
            f"{self.name}: a cohort's clients train one after another ({why}); set "
            "cohort_rows=None to say so and silence this",
            RuntimeWarning,
            stacklevel=3,
        )

    #: ``commit`` writes a run's result into the model, which the caller keeps.
    stateful = True

    @property
    def adapter_dropout(self) -> str | None:
        """The name of the first site whose LoRA dropout is active (p > 0, training mode), or
        None. Dropout feeds dropout(x) to the adapter only, so ∂f/∂W0 is then not the factors'
        gradient: a method that steps in W-space must refuse it."""
        return next((site.name for site in self.sites if dropout_active(site)), None)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple(site.shape for site in self.sites)

    @property
    def ranks(self) -> tuple[int, ...]:
        """peft's rank r of every site: a method's rank must equal it."""
        return tuple(site.rank for site in self.sites)

    @property
    def scalings(self) -> tuple[float, ...]:
        """peft's scaling s_l of every site (α/r, or α/√r with rsLoRA)."""
        return tuple(site.scaling for site in self.sites)

    def tree(self, mats) -> PerSite:
        """The tree of per-site matrices (site order)."""
        return PerSite(mats)

    def client_size(self, client: int) -> int:
        """The number of client ``client``'s rows."""
        return self.indices(client).numel()

    def start(self) -> PerSite:
        """The adapted weights W_l = W0_l + s_l·B_l·A_l of every site (copies)."""
        return PerSite(site.W().clone() for site in self.sites)

    def seeded(self, streams):
        """The model's own randomness (dropout) drawn from the run's ``model`` stream, in a
        forked global RNG (:func:`~lorakit.adapters.grads.model_rng`)."""
        return model_rng(streams, self.device)

    def chunks(self, client: int | None = None, idx: torch.Tensor | None = None):
        """(batch, weight) pairs covering ``client``'s rows (every row when None), or the rows
        ``idx`` among them, in chunks of ``eval_batch_size``; weights are each chunk's share."""
        rows = self.indices(client)
        rows = rows if idx is None else rows[idx.to(rows.device)]
        for start in range(0, rows.numel(), self.eval_batch_size):
            chunk = rows[start : start + self.eval_batch_size]
            yield self.batch(chunk), chunk.numel() / rows.numel()

    def grad(self, W: PerSite, idx: torch.Tensor | None = None, client: int | None = None):
        """∇_W f per site at the weights W (rows ``idx`` of ``client``'s rows, or of every row),
        by autograd on the base weights with a zero adapter swapped in."""
        with at_weights(self.sites, W):
            return PerSite(backward(self, self.chunks(client, idx), "none", want_G=True))

    def client_losses(self, W: PerSite) -> torch.Tensor:
        """(f_c(W))_c, the mean loss of each client's rows, float64 on the CPU."""
        with at_weights(self.sites, W):
            return torch.tensor([self.loss(client=c) for c in range(self.M)], dtype=torch.float64)

    def local_grads(self, W: PerSite, clients: torch.Tensor, idx: list | None = None) -> PerSite:
        """∇f_{clients[c]}(W[c]) for per-site stacks W (C, m_l, n_l), client by client."""
        out = [
            self.grad(PerSite(w[c] for w in W), None if idx is None else idx[c], client=int(l))
            for c, l in enumerate(clients.tolist())
        ]
        return PerSite(torch.stack(g) for g in zip(*out, strict=True))

    def factor_grads(self, W0, B, A, scalings, client=None, idx=None):
        """(∇_B f, ∇_A f) per site at W = W0 + s·B·A by autograd through peft: the factors (any
        rank k) swapped in as the adapter over the base W0, so LoRA dropout acts as in training.
        The gradients are taken at the tensors each site stores and read back as matrices.

        ``client`` may be a 1-D tensor of clients with B and A stacked on a leading client axis
        (per site (C, m, k), (C, k, n)), ``scalings`` per site a float or C per-client values and
        ``idx`` a list of per-client row positions: then the stacked gradients, from one pass of
        the model per ``cohort_rows`` rows when :attr:`batched_factors` (a base W0 with a client
        axis, or a model that is not row-wise, evaluates client by client; the numbers agree up
        to rounding).
        """
        if isinstance(client, torch.Tensor):
            return self._cohort_factor_grads(W0, B, A, scalings, client, idx)
        factors = [
            (nn.Parameter(b.detach().clone()), nn.Parameter(a.detach().clone()))
            for b, a in zip(B, A, strict=True)
        ]
        with swapped(self.sites, factors, list(scalings)), _on_base(self.sites, W0):
            inputs = [t for site in self.sites for t in (site.B, site.A)]
            grads = None
            with torch.enable_grad():
                for batch, weight in self.chunks(client, idx):
                    g = torch.autograd.grad(self.objective(batch) * weight, inputs)
                    grads = (
                        list(g) if grads is None else [x + y for x, y in zip(grads, g, strict=True)]
                    )
        per_site = zip(self.sites, grads[0::2], grads[1::2], strict=True)
        pairs = [(site.to_matrix(gB, "B"), site.to_matrix(gA, "A")) for site, gB, gA in per_site]
        return PerSite(b for b, _ in pairs), PerSite(a for _, a in pairs)

    def _cohort_factor_grads(self, W0, B, A, scalings, clients, idx):
        """:meth:`factor_grads` of a stack of clients: one pass per ``cohort_rows`` rows, or
        client by client (a stacked W0, a model that cannot take a cohort pass)."""
        shared = W0[0].dim() < B[0].dim()
        if shared and self.batched_factors:
            try:
                with _on_base(self.sites, W0):
                    return cohort_factor_grads(self, B, A, scalings, clients, idx)
            except CohortRefused as e:  # the probe missed it: not again for this problem
                self._refused = str(e)
                self._warn_refused(self._refused)
        C = clients.numel()
        per = [torch.as_tensor(s).reshape(-1).expand(C).tolist() for s in scalings]
        out = [
            self.factor_grads(
                W0 if shared else PerSite(w[k] for w in W0), PerSite(b[k] for b in B),
                PerSite(a[k] for a in A), [s[k] for s in per], client=int(c),
                idx=None if idx is None else idx[k],
            )
            for k, c in enumerate(clients.tolist())
        ]  # fmt: skip
        gB, gA = zip(*out, strict=True)
        return tuple(PerSite(torch.stack(g) for g in zip(*p, strict=True)) for p in (gB, gA))

    def factor_loss(self, W0, B, A, scalings) -> float:
        """f at W = W0 + s·B·A as the model computes it: (B, A) swapped in as the adapter over
        the base W0, so it equals :meth:`loss` after ``commit(W0, B, A)``, bit for bit."""
        factors = [(b.detach().clone(), a.detach().clone()) for b, a in zip(B, A, strict=True)]
        with swapped(self.sites, factors, list(scalings)), _on_base(self.sites, W0):
            return self.loss()

    def commit(self, W: PerSite, B: PerSite | None = None, A: PerSite | None = None) -> None:
        """Write a run's result into the model: W0_l ← W_l, and the adapter ← (B_l, A_l) when
        given, else a zero product (B_l = 0) with A_l kept, so the model computes W."""
        with torch.no_grad():
            for l, site in enumerate(self.sites):
                site.W0 = W[l]
                if B is None:
                    site.B.zero_()
                else:
                    site.set_factors(B[l], A[l])

    def split(
        self,
        num_clients: int,
        scheme: str = "iid",
        *,
        labels: str | None = None,
        seed: int | torch.Generator = 0,
        **kwargs,
    ) -> ModelProblem:
        """The same model and data split among clients by :func:`lorakit.problems.partition.partition`.

        ``labels`` names the data tensor whose values drive label-skew schemes (``"dirichlet"``
        needs it: without labels there is nothing to skew, so it is refused); ``kwargs`` go to
        ``partition`` (``alpha``, ``min_size``, ``draw``, …). ``seed`` (an int ≥ 0, or a CPU
        ``torch.Generator`` to continue a stream) fixes the draw: the same arguments give the same
        partition in every call and every process (``partition``'s ``generator``; torch's global
        generator is never read).
        """
        if "generator" in kwargs:
            raise TypeError("split takes seed= (an int or a torch.Generator), not generator=")
        if not isinstance(seed, torch.Generator):
            seed = check_int("seed", seed, low=0)
        if labels is not None and labels not in self.data:
            raise ValueError(f"labels must name a data tensor {sorted(self.data)}, got {labels!r}")
        if labels is None and scheme == "dirichlet":
            raise ValueError(
                "a 'dirichlet' (label skew) split needs labels: name the data tensor of class "
                f"labels, e.g. labels={next(iter(sorted(self.data)))!r} (one of {sorted(self.data)})"
            )
        y = self.data[labels].cpu() if labels is not None else torch.zeros(self.n_samples)
        if y.dim() > 1:
            raise ValueError(f"labels tensor {labels!r} must be 1-D class labels")
        parts = partition(y.long(), num_clients, scheme, generator=seed, **kwargs)
        return replace(self, clients=parts, _initial=self._initial)
