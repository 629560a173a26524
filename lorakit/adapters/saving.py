"""Save what a model-scale run trained: the adapter, or the merged model when the base holds training.

Where a run leaves its training depends on the method (each runner's docstring):

=======================================================  ==============================================
the adapter alone (base untouched)                       fslora, fedit, hetero_lora, fslora_topk,
                                                         flex_lora, rw_lora, gossip_lora
the base weights (merged, adapter product B·A = 0)       lora, asymm_lora, cola, rac_lora,
                                                         bernoulli_lora, fedstack_lora, fed_rac_lora,
                                                         AsyncFL (fedavg, fedasync, fedbuff; both
                                                         ``adapter=None`` and ``adapter=r``)
=======================================================  ==============================================

peft's ``model.save_pretrained(path)`` writes the adapter only, so after the second kind of run it
would reload as the *untrained* model. :func:`save_trained` decides by comparing the base weights
(every tensor of the model that is not a LoRA factor) and the LoRA scalings with those the model had
when the first :class:`~lorakit.adapters.ModelProblem` was built on it, and writes

* ``"adapter"``: nothing but the adapter changed: peft's own adapter directory
  (``adapter_config.json``, ``adapter_model.safetensors``). Plain peft loads it onto the base the
  problem was built from: ``PeftModel.from_pretrained(base_model, path)``.
* ``"merged"``: the base holds training: the model with every adapter merged
  (``merge_and_unload`` of a copy; the model itself is not changed), as a plain model without LoRA.
  A transformers ``PreTrainedModel`` is written with its ``save_pretrained`` (``config.json``,
  ``model.safetensors``): ``AutoModelFor….from_pretrained(path)``; any other ``nn.Module`` as
  ``model.safetensors`` (``safetensors.torch.save_model``): ``safetensors.torch.load_model(MyModule(),
  path + "/model.safetensors")``.

:func:`load_trained` reads either into a peft model built the same way (so runs can go on): the
adapter into its LoRA layers, or the merged weights into its base layers with B = 0. Every run
above ends with B = 0 when it writes the base, so the merge adds exact zeros and a reload
reproduces the trained model's outputs bit for bit (tests/test_adapters_save.py, float64).

The plain route is guarded: building a ``ModelProblem`` on a ``PeftModel`` installs an
instance-level ``save_pretrained`` (:func:`track_base`) that calls peft's own, after a
``UserWarning`` when the base holds training the adapter file will not contain. It is inert while
the base equals the reference (e.g. after :meth:`ModelProblem.reset`), survives ``copy.deepcopy``
and pickling (bound to the copy), and holds the model only by a weak reference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from .sites import load_adapter_state, sites

__all__ = ["base_changes", "load_trained", "save_trained", "track_base"]

#: The files each kind of save writes (a directory holding the other kind is refused).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
MERGED_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")


# -- the reference: what the base weights were when lorakit first saw the model ------------------
def _is_lora(key: str) -> bool:
    """A LoRA tensor of peft's state dict (``lora_A``, ``lora_B``, ``lora_embedding_A``, …)."""
    return any(part.startswith("lora_") for part in key.split("."))


