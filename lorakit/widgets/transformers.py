"""The app of notebook 07: the methods of lorakit on real peft models.

:func:`transformers_frame` runs one method on one model of the offline zoo (:mod:`lorakit.zoo`):
a chain method (LoRA, AsymmLoRA, COLA, RAC-LoRA, Bernoulli-LoRA) through ``lk.run`` on the
:class:`~lorakit.adapters.ModelProblem`, or a federated one (FSLoRA, FedIT, HeteroLoRA, FlexLoRA,
FedStackLoRA) through ``make_federated(...).run`` on the same problem split among clients; the
same names, configurations and tables as at matrix scale. :func:`transformers_charts` draws the
loss, the trainable parameters per chain link (or per client), and the bytes communicated;
:func:`transformers_app` wires them to controls for the model, method, rank, and p (chain) or the
sketch ratio k/r (federated), the steps and the device. Model runs take seconds to minutes, so the
app is a :class:`RunApp`: a Run button trains in a background thread with a progress bar, Cancel
stops the run and keeps what it computed, and choosing a model or method resets the steps
(:func:`default_steps`).
"""

from __future__ import annotations

import functools
import html
import threading
from collections.abc import Callable

import altair as alt
import ipywidgets as widgets
import pandas as pd

from .. import sgd
from .._validation import check_choice, check_int, check_real
from ..federated import make_federated
from ..methods import run
from ..mode import by_mode
from ..progress import report_progress
from ..viz import HEIGHT, WIDTH, convergence_chart
from ._app import App

__all__ = [
    "TRANSFORMER_CHAIN_METHODS",
    "TRANSFORMER_FEDERATED_METHODS",
    "TRANSFORMER_MODELS",
    "RunApp",
    "default_device",
    "default_steps",
    "devices",
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
    "gpt2": {"chain_lr": 3e-3, "fed_lr": 1.0, "batch": 16, "steps": (20, 6), "rounds": (3, 2)},
    "minilm": {"chain_lr": 3e-3, "fed_lr": 0.3, "batch": 16, "steps": (20, 3), "rounds": (2, 1)},
}
#: Training blocks of the app's GPT-2 problem (``zoo.gpt2_problem``'s ``blocks``): 64 keeps a
#: logged full-data loss and gradient near a quarter of a second on one CPU core.
GPT2_BLOCKS = 64
#: Logged points per run: each costs a full-data loss and gradient, the bulk of a model run.
LOG_POINTS = 10
NUM_CLIENTS = 10
LOCAL_STEPS = 5


