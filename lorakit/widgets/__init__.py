"""The notebooks' interactive apps, written as plain functions so they are testable and timed.

README "Architecture", principle 6 (thin notebooks): a notebook cell calls
:func:`why_lora_fails_app` or :func:`bernoulli_explorer_app`; the apps call the ``*_frame`` functions here (which call the chain
engine) and draw with :mod:`lorakit.viz`. Every app computes and draws once when it is built, so
executing a notebook (CI, ``nbmake``) runs the same code path a reader's slider does.

* :func:`counterexample_frame` / :func:`why_lora_fails_app` — LoRA, AsymmLoRA, COLA, RAC-LoRA and
  Bernoulli-LoRA on the RAC-LoRA counterexample (Section 3, Eq. (2), Figure 1).
* :func:`explorer_frame` / :func:`explorer_theory` / :func:`bernoulli_explorer_app` —
  Bernoulli-LoRA on the linear regression of Bernoulli-LoRA Sec. 7.1 with the Theorem 1 bound
  drawn over the measured gradient norms.
* :func:`projector_eigen_frame` / :func:`projector_eigen_chart` / :func:`theorem_curve_chart` /
  :func:`theory_constants_app` — the spectrum of the Monte Carlo E[H_B], E[H_A] against r/m, r/n
  and λ^p (RAC-LoRA Assumption 5.1, Bernoulli-LoRA Assumption 1), and a theorem's check run
  (:mod:`lorakit.theory.scenarios`) against its printed and corrected bounds.
* :func:`pep_frame` / :func:`pep_chart` / :func:`pep_app` — a theorem family's measured value, its
  certified worst case (a PEP, :mod:`lorakit.theory.pep_model`) and its bound against γ, with p
  and the step as controls (notebook 03; needs the pep extra).
* :func:`federated_frame` / :func:`federated_charts` / :func:`budget_chart` /
  :func:`federated_app` — FSLoRA and its baselines (FedIT, HeteroLoRA, FlexLoRA, FedStackLoRA)
  on the digits under a Dirichlet label skew: the gap against the round and against the uploaded
  megabytes, and the clients' sketching ratios k_i/r (notebook 04).
* :func:`tv_frame` / :func:`walk_frames` / :func:`token_path_chart` / :func:`random_walks_app` —
  mixing of the Metropolis–Hastings walk, RW-LoRA against gossip Dec-LoRA, the token's path
  (notebook 05).
* :func:`async_frames` / :func:`approximation_frame` / :func:`async_app` — synchronous FedAvg
  against lorakit's FedAsync and FedBuff on a virtual clock with stragglers, and PCA, QRCP, CUR
  errors against rank (notebook 06).
* :func:`transformers_frame` / :func:`transformers_charts` / :func:`transformers_app` — the chain
  and federated methods on the zoo's peft models (digits MLP, tiny GPT-2, MiniLM): loss, trained
  entries per chain link or client, bytes communicated (notebook 07).

Set ``LORAKIT_FAST=1`` (:func:`fast_mode`) for fewer default steps and seeds (CI).
"""

from ..mode import fast_mode
from ._app import App, figure_stem
from .asynchronous import (
    APPROXIMATIONS,
    ASYNC_RULES,
    approximation_chart,
    approximation_frame,
    async_app,
    async_charts,
    async_frames,
    staleness_chart,
)
from .chains import (
    COUNTEREXAMPLE_METHODS,
    EXPLORER_ESTIMATORS,
    EXPLORER_SKETCHES,
    bernoulli_explorer_app,
    counterexample_chart,
    counterexample_frame,
    explorer_charts,
    explorer_frame,
    explorer_theory,
    final_values,
    why_lora_fails_app,
)
from .decentralized import (
    WALK_GRAPHS,
    WALK_METHODS,
    WALK_PIS,
    RandomWalkRuns,
    comm_chart,
    mismatch_chart,
    random_walks_app,
    token_path_chart,
    tv_chart,
    tv_frame,
    visits_chart,
    walk_frames,
    walk_pi,
)
from .federated import (
    FEDERATED_APP_METHODS,
    FEDERATED_PROBLEMS,
    RATIO_MIXES,
    budget_chart,
    client_budgets,
    federated_app,
    federated_budget,
    federated_charts,
    federated_frame,
)
from .pep import PEP_FAMILIES, pep_app, pep_chart, pep_frame
from .theory import (
    THEORY_SAMPLES,
    THEORY_SKETCHES,
    nonuniform_marginals,
    projector_eigen_chart,
    projector_eigen_frame,
    theorem_curve_chart,
    theory_constants_app,
)
from .transformers import (
    TRANSFORMER_CHAIN_METHODS,
    TRANSFORMER_FEDERATED_METHODS,
    TRANSFORMER_MODELS,
    transformers_app,
    transformers_charts,
    transformers_frame,
    transformers_problem,
)

__all__ = [
    "APPROXIMATIONS",
    "ASYNC_RULES",
    "COUNTEREXAMPLE_METHODS",
    "EXPLORER_ESTIMATORS",
    "EXPLORER_SKETCHES",
    "FEDERATED_APP_METHODS",
    "FEDERATED_PROBLEMS",
    "PEP_FAMILIES",
    "RATIO_MIXES",
    "THEORY_SAMPLES",
    "THEORY_SKETCHES",
    "TRANSFORMER_CHAIN_METHODS",
    "TRANSFORMER_FEDERATED_METHODS",
    "TRANSFORMER_MODELS",
    "WALK_GRAPHS",
    "WALK_METHODS",
    "WALK_PIS",
    "App",
    "RandomWalkRuns",
    "approximation_chart",
    "approximation_frame",
    "async_app",
    "async_charts",
    "async_frames",
    "bernoulli_explorer_app",
    "budget_chart",
    "client_budgets",
    "comm_chart",
    "counterexample_chart",
    "counterexample_frame",
    "explorer_charts",
    "explorer_frame",
    "explorer_theory",
    "fast_mode",
    "federated_app",
    "federated_budget",
    "federated_charts",
    "federated_frame",
    "figure_stem",
    "final_values",
    "mismatch_chart",
    "nonuniform_marginals",
    "pep_app",
    "pep_chart",
    "pep_frame",
    "projector_eigen_chart",
    "projector_eigen_frame",
    "random_walks_app",
    "staleness_chart",
    "theorem_curve_chart",
    "theory_constants_app",
    "token_path_chart",
    "transformers_app",
    "transformers_charts",
    "transformers_frame",
    "transformers_problem",
    "tv_chart",
    "tv_frame",
    "visits_chart",
    "walk_frames",
    "walk_pi",
    "why_lora_fails_app",
]
