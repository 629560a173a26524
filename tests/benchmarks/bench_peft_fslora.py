"""One FSLoRA round on the zoo's tiny GPT-2: lorakit against the authors' emulation, 10 to 200
clients.

* **lorakit cohort** (the default, ``impl="mask"``): the cohort trains in passes of the one
  shared peft model, the clients' rows side by side and a grouped product per client at every LoRA
  site (:mod:`lorakit.adapters.cohort`: each client's factors zero outside its k_i components,
  scaling s·r/k_i; no copy of the model);
* **lorakit client by client** (``impl="slice"``, 10 clients only): each client trains only its
  k_i slice B[:, I], A[I, :] swapped into the same model, one client after another;
* **masked emulation** is what the FSLoRA code does (prior_art.md §A.1, ``LoRA_Sketching.py``):
  a ``copy.deepcopy`` of the whole peft model per client, B ← B·S with S = (r/k_i)·diag(1_I) at
  full rank r, gradient masks (B's gradient ×S², A's rows outside I zeroed), B rescaled back by 1/S
  after the local steps, and the masked delta uploaded. Written here as the reference with the two
  defects FIXED (LoRA layers found by module type, not ``'lora_B' == name``; one index set per
  module shared by A and B) and with plain SGD, so the two are the same algorithm (FSLoRA eq. (4),
  the algebra of prior_art.md §A.1) and must give the same numbers on the same seeds.
* **floor** (10 clients): the base model's bare forward and backward passes on every client's rows
  (adapters off, backward to the token embeddings), in passes of ``cohort_rows`` rows, ``STEPS``
  times: work any implementation of the round does, so emulation / floor bounds what batching
  (or anything else) can gain on this machine.

The reference uses lorakit's index sets of the round (recorded with ``trace``), the same budgets
k_i (the paper's ratio mix {1/8, 1/4, 1/2, 3/4} of r = 8), each client's full local data every step
and the same loss function (the next-byte cross-entropy in the model's dtype: transformers' own
loss upcasts the logits to float32), so any difference is rounding: the aggregated adapters must
agree to 1e-6 of their largest entry in float32 and 1e-10 in float64 (10 clients).

Measurements (float32, the dtype of simulated training):

* time: one round each, from the same start (building ``FederatedRun`` resets the problem),
  interleaved by ``timing.compare`` (5 repeats, min/median/max, ratio of medians). One torch
  thread: the per-client passes are too small to gain from threads, and on a shared 2-core
  machine threads make every timing noisy;
* memory: the peak of the bytes held by torch's CPU allocator during the round, above the level at
  its start, from the profiler's allocation events (``profile_memory=True``: every tensor storage,
  autograd's saved activations and the deep copies included). ``tracemalloc`` does not see torch's
  allocations, and process RSS is dominated by allocator caching and the interpreter at this
  size, so neither is used. The profiled round is not a timed one (profiling slows it).

Run with ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/benchmarks/bench_peft_fslora.py
-o python_files='bench_*.py' -s -q -p no:xdist`` (or ``make bench``).
"""

import copy
import os

import torch
from timing import compare, record

from lorakit.adapters import ModelProblem
from lorakit.federated import budgets, make_federated
from lorakit.federated.lora import FederatedRun

CLIENTS, PER_CLIENT, TOKENS, STEPS, RANK, LR = 10, 4, 64, 5, 8, 0.05
SCALES = (10, 50, 200)  # clients per round
_BASE = {}


def next_byte_loss(model, batch):
    """The mean next-byte cross-entropy in the model's dtype (the zoo's loss, without
    transformers' upcast of the logits to float32)."""
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten())


def gpt2_problem(dtype: torch.dtype, clients: int = CLIENTS, **kw) -> ModelProblem:
    """The zoo's tiny GPT-2 (2 layers, d = 64, byte vocabulary, pre-trained on the Language
    Reference) with LoRA r = 8, α = 16 on c_attn and c_proj, and blocks of 64 bytes of the
    Library Reference, ``PER_CLIENT`` blocks for each of ``clients`` clients."""
    from lorakit import zoo

    if clients not in _BASE:
        _BASE[clients] = zoo.gpt2_problem(rank=RANK, lora_alpha=16, blocks=clients * PER_CLIENT)
    base = _BASE[clients]
    model = copy.deepcopy(base.model).to(dtype).eval()  # eval: no GPT-2 dropout
    parts = [torch.arange(c * PER_CLIENT, (c + 1) * PER_CLIENT) for c in range(clients)]
    return ModelProblem(
        model, base.data, loss_fn=next_byte_loss, clients=parts, name="gpt2-pydoc", **kw
    )


