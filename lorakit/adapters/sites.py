"""Adapter sites: the matrix view of every peft LoRA layer of a model.

A *site* is one adapted weight, ``W = W0 + s·B·A`` with the base W0 (m×n, out × in), the factors
B (m×r) and A (r×n) and the scaling s = α/r (α/√r with rsLoRA), exactly the objects of the matrix
algorithms. :func:`sites` finds them by module type (every ``peft.tuners.lora.LoraLayer`` holding
the adapter), never by comparing parameter names: the FSLoRA code's ``'lora_B' == name`` test never
matches peft's names (prior_art.md §A.1), so its sketch silently did nothing.

GPT-2's ``Conv1D`` stores its weight as (in, out); peft marks it ``fan_in_fan_out`` and a site
hides the transpose, so W0, its gradient and every update are always (out, in).

What a site does (peft internals: prior_art.md §B.1, §B.4)

* read and write W0, A, B and s; the gradient ∇_W f of the loss with respect to the adapted weight
  (the base weight's gradient: the forward is linear in W0 + s·B·A, so ∂f/∂W0 = ∂f/∂W);
* freeze one factor (:func:`freeze`): peft's ``set_adapter`` re-enables gradients on every factor,
  so the runners re-apply the freeze before each step and give their optimizers only the trained
  factor's tensors;
* merge and restart (:meth:`Site.merge_and_restart`, :meth:`Site.restart`): W0 ← W0 + s·B·A,
  then new factors (given, or the frozen one drawn from a sketch and the trained one at zero);
* slice and pad (:meth:`Site.slice`, :meth:`Site.pad`): the k components I of an adapter, and
  back to rank r with zeros (sketches, heterogeneous ranks);
* swap in other factors (:meth:`Site.swap`): a client's k_i-column slice B[:, I], A[I, :] with the
  scaling s·r/k_i, or a node's own adapter, without copying the model.

Adapters travel as peft state dicts (:func:`adapter_state`, :func:`load_adapter_state`) and are
saved and loaded with peft's own ``save_pretrained`` / ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn

from .._validation import check_choice

__all__ = [
    "SIDES",
    "Site",
    "adapter_state",
    "freeze",
    "load_adapter",
    "load_adapter_state",
    "save_adapter",
    "site_frame",
    "sites",
    "state_bytes",
    "swapped",
]

#: Which factor a step trains: ``left`` freezes the left factor B (a sketch) and trains A,
#: ``right`` freezes A and trains B, ``both`` trains both (LoRA, COLA), ``none`` freezes both.
SIDES = ("left", "right", "both", "none")


class Site:
    """One peft LoRA layer seen as W = W0 + s·B·A (all matrices in (out, in) orientation)."""

    def __init__(self, name: str, layer: nn.Module, adapter: str = "default"):
        self.name, self.layer, self.adapter = name, layer, adapter
        self.base = layer.get_base_layer().weight
        self.transposed = bool(getattr(layer, "fan_in_fan_out", False))

    def __repr__(self) -> str:
        m, n = self.shape
        return f"Site({self.name!r}, m={m}, n={n}, r={self.rank}, s={self.scaling:g})"

    # -- the matrices --------------------------------------------------------------------------
    @property
    def A(self) -> nn.Parameter:
        """The right factor, (r, n): ``lora_A[adapter].weight``."""
        return self.layer.lora_A[self.adapter].weight

    @property
    def B(self) -> nn.Parameter:
        """The left factor, (m, r): ``lora_B[adapter].weight``."""
        return self.layer.lora_B[self.adapter].weight

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(m, n) = (out_features, in_features)."""
        return self.B.shape[0], self.A.shape[1]

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[self.adapter])

    @scaling.setter
    def scaling(self, value: float) -> None:
        self.layer.scaling[self.adapter] = float(value)

    def _oriented(self, X: torch.Tensor) -> torch.Tensor:
        return X.T if self.transposed else X

    @property
    def W0(self) -> torch.Tensor:
        """The base weight (m, n), a view of the module's tensor (no copy)."""
        return self._oriented(self.base.detach())

    @W0.setter
    def W0(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.base.copy_(self._oriented(value))

    def delta(self) -> torch.Tensor:
        """s·B·A, the adapter's contribution to W (m, n)."""
        with torch.no_grad():
            return self.scaling * (self.B @ self.A)

    def W(self) -> torch.Tensor:
        """The adapted weight W0 + s·B·A."""
        return self.W0 + self.delta()

    def grad_W(self) -> torch.Tensor | None:
        """∇_W f from the last backward pass (needs :meth:`track_W` on), or None."""
        g = self.base.grad
        return None if g is None else self._oriented(g)

    def track_W(self, on: bool = True) -> None:
        """Let backward fill ∇_W f into the base weight's ``.grad`` (off: the base stays frozen)."""
        self.base.requires_grad_(on)
        if not on:
            self.base.grad = None

    # -- updates -------------------------------------------------------------------------------
    def set_factors(self, B: torch.Tensor | None = None, A: torch.Tensor | None = None) -> None:
        """Copy new values into B and/or A (same shapes; use :meth:`swap` to change the rank)."""
        with torch.no_grad():
            if B is not None:
                self.B.copy_(B)
            if A is not None:
                self.A.copy_(A)

    def merge(self) -> None:
        """W0 ← W0 + s·B·A, then B = 0 so the model's function is unchanged."""
        with torch.no_grad():
            self.W0 = self.W0 + self.delta()
            self.B.zero_()

    def merge_and_restart(self, B: torch.Tensor, A: torch.Tensor) -> None:
        """Merge the current product into W0, then start the next link from the factors (B, A).

        With B = 0 or A = 0 (a chain link starts from ΔW = 0) the model's outputs are unchanged
        up to rounding of the merge (RAC-LoRA Algorithm 1, line "W^{t+1} = W^t + B A").
        """
        with torch.no_grad():
            self.W0 = self.W0 + self.delta()
            self.set_factors(B, A)

    def restart(self, sketch="gaussian", side: str = "left", generator=None) -> torch.Tensor:
        """Merge, then draw the next link's frozen factor from ``sketch`` with the trained one at 0.

        ``side="left"`` draws B_S (m×r) and sets A = 0; ``"right"`` draws A_S (r×n) and sets B = 0
        (RAC-LoRA Algorithm 1; :mod:`lorakit.sketches` names the distributions). The model's
        outputs are unchanged up to the rounding of the merge. Returns the drawn factor.
        """
        from ..sketches import make_sketch

        check_choice("side", side, ("left", "right"))
        (m, n), r = self.shape, self.rank
        shape = (m, r) if side == "left" else (r, n)
        drawn = make_sketch(sketch).sample(
            shape, generator, side=side, dtype=self.B.dtype, device=self.B.device
        )
        if side == "left":
            self.merge_and_restart(drawn, torch.zeros_like(self.A))
        else:
            self.merge_and_restart(torch.zeros_like(self.B), drawn)
        return drawn

    def slice(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the k components ``index``: (B[:, I] (m×k), A[I, :] (k×n)).

        With the scaling s·r/k this is FSLoRA's sketched adapter B·S·A, S = (r/k)·diag(1_I)
        (FSLoRA Definition 3.1); with s, the leading-k adapter of HeteroLoRA (index = 0..k−1).
        """
        with torch.no_grad():
            return self.B[:, index].clone(), self.A[index, :].clone()

    def pad(self, B: torch.Tensor, A: torch.Tensor, index: torch.Tensor):
        """(m×k, k×n) factors of the components ``index`` zero-padded to (m, r) and (r, n)."""
        full_B, full_A = (
            self.B.detach().new_zeros(self.B.shape),
            self.A.detach().new_zeros(self.A.shape),
        )
        full_B[:, index], full_A[index, :] = B, A
        return full_B, full_A

    def swap(self, B: torch.Tensor, A: torch.Tensor, scaling: float | None = None):
        """Put new factor tensors (any rank k) in place; returns the old (B, A, scaling).

        The new tensors become the module's parameters (they are not copied), so a client's
        slice B[:, I], A[I, :] trains as a rank-k adapter inside the same model. Put the returned
        triple back with another ``swap`` when done.
        """
        if B.shape[1] != A.shape[0] or B.shape[0] != self.shape[0] or A.shape[1] != self.shape[1]:
            raise ValueError(
                f"site {self.name}: B must be ({self.shape[0]}, k) and A (k, {self.shape[1]}), "
                f"got B {tuple(B.shape)} and A {tuple(A.shape)}"
            )
        old = (self.B, self.A, self.scaling)
        as_param = lambda t: t if isinstance(t, nn.Parameter) else nn.Parameter(t)  # noqa: E731
        self.layer.lora_B[self.adapter].weight = as_param(B)
        self.layer.lora_A[self.adapter].weight = as_param(A)
        if scaling is not None:
            self.scaling = scaling
        return old


def sites(model: nn.Module, adapter: str = "default") -> list[Site]:
    """Every LoRA site of ``model`` for ``adapter``, in module order, found by module type.

    Raises ``ValueError`` when the model holds no linear LoRA layer with that adapter.
    """
    from peft.tuners.lora import LoraLayer  # peft is imported only when models are used

    found = [
        Site(name, module, adapter)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
        and adapter in module.lora_A
        and isinstance(module.lora_A[adapter], nn.Linear)
    ]
    if not found:
        raise ValueError(
            f"model has no linear LoRA layer with adapter {adapter!r}: wrap it with "
            "peft.get_peft_model(model, LoraConfig(target_modules=[...]))"
        )
    return found


def site_frame(site_list: Iterable[Site]):
    """One row per site: ``site``, ``m``, ``n``, ``r``, ``scaling``, ``conv1d`` (stored as (in, out)),
    ``adapter_entries`` = r·(m + n)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "site": s.name, "m": s.shape[0], "n": s.shape[1], "r": s.rank,
                "scaling": s.scaling, "conv1d": s.transposed,
                "adapter_entries": s.rank * sum(s.shape),
            }
            for s in site_list
        ]
    )  # fmt: skip


