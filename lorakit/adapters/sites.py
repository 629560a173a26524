"""Adapter sites: the matrix view of every peft LoRA layer of a model.

A *site* is one adapted weight, ``W = W0 + s·B·A`` with the base W0 (m×n, out × in), the factors
B (m×r) and A (r×n) and the scaling s = α/r (α/√r with rsLoRA), exactly the objects of the matrix
algorithms. :func:`sites` finds them by module type (every ``peft.tuners.lora.LoraLayer`` holding
the adapter), never by comparing parameter names: the FSLoRA code's ``'lora_B' == name`` test never
matches peft's names (prior_art.md §A.1), so its sketch silently did nothing.

A new module kind is one :class:`Site` subclass, as peft has one layer class per module kind. The
subclass says which peft layers it takes (:meth:`Site.accepts`), where the factors live
(:attr:`Site.B`, :attr:`Site.A`, :meth:`Site.put`) and how a stored tensor is read as a matrix
(:meth:`Site.to_matrix`, :meth:`Site.to_stored`); everything else (W0, ∇_W f, merge, restart,
slice, swap, freeze), :class:`~lorakit.adapters.problem.ModelProblem` and saving then work on it
unchanged. The kinds shipped:

* :class:`LinearSite`, peft's ``lora.Linear``: ``nn.Linear`` stores W (out, in); GPT-2's
  ``Conv1D`` stores Wᵀ (in, out) and peft marks it ``fan_in_fan_out``, so the site transposes.
  B and A are the weights of the ``lora_B`` / ``lora_A`` ``nn.Linear`` modules.
* :class:`EmbeddingSite`, peft's ``lora.Embedding``: the weight E is (num_embeddings, dim) and
  peft adds s·Aᵀ[x]·Bᵀ to E[x], with A (r, num) and B (dim, r) in the ParameterDicts
  ``lora_embedding_A`` / ``lora_embedding_B``. That is column x of s·B·A, so the embedding is
  x ↦ W·onehot(x) with W = Eᵀ (m = dim, n = num_embeddings): the site transposes E.
* :class:`ConvSite`, peft's ``lora.Conv1d/2d/3d``: the kernel (out, in, k…) is W as
  (out, in·∏k); ``lora_A`` is a conv with the base's kernel, (r, in, k…) read as (r, in·∏k), and
  ``lora_B`` a 1×1 conv, (out, r, 1…) read as (out, r).

The identity is exact for these layers: each is linear in W0 + s·B·A (a conv of the lora_A
kernel followed by a 1×1 conv is the conv of the product kernel; an embedding is W times a one-hot
vector). tests/test_sites_kinds.py checks it against the modules' outputs to 1e-12 in float64.
Layers where it fails are refused with a ``ValueError``: a conv with groups, dilation or a padding
mode peft's ``lora_A`` does not copy; an embedding with ``max_norm`` (renormalises in place) or
``scale_grad_by_freq`` (its gradient is not ∇f); a base weight shared with another module (tied
embeddings: GPT-2's ``lm_head`` is ``wte``'s weight, so writing W0 would change the output layer
too; untie it first, as the zoo does: :func:`lorakit.zoo.hub.untie_embeddings`).

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

:attr:`Site.B` and :attr:`Site.A` are the module's parameters as stored (what an optimizer steps
and a state dict holds): matrices for linear and embedding sites, kernels for a conv site;
:meth:`Site.factors` gives their (m×r, r×n) matrix views.

Adapters travel as peft state dicts (:func:`adapter_state`, :func:`load_adapter_state`) and are
saved and loaded with peft's own ``save_pretrained`` / ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn

from .._validation import check_choice

__all__ = [
    "SIDES",
    "ConvSite",
    "EmbeddingSite",
    "LinearSite",
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


def _as_parameter(stored: torch.Tensor, given: torch.Tensor) -> nn.Parameter:
    """The parameter a site puts for the tensor ``given`` (``stored``: its stored-form view):
    ``given`` itself when it is a parameter stored as is, else a parameter sharing its storage,
    trained when ``given`` is a trained parameter or a plain tensor (``nn.Parameter``'s default)."""
    if stored is given and isinstance(given, nn.Parameter):
        return given
    flag = given.requires_grad if isinstance(given, nn.Parameter) else True
    return nn.Parameter(stored.detach(), requires_grad=flag)


class Site:
    """One peft LoRA layer seen as W = W0 + s·B·A (all matrices in (out, in) orientation).

    The base class is the generic part; a subclass is one module kind (module docstring) and
    overrides :meth:`accepts`, :attr:`B`, :attr:`A`, :meth:`put` and, where its tensors are not
    stored as the matrices themselves, :meth:`to_matrix` and :meth:`to_stored`. Defining the
    subclass registers it: :func:`sites` tries the kinds newest first.
    """

    #: the name in :func:`site_frame`
    kind = "site"
    #: True when the module stores W0 as Wᵀ (GPT-2's Conv1D, an embedding)
    transposed = False
    #: the registered kinds, newest first (:func:`sites` uses the first that accepts a layer)
    kinds: ClassVar[list[type[Site]]] = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "accepts" in vars(cls):
            Site.kinds.insert(0, cls)

    def __init__(self, name: str, layer: nn.Module, adapter: str = "default"):
        self.name, self.layer, self.adapter = name, layer, adapter
        self.base = layer.get_base_layer().weight

    def __repr__(self) -> str:
        m, n = self.shape
        return (
            f"{type(self).__name__}({self.name!r}, m={m}, n={n}, r={self.rank}, s={self.scaling:g})"
        )

    # -- what a kind overrides -----------------------------------------------------------------
    @classmethod
    def accepts(cls, layer: nn.Module, adapter: str) -> bool:
        """True when ``layer`` (a peft ``LoraLayer``) holds ``adapter`` in this kind's storage."""
        return False

    @property
    def B(self) -> nn.Parameter:
        """The left factor as the module stores it (m×r for every kind but a conv)."""
        raise NotImplementedError

    @property
    def A(self) -> nn.Parameter:
        """The right factor as the module stores it (r×n for every kind but a conv)."""
        raise NotImplementedError

    def put(self, B: nn.Parameter, A: nn.Parameter) -> None:
        """Make the stored-form parameters ``B`` and ``A`` the module's factors (no copy)."""
        raise NotImplementedError

    def to_matrix(self, t: torch.Tensor, role: str) -> torch.Tensor:
        """The matrix view of a tensor stored as ``role`` (``"W"``, ``"B"`` or ``"A"``): a view."""
        return t

    def to_stored(self, X: torch.Tensor, role: str) -> torch.Tensor:
        """The stored form of the matrix ``X`` in ``role`` (inverse of :meth:`to_matrix`): a view."""
        return X

    # -- the matrices --------------------------------------------------------------------------
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) as (m×r, r×n) matrices: detached views of the module's parameters."""
        return self.to_matrix(self.B.detach(), "B"), self.to_matrix(self.A.detach(), "A")

    @property
    def rank(self) -> int:
        return self.factors()[1].shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(m, n) = (out, in) of the matrix W."""
        return tuple(self.W0.shape)

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[self.adapter])

    @scaling.setter
    def scaling(self, value: float) -> None:
        self.layer.scaling[self.adapter] = float(value)

    @property
    def W0(self) -> torch.Tensor:
        """The base weight (m, n), a view of the module's tensor (no copy)."""
        return self.to_matrix(self.base.detach(), "W")

    @W0.setter
    def W0(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.base.copy_(self.to_stored(value, "W"))

    def delta(self) -> torch.Tensor:
        """s·B·A, the adapter's contribution to W (m, n)."""
        B, A = self.factors()
        return self.scaling * (B @ A)

    def W(self) -> torch.Tensor:
        """The adapted weight W0 + s·B·A."""
        return self.W0 + self.delta()

    def grad_W(self) -> torch.Tensor | None:
        """∇_W f from the last backward pass (needs :meth:`track_W` on), or None."""
        g = self.base.grad
        return None if g is None else self.to_matrix(g, "W")

    def track_W(self, on: bool = True) -> None:
        """Let backward fill ∇_W f into the base weight's ``.grad`` (off: the base stays frozen)."""
        self.base.requires_grad_(on)
        if not on:
            self.base.grad = None

    # -- updates -------------------------------------------------------------------------------
    def set_factors(self, B: torch.Tensor | None = None, A: torch.Tensor | None = None) -> None:
        """Copy new (m×r, r×n) values into B and/or A (use :meth:`swap` to change the rank)."""
        with torch.no_grad():
            if B is not None:
                self.B.copy_(self.to_stored(B, "B"))
            if A is not None:
                self.A.copy_(self.to_stored(A, "A"))

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
        kw = {"dtype": self.B.dtype, "device": self.B.device}
        shape = (m, r) if side == "left" else (r, n)
        drawn = make_sketch(sketch).sample(shape, generator, side=side, **kw)
        if side == "left":
            self.merge_and_restart(drawn, torch.zeros(r, n, **kw))
        else:
            self.merge_and_restart(torch.zeros(m, r, **kw), drawn)
        return drawn

    def slice(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the k components ``index``: (B[:, I] (m×k), A[I, :] (k×n)).

        With the scaling s·r/k this is FSLoRA's sketched adapter B·S·A, S = (r/k)·diag(1_I)
        (FSLoRA Definition 3.1); with s, the leading-k adapter of HeteroLoRA (index = 0..k−1).
        """
        B, A = self.factors()
        return B[:, index].clone(), A[index, :].clone()

    def pad(self, B: torch.Tensor, A: torch.Tensor, index: torch.Tensor):
        """(m×k, k×n) factors of the components ``index`` zero-padded to (m, r) and (r, n)."""
        full_B, full_A = (t.new_zeros(t.shape) for t in self.factors())
        full_B[:, index], full_A[index, :] = B, A
        return full_B, full_A

    def swap(self, B: torch.Tensor, A: torch.Tensor, scaling: float | None = None):
        """Put new (m×k, k×n) factors (any rank k) in place; returns the old (B, A, scaling).

        The new tensors become the module's parameters (they are not copied: a kind that stores
        them in another shape puts a parameter viewing their storage), so a client's slice
        B[:, I], A[I, :] trains as a rank-k adapter inside the same model. Put the returned
        stored parameters back with :meth:`put` (and the scaling) when done: :func:`swapped`.
        """
        (m, n), k = self.shape, B.shape[-1]
        if B.dim() != 2 or A.dim() != 2 or B.shape[0] != m or tuple(A.shape) != (k, n):
            raise ValueError(
                f"site {self.name}: B must be ({m}, k) and A (k, {n}), "
                f"got B {tuple(B.shape)} and A {tuple(A.shape)}"
            )
        old = (self.B, self.A, self.scaling)
        self.put(_as_parameter(self.to_stored(B, "B"), B), _as_parameter(self.to_stored(A, "A"), A))
        if scaling is not None:
            self.scaling = scaling
        return old


class LinearSite(Site):
    """``peft.tuners.lora.Linear`` over ``nn.Linear`` (weight (out, in)) or GPT-2's ``Conv1D``
    (weight (in, out), peft's ``fan_in_fan_out``: the transpose is hidden, :attr:`transposed`)."""

    kind = "linear"

    def __init__(self, name: str, layer: nn.Module, adapter: str = "default"):
        super().__init__(name, layer, adapter)
        self.transposed = bool(getattr(layer, "fan_in_fan_out", False))
        if self.transposed:
            self.kind = "conv1d"

    @classmethod
    def accepts(cls, layer, adapter):
        from peft.tuners.lora import Linear

        return isinstance(layer, Linear) and adapter in layer.lora_A

    @property
    def B(self):
        return self.layer.lora_B[self.adapter].weight

    @property
    def A(self):
        return self.layer.lora_A[self.adapter].weight

    def put(self, B, A):
        self.layer.lora_B[self.adapter].weight = B
        self.layer.lora_A[self.adapter].weight = A

    def to_matrix(self, t, role):
        return t.T if role == "W" and self.transposed else t

    to_stored = to_matrix  # a transpose is its own inverse


class EmbeddingSite(Site):
    """``peft.tuners.lora.Embedding`` over ``nn.Embedding``: W = Eᵀ (dim × num_embeddings).

    peft adds s·(A^T[x] @ B^T) to E[x] with A (r, num) and B (dim, r) in the ParameterDicts
    ``lora_embedding_A`` / ``lora_embedding_B`` (prior_art.md §B.1): that is column x of
    s·B·A, so the embedding is the linear map W·onehot(x) with W = Eᵀ + s·B·A, B and A stored as
    the matrices themselves. torch gives the ``padding_idx`` row no gradient, in the base and the
    adapter alike (a fixed column of W). peft applies no LoRA dropout to embeddings.
    """

    kind = "embedding"
    transposed = True

    def __init__(self, name: str, layer: nn.Module, adapter: str = "default"):
        super().__init__(name, layer, adapter)
        base = layer.get_base_layer()
        for attr, ok in (("max_norm", None), ("scale_grad_by_freq", False), ("sparse", False)):
            if getattr(base, attr) != ok:
                raise ValueError(
                    f"site {name}: an nn.Embedding with {attr}={getattr(base, attr)!r} is not "
                    f"W·onehot(x) with the gradient ∇_W f; lorakit needs {attr}={ok!r}"
                )

    @classmethod
    def accepts(cls, layer, adapter):
        from peft.tuners.lora import Embedding

        return isinstance(layer, Embedding) and adapter in layer.lora_embedding_A

    @property
    def B(self):
        return self.layer.lora_embedding_B[self.adapter]

    @property
    def A(self):
        return self.layer.lora_embedding_A[self.adapter]

    def put(self, B, A):
        self.layer.lora_embedding_B[self.adapter] = B
        self.layer.lora_embedding_A[self.adapter] = A

    def to_matrix(self, t, role):
        return t.T if role == "W" else t

    to_stored = to_matrix


class ConvSite(Site):
    """``peft.tuners.lora.Conv1d/Conv2d/Conv3d``: W is the kernel (out, in, k…) as (out, in·∏k).

    peft's ``lora_A`` is a conv with the base's kernel size, stride and padding, (r, in, k…), and
    ``lora_B`` a 1×1 conv (out, r, 1…); their composition is the conv with the kernel B·A, so
    with the flattened views W = W0 + s·B·A holds exactly. That needs the base conv's groups = 1,
    dilation 1 and zero padding (``lora_A`` copies none of them): other convs are refused.
    """

    kind = "conv"

    def __init__(self, name: str, layer: nn.Module, adapter: str = "default"):
        super().__init__(name, layer, adapter)
        base = layer.get_base_layer()
        self.kind = f"conv{base.weight.dim() - 2}d"
        if base.groups != 1 or any(d != 1 for d in base.dilation) or base.padding_mode != "zeros":
            raise ValueError(
                f"site {name}: peft's LoRA on a conv with groups={base.groups}, dilation="
                f"{base.dilation}, padding_mode={base.padding_mode!r} is not W0 + s·B·A (its "
                "lora_A conv copies none of them); lorakit needs groups=1, dilation 1, 'zeros'"
            )

    @classmethod
    def accepts(cls, layer, adapter):
        from peft.tuners.lora import layer as lora  # Conv1d came after peft 0.11: look them up

        convs = tuple(getattr(lora, c) for c in ("Conv1d", "Conv2d", "Conv3d") if hasattr(lora, c))
        return isinstance(layer, convs) and adapter in layer.lora_A

    @property
    def B(self):
        return self.layer.lora_B[self.adapter].weight

    @property
    def A(self):
        return self.layer.lora_A[self.adapter].weight

    def put(self, B, A):
        self.layer.lora_B[self.adapter].weight = B
        self.layer.lora_A[self.adapter].weight = A

    def to_matrix(self, t, role):
        return t.flatten(1)

    def to_stored(self, X, role):
        kernel = self.base.shape[2:]
        if role == "B":  # a 1×1 conv from the k components to the outputs
            return X.reshape(X.shape[0], X.shape[1], *(1,) * len(kernel))
        return X.reshape(X.shape[0], -1, *kernel)  # W (out, in, k…) or A (k, in, k…)


def _tied(model: nn.Module) -> dict[int, set[str]]:
    """The module names holding each parameter (by identity) that more than one module holds."""
    owners: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), set()).add(name.rsplit(".", 1)[0])
    return {key: names for key, names in owners.items() if len(names) > 1}


