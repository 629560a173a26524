"""The ServerApp: lorakit's own seed loop and server round, its clients on Flower SuperNodes.

:func:`run_flower` runs one :class:`~.spec.RunSpec` over a Flower ``Grid``: it builds the server's
copy of the problem (the shapes, the start W0, and the evaluation the history logs: Flower's
centralized evaluation), maps lorakit's clients to the nodes (:func:`~.link.node_map`) and runs
the engine's own loop (:func:`lorakit.federated.lora.simulate`, :func:`lorakit.federated.fed_rac.
simulate`) with :class:`~.fslora.FlowerRun` or :class:`~.fed_rac.FlowerFedRACRun`, whose clients
are the nodes. The history and message table are therefore the in-process run's, column for
column, plus ``wire_up``/``wire_down`` (the payload that crossed, :mod:`.wire`).

``app`` is the ServerApp ``flwr run .`` starts (``[tool.flwr.app.components]`` in
``pyproject.toml``), on real SuperNodes or on a ``flower-superlink --simulation`` (Flower's
simulation runtime on Ray); with ``out-dir`` set it writes the result there
(:meth:`FlowerResult.save`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from flwr.app import Context
from flwr.serverapp import ServerApp

from ...federated import fed_rac as fed_rac_engine
from ...federated import lora as lora_engine
from .fed_rac import FlowerFedRACRun
from .fslora import FlowerRun
from .link import Link, node_map
from .spec import RunSpec

__all__ = ["FlowerResult", "app", "run_flower", "start_ray"]


@dataclass
class FlowerResult:
    """A Flower run's history frame and message table (the in-process run's columns, plus
    ``wire_up``/``wire_down``), the global state after each round when kept (``rounds``: per
    round the per-site ``W0``, ``B``, ``A``, or Fed-RAC-LoRA's ``W``), the spec, and the server's
    problem (its model holds the trained adapter)."""

    history: pd.DataFrame
    messages: pd.DataFrame
    rounds: list = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    problem: object = None

    def save(self, path) -> Path:
        """Write ``history.csv``, ``messages.csv``, ``result.pt`` (everything above, exactly:
        ``torch.load(path, weights_only=True)`` reads it) and the trained model
        (:func:`lorakit.adapters.save_trained` into ``model/``) under ``path``."""
        from ...adapters import save_trained

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.history.to_csv(path / "history.csv", index=False)
        self.messages.to_csv(path / "messages.csv", index=False)
        torch.save(
            {
                "spec": dict(self.spec),
                "history": self.history.to_dict("list"),
                "messages": self.messages.to_dict("list"),
                "rounds": self.rounds,
            },
            path / "result.pt",
        )
        if self.problem is not None and getattr(self.problem, "stateful", False):
            save_trained(self.problem, path / "model")
        return path


def run_flower(grid, spec: RunSpec, *, problem=None, nodes=None) -> FlowerResult:
    """Run ``spec``'s method for ``rounds`` rounds with seed ``seed`` on the nodes of ``grid``.
    ``problem`` (the server's copy, :meth:`RunSpec.problem`) and ``nodes`` (:func:`node_map`)
    are built here unless given (a caller running the spec again: the benchmark)."""
    cfg = spec.method()
    problem = spec.problem() if problem is None else problem
    timeout = float(spec.run["timeout"])
    nodes = node_map(grid, timeout) if nodes is None else nodes
    link = Link(grid, spec.record(), nodes, timeout)
    keep = bool(spec.run["keep-rounds"])
    runs = []
    rounds, seed, every = int(spec.run["rounds"]), int(spec.run["seed"]), spec.run["log-every"]
    if spec.name == "fed_rac_lora":

        def rac_runner(cfg, problem, seed):
            runs.append(FlowerFedRACRun(cfg, problem, seed, link=link, keep_rounds=keep))
            return runs[-1]

        frame, messages = fed_rac_engine.simulate(
            cfg, problem, rounds, seed, log_every=every, messages=True, runner=rac_runner
        )
    else:
        shared = bool(spec.run["shared-index"])

        def runner(cfg, problem, seed):
            runs.append(
                FlowerRun(cfg, problem, seed, link=link, keep_rounds=keep, shared_index=shared)
            )
            return runs[-1]

        frame, messages = lora_engine.simulate(cfg, problem, rounds, seed, every, True, runner)
    frame.attrs["unit"] = "round"
    return FlowerResult(frame, messages, runs[-1].rounds, spec.record(), problem)


app = ServerApp()


@app.main()
def _main(grid, context: Context) -> None:
    spec = RunSpec.parse(dict(context.run_config))
    result = run_flower(grid, spec)
    if spec.run["out-dir"]:
        result.save(spec.run["out-dir"])


# -- an in-process simulation on Ray ----------------------------------------------------------------
def start_ray(num_cpus: int | None = None, attempts: int = 3) -> None:
    """``ray.init`` without the dashboard, retried: on a loaded machine the raylet can give up on
    its metrics agent after a fixed 15 s (ray-project/ray#65983) before any code runs. Flower's
    in-process ``run_simulation`` (the benchmark's way in) uses a Ray that is already running."""
    import ray

    # A loaded machine starts the raylet slowly: wait for it longer than Ray's 30 s default.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception:  # Ray raises a bare Exception for a node that did not start
            ray.shutdown()
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
