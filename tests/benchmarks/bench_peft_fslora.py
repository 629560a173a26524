"""One FSLoRA round on a tiny GPT-2 with 10 clients: lorakit against the authors' emulation.

* **lorakit** trains only each client's k_i slice in the one shared peft model
  (:mod:`lorakit.federated.lora`: B[:, I], A[I, :] swapped in as the LoRA parameters with the
  scaling s·r/k_i; no copy of the model, no masks).
* **masked emulation** is what the FSLoRA code does (prior_art.md §A.1, ``LoRA_Sketching.py``):
  a ``copy.deepcopy`` of the whole peft model per client, B ← B·S with S = (r/k_i)·diag(1_I) at
  full rank r, gradient masks (B's gradient ×S², A's rows outside I zeroed), B rescaled back by 1/S
  after the local steps, and the masked delta uploaded. Written here as the reference with the two
  defects FIXED (LoRA layers found by module type, not ``'lora_B' == name``; one index set per
  module shared by A and B) and with plain SGD, so the two are the same algorithm (FSLoRA eq. (4),
  the algebra of prior_art.md §A.1) and must give the same numbers on the same seeds.

The reference uses lorakit's index sets of the round (recorded with ``trace``), the same budgets
k_i (the paper's ratio mix {1/8, 1/4, 1/2, 3/4} of r = 8) and each client's full local data every
step, so any difference is floating-point rounding: the aggregated adapters must agree to 1e-5 in
float32 and 1e-10 in float64.

Measurements (float32, the dtype of simulated training):

* time: best of 5 rounds, each from the same start (``ModelProblem.reset``), the two approaches
  interleaved; lorakit's round is ``FederatedRun.round`` alone (no logging of the full-data
  loss), the reference its loop. One torch thread: this model's ops are too small to gain from
  threads, and on a shared machine threads make the timings noisy;
* memory: the peak of the bytes held by torch's CPU allocator during the round, above the level at
  its start, from the profiler's allocation events (``profile_memory=True``: every tensor storage,
  autograd's saved activations and the deep copies included). ``tracemalloc`` does not see torch's
  allocations, and process RSS is dominated by allocator caching and the interpreter at this
  size, so neither is used. The profiled round is not the timed one (profiling slows it).

Run with ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/benchmarks/bench_peft_fslora.py
-o python_files='bench_*.py' -s -q`` (or ``make bench``).
"""

import copy
import time

import torch

from lorakit.adapters import ModelProblem
from lorakit.federated import budgets, make_federated
from lorakit.federated.lora import FederatedRun

CLIENTS, PER_CLIENT, TOKENS, STEPS, RANK, LR, REPEATS = 10, 4, 64, 5, 8, 0.05, 5


def gpt2_problem(dtype: torch.dtype) -> ModelProblem:
    """The zoo's tiny GPT-2 (2 layers, d = 64, byte vocabulary, pre-trained on the Language
    Reference) with LoRA r = 8, α = 16 on c_attn and c_proj, and 40 blocks of 64 bytes of the
    Library Reference split into 10 clients of 4 blocks."""
    from lorakit import zoo

    base = zoo.gpt2_problem(rank=RANK, lora_alpha=16, blocks=CLIENTS * PER_CLIENT)
    model = base.model.to(dtype).eval()  # eval: no GPT-2 dropout, so both runs see one function
    clients = [torch.arange(c * PER_CLIENT, (c + 1) * PER_CLIENT) for c in range(CLIENTS)]
    return ModelProblem(model, base.data, clients=clients, name="gpt2-pydoc")


def config():
    return make_federated("fslora", RANK, LR, budgets=budgets.mix(), local_steps=STEPS)


# -- the reference: the authors' full-rank masked emulation, defects fixed ------------------------
def masked_emulation_round(problem: ModelProblem, cfg, k: torch.Tensor, index: list) -> None:
    """One round on ``problem.model`` (the server): ``index[c][module name]`` is client c's I."""
    from peft.tuners.lora import LoraLayer

    server, r = problem.model, cfg.rank
    layers = {n: m for n, m in server.named_modules() if isinstance(m, LoraLayer)}  # by type
    sums = {n: [torch.zeros_like(m.lora_B["default"].weight),
                torch.zeros_like(m.lora_A["default"].weight)] for n, m in layers.items()}  # fmt: skip
    for c in range(CLIENTS):
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
            local(**batch).loss.backward()
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
            layer.lora_B["default"].weight += sums[name][0] / CLIENTS  # eq. (5), server_lr = 1
            layer.lora_A["default"].weight += sums[name][1] / CLIENTS


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


