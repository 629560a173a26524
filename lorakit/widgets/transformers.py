"""The app of notebook 07: the methods of lorakit on real peft models.

:func:`transformers_frame` runs one method on one model of the offline zoo (:mod:`lorakit.zoo`):
a chain method (LoRA, AsymmLoRA, COLA, RAC-LoRA, Bernoulli-LoRA) through ``lk.run`` on the
:class:`~lorakit.adapters.ModelProblem`, or a federated one (FSLoRA, FedIT, HeteroLoRA, FlexLoRA,
FedStackLoRA) through ``make_federated(...).run`` on the same problem split among clients; the
same names, configurations and tables as at matrix scale. :func:`transformers_charts` draws the
loss, the trainable parameters per chain link (or per client), and the bytes communicated;
:func:`transformers_app` wires them to controls for the model, method, rank, and p (chain) or the
sketch ratio k/r (federated).
"""

from __future__ import annotations

import functools

import altair as alt
import ipywidgets as widgets
import pandas as pd

from .. import sgd
from .._validation import check_choice, check_int, check_real
from ..federated import make_federated
from ..methods import run
from ..viz import HEIGHT, WIDTH, convergence_chart
from ._app import App, _default

__all__ = [
    "TRANSFORMER_CHAIN_METHODS",
    "TRANSFORMER_FEDERATED_METHODS",
    "TRANSFORMER_MODELS",
    "transformers_app",
    "transformers_charts",
    "transformers_frame",
    "transformers_problem",
]

TRANSFORMER_MODELS = ("digits", "gpt2", "minilm")
TRANSFORMER_CHAIN_METHODS = ("bernoulli_lora", "rac_lora", "cola", "lora", "asymm_lora")
TRANSFORMER_FEDERATED_METHODS = ("fslora", "fedit", "hetero_lora", "flex_lora", "fedstack_lora")

#: Per model: the chain's AdamW learning rate, the federated clients' SGD learning rate, the
#: minibatch size, steps (normal, fast) and rounds (normal, fast). Learning rates: the largest of
#: a ×3 grid at which Bernoulli-LoRA (p = 1/2, r = 4, K = 10) and FSLoRA (k = 2 of r = 4, H = 5,
#: 10 clients) lowered the loss steadily in 40 steps / 8 rounds (measured with seed 0).
SETTINGS = {
    "digits": {"chain_lr": 1e-2, "fed_lr": 0.1, "batch": 32, "steps": (60, 20), "rounds": (20, 5)},
    "gpt2": {"chain_lr": 3e-3, "fed_lr": 1.0, "batch": 16, "steps": (60, 6), "rounds": (10, 2)},
    "minilm": {"chain_lr": 3e-3, "fed_lr": 0.3, "batch": 16, "steps": (30, 3), "rounds": (4, 1)},
}
NUM_CLIENTS = 10
LOCAL_STEPS = 5


@functools.lru_cache(maxsize=8)
def transformers_problem(model: str = "digits", rank: int = 4, clients: int | None = None):
    """The zoo problem of ``model`` with LoRA rank ``rank`` (cached; runs reset it per seed).

    ``clients``: the same problem split iid among that many clients (``ModelProblem.split``).
    """
    from .. import zoo

    check_choice("model", model, TRANSFORMER_MODELS)
    rank = check_int("rank", rank, low=1, high=16)
    build = {"digits": zoo.digits_problem, "gpt2": zoo.gpt2_problem, "minilm": zoo.minilm_problem}
    problem = build[model](rank=rank)
    return problem if clients is None else problem.split(clients, seed=0)