def devices() -> tuple[str, ...]:
    """The devices a run can use here: ``cpu``, then ``cuda`` when torch sees a GPU."""
    import torch

    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu`` (the app's device control starts there)."""
    return devices()[-1]


def transformers_problem(
    model: str = "digits", rank: int = 4, clients: int | None = None, device: str = "cpu"
):
    """The zoo problem of ``model`` with LoRA rank ``rank`` on ``device`` (one of
    :func:`devices`; cached, runs reset it per seed). GPT-2 keeps :data:`GPT2_BLOCKS` blocks.

    ``clients``: the same problem split iid among that many clients (``ModelProblem.split``).
    """
    check_choice("model", model, TRANSFORMER_MODELS)
    rank = check_int("rank", rank, low=1, high=16)
    check_choice("device", device, devices())
    return _problem(model, rank, clients, device)


@functools.lru_cache(maxsize=8)
def _problem(model: str, rank: int, clients: int | None, device: str):
    from .. import zoo

    build = {
        "digits": zoo.digits_problem,
        "gpt2": functools.partial(zoo.gpt2_problem, blocks=GPT2_BLOCKS),
        "minilm": zoo.minilm_problem,
    }
    problem = build[model](rank=rank).to(device)
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
    device: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One method on one zoo model: (history, messages).

    Chain methods take ``steps`` AdamW steps (minibatches of :data:`SETTINGS` size) with a fresh
    sketch every ``steps_per_link`` steps (LoRA and AsymmLoRA: one link); Bernoulli-LoRA's coin
    trains A with probability ``p``. Federated methods run ``steps`` rounds over
    :data:`NUM_CLIENTS` iid clients, each taking :data:`LOCAL_STEPS` SGD steps on
    k = max(1, round(ratio·r)) components (FedIT: k = r). ``steps`` and ``lr`` default to
    :data:`SETTINGS` (fewer with ``LORAKIT_FAST=1``); about :data:`LOG_POINTS` steps are logged.
    ``device``: where the model trains, one of :func:`devices` (default :func:`default_device`).
    The history is the engine's table plus ``kind`` (chain or federated), ``model`` and
    ``device``; messages (federated only, else None) hold one
    row per client and round, with ``trainable`` = k·Σ_l(m_l + n_l) entries trained.
    """
    check_choice("model", model, TRANSFORMER_MODELS)
    methods = TRANSFORMER_CHAIN_METHODS + TRANSFORMER_FEDERATED_METHODS
    check_choice("method", method, methods)
    p = check_real("p", p, low=0.0, high=1.0)
    ratio = check_real("ratio", ratio, low=0.0, high=1.0, low_open=True)
    cfg = SETTINGS[model]
    federated = method in TRANSFORMER_FEDERATED_METHODS
    steps = check_int("steps", by_mode(steps, *cfg["rounds" if federated else "steps"]), low=1)
    device = check_choice("device", default_device() if device is None else device, devices())
    log_every = max(1, steps // LOG_POINTS)
    if federated:
        problem = transformers_problem(model, rank, NUM_CLIENTS, device)
        k = max(1, round(ratio * rank))
        config = {} if method == "fedit" else {"budgets": k}
        history, messages = make_federated(
            method,
            rank,
            lr or cfg["fed_lr"],
            local_steps=LOCAL_STEPS,
            estimator=sgd(batch_size=cfg["batch"]),
            **config,
        ).run(
            problem,
            steps,
            seeds,
            log_every=log_every,
            messages=True,
            on_divergence="stop",
            progress=progress,
        )
        messages["trainable"] = messages["k"] * sum(sum(s.shape) for s in problem.sites)
    else:
        problem = transformers_problem(model, rank, device=device)
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
            log_every=log_every,
            on_divergence="stop",
            progress=progress,
            **config,
        )
        messages = None
    history["kind"] = "federated" if federated else "chain"
    history["model"] = model
    history["device"] = str(problem.device)
    return history, messages


#: Words for the engines' codes in the charts' legends.
SIDES = {"left": "A (left: B frozen)", "right": "B (right: A frozen)", "both": "A and B"}
DIRECTIONS = {"mb_up": "upload (clients → server)", "mb_down": "download (server → clients)"}


def transformers_charts(history: pd.DataFrame, messages: pd.DataFrame | None) -> list:
    """[loss against the step or round, trainable parameters per link or client, bytes sent].

    A chain runs on one node and sends nothing: its third chart is a note saying so (words, no
    empty axes).
    """
    federated = history["kind"].iloc[0] == "federated"
    x = "round" if federated else "step"
    loss = convergence_chart(
        history,
        y="loss",
        x=x,
        log=False,
        title=f"training loss ({history['model'].iloc[0]})",
        y_title="loss on the whole training set",
    )
    if federated:
        per = messages[messages["round"] == 1][["client", "k", "trainable"]]
        params = (
            alt.Chart(per)
            .mark_bar()
            .encode(
                x=alt.X("client:O", title="client"),
                y=alt.Y("trainable:Q", title="entries trained in round 1"),
                tooltip=[
                    alt.Tooltip("client", title="client"),
                    alt.Tooltip("k", title="components k"),
                    alt.Tooltip("trainable", title="entries trained"),
                ],
            )
            .properties(title="trainable parameters per client", width=WIDTH, height=HEIGHT)
        )
        sent = history.melt(
            id_vars=["round"],
            value_vars=list(DIRECTIONS),
            var_name="direction",
            value_name="MiB",
        )
        sent["direction"] = sent["direction"].map(DIRECTIONS)
        bytes_chart = (
            alt.Chart(sent)
            .mark_line(point=True)
            .encode(
                x=alt.X("round:Q", title="round", axis=alt.Axis(tickMinStep=1, format="d")),
                y=alt.Y("MiB:Q", title="MiB sent so far (all clients)"),
                color=alt.Color("direction:N", title="direction"),
                tooltip=["round", "direction", alt.Tooltip("MiB:Q", format=".3f")],
            )
            .properties(title="bytes communicated", width=WIDTH, height=HEIGHT)
        )
    else:
        links = history.drop_duplicates("link")[["link", "side", "trained_params"]].copy()
        links["factor"] = links["side"].map(SIDES)
        params = (
            alt.Chart(links)
            .mark_bar()
            .encode(
                x=alt.X("link:O", title="chain link"),
                y=alt.Y("trained_params:Q", title="entries trained"),
                color=alt.Color(
                    "factor:N", title="trained factor", scale=alt.Scale(domain=list(SIDES.values()))
                ),
                tooltip=[
                    alt.Tooltip("link", title="chain link"),
                    alt.Tooltip("factor", title="trained factor"),
                    alt.Tooltip("trained_params", title="entries trained"),
                ],
            )
            .properties(title="trainable parameters per chain link", width=WIDTH, height=HEIGHT)
        )
        note = pd.DataFrame(
            {
                "line": [
                    "A chain trains on one node:",
                    "it sends no messages, so there are no bytes to count.",
                    "Pick a federated method (fslora, fedit, …) to see them.",
                ],
                "row": [0, 1, 2],
            }
        )
        bytes_chart = (
            alt.Chart(note)
            .mark_text(size=13, align="center")
            .encode(
                y=alt.Y("row:O", axis=None),
                text="line:N",
            )
            .properties(title="bytes communicated: none (chain)", width=WIDTH, height=HEIGHT)
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


def default_steps(model: str, method: str) -> int:
    """The app's steps (chain) or rounds (federated) for ``model``: :data:`SETTINGS`, fewer with
    ``LORAKIT_FAST=1``; chosen so that one run takes seconds on 2 CPU cores."""
    check_choice("model", model, TRANSFORMER_MODELS)
    kind = "rounds" if method in TRANSFORMER_FEDERATED_METHODS else "steps"
    return by_mode(None, *SETTINGS[model][kind])


class _WidgetBar:
    """The progress bar a run draws through :func:`lorakit.progress.report_progress`: it moves the
    app's ``IntProgress`` and asks the run to stop when the app's Cancel was pressed."""

    def __init__(self, app: RunApp, total: int | None, desc: str | None):
        self.app, self.total = app, total
        app.bar.max, app.bar.value = max(1, total or 1), 0
        app.bar.description = desc or ""

    @property
    def stop(self) -> bool:
        return self.app._cancel.is_set()

    def update(self, n: int = 1) -> None:
        self.app.bar.value = min(self.app.bar.max, self.app.bar.value + n)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.app.bar_note.value = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunApp(App):
    """An :class:`App` for model-scale runs (seconds to minutes) with controls named ``model``,
    ``method`` and ``steps`` among others (notebook 07's): changing a control only marks
    the charts as stale and resets the steps to :func:`default_steps` when the model or the
    method changes; the **Run** button trains in a background thread (the kernel stays free, so
    the **Cancel** button is heard), moving a progress bar step by step. Cancel stops the run
    before its next step (round) and draws what it computed so far. Builds and draws once.

    :meth:`run` starts a run (``wait=True``: block until it ends), :meth:`cancel` asks it to
    stop, :meth:`wait` joins it; ``running`` says whether one is under way and ``cancelled``
    whether the last one was stopped early.

    ``compute(device=..., **values)`` gets the device control's choice (:func:`devices`,
    default :func:`default_device`: CUDA when torch sees a GPU). The device is not one of the
    :attr:`values` (nor of saved figures' names): it changes where, not what, the app computes.
    """

    one_thread = False  # a model's training may use every thread (the notebook decides)

    def __init__(
        self,
        controls: dict,
        compute: Callable,
        n_charts: int = 1,
        *,
        device: str | None = None,
        **kw,
    ):
        device = check_choice("device", default_device() if device is None else device, devices())
        self._cancel, self._thread, self.cancelled = threading.Event(), None, False
        self._user_compute = compute
        own = widgets.Dropdown(options=devices(), value=device, description="device")
        own.add_class("lorakit-device")
        own.observe(self._on_change, names="value")
        self.device = own
        self.run_button = widgets.Button(description="Run", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.bar = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.bar_note = widgets.HTML()
        self.run_button.add_class("lorakit-run")
        self.cancel_button.add_class("lorakit-cancel")
        self.run_button.on_click(lambda _: self.run())
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__(controls, self._run_compute, n_charts, **kw)
        # An App that draws its own device control (it calls compute with device=) replaces ours.
        mine = [self.device] if self.device is own else []
        runner = widgets.HBox([self.run_button, self.cancel_button, self.bar, self.bar_note, *mine])
        box, *rest = self.children
        self.children = (box, runner, *rest)
        if self.device.value != device:  # the App's own control started elsewhere
            self.device.value = device
            self.redraw()

    def _run_compute(self, device: str | None = None, **values):
        return self._user_compute(device=device or self.device.value, **values)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _on_change(self, change) -> None:
        owner = change["owner"]
        if owner in (self.controls["model"], self.controls["method"]):
            values = self.values
            self.controls["steps"].value = default_steps(values["model"], values["method"])
        if not self.running:
            self.status.value = "<i>controls changed: press Run to train with them</i>"

    def redraw(self, **kw) -> None:
        """Train with the current controls in this thread and draw (what :meth:`run` does)."""
        self._cancel.clear()
        self._train(**kw)

    def _train(self, **kw) -> None:
        self.cancelled = False
        with report_progress(lambda total=None, desc=None: _WidgetBar(self, total, desc)):
            super().redraw(**kw)
        self.cancelled = self._cancel.is_set()
        if self.cancelled:
            self.status.value += " <b>cancelled</b>: the charts show the steps run so far"

    def run(self, wait: bool = False) -> None:
        """Start a run in a background thread (nothing if one is under way)."""
        if self.running:
            return
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self.status.value = "<i>training…</i>"
        self._cancel.clear()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()
        if wait:
            self.wait()

    def _work(self) -> None:
        try:
            self._train()
        except Exception as error:  # a thread's exception would vanish: show it
            self.status.value = (
                f"<span style='color:#c00'>{html.escape(type(error).__name__)}: "
                f"{html.escape(str(error))}</span>"
            )
        finally:
            self.run_button.disabled, self.cancel_button.disabled = False, True

    def cancel(self) -> None:
        """Ask the run under way to stop before its next step; it keeps what it computed."""
        if self.running:
            self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run under way (if any) ends."""
        if self._thread is not None:
            self._thread.join(timeout)


def transformers_app(
    model: str = "digits",
    method: str = "bernoulli_lora",
    rank: int = 4,
    p: float = 0.5,
    ratio: float = 0.5,
    steps: int | None = None,
    device: str | None = None,
) -> RunApp:
    """Controls for the model, the method, the rank r, Bernoulli-LoRA's p, the federated sketch
    ratio k/r, the steps (rounds) and the device (CUDA when available, else CPU), drawing
    :func:`transformers_frame` as the loss, the trainable parameters per chain link (per client)
    and the bytes communicated. A :class:`RunApp`: runs start from its Run button with a progress
    bar and can be cancelled; choosing a model or method resets the steps to
    :func:`default_steps`. Computes and draws once when built.
    """
    check_choice("model", model, TRANSFORMER_MODELS)
    methods = TRANSFORMER_CHAIN_METHODS + TRANSFORMER_FEDERATED_METHODS
    check_choice("method", method, methods)
    rank = check_int("rank", rank, low=1, high=16)
    steps = check_int("steps", steps or default_steps(model, method), low=1, high=200)
    device = check_choice("device", default_device() if device is None else device, devices())
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

    def compute(device=None, **values):
        history, messages = transformers_frame(**values, device=device)
        return history, transformers_charts(history, messages), _status(history, values["method"])

    return RunApp(controls, compute, n_charts=3, device=device, name="transformers")
