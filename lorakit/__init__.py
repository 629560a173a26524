"""lorakit: a notebook-first kit for randomized and distributed LoRA fine-tuning.

Every method (chain, federated, decentralized, asynchronous) is registered in
:data:`lorakit.methods.REGISTRY` and runs through one call; the single-node methods of RAC-LoRA and
Bernoulli-LoRA are configurations of one chain engine (:mod:`lorakit.chain`) built from a coin, a
sketch, an estimator and an update::

    import lorakit as lk
    problem = lk.problems.counterexample()
    frame = lk.run("bernoulli_lora", problem, steps=200, seeds=range(3), rank=1, gamma=1 / problem.L, p=0.5)
"""

from . import adapters, coins, compressors, decentralized, estimators, federated, problems, sketches
from .chain import Chain, DivergenceError
from .coins import alternating, always, bernoulli, both
from .estimators import ef21, gd, marina, mvr, page, qgd, rr, sgd
from .methods import METHODS, REGISTRY, make, run
from .rng import Streams

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "REGISTRY",
    "Chain",
    "DivergenceError",
    "Streams",
    "adapters",
    "alternating",
    "always",
    "bernoulli",
    "both",
    "coins",
    "compressors",
    "decentralized",
    "ef21",
    "estimators",
    "federated",
    "gd",
    "make",
    "marina",
    "mvr",
    "page",
    "problems",
    "qgd",
    "rr",
    "run",
    "sgd",
    "sketches",
]


def __getattr__(name: str):
    # ``lk.exercises`` (the notebooks' ``lk.exercises.check(...)``) loads on first use: its
    # per-notebook modules build references from the rest of lorakit, which stays light to import.
    if name == "exercises":
        import importlib

        return importlib.import_module(f"{__name__}.exercises")
    raise AttributeError(f"module 'lorakit' has no attribute {name!r}")
