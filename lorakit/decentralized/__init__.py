"""Decentralized patterns: communication graphs, Markov chains, random walks and gossip.

RW-LoRA (spec ``rw_lora.md``) moves one LoRA token along a Metropolis–Hastings random walk; its
gossip Dec-LoRA baseline averages factors with a doubly stochastic mixing matrix. This package holds
the shared machinery (the methods themselves are registered in :data:`lorakit.methods.REGISTRY`):

``graphs``  :func:`make_graph` (ring, complete, star, grid/torus, Erdős–Rényi, Watts–Strogatz,
            random geometric, random regular, stochastic block), :func:`as_graph`,
            :func:`check_connected`, the :data:`GRAPHS` registry.
``markov``  Metropolis–Hastings, lazy chains, Metropolis and uniform gossip weights, chain checks,
            exact total-variation mixing times, spectra and Levin–Peres bounds (dense and sparse),
            the symbolic K_N check.

Each module keeps its own ``__all__``; the package re-exports them, one block per module.
"""

from __future__ import annotations

from . import gossip, graphs, markov, mismatch, simulation, walk
from .gossip import (
    MIXINGS,
    GossipLoRA,
    GossipSimulation,
    check_mixing,
    equal_weights,
    metropolis_matrix,
)
from .graphs import GRAPHS, MAX_DRAWS, GraphKind, adjacency, as_graph, check_connected, make_graph
from .markov import (
    DEFAULT_T_MAX,
    MixingBounds,
    MixingTime,
    SparseSpectralBounds,
    Spectrum,
    SymbolicCheck,
    complete_graph_tv_symbolic,
    is_periodic,
    lazy,
    levin_peres_bounds,
    metropolis_hastings,
    metropolis_weights,
    mixing_time,
    period,
    pi_from_sizes,
    sparse_spectral_bounds,
    spectral,
    stationary_distribution,
    tv_distance_curve,
    uniform_weights,
    validate_chain,
)
from .mismatch import bilinear_mismatch, mismatch_identity_rhs, mismatch_norms, product_rank
from .simulation import INITS, OPTIMIZERS, NodeConfig
from .walk import (
    OPTIMIZER_STATES,
    TRANSITIONS,
    RWLoRA,
    WalkSimulation,
    token_path,
    visit_frequencies,
)

# Modules in the order they are exported; add new ones (walk, gossip, ...) with their imports above.
__all__ = ["graphs", "markov"]
__all__ += [  # graphs
    "GRAPHS",
    "MAX_DRAWS",
    "GraphKind",
    "adjacency",
    "as_graph",
    "check_connected",
    "make_graph",
]
__all__ += [  # markov
    "DEFAULT_T_MAX",
    "MixingBounds",
    "MixingTime",
    "SparseSpectralBounds",
    "Spectrum",
    "SymbolicCheck",
    "complete_graph_tv_symbolic",
    "is_periodic",
    "lazy",
    "levin_peres_bounds",
    "metropolis_hastings",
    "metropolis_weights",
    "mixing_time",
    "period",
    "pi_from_sizes",
    "sparse_spectral_bounds",
    "spectral",
    "stationary_distribution",
    "tv_distance_curve",
    "uniform_weights",
    "validate_chain",
]
__all__ += ["gossip", "mismatch", "simulation", "walk"]
__all__ += [
    "INITS",
    "MIXINGS",
    "OPTIMIZERS",
    "OPTIMIZER_STATES",
    "TRANSITIONS",
    "GossipLoRA",
    "GossipSimulation",
    "NodeConfig",
    "RWLoRA",
    "WalkSimulation",
    "bilinear_mismatch",
    "check_mixing",
    "equal_weights",
    "metropolis_matrix",
    "mismatch_identity_rhs",
    "mismatch_norms",
    "product_rank",
    "token_path",
    "visit_frequencies",
]