def config(impl: str = "mask"):
    return make_federated("fslora", RANK, LR, budgets=budgets.mix(), local_steps=STEPS, impl=impl)


# -- the reference: the authors' full-rank masked emulation, defects fixed ------------------------
def masked_emulation_round(problem: ModelProblem, cfg, k: torch.Tensor, index: list) -> None:
    """One round on ``problem.model`` (the server): ``index[c][module name]`` is client c's I."""
    from peft.tuners.lora import LoraLayer

    server, r, M = problem.model, cfg.rank, problem.M
    layers = {n: m for n, m in server.named_modules() if isinstance(m, LoraLayer)}  # by type
    sums = {n: [torch.zeros_like(m.lora_B["default"].weight),
                torch.zeros_like(m.lora_A["default"].weight)] for n, m in layers.items()}  # fmt: skip
    for c in range(M):
        local = copy.deepcopy(server)  # the whole peft model, per client
        masks = {}
        for name, layer in local.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            I = index[c][name]  # one index set, shared by B and A of the module
            S = torch.zeros(r, dtype=layer.lora_B["default"].weight.dtype)
            S[I] = r / int(k[c])
            with torch.no_grad():
                layer.lora_B["default"].weight.mul_(S)  # B ← B·S
            masks[name] = (layer, S, (S != 0).to(S.dtype))
        params = [p for p in local.parameters() if p.requires_grad]
        batch = problem.batch(problem.clients[c])
        for _ in range(STEPS):
            for p in params:
                p.grad = None
            problem.loss_fn(local, batch).backward()
            with torch.no_grad():
                for layer, S, mask in masks.values():
                    layer.lora_B["default"].weight.grad.mul_(S**2)  # the S² gradient mask
                    layer.lora_A["default"].weight.grad.mul_(mask[:, None])
                for p in params:
                    p.sub_(LR * p.grad)  # plain SGD
        with torch.no_grad():
            for name, (layer, S, mask) in masks.items():
                B, A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
                on = S != 0
                B[:, on] /= S[on]  # recover B from B·S (exactly, not /(S + 1e-8))
                server_B = layers[name].lora_B["default"].weight
                server_A = layers[name].lora_A["default"].weight
                sums[name][0] += (B - server_B) * mask[None, :]  # the masked deltas
                sums[name][1] += (A - server_A) * mask[:, None]
        del local
    with torch.no_grad():
        for name, layer in layers.items():
            layer.lora_B["default"].weight += sums[name][0] / M  # eq. (5), server_lr = 1
            layer.lora_A["default"].weight += sums[name][1] / M


def floor_round(problem: ModelProblem) -> None:
    """A lower bound on any implementation of the round: the base model's forward and backward
    passes on every row, ``cohort_rows`` rows at a time, ``STEPS`` times, with the adapters
    switched off (no LoRA products, masks, copies or updates; the backward runs down to the
    token embeddings, as it must to reach layer 0's LoRA factors)."""
    model = problem.model
    gpt2 = model.get_base_model()
    rows = torch.arange(problem.n_samples)
    with model.disable_adapter():
        for _ in range(STEPS):
            for start in range(0, rows.numel(), problem.cohort_rows):
                ids = problem.batch(rows[start : start + problem.cohort_rows])["input_ids"]
                emb = gpt2.transformer.wte(ids).detach().requires_grad_()
                logits = gpt2(inputs_embeds=emb).logits[:, :-1]
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
                torch.autograd.grad(loss, emb)


# -- measurement helpers ---------------------------------------------------------------------------
def peak_bytes(fn) -> int:
    """Peak bytes held by torch's CPU allocator during ``fn()``, above the level at its start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def start(problem, cfg) -> None:
    """The model holding the engine's start (W^0 and peft's init of seed 0), the reference's too."""
    problem.commit(*FederatedRun(cfg, problem, 0).state())


def by_name(problem, uploads) -> list[dict]:
    """Each upload's index sets keyed by module name (the reference finds modules by name)."""
    return [{s.name: I for s, I in zip(problem.sites, u.index, strict=True)} for u in uploads]


def factors(problem) -> dict:
    return {s.name: (s.B.detach().clone(), s.A.detach().clone()) for s in problem.sites}


def lorakit_round(problem, cfg):
    """The round function: ``FederatedRun.round`` from the run's start (building it resets)."""
    return lambda: FederatedRun(cfg, problem, 0).round(1)


def reference_round(problem, cfg):
    """The emulation's round function, on lorakit's index sets of the same seed and round."""
    uploads = []
    cfg.run(problem, 1, trace=uploads.append)
    k, index = cfg.client_budgets(problem.M, 0), by_name(problem, uploads)

    def reference():
        start(problem, cfg)
        masked_emulation_round(problem, cfg, k, index)

    return reference