def freeze(site_list: Iterable[Site], side: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for the side that trains (:data:`SIDES`); return the trained tensors.

    Call it before every step: peft's ``set_adapter`` turns gradients back on for every factor of
    the active adapter (prior_art.md §B.3), which would otherwise train a factor that should stay
    frozen.
    """
    check_choice("side", side, SIDES)
    trained = []
    for site in site_list:
        site.A.requires_grad_(side in ("left", "both"))
        site.B.requires_grad_(side in ("right", "both"))
        trained += [p for p in (site.B, site.A) if p.requires_grad]
    return trained


@contextmanager
def swapped(site_list: list[Site], factors: list[tuple], scalings: list[float] | None = None):
    """Temporarily put ``factors[j] = (B_j, A_j)`` into site j (and its scaling); restore after."""
    old = [
        site.swap(B, A, None if scalings is None else scalings[j])
        for j, (site, (B, A)) in enumerate(zip(site_list, factors, strict=True))
    ]
    try:
        yield
    finally:
        for site, (B, A, s) in zip(site_list, old, strict=True):
            site.swap(B, A, s)


# -- exchange, save and load ---------------------------------------------------------------------
def adapter_state(model: nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors as peft sends them: ``get_peft_model_state_dict`` (cloned)."""
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().clone()
        for k, v in get_peft_model_state_dict(model, adapter_name=adapter).items()
    }


