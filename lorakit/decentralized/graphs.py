"""Communication graphs for the decentralized patterns (RW-LoRA spec §2, §10.3).

RW-LoRA's Definition 1 takes a finite graph G = (V, E) with V = [N] and undirected edges
E ⊆ (V choose 2) (the paper calls it "directed", spec §12.3; lorakit treats it as undirected). The
paper's experiments use the ring and the complete graph on N = 10 nodes; the other families here are
the usual test beds of the gossip and random-walk literature.

``make_graph(kind, N, seed=..., **params)`` builds a registered family with nodes relabelled
0..N−1. Random families that can come out disconnected are re-drawn a bounded number of times from
seeds derived from ``seed`` (the first draw uses ``seed`` itself) and then raise
``ValueError("graph must be connected: ...")``: Remark 1 of the paper needs a connected graph for
the walk to be irreducible.

==================  ==========================================================================
``ring``            cycle C_N (N ≥ 3); 2-regular, bipartite for even N
``complete``        complete graph K_N
``star``            node 0 joined to nodes 1..N−1
``grid``            rows × cols lattice (``periodic=True`` gives the torus); node attr ``coord``
``torus``           the periodic grid, 4-regular when rows, cols ≥ 3
``erdos_renyi``     G(N, p); default p = min(1, 2 ln N / N)
``watts_strogatz``  ring lattice with k nearest neighbours, each edge rewired with probability p
``random_geometric``  N points uniform in [0, 1]^dim, joined within ``radius`` (node attr ``pos``)
``random_regular``  uniform random d-regular graph (N·d even)
``stochastic_block``  blocks of the given ``sizes``, edge probability p_in inside, p_out across
==================  ==========================================================================

Every graph records ``G.graph["kind"]``, ``G.graph["params"]``, ``G.graph["seed"]`` (the seed of the
accepted draw) and ``G.graph["draws"]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .._validation import ArgumentTypeError, check_choice, check_int, check_real

__all__ = [
    "GRAPHS",
    "MAX_DRAWS",
    "GraphKind",
    "adjacency",
    "as_graph",
    "check_connected",
    "make_graph",
]

#: How many times a random family is re-drawn before ``make_graph`` gives up on connectivity.
MAX_DRAWS = 25


@dataclass(frozen=True)
class GraphKind:
    """A registered graph family: ``build(N, seed, **params)`` and its parameter defaults."""

    build: Callable[..., nx.Graph]
    description: str
    random: bool = False
    defaults: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# builders (each returns a graph on nodes 0..N-1; parameters are already validated)


def _ring(N, seed):
    if N < 3:
        raise ValueError(f"N must be in [3, inf] for a ring, got {N}")
    return nx.cycle_graph(N)


def _complete(N, seed):
    return nx.complete_graph(N)


def _star(N, seed):
    if N < 2:
        raise ValueError(f"N must be in [2, inf] for a star, got {N}")
    return nx.star_graph(N - 1)


def _grid_shape(N, rows, cols) -> tuple[int, int]:
    if rows is None and cols is None:
        side = math.isqrt(N)
        if side * side != N:
            raise ValueError(
                f"N must be a perfect square for a square grid (or pass rows and cols), got {N}"
            )
        return side, side
    if rows is None:
        cols = check_int("cols", cols, low=1)
        rows = N // cols
    elif cols is None:
        rows = check_int("rows", rows, low=1)
        cols = N // rows
    rows, cols = check_int("rows", rows, low=1), check_int("cols", cols, low=1)
    if rows * cols != N:
        raise ValueError(f"rows·cols must equal N = {N}, got rows = {rows}, cols = {cols}")
    return rows, cols


def _grid(N, seed, rows=None, cols=None, periodic=False):
    rows, cols = _grid_shape(N, rows, cols)
    G = nx.grid_2d_graph(rows, cols, periodic=bool(periodic))
    return nx.convert_node_labels_to_integers(G, ordering="sorted", label_attribute="coord")


def _torus(N, seed, rows=None, cols=None):
    return _grid(N, seed, rows=rows, cols=cols, periodic=True)


def _erdos_renyi(N, seed, p=None):
    p = min(1.0, 2.0 * math.log(max(N, 2)) / N) if p is None else p
    p = check_real("p", p, low=0.0, high=1.0)
    return nx.fast_gnp_random_graph(N, p, seed=seed)


def _watts_strogatz(N, seed, k=4, p=0.1):
    k = check_int("k", k, low=2, high=N - 1)
    p = check_real("p", p, low=0.0, high=1.0)
    return nx.watts_strogatz_graph(N, k, p, seed=seed)


def _random_geometric(N, seed, radius=None, dim=2):
    dim = check_int("dim", dim, low=1)
    if radius is None:  # about √2 × the connectivity threshold √(ln N / (π N)) in 2-D
        radius = math.sqrt(2.0 * math.log(max(N, 2)) / (math.pi * N))
    radius = check_real("radius", radius, low=0.0, high=math.sqrt(dim), low_open=True)
    return nx.random_geometric_graph(N, radius, dim=dim, seed=seed)


def _random_regular(N, seed, d=3):
    d = check_int("d", d, low=1, high=N - 1)
    if (N * d) % 2:
        raise ValueError(f"N·d must be even for a d-regular graph, got N = {N}, d = {d}")
    return nx.random_regular_graph(d, N, seed=seed)


def _stochastic_block(N, seed, sizes=None, p_in=0.5, p_out=0.05):
    if sizes is None:
        sizes = [N // 2, N - N // 2]
    sizes = [check_int("sizes", s, low=1) for s in sizes]
    if sum(sizes) != N:
        raise ValueError(f"sizes must sum to N = {N}, got {sizes} (sum {sum(sizes)})")
    p_in = check_real("p_in", p_in, low=0.0, high=1.0)
    p_out = check_real("p_out", p_out, low=0.0, high=1.0)
    probs = [[p_in if i == j else p_out for j in range(len(sizes))] for i in range(len(sizes))]
    G = nx.stochastic_block_model(sizes, probs, seed=seed)
    return nx.Graph(G)  # drop the partition graph attribute's frozen view; node attr "block" stays


GRAPHS: dict[str, GraphKind] = {
    "ring": GraphKind(_ring, "cycle C_N: 2-regular, bipartite (MH walk periodic) for even N"),
    "complete": GraphKind(_complete, "complete graph K_N"),
    "star": GraphKind(_star, "star: node 0 joined to every other node"),
    "grid": GraphKind(
        _grid,
        "rows × cols lattice; periodic=True is the torus",
        defaults={"rows": None, "cols": None, "periodic": False},
    ),
    "torus": GraphKind(
        _torus, "periodic rows × cols lattice (4-regular)", defaults={"rows": None, "cols": None}
    ),
    "erdos_renyi": GraphKind(
        _erdos_renyi, "Erdős–Rényi G(N, p)", random=True, defaults={"p": None}
    ),
    "watts_strogatz": GraphKind(
        _watts_strogatz,
        "Watts–Strogatz small world: k nearest neighbours, rewiring probability p",
        random=True,
        defaults={"k": 4, "p": 0.1},
    ),
    "random_geometric": GraphKind(
        _random_geometric,
        "random geometric graph in [0, 1]^dim with connection radius",
        random=True,
        defaults={"radius": None, "dim": 2},
    ),
    "random_regular": GraphKind(
        _random_regular, "uniform random d-regular graph", random=True, defaults={"d": 3}
    ),
    "stochastic_block": GraphKind(
        _stochastic_block,
        "stochastic block model: p_in inside blocks, p_out across",
        random=True,
        defaults={"sizes": None, "p_in": 0.5, "p_out": 0.05},
    ),
}


def _draw_seed(seed: int, attempt: int) -> int:
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence((seed, attempt)).generate_state(1)[0])


def make_graph(kind: str, N: int, *, seed: int = 0, **kw) -> nx.Graph:
    """A connected graph of family ``kind`` on nodes 0..N−1.

    >>> make_graph("ring", 10).number_of_edges()
    10
    >>> make_graph("torus", 16).degree[0]
    4
    >>> make_graph("watts_strogatz", 100, seed=1, k=6, p=0.2).number_of_nodes()
    100

    Random families are re-drawn up to :data:`MAX_DRAWS` times (the first draw uses ``seed``)
    until connected; then ``ValueError("graph must be connected: ...")``.
    """
    check_choice("kind", kind, GRAPHS)
    N = check_int("N", N, low=1)
    seed = check_int("seed", seed, low=0)
    spec = GRAPHS[kind]
    unknown = sorted(set(kw) - set(spec.defaults))
    if unknown:
        allowed = sorted(spec.defaults) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for kind {kind!r}; allowed: {allowed}")
    params = {**spec.defaults, **kw}
    draws = MAX_DRAWS if spec.random else 1
    n_comp = 0
    for attempt in range(draws):
        s = _draw_seed(seed, attempt)
        G = spec.build(N, s, **params)
        n_comp = nx.number_connected_components(G) if N > 0 else 0
        if n_comp == 1:
            G.graph.update(kind=kind, params=params, seed=s, draws=attempt + 1)
            return G
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if v is not None)
    raise ValueError(
        f"graph must be connected: {kind}(N={N}{', ' + shown if shown else ''}) still had "
        f"{n_comp} components after {draws} draw(s) from seed {seed}; make it denser "
        "(raise p, radius, k or p_out)"
    )


# --------------------------------------------------------------------------------------------
# conversions and checks


def _is_sparse(x) -> bool:
    return sp.issparse(x)


def _adjacency_from_matrix(A, name: str = "adjacency") -> sp.csr_array:
    """Symmetric 0/1 CSR adjacency (no diagonal) from a dense, sparse or torch matrix."""
    if _is_sparse(A):
        A = sp.csr_array(A)
    else:
        if hasattr(A, "detach"):  # torch tensor
            A = A.detach().cpu().numpy()
        A = np.asarray(A)
        if A.ndim != 2:
            raise ValueError(f"{name} must be a square matrix, got shape {A.shape}")
        if not np.all(np.isfinite(A)):
            raise ValueError(f"{name} must have finite entries")
        A = sp.csr_array(A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {A.shape}")
    coo = A.tocoo()
    if coo.nnz and coo.data.min() < 0:
        raise ValueError(f"{name} must have non-negative entries, got min {coo.data.min():g}")
    keep = (coo.row != coo.col) & (coo.data != 0)
    row, col = coo.row[keep], coo.col[keep]
    A = sp.csr_array((np.ones(row.size, dtype=np.int8), (row, col)), shape=A.shape)
    A.sum_duplicates()
    A.data[:] = 1
    asym = (A != A.T).tocoo()
    if asym.nnz:
        u, v = int(asym.row[0]), int(asym.col[0])
        raise ValueError(
            f"{name} must be symmetric (an undirected graph): entry ({u}, {v}) is "
            f"{'an edge' if A[u, v] else 'absent'} but ({v}, {u}) is {'an edge' if A[v, u] else 'absent'}"
        )
    return A.astype(np.int8)


def adjacency(G) -> sp.csr_array:
    """Symmetric 0/1 CSR adjacency (self-loops dropped) of a graph or adjacency matrix.

    Node ``i`` of the result is node ``i`` of ``as_graph(G)``: for a networkx graph whose nodes
    are 0..N−1 that is node ``i`` itself, otherwise the ``i``-th node in ``G``'s node order.
    """
    if isinstance(G, nx.Graph):
        if G.is_directed():
            raise ValueError("graph must be undirected (RW-LoRA uses E ⊆ (V choose 2))")
        nodes = list(G)
        N = len(nodes)
        order = range(N) if set(nodes) == set(range(N)) else nodes
        A = nx.to_scipy_sparse_array(G, nodelist=order, weight=None, format="csr", dtype=np.int8)
        return _adjacency_from_matrix(A, "graph")
    return _adjacency_from_matrix(G)


def as_graph(adjacency_or_graph) -> nx.Graph:
    """An undirected ``networkx.Graph`` on nodes 0..N−1 without self-loops.

    Accepts a networkx graph (nodes not labelled 0..N−1 are relabelled in node order, the old
    label kept as node attribute ``label``) or an adjacency matrix (numpy, scipy sparse or torch):
    every non-zero off-diagonal entry is an edge, weights and the diagonal are ignored, and the
    matrix must be symmetric.
    """
    G = adjacency_or_graph
    if isinstance(G, nx.Graph):
        if G.is_directed():
            raise ValueError("graph must be undirected (RW-LoRA uses E ⊆ (V choose 2))")
        H = nx.Graph(G)
        H.remove_edges_from(list(nx.selfloop_edges(H)))
        if set(H) != set(range(H.number_of_nodes())):
            H = nx.convert_node_labels_to_integers(H, ordering="default", label_attribute="label")
        return H
    if G is None or isinstance(G, str | bytes):
        raise ArgumentTypeError(
            "graph must be a networkx.Graph or an N×N adjacency matrix (make_graph('ring', N) "
            f"builds one by name), got {G!r}"
        )
    A = _adjacency_from_matrix(G)
    H = nx.from_scipy_sparse_array(A)
    for _, _, data in H.edges(data=True):
        data.pop("weight", None)
    return H


def check_connected(G):
    """Return ``G`` unchanged if it is connected, else raise ``ValueError`` naming the components.

    ``G`` may be a networkx graph or an adjacency matrix. Remark 1 of RW-LoRA: the walk's
    transition matrix is irreducible iff the graph is connected.
    """
    A = adjacency(G)
    N = A.shape[0]
    if N == 0:
        raise ValueError("graph must be connected: it has no nodes")
    n_comp, labels = connected_components(A, directed=False)
    if n_comp > 1:
        sizes = np.sort(np.bincount(labels))[::-1]
        shown = ", ".join(str(s) for s in sizes[:8]) + (", ..." if n_comp > 8 else "")
        raise ValueError(
            f"graph must be connected: it has {n_comp} components (sizes {shown}); "
            "the random walk would be reducible (RW-LoRA Remark 1)"
        )
    return G