def both_agree(dtype) -> tuple[float, float, float]:
    """One round both ways (10 clients): (lorakit loss, reference loss, max |Δ adapter| / max
    |adapter|)."""
    problem, cfg = gpt2_problem(dtype), config()
    frame = cfg.run(problem, 1)
    assert problem.batched_factors, problem.cohort_fallback
    ours = factors(problem)
    reference_round(problem, cfg)()
    theirs = factors(problem)
    diff = max(
        float((a - b).abs().max()) for n in ours for a, b in zip(ours[n], theirs[n], strict=True)
    )
    scale = max(float(x.abs().max()) for pair in ours.values() for x in pair)
    return float(frame.loss.iloc[-1]), problem.loss(), diff / scale


def test_fslora_round_lorakit_vs_masked_emulation():
    print(
        f"\nFSLoRA round, tiny GPT-2 (2 layers, d=64, vocab 256), {STEPS} SGD steps per client on "
        f"{PER_CLIENT}x{TOKENS} tokens, LoRA r={RANK} on c_attn/c_proj (6 modules), k_i from the "
        f"paper's ratio mix, float32, 1 torch thread, {os.cpu_count()} CPU cores (shared):"
    )
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-10)):
        ours, theirs, rel = both_agree(dtype)
        print(f"  {dtype}: adapters agree to {rel:.1e} of their largest entry, "
              f"losses {ours:.10f} vs {theirs:.10f}")  # fmt: skip
        assert rel <= tol, (dtype, rel)
        assert abs(ours - theirs) <= tol * abs(theirs), (dtype, ours, theirs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the module docstring
    passed = []
    try:
        for clients in SCALES:
            problem, cfg = gpt2_problem(torch.float32, clients), config()
            sides = {"masked emulation (deepcopy/client)": reference_round(problem, cfg),
                     "lorakit cohort (grouped passes)": lorakit_round(problem, cfg)}  # fmt: skip
            if clients == CLIENTS:
                slices = gpt2_problem(torch.float32, clients)  # its own model: no interference
                sides["lorakit client by client (slices)"] = lorakit_round(slices, config("slice"))
                sides["floor (bare passes)"] = lambda p=problem: floor_round(p)
            t = compare(sides, repeats=5, warmup=1 if clients <= 50 else 0)
            names = list(sides)
            ratio = t.ratio(names[0], names[1])
            start(problem, cfg)
            m_ours = peak_bytes(lorakit_round(problem, cfg))
            start(problem, cfg)
            m_ref = peak_bytes(reference_round(problem, cfg))
            print(f"\n{clients} clients, one round:\n{t.table()}")
            print(f"  emulation / cohort (ratio of medians) {ratio:.2f}x; peak torch bytes: "
                  f"cohort {m_ours / 2**20:.1f} MiB, emulation {m_ref / 2**20:.1f} MiB "
                  f"(emulation / cohort {m_ref / m_ours:.2f}x)")  # fmt: skip
            record("bench_peft_fslora", f"peak torch bytes emulation / cohort, {clients} clients",
                   m_ref / m_ours, "x")  # fmt: skip
            if clients != CLIENTS:
                record("bench_peft_fslora", f"emulation / cohort, {clients} clients", ratio, "x")
                continue
            slice_ratio = t.ratio(names[2], names[1])
            floor_ratio, over_floor = t.ratio(names[0], names[3]), t.ratio(names[1], names[3])
            print(f"  client by client / cohort {slice_ratio:.2f}x; emulation / floor "
                  f"{floor_ratio:.2f}x (the most anything can gain over the emulation here); "
                  f"cohort / floor {over_floor:.2f}x")  # fmt: skip
            # Issue 14's target, >= 3x over the emulation, is asserted as stated. Where the bare
            # passes alone take more than a third of the emulation's time (a CPU, where this
            # round is bound by its arithmetic) no implementation can reach it: the benchmark
            # then fails and says so, and the floor figures show how close the cohort is.
            passed.append(record("bench_peft_fslora", "emulation / cohort, 10 clients", ratio,
                                 "x", ">= 3", ratio >= 3))  # fmt: skip
            record("bench_peft_fslora", "emulation / floor, 10 clients", floor_ratio, "x")
            record("bench_peft_fslora", "cohort / floor, 10 clients", over_floor, "x")
            if floor_ratio < 3:
                print(f"  >= 3x over the emulation is out of reach here: the bare passes take "
                      f"1/{floor_ratio:.2f} of its time")  # fmt: skip
            passed.append(record("bench_peft_fslora", "client by client / cohort, 10 clients",
                                 slice_ratio, "x", ">= 1.2", slice_ratio >= 1.2))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert all(passed)