def load_adapter_state(model: nn.Module, state: dict, adapter: str = "default") -> None:
    """Load tensors from :func:`adapter_state` back (``set_peft_model_state_dict``).

    Raises ``ValueError`` naming any key the model does not have, instead of ignoring it.
    """
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state, adapter_name=adapter)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise ValueError(f"state has keys the model lacks: {unexpected[:3]}")


def state_bytes(state: dict[str, torch.Tensor], bytes_per_float: int = 4) -> int:
    """The size of a state dict as a message: its entries times ``bytes_per_float``."""
    return bytes_per_float * sum(int(v.numel()) for v in state.values())


def save_adapter(model: nn.Module, path) -> None:
    """``model.save_pretrained(path)``: adapter_config.json and the adapter weights only.

    After a run that writes the base weights (chain methods, fedstack_lora, fed_rac_lora, AsyncFL)
    the adapter alone is not the trained model (a ``UserWarning`` says so): save with
    :func:`lorakit.adapters.save_trained`, which writes the merged model in that case.
    """
    model.save_pretrained(str(path))


def load_adapter(base_model: nn.Module, path, *, trainable: bool = False) -> nn.Module:
    """``PeftModel.from_pretrained(base_model, path, is_trainable=trainable)``.

    ``trainable=True`` is needed to go on training (peft loads adapters frozen by default).
    """
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)
