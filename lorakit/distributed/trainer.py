"""Chains inside a transformers ``Trainer``: a callback that makes any Trainer run on a peft model a
lorakit chain method (issue 16 §4).

A chain (:mod:`lorakit.chain`; RAC-LoRA Algorithm 1, Bernoulli-LoRA Algorithm 1) is a sequence of
links; in each link a coin picks the trained factor, a sketch draws the frozen one, the trained
factor takes K steps from zero, and the product is merged into the base weights. Given to a
``Trainer`` (``callbacks=[ChainCallback("bernoulli_lora", p=0.5, steps_per_link=K)]``),
:class:`ChainCallback` does exactly that to the model's peft LoRA layers, with the Trainer doing the
steps:

* at the start of every link (training step 0, K, 2K, …) each LoRA layer merges its adapter into
  its base weight, W0 ← W0 + s·B·A (:meth:`lorakit.adapters.Site.merge_and_restart`), and restarts
  from the link's factors: the side from the coin (``coin`` stream of :class:`lorakit.rng.Streams`
  ``(seed)``), the frozen factor drawn from the link's sketch stream, the trained one at zero
  (:func:`lorakit.chain.link_factors`, the draws ``lk.run`` makes for the same seed);
* the frozen factor's gradient is off (``requires_grad=False``: the optimizer skips it, weight
  decay included) and the optimizer's state of the factors is cleared, as ``lk.run`` starts each
  link with a fresh optimizer;
* at the end of training the last link is merged, so the model computes W^T with B = 0, as
  ``lk.run`` leaves a model: :func:`lorakit.adapters.save_trained` (or peft's
  ``merge_and_unload().save_pretrained``) then saves the trained model; peft's adapter-only
  ``save_pretrained`` would lose the base and warns (:func:`lorakit.adapters.saving.track_base`).

The Trainer decides what it owns: the step size is its ``learning_rate``, the update its optimizer
(SGD, AdamW, …; outside the theory's projected step, as ``update="sgd"``/``"adamw"`` in lk.run), the
gradient estimate its batches. So the callback takes a chain method's keyword arguments (``p``,
``side``, ``sketch``, ``sketch_right``, ``steps_per_link``, ``alpha``) but not ``rank`` (the peft
model's r), ``gamma``, ``update``, ``estimator`` or ``optimizer_kwargs``.

**Equality with lk.run.** With plain SGD, a constant learning rate (``lr_scheduler_type=
"constant"``), no gradient clipping (``max_grad_norm=0``) and full batches
(``per_device_train_batch_size`` = the data size: every step's gradient is the full gradient, the
``gd`` estimator, whatever order the sampler puts the rows in), ``Trainer.train()`` with the
callback gives the model ``lk.run(method, ModelProblem(model, data), max_steps, seeds=seed,
rank=r, gamma=learning_rate, update="sgd", **config)`` gives, up to rounding (1e-10 in float64:
tests/test_trainer_callback.py). Minibatches differ only in which rows each step sees: the
Trainer's sampler reshuffles each epoch, lk.run's ``sgd`` estimator draws from its ``data`` stream.

No optimizer factory is needed (peft's ``create_lorafa_optimizer`` freezes A by leaving it out of
the optimizer; here the frozen side changes every link, so both factors stay in the Trainer's own
optimizer and the frozen one simply has no gradient). Resuming from a Trainer checkpoint is refused:
a checkpoint of a peft model holds the adapter, not the merged base weights.
"""

from __future__ import annotations

from transformers import TrainerCallback

from .._validation import check_choice, check_int
from ..adapters import sites as find_sites
from ..adapters.saving import track_base
from ..chain import link_factors
from ..methods import REGISTRY, make
from ..rng import Streams

__all__ = ["CHAIN_METHODS", "TRAINER_OWNS", "ChainCallback"]

#: The chain methods a Trainer can run.
CHAIN_METHODS = tuple(name for name, m in REGISTRY.items() if m.pattern == "chain")
#: A chain's settings the Trainer decides (its model's rank, learning rate, optimizer, batches).
TRAINER_OWNS = ("rank", "gamma", "update", "estimator", "optimizer_kwargs")


