"""Exercises of notebook 04 (registered on import; see :mod:`lorakit.exercises`).

Every reference is computed by lorakit when :func:`~lorakit.exercises.check` runs: the random-k
sketch's moments by enumeration (:mod:`lorakit.theory.sketch_moments`, FSLoRA Lemma D.3), ρ_1 and
ρ_2 (:func:`lorakit.federated.budgets.describe`), FSLoRA Theorem 4.4's registered step-size
conditions, and runs of the notebook's app (:func:`lorakit.widgets.federated_frame`).
"""

from __future__ import annotations

import functools

from .registry import exercise

SECOND_MOMENT = {"r": 8, "k": 2}
#: B (4×3) and A (3×5), integer entries, for FSLoRA's sketch variance with k = 1.
VARIANCE_B = [[1, 0, 2], [0, 1, 1], [2, -1, 0], [1, 1, 1]]
VARIANCE_A = [[1, 2, 0, -1, 1], [0, 1, 1, 2, 0], [3, 0, -1, 1, 1]]
VARIANCE_K = 1
BUDGETS = {"k": (1, 2, 4, 6), "r": 8}
STEP_CAP = {"H": 2, "c_h": 0, "L": 1}
#: Rounds for the crossover run: FedIT's upload passes the crossover (≈ 0.7 MB) by round 40 and
#: FSLoRA's (mean k_i/r ≈ 0.4) by round 100.
CROSSOVER_ROUNDS = {"fedit": 40, "fslora": 100}


def _second_moment():
    from ..theory.sketch_moments import enumerated_moments

    return enumerated_moments(SECOND_MOMENT["r"], SECOND_MOMENT["k"])["E[SS^T]"][0, 0]


exercise(
    "04.1",
    "E[S²]_jj of a random-k sketch with r = 8, k = 2",
    "compute",
    reference=_second_moment,
    compare="symbolic",
    hint="S_jj is r/k when j ∈ I and 0 otherwise. How likely is j ∈ I, and what is (r/k)² times "
    "that probability?",
)


def _variance() -> float:
    import torch

    from ..theory.sketch_moments import sketch_variance_enumerated

    B = torch.tensor(VARIANCE_B, dtype=torch.float64)
    A = torch.tensor(VARIANCE_A, dtype=torch.float64)
    return sketch_variance_enumerated(B, A, VARIANCE_K)


exercise(
    "04.2",
    "FSLoRA's sketch variance E‖BSA − BA‖² for a given B, A and k = 1",
    "compute",
    reference=_variance,
    rtol=1e-9,
    hint="With k = 1 there are only r index sets, each equally likely: average ‖BSA − BA‖² over "
    "them (S = r·e_j e_jᵀ), or use the closed form in lorakit.theory.sketch_moments' docstring.",
)


def _rhos() -> list[float]:
    import torch

    from ..federated.budgets import describe

    d = describe(torch.tensor(BUDGETS["k"]), BUDGETS["r"])
    return [d["rho1"], d["rho2"]]


exercise(
    "04.3",
    "ρ₁ and ρ₂ for four devices with k = 1, 2, 4, 6 of r = 8",
    "compute",
    reference=_rhos,
    rtol=1e-9,
    hint="Answer [ρ₁, ρ₂]: the means over the devices of r/k_i and of (r/k_i)², not r/mean(k_i).",
)


def _cap_ratio() -> float:
    """Printed cap / corrected cap of FSLoRA Theorem 4.4's first step-size condition."""
    from ..theory import get_theorem
    from ..theory.symbols import NAMES

    thm = get_theorem("fslora.theorem_4.4")
    rho1, rho2 = _rhos()
    values = {**STEP_CAP, "rho1": rho1, "rho2": rho2}
    caps = []
    for form in (thm.printed, thm.corrected):
        rhs = form.conditions[0].rhs
        caps.append(float(rhs.subs({s: values[NAMES[s]] for s in rhs.free_symbols})))
    return caps[0] / caps[1]


exercise(
    "04.4",
    "By what factor does FSLoRA Theorem 4.4's printed step-size cap exceed the corrected one?",
    "erratum",
    reference=_cap_ratio,
    rtol=1e-6,
    hint="Compare 1/(6√((c_h+1)L̄LH)) with 1/(6HL√(ρ₂(c_h+1))), L̄ = ρ₁L, for the k_i of 04.3 "
    "and H = 2, c_h = 0, L = 1: the ratio of the two caps, printed over corrected.",
)


@functools.lru_cache(maxsize=1)
def _crossover() -> float:
    """FedIT's cumulative upload (MB) at the first round where its f − f* is below paper-mix
    FSLoRA's at the same upload (FSLoRA's gap interpolated linearly in the megabytes)."""
    import numpy as np

    from ..widgets import federated_frame

    fedit, _ = federated_frame(("fedit",), rounds=CROSSOVER_ROUNDS["fedit"])
    fslora, _ = federated_frame(("fslora",), ratio_mix="paper", rounds=CROSSOVER_ROUNDS["fslora"])
    at = np.interp(fedit["mb_up"], fslora["mb_up"], fslora["gap"])
    ahead = (fedit["gap"].to_numpy() < at) & (fedit["round"].to_numpy() > 0)
    if not ahead.any():
        raise ValueError("FedIT does not overtake FSLoRA within the reference run")
    return float(fedit["mb_up"].to_numpy()[ahead.argmax()])


exercise(
    "04.5",
    "The upload budget at which FedIT overtakes paper-mix FSLoRA",
    "configure",
    reference=_crossover,
    rtol=0.0,
    atol=0.07,  # three of FedIT's rounds (0.0226 MB each)
    hint="Run both with federated_frame (FSLoRA for enough rounds to upload as much as FedIT), "
    "put FSLoRA's f − f* on FedIT's megabyte grid (np.interp) and find the first upload where "
    "FedIT is lower. Answer in MB.",
)

exercise(
    "04.6",
    "FSLoRA converges to a stationary point of the sketched objective f^S: when does that help?",
    "open",
)