def _digest(t: torch.Tensor) -> tuple:
    """(dtype, shape, hash of the bytes): a change detector (not a security measure)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return str(t.dtype), tuple(t.shape), hashlib.sha1(raw).hexdigest()


def _scalings(model: nn.Module) -> dict[str, dict]:
    from peft.tuners.lora import LoraLayer

    return {
        name: dict(module.scaling)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }


def _fingerprint(model: nn.Module) -> dict:
    base = {k: _digest(v) for k, v in model.state_dict().items() if not _is_lora(k)}
    return {"base": base, "scalings": _scalings(model)}


class _BaseGuard:
    """``model.save_pretrained`` of one model: peft's own, after a warning when the base holds
    training (module docstring). Holds the reference fingerprint of the base."""

    def __init__(self, model: nn.Module, reference: dict):
        self._model = weakref.ref(model)
        self.reference = reference

    @property
    def __wrapped__(self):
        """peft's method (``inspect.signature`` and ``help`` show its signature)."""
        model = self._model()
        return type(model).save_pretrained.__get__(model)

    def __call__(self, *args, **kwargs):
        model = self._model()
        if model is None:
            raise ReferenceError("the model this save_pretrained belonged to no longer exists")
        changed = base_changes(model)
        if changed:
            warnings.warn(
                f"model.save_pretrained writes the LoRA adapter only, but {len(changed)} base "
                f"weight(s) or scaling(s) of this model differ from those it had when its "
                f"ModelProblem was built (e.g. {changed[0]!r}); the saved adapter reloads without "
                "them (the chain methods, fedstack_lora, fed_rac_lora and AsyncFL train the base "
                "weights). Save with lorakit.adapters.save_trained(model, path).",
                UserWarning,
                stacklevel=2,
            )
        return type(model).save_pretrained(model, *args, **kwargs)

    # copy.deepcopy and pickle: bind the copy's guard to the copied model (not the original)
    def __getstate__(self):
        return {"model": self._model(), "reference": self.reference}

    def __setstate__(self, state):
        self._model = weakref.ref(state["model"])
        self.reference = state["reference"]


def _guard(model: nn.Module) -> _BaseGuard | None:
    guard = vars(model).get("save_pretrained")
    return guard if isinstance(guard, _BaseGuard) else None


def track_base(model: nn.Module) -> None:
    """Remember ``model``'s base weights and scalings as the reference, and guard ``save_pretrained``.

    Called by :class:`~lorakit.adapters.ModelProblem` when it is built; a model already tracked
    keeps its first reference (the weights before any run). Only a ``peft.PeftModel`` gets the
    guard (other models have no adapter-only ``save_pretrained``).
    """
    from peft import PeftModel

    if isinstance(model, PeftModel) and _guard(model) is None:
        model.save_pretrained = _BaseGuard(model, _fingerprint(model))


def base_changes(model: nn.Module) -> list[str] | None:
    """Names of the base tensors and LoRA scalings that differ from the reference (empty: none).

    None when the model has no reference (no ``ModelProblem`` was built on it). Costs one hash of
    every base weight (about 1 s per GB on a CPU).
    """
    guard = _guard(model)
    if guard is None:
        return None
    now, ref = _fingerprint(model), guard.reference
    prefix = "base_model.model."
    changed = [
        k.removeprefix(prefix).replace(".base_layer", "")
        for k in sorted(set(now["base"]) | set(ref["base"]))
        if now["base"].get(k) != ref["base"].get(k)
    ]
    changed += [
        f"{name.removeprefix(prefix)}.scaling"
        for name in sorted(set(now["scalings"]) | set(ref["scalings"]))
        if now["scalings"].get(name) != ref["scalings"].get(name)
    ]
    return changed


# -- save ----------------------------------------------------------------------------------------
def _model_of(problem_or_model, name: str = "problem_or_model") -> nn.Module:
    from peft import PeftModel

    model = problem_or_model if isinstance(problem_or_model, nn.Module) else None
    if model is None:
        model = getattr(problem_or_model, "model", None)
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"{name} must be a ModelProblem or a peft.PeftModel (peft.get_peft_model), "
            f"got {type(problem_or_model).__name__}"
        )
    return model


def _refuse_other_kind(path: Path, other: tuple[str, ...], kind: str) -> None:
    found = [name for name in other if (path / name).exists()]
    if found:
        raise ValueError(
            f"path {str(path)!r} already holds {found[0]} from another kind of save; writing the "
            f"{kind} next to it would make loaders pick the wrong one: use an empty directory"
        )