def sites(model: nn.Module, adapter: str = "default") -> list[Site]:
    """Every LoRA site of ``model`` for ``adapter``, in module order, found by module type.

    Each peft ``LoraLayer`` holding the adapter becomes the first :attr:`Site.kinds` entry that
    accepts it. Raises ``ValueError`` when the model holds no such layer, when a LoRA layer has
    no site kind (write a :class:`Site` subclass for it, or leave it out of ``target_modules``),
    or when a site's base weight is shared with another module (module docstring: tied weights).
    """
    from peft.tuners.lora import LoraLayer  # peft is imported only when models are used

    found, tied = [], None
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.r:
            continue
        kind = next((k for k in Site.kinds if k.accepts(module, adapter)), None)
        if kind is None:
            raise ValueError(
                f"layer {name} is a peft {type(module).__name__}, which has no lorakit site kind "
                f"(kinds: {', '.join(k.__name__ for k in Site.kinds)}): leave it out of "
                "target_modules or write a Site subclass for it"
            )
        site = kind(name, module, adapter)
        tied = _tied(model) if tied is None else tied
        if id(site.base) in tied:
            others = sorted(tied[id(site.base)] - {f"{name}.base_layer"})
            raise ValueError(
                f"site {name}'s base weight is tied to {others[0]} (e.g. tie_word_embeddings): "
                "writing W0 would change both modules; untie it (give the other module its own "
                "copy of the weight) before adding LoRA"
            )
        found.append(site)
    if not found:
        raise ValueError(
            f"model has no LoRA layer with adapter {adapter!r}: wrap it with "
            "peft.get_peft_model(model, LoraConfig(target_modules=[...]))"
        )
    return found


def site_frame(site_list: Iterable[Site]):
    """One row per site: ``site``, ``kind`` (linear, conv1d, embedding, conv2d, …), ``m``, ``n``,
    ``r``, ``scaling``, ``conv1d`` (GPT-2's Conv1D, stored as (in, out)), ``adapter_entries`` =
    r·(m + n)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "site": s.name, "kind": s.kind, "m": s.shape[0], "n": s.shape[1], "r": s.rank,
                "scaling": s.scaling, "conv1d": s.kind == "conv1d",
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
            site.put(B, A)
            site.scaling = s


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