def best_times(*fns) -> list[float]:
    """Best of REPEATS for each function, interleaved (ABAB…) so a load change hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[_timed(fn) for fn in fns] for _ in range(REPEATS)]
    return [min(column) for column in zip(*times, strict=True)]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def start(problem, cfg) -> None:
    """The model holding the engine's start (W^0 and peft's init of seed 0), the reference's too."""
    problem.commit(*FederatedRun(cfg, problem, 0).state())


def by_name(problem, uploads) -> list[dict]:
    """Each upload's index sets keyed by module name (the reference finds modules by name)."""
    return [{s.name: I for s, I in zip(problem.sites, u.index, strict=True)} for u in uploads]


def factors(problem) -> dict:
    return {s.name: (s.B.detach().clone(), s.A.detach().clone()) for s in problem.sites}


# -- the two approaches, from the same start ---------------------------------------------------------
def lorakit_round(problem, cfg):
    """The round function: ``FederatedRun.round`` from the run's start (building it resets)."""
    run = FederatedRun(cfg, problem, 0)
    return lambda: run.round(1)


def both_agree(dtype) -> tuple[float, float, float, float]:
    """Run one round both ways; return (lorakit loss, reference loss, max |Δ adapter|, scale)."""
    problem, cfg = gpt2_problem(dtype), config()
    uploads = []
    frame = cfg.run(problem, 1, trace=uploads.append)
    ours = factors(problem)
    k = cfg.client_budgets(CLIENTS, 0)
    index = by_name(problem, uploads)
    start(problem, cfg)
    masked_emulation_round(problem, cfg, k, index)
    theirs = factors(problem)
    diff = max(
        float((a - b).abs().max()) for n in ours for a, b in zip(ours[n], theirs[n], strict=True)
    )
    scale = max(float(x.abs().max()) for pair in ours.values() for x in pair)
    return float(frame.loss.iloc[-1]), problem.loss(), diff, scale


def test_fslora_round_lorakit_vs_masked_emulation():
    print(
        f"\nFSLoRA round, tiny GPT-2 (2 layers, d=64, vocab 256), {CLIENTS} clients x {STEPS} SGD "
        f"steps on {PER_CLIENT}x{TOKENS} tokens, LoRA r={RANK} on c_attn/c_proj (6 modules), "
        "k_i from the paper's ratio mix:"
    )
    agreement = {}
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        ours, theirs, diff, scale = both_agree(dtype)
        agreement[dtype] = (ours, theirs, diff / scale)
        assert diff <= tol * scale, (dtype, diff, scale)
        assert abs(ours - theirs) <= tol * abs(theirs), (dtype, ours, theirs)

    problem, cfg = gpt2_problem(torch.float32), config()
    k = cfg.client_budgets(CLIENTS, 0)
    uploads = []
    cfg.run(problem, 1, trace=uploads.append)
    index = by_name(problem, uploads)

    def reference():
        start(problem, cfg)
        masked_emulation_round(problem, cfg, k, index)

    def ours():
        lorakit_round(problem, cfg)()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the module docstring
    try:
        t_ours, t_ref = best_times(ours, reference)
    finally:
        torch.set_num_threads(threads)
    m_ours, m_ref = peak_bytes(lorakit_round(problem, cfg)), 0
    start(problem, cfg)
    m_ref = peak_bytes(lambda: masked_emulation_round(problem, cfg, k, index))
    model_bytes = sum(p.numel() * p.element_size() for p in problem.model.parameters())
    loss32 = agreement[torch.float32]
    print(
        f"  {'approach':36s} {'time/round':>11s} {'peak torch bytes':>17s} {'loss after round':>17s}"
    )
    print(f"  {'lorakit (k_i slice, one model)':36s} {t_ours * 1e3:8.1f} ms {m_ours / 2**10:13.1f} KiB {loss32[0]:17.9f}")  # fmt: skip
    print(f"  {'masked emulation (deepcopy/client)':36s} {t_ref * 1e3:8.1f} ms {m_ref / 2**10:13.1f} KiB {loss32[1]:17.9f}")  # fmt: skip
    print(
        f"  model {model_bytes / 2**10:.1f} KiB; time ratio {t_ref / t_ours:.2f}x, memory ratio "
        f"{m_ref / m_ours:.2f}x; max |adapter difference| / max |adapter|: "
        f"float32 {agreement[torch.float32][2]:.1e}, float64 {agreement[torch.float64][2]:.1e}"
    )
    assert m_ours < m_ref
