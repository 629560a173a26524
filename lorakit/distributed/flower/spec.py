"""The run configuration of the Flower app: which method, on which model, split how, for how long.

A Flower run config is a flat table of scalars (``[tool.flwr.app.config]`` in ``pyproject.toml``,
overridden by ``flwr run --run-config "key=value ..."``), so :class:`RunSpec` reads one: the
*run keys* below, and every other key is the method's configuration (``lk.make(method, ...)``,
dashes read as underscores: ``rank``, ``gamma``, ``local-steps``, ``cohort``, ``server-lr``,
``download``, ``bytes-per-float``, ``side``, ...). The server sends the spec in every message, so
each SuperNode builds the same problem and configuration from it.

=================  ===============================================================================
run key            meaning
=================  ===============================================================================
``method``         a federated method of :data:`lorakit.methods.REGISTRY` (``fslora``, ``fedit``,
                   ``hetero_lora``, ``fslora_topk``, ``flex_lora``, ``fedstack_lora``,
                   ``fed_rac_lora``)
``model``          a zoo problem: ``digits``, ``gpt2``, ``minilm`` (:mod:`lorakit.zoo`), or
                   ``hub:<id or directory>`` (a causal LM from the hub, online, or a
                   ``save_pretrained`` directory, on lorakit's pydoc corpus)
``clients``        M, the lorakit clients the data are split among
``partition``      ``iid``, ``dirichlet`` or ``quantity`` (:func:`lorakit.problems.partition.
                   partition`), with ``partition-alpha`` and ``partition-seed``
``rounds``         server rounds; ``seed``: the run's seed (lorakit's streams)
``model-seed``     the zoo builder's seed; ``dtype``: ``float32`` or ``float64`` (digits)
``shared-index``   FSLoRA: one index set for every site (``FederatedLoRA.run``'s ``shared_index``)
``log-every``      log a row every so many rounds
``out-dir``        where the server writes ``history.csv``, ``messages.csv``, ``result.pt`` and
                   the trained model (``lorakit.adapters.save_trained``); empty: nothing written
``keep-rounds``    also keep the global state of every round in ``result.pt``
``timeout``        seconds a round waits for its replies before it fails
=================  ===============================================================================

Values a TOML table cannot hold are spelled as strings: ``""`` leaves a key at the method's
default, ``"none"`` is None; ``budgets`` is an int, per-client ``"k1,k2,..."`` or a distribution
of :mod:`lorakit.federated.budgets` as ``"name"`` or ``"name:arg:arg"`` (``"uniform:1:3"``,
``"mix:0.25:0.5"``); ``compressor`` is a name or ``"name:k"``; ``estimator`` is ``"gd"`` or
``"sgd"`` with ``batch-size`` and ``sigma`` (Fed-RAC-LoRA's ``batch-size`` is its own field).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, fields

import torch

from ... import methods
from ..._validation import check_choice, check_int, check_real
from ...compressors import make_compressor
from ...estimators import make_estimator
from ...federated import budgets as budget_lib

__all__ = ["DEFAULTS", "MODELS", "RUN_KEYS", "RunSpec", "build_problem"]

#: The built-in zoo problems (``hub:<id>`` loads any causal LM).
MODELS = ("digits", "gpt2", "minilm")
#: The run keys and their defaults (the rest of a run config configures the method).
DEFAULTS = {
    "method": "fslora",
    "model": "digits",
    "clients": 4,
    "partition": "iid",
    "partition-alpha": "",
    "partition-seed": 0,
    "rounds": 3,
    "seed": 0,
    "model-seed": 0,
    "dtype": "float32",
    "shared-index": False,
    "log-every": 1,
    "out-dir": "",
    "keep-rounds": False,
    "timeout": 600.0,
}
RUN_KEYS = tuple(DEFAULTS)
_FEDERATED = tuple(name for name, m in methods.REGISTRY.items() if m.pattern == "federated")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _value(v):
    """A run-config value as lorakit takes it: ``"none"`` is None."""
    return None if isinstance(v, str) and v.strip().lower() == "none" else v


def _budgets(value):
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text and all(part.strip().lstrip("-").isdigit() for part in text.split(",")):
        parts = [int(part) for part in text.split(",")]
        return parts[0] if len(parts) == 1 else tuple(parts)
    name, *args = text.split(":")
    kinds = ("fixed", "mix", "uniform", "normal", "heavy_tail")
    check_choice("budgets", name, kinds)
    numbers = [float(a) if "." in a else int(a) for a in args]
    return (
        budget_lib.mix(tuple(numbers))
        if name == "mix" and numbers
        else getattr(budget_lib, name)(*numbers)
    )


def _compressor(value):
    name, _, arg = str(value).partition(":")
    if not arg:
        return make_compressor(name)
    return make_compressor(name, **{("s" if name == "qsgd" else "k"): int(arg)})


@dataclass(frozen=True)
class RunSpec:
    """A parsed run config (module docstring). ``RunSpec.parse(context.run_config)`` validates it;
    :meth:`record` is the flat table the server sends to the nodes (equal specs, equal tables)."""

    run: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, run_config: dict) -> RunSpec:
        """Split a flat run config into run keys and the method's configuration; the method's
        configuration is built once here, so a bad value fails before any node is contacted."""
        if not isinstance(run_config, dict):
            raise ValueError(f"run_config must be a dict, got {type(run_config).__name__}")
        run = dict(DEFAULTS)
        config = {}
        for key, value in run_config.items():
            key = str(key).replace("_", "-")
            if key in DEFAULTS:
                run[key] = value
            elif not (isinstance(value, str) and value.strip() == ""):
                config[key] = value
        check_choice("method", run["method"], _FEDERATED)
        model = str(run["model"])
        if not model.startswith("hub:"):
            check_choice("model", model, MODELS)
        check_int("clients", run["clients"], low=1)
        check_int("rounds", run["rounds"], low=1)
        check_int("seed", run["seed"], low=0)
        check_int("model-seed", run["model-seed"], low=0)
        check_int("partition-seed", run["partition-seed"], low=0)
        check_int("log-every", run["log-every"], low=1)
        check_choice("dtype", run["dtype"], tuple(_DTYPES))
        check_real("timeout", run["timeout"], low=0.0, low_open=True)
        for key in ("shared-index", "keep-rounds"):
            if not isinstance(run[key], bool):
                raise ValueError(f"{key} must be true or false, got {run[key]!r}")
        spec = cls(run, config)
        spec.method()  # validate the method's configuration now
        return spec

    # -- what the nodes get ---------------------------------------------------------------------
    def record(self) -> dict:
        """The flat table of scalars (run keys and configuration) a ConfigRecord carries."""
        return {**self.run, **self.config}

    @property
    def key(self) -> str:
        """A digest of the spec: equal specs share a node's cached problem and state."""
        text = json.dumps(self.record(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- the method and the problem ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.run["method"]

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.run["dtype"]]

    def method_kwargs(self) -> dict:
        """The configuration's keyword arguments (``lk.make(method, **kwargs)``). Keys the
        method's configuration does not have (one table serves every method: ``budgets`` means
        nothing to ``fed_rac_lora``) are left out with a warning."""
        kwargs = {key.replace("-", "_"): _value(value) for key, value in self.config.items()}
        accepted = {f.name for f in fields(methods.REGISTRY[self.name].config)}
        ignored = sorted(key for key in kwargs if key not in accepted)
        if ignored:
            warnings.warn(
                f"run config keys {[k.replace('_', '-') for k in ignored]} do not apply to "
                f"{self.name}: ignored",
                stacklevel=2,
            )
            kwargs = {key: value for key, value in kwargs.items() if key in accepted}
        if "budgets" in kwargs:
            kwargs["budgets"] = _budgets(kwargs["budgets"])
        if kwargs.get("compressor") is not None:
            kwargs["compressor"] = _compressor(kwargs["compressor"])
        if self.name != "fed_rac_lora":  # the FSLoRA family's oracle: gd or sgd(batch_size, sigma)
            batch_size, sigma = kwargs.pop("batch_size", None), kwargs.pop("sigma", None)
            estimator = kwargs.get("estimator", "gd")
            if (batch_size is not None or sigma is not None) and estimator != "sgd":
                raise ValueError("batch-size and sigma set the oracle of estimator = 'sgd'")
            if estimator == "sgd":
                kwargs["estimator"] = make_estimator("sgd", batch_size=batch_size, sigma=sigma)
        return kwargs

    def method(self):
        """The method's configuration object (a ``FederatedLoRA`` or ``FedRACLoRA``)."""
        kwargs = self.method_kwargs()
        for key, example in (("rank", "rank = 4"), ("gamma", "gamma = 0.1")):
            if key not in kwargs:
                raise ValueError(f"the run config must give {key} ({example})")
        return methods.make(self.name, **kwargs)

    def problem(self):
        """The zoo problem split among the clients (:func:`build_problem`)."""
        cfg = self.method()
        return build_problem(
            self.run["model"],
            cfg.rank,
            clients=self.run["clients"],
            partition=self.run["partition"],
            partition_seed=self.run["partition-seed"],
            partition_alpha=_value(self.run["partition-alpha"]) or None,
            lora_alpha=cfg.alpha,
            model_seed=self.run["model-seed"],
            dtype=self.dtype,
        )


def build_problem(
    model: str,
    rank: int,
    *,
    clients: int,
    partition: str = "iid",
    partition_seed: int = 0,
    partition_alpha: float | None = None,
    lora_alpha: float | None = None,
    model_seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A zoo problem (``digits``, ``gpt2``, ``minilm``, or ``hub:<id>``) with LoRA of ``rank``,
    its training rows split among ``clients`` by ``partition`` (label skew on the ``labels``
    tensor where the scheme needs labels). Every process that builds it with the same arguments
    gets the same model, data and split (the zoo builders and the partition are seeded)."""
    from ... import zoo

    if dtype != torch.float32 and model != "digits":
        raise ValueError(f"dtype = {dtype} is offered for model = 'digits' only, got {model!r}")
    if model == "digits":
        problem = zoo.digits_problem(rank, seed=model_seed, lora_alpha=lora_alpha, dtype=dtype)
    elif model == "gpt2":
        problem = zoo.gpt2_problem(rank, seed=model_seed, lora_alpha=lora_alpha)
    elif model == "minilm":
        problem = zoo.minilm_problem(rank=rank, seed=model_seed, lora_alpha=lora_alpha)
    elif model.startswith("hub:"):
        lm, tokenizer = zoo.from_pretrained(
            model[len("hub:") :], rank=rank, lora_alpha=lora_alpha, seed=model_seed
        )
        problem = zoo.text_problem(lm, tokenizer, zoo.corpus_texts("library"), eval_every=10)
    else:
        check_choice("model", model, MODELS)
    kwargs = {} if partition_alpha is None else {"alpha": partition_alpha}
    labels = "labels" if partition == "dirichlet" else None
    return problem.split(clients, partition, labels=labels, seed=partition_seed, **kwargs)