def save_trained(problem_or_model, path) -> str:
    """Write what a run trained into the directory ``path``; returns ``"adapter"`` or ``"merged"``.

    ``problem_or_model``: a :class:`~lorakit.adapters.ModelProblem` or its ``peft.PeftModel``.
    The adapter alone when the base weights and scalings equal those the model had when its first
    ``ModelProblem`` was built, otherwise the merged model (module docstring: files, and how plain
    peft / transformers / safetensors load each). A model no problem was built on is written
    merged (nothing tells which weights hold training). The merged save copies the model once.
    Raises ``ValueError`` when ``path`` holds files of the other kind.
    """
    model = _model_of(problem_or_model)
    path = Path(path)
    changed = base_changes(model)
    if changed is not None and not changed:
        _refuse_other_kind(path, MERGED_FILES, "adapter")
        type(model).save_pretrained(model, str(path))
        return "adapter"
    _refuse_other_kind(path, ADAPTER_FILES, "merged model")
    merged = copy.deepcopy(model).merge_and_unload()
    from transformers import PreTrainedModel

    if isinstance(merged, PreTrainedModel):
        merged.save_pretrained(str(path))
    else:
        from safetensors.torch import save_model

        path.mkdir(parents=True, exist_ok=True)
        save_model(merged, str(path / "model.safetensors"))
    return "merged"


# -- load ----------------------------------------------------------------------------------------
def _read_merged(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.exists():  # a sharded transformers save
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(path / shard)).items()}
    return load_file(str(path / "model.safetensors"))


def _plain_key(key: str) -> str:
    """peft's ``fc1.base_layer.weight`` → the plain model's ``fc1.weight``."""
    return ".".join(part for part in key.split(".") if part != "base_layer")


@torch.no_grad()
def _write_base(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a plain model's state into the base layers of ``model`` (tie-aware, names checked)."""
    target = {
        _plain_key(k): v for k, v in model.get_base_model().state_dict().items() if not _is_lora(k)
    }
    extra = sorted(set(state) - set(target))
    if extra:
        raise ValueError(f"the saved model has weights the model lacks: {extra[:3]}")
    # a save drops all but one name of tied tensors (e.g. GPT-2's lm_head.weight = wte.weight)
    ties: dict[tuple, list[str]] = {}
    for k, v in target.items():
        ties.setdefault((v.data_ptr(), tuple(v.shape), v.stride()), []).append(k)
    missing = [names[0] for names in ties.values() if not any(n in state for n in names)]
    if missing:
        raise ValueError(f"the saved model lacks weights the model has: {missing[:3]}")
    for k, v in state.items():  # every check before the first write: nothing partial
        if v.shape != target[k].shape:
            raise ValueError(
                f"weight {k!r} is saved with shape {tuple(v.shape)}, the model's is "
                f"{tuple(target[k].shape)}"
            )
    for k, v in state.items():
        target[k].copy_(v)


def _check_config(model: nn.Module, path: Path, adapter: str) -> None:
    """The saved adapter's rank and scaling must be the model's (else it loads a different model)."""
    saved = json.loads((path / "adapter_config.json").read_text())
    ours = model.peft_config[adapter]
    for key in ("r", "lora_alpha", "use_rslora"):
        if saved.get(key) != getattr(ours, key, None):
            raise ValueError(
                f"the adapter in {str(path)!r} has {key} = {saved.get(key)!r}, the model's "
                f"adapter {adapter!r} has {getattr(ours, key, None)!r}: build the model with the "
                "same LoraConfig"
            )


def load_trained(path, model: nn.Module, *, adapter: str = "default") -> nn.Module:
    """Load what :func:`save_trained` wrote into ``model``, a peft model built the same way.

    An adapter directory goes into the LoRA layers of ``adapter`` (the model's base must be the
    one the problem was built from, as with ``PeftModel.from_pretrained``); a merged model into
    the base layers, with every B of ``adapter`` set to 0 so the model computes the merged
    weights. Returns ``model``. Raises ``ValueError`` when ``path`` holds neither, or when its
    shapes, names, rank or scaling do not fit the model.
    """
    model = _model_of(model, "model")
    path = Path(path)
    if (path / "adapter_config.json").exists():
        from peft.utils import load_peft_weights

        _check_config(model, path, adapter)
        load_adapter_state(model, load_peft_weights(str(path), device="cpu"), adapter)
    elif (path / "model.safetensors").exists() or (path / MERGED_FILES[2]).exists():
        _write_base(model, _read_merged(path))
        for site in sites(model, adapter):
            with torch.no_grad():
                site.B.zero_()
    else:
        raise ValueError(
            f"path {str(path)!r} holds neither an adapter (adapter_config.json) nor a merged "
            "model (model.safetensors): write it with lorakit.adapters.save_trained"
        )
    return model