def transformers_frame(
    model: str = "digits",
    method: str = "bernoulli_lora",
    rank: int = 4,
    p: float = 0.5,
    ratio: float = 0.5,
    steps: int | None = None,
    *,
    lr: float | None = None,
    steps_per_link: int = 10,
    seeds=0,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One method on one zoo model: (history, messages).

    Chain methods take ``steps`` AdamW steps (minibatches of :data:`SETTINGS` size) with a fresh
    sketch every ``steps_per_link`` steps (LoRA and AsymmLoRA: one link); Bernoulli-LoRA's coin
    trains A with probability ``p``. Federated methods run ``steps`` rounds over
    :data:`NUM_CLIENTS` iid clients, each taking :data:`LOCAL_STEPS` SGD steps on
    k = max(1, round(ratio·r)) components (FedIT: k = r). ``steps`` and ``lr`` default to
    :data:`SETTINGS` (fewer with ``LORAKIT_FAST=1``). The history is the engine's table plus
    ``kind`` (chain or federated) and ``model``; messages (federated only, else None) hold one
    row per client and round, with ``trainable`` = k·Σ_l(m_l + n_l) entries trained.
    """
    check_choice("model", model, TRANSFORMER_MODELS)
    methods = TRANSFORMER_CHAIN_METHODS + TRANSFORMER_FEDERATED_METHODS
    check_choice("method", method, methods)
    p = check_real("p", p, low=0.0, high=1.0)
    ratio = check_real("ratio", ratio, low=0.0, high=1.0, low_open=True)
    cfg = SETTINGS[model]
    federated = method in TRANSFORMER_FEDERATED_METHODS
    steps = check_int("steps", _default(steps, *cfg["rounds" if federated else "steps"]), low=1)
    if federated:
        problem = transformers_problem(model, rank, NUM_CLIENTS)
        k = max(1, round(ratio * rank))
        config = {} if method == "fedit" else {"budgets": k}
        history, messages = make_federated(
            method,
            rank,
            lr or cfg["fed_lr"],
            local_steps=LOCAL_STEPS,
            batch_size=cfg["batch"],
            **config,
        ).run(problem, steps, seeds, messages=True, on_divergence="stop", progress=progress)
        messages["trainable"] = messages["k"] * sum(sum(s.shape) for s in problem.sites)
    else:
        problem = transformers_problem(model, rank)
        config = {"p": p} if method == "bernoulli_lora" else {}
        if method not in ("lora", "asymm_lora"):
            config["steps_per_link"] = check_int("steps_per_link", steps_per_link, low=1)
        history = run(
            method,
            problem,
            steps,
            seeds,
            rank=rank,
            gamma=lr or cfg["chain_lr"],
            update="adamw",
            estimator=sgd(batch_size=cfg["batch"]),
            log_every=max(1, steps // 30),
            on_divergence="stop",
            progress=progress,
            **config,
        )
        messages = None
    history["kind"] = "federated" if federated else "chain"
    history["model"] = model
    return history, messages


def transformers_charts(history: pd.DataFrame, messages: pd.DataFrame | None) -> list:
    """[loss against the step or round, trainable parameters per link or client, bytes sent]."""
    federated = history["kind"].iloc[0] == "federated"
    x = "round" if federated else "step"
    loss = convergence_chart(
        history, y="loss", x=x, log=False, title=f"loss ({history['model'].iloc[0]})"
    )
    if federated:
        per = messages[messages["round"] == 1][["client", "k", "trainable"]]
        params = (
            alt.Chart(per)
            .mark_bar()
            .encode(
                x=alt.X("client:O"),
                y=alt.Y("trainable:Q", title="trained entries (round 1)"),
                tooltip=["client", "k", "trainable"],
            )
            .properties(title="trainable parameters per client", width=WIDTH, height=HEIGHT)
        )
        sent = history.melt(
            id_vars=["round"],
            value_vars=["mb_up", "mb_down"],
            var_name="direction",
            value_name="MB",
        )
        bytes_chart = (
            alt.Chart(sent)
            .mark_line(point=True)
            .encode(
                x=alt.X("round:Q"),
                y=alt.Y("MB:Q", title="cumulative MiB"),
                color="direction:N",
                tooltip=["round", "direction", alt.Tooltip("MB:Q", format=".3f")],
            )
            .properties(title="bytes communicated", width=WIDTH, height=HEIGHT)
        )
    else:
        links = history.drop_duplicates("link")[["link", "side", "trained_params"]]
        params = (
            alt.Chart(links)
            .mark_bar()
            .encode(
                x=alt.X("link:O"),
                y=alt.Y("trained_params:Q", title="trained entries"),
                color=alt.Color("side:N", scale=alt.Scale(domain=["left", "right", "both"])),
                tooltip=["link", "side", "trained_params"],
            )
            .properties(title="trainable parameters per chain link", width=WIDTH, height=HEIGHT)
        )
        note = pd.DataFrame({"text": ["one node: a chain sends no messages"]})
        bytes_chart = (
            alt.Chart(note)
            .mark_text(size=13)
            .encode(text="text:N")
            .properties(title="bytes communicated", width=WIDTH, height=HEIGHT)
        )
    return [loss, params, bytes_chart]


def _status(history: pd.DataFrame, method: str) -> str:
    diverged = history.attrs.get("diverged") or {}
    first, last = history["loss"].iloc[0], history["loss"].dropna().iloc[-1]
    text = f"<b>{method}</b>: loss {first:.4f} → {last:.4f}"
    if "mb_up" in history:
        text += f", {history['mb_up'].iloc[-1]:.3f} MiB up, {history['mb_down'].iloc[-1]:.3f} down"
    if diverged:
        text += f" <span style='color:#c00'>diverged at {dict(diverged)}: lower the lr</span>"
    return text


def transformers_app(
    model: str = "digits",
    method: str = "bernoulli_lora",
    rank: int = 4,
    p: float = 0.5,
    ratio: float = 0.5,
    steps: int | None = None,
) -> App:
    """Controls for the model, the method, the rank r, Bernoulli-LoRA's p and the federated
    sketch ratio k/r, and the steps (rounds), redrawing :func:`transformers_frame` as the loss,
    the trainable parameters per chain link (per client) and the bytes communicated. A tqdm bar
    shows progress while a model trains. Computes and draws once when built.
    """
    check_choice("model", model, TRANSFORMER_MODELS)
    methods = TRANSFORMER_CHAIN_METHODS + TRANSFORMER_FEDERATED_METHODS
    check_choice("method", method, methods)
    rank = check_int("rank", rank, low=1, high=16)
    steps = check_int("steps", _default(steps, *SETTINGS[model]["steps"]), low=1, high=200)
    style = {"description_width": "initial"}
    slider = {"continuous_update": False, "style": style}
    controls = {
        "model": widgets.Dropdown(options=TRANSFORMER_MODELS, value=model, description="model"),
        "method": widgets.Dropdown(options=methods, value=method, description="method"),
        "rank": widgets.IntSlider(value=rank, min=1, max=16, description="rank r", **slider),
        "p": widgets.FloatSlider(
            value=p, min=0.0, max=1.0, step=0.05, description="p (Bernoulli)", **slider
        ),
        "ratio": widgets.FloatSlider(
            value=ratio, min=0.125, max=1.0, step=0.125, description="k/r (federated)", **slider
        ),
        "steps": widgets.IntSlider(
            value=steps, min=1, max=200,
            description="steps / rounds", **slider,
        ),
    }  # fmt: skip

    def compute(**values):
        history, messages = transformers_frame(**values, progress=True)
        return history, transformers_charts(history, messages), _status(history, values["method"])

    return App(controls, compute, n_charts=3, progress=True)