class ChainCallback(TrainerCallback):
    """Make a ``transformers.Trainer`` run on a peft model the chain method ``method`` (module
    docstring).

    Parameters
    ----------
    method : a chain method of :data:`lorakit.methods.REGISTRY`: ``"bernoulli_lora"`` (default),
        ``"rac_lora"``, ``"cola"``, ``"lora"``, ``"asymm_lora"``.
    seed : the run's seed (:class:`lorakit.rng.Streams`): the coin and the sketches are lk.run's
        for that seed.
    adapter : the peft adapter name.
    config : the method's keyword arguments (``lk.make``) other than :data:`TRAINER_OWNS`, e.g.
        ``p=0.5``, ``side="alternating"``, ``sketch="haar"``, ``steps_per_link=10``.

    Attributes while training: ``chain`` (the :class:`~lorakit.chain.Chain` configuration, its rank
    the model's and its gamma the Trainer's learning rate), ``link`` (the link's index) and ``side``
    (``"left"``: B frozen, A trained; ``"right"``: A frozen, B trained; ``"both"``).
    """

    def __init__(self, method: str = "bernoulli_lora", *, seed: int = 0, adapter: str = "default",
                 **config):  # fmt: skip
        check_choice("method", method, CHAIN_METHODS)
        owned = sorted(set(config) & set(TRAINER_OWNS))
        if owned:
            raise ValueError(
                f"{', '.join(owned)}: the Trainer decides these (the peft model's rank r, "
                "TrainingArguments.learning_rate, its optimizer and batches); leave them out"
            )
        self.method, self.config, self.adapter = method, dict(config), adapter
        self.seed = check_int("seed", seed, low=0)
        self.chain = make(method, rank=1, gamma=1.0, update="sgd", **config)  # checked now
        self.link, self.side = -1, None
        self.sites = self.factors = self.optimizer = self.streams = None

    # -- the Trainer's events ------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step > 0:
            raise ValueError(
                "ChainCallback cannot resume from a checkpoint: a peft checkpoint holds the "
                "adapter, not the base weights the earlier links merged; train from the start"
            )
        self.sites = find_sites(model, self.adapter)
        ranks = sorted({site.rank for site in self.sites})
        if len(ranks) != 1:
            raise ValueError(f"a chain has one rank r, but the LoRA layers have ranks {ranks}")
        self.chain = self.chain.with_params(rank=ranks[0], gamma=float(args.learning_rate))
        self.factors = [p for site in self.sites for p in (site.B, site.A)]
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [site.name for site in self.sites if not {id(site.B), id(site.A)} <= trained]
        if missing:
            raise ValueError(
                f"the optimizer does not hold both LoRA factors of {missing}: every link trains "
                "one of them, so build it with both trainable (peft's default)"
            )
        self.optimizer = optimizer
        track_base(model)  # save_pretrained (the adapter alone) now warns once the base changes
        self.streams, self.link = Streams(self.seed), -1
        self.start_link()

    def on_step_end(self, args, state, control, **kwargs):
        K = self.chain.steps_per_link
        if K is not None and state.global_step % K == 0 and state.global_step < state.max_steps:
            self.start_link()

    def on_train_end(self, args, state, control, **kwargs):
        """Merge the last link (W0 ← W^T, B = 0) and make both factors trainable again."""
        for site in self.sites:
            site.merge()
        for p in self.factors:
            p.requires_grad_(True)

    # -- a link --------------------------------------------------------------------------------
    def start_link(self) -> None:
        """Merge every site's product into its base, restart from the next link's factors, turn
        the frozen factor's gradient off and clear the factors' optimizer state."""
        self.link += 1
        first = self.sites[0].B
        shapes = [site.shape for site in self.sites]
        self.side, Bs, As = link_factors(
            self.chain, self.link, self.streams, shapes, first.dtype, first.device
        )
        for site, B, A in zip(self.sites, Bs, As, strict=True):
            site.merge_and_restart(B, A)
            site.B.requires_grad_(self.side in ("right", "both"))
            site.A.requires_grad_(self.side in ("left", "both"))
            site.B.grad = site.A.grad = None
        for p in self.factors:  # each link starts a fresh optimizer in lk.run
            self.optimizer.state.pop(p, None)
