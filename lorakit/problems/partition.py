"""Client data partitions for federated simulations: iid, label skew, quantity skew.

:func:`partition` splits the sample indices ``0, …, N − 1`` of a labelled data set among
``num_clients`` clients; every index lands in exactly one client. Three schemes, after the
taxonomy of NIID-Bench (Li, Diao, Chen & He, "Federated Learning on Non-IID Data Silos: An
Experimental Study", ICDE 2022, arXiv:2102.02079, §III):

``"iid"``
    a uniform random permutation cut into ``num_clients`` nearly equal parts (sizes differ by at
    most one).
``"dirichlet"``
    *label skew* (distribution-based label imbalance). For every class c, proportions
    p_c ~ Dir(α·1_N) over the N clients are drawn and the class's shuffled samples are cut at the
    cumulative proportions, so client l receives ⌊P_{c,l}·n_c⌋ − ⌊P_{c,l−1}·n_c⌋ of them
    (P_c = cumsum p_c). This is the split of Yurochkin et al. (ICML 2019, PFNM) that Hsu, Qi &
    Brown ("Measuring the Effects of Non-Identical Data Distribution for Federated Visual
    Classification", arXiv:1909.06335, 2019) popularised and NIID-Bench implements. Small α: each
    class goes to few clients (strong skew); α → ∞: every client gets every class in proportion.
    The whole draw is repeated while some client holds fewer than ``min_size`` samples (NIID-Bench
    redraws until every party has ≥ 10), at most ``max_tries`` times, then a ``ValueError``
    names the client that stayed too small.

    ``draw="client"`` is the variant of the FSLoRA code (``partition_dirichlet`` in the authors'
    ``GLUE/data_utils.py``; spec ``fslora.md`` §10 item 7, §11: α = 0.1 on GLUE): each client
    draws a label mix q_l ~ Dir(α·1_C) over the C classes, and class c is shared among clients in
    proportion to (q_{l,c})_l. The authors round each share independently and take the class's
    samples in data-set order, so a few samples can be dropped and the last clients can come out
    empty; here the same proportions are cut at cumulative floors of shuffled samples, so every
    sample is used exactly once.
``"quantity"``
    *quantity skew*: client sizes from proportions q ~ Dir(α·1_N) over clients (cut at cumulative
    floors of N_samples), filled from one uniform permutation, so every client's label mix is iid
    (NIID-Bench "quantity-based imbalance"). Redrawn like ``"dirichlet"`` while some client has
    fewer than ``min_size`` samples.

Randomness: ``generator`` is a ``torch.Generator`` (or an int seed, or None for torch's global
generator). torch's :class:`~torch.distributions.Dirichlet` takes no generator (it samples through
``torch._standard_gamma``, which reads only the global state), so lorakit draws **one** 62-bit
seed from ``generator`` with ``torch.randint`` and does every draw of the partition —
permutations and Dirichlet proportions — with ``numpy.random.default_rng(seed)``. The same
generator state therefore gives the same partition on every platform, and one call advances the
generator by exactly one draw.

:func:`label_histogram` tabulates a partition (client, label, count) for notebooks.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
import pandas as pd
import torch

from .._validation import check_choice, check_int, check_real

__all__ = ["DIRICHLET_DRAWS", "SCHEMES", "check_partition", "label_histogram", "partition"]

SCHEMES = ("iid", "dirichlet", "quantity")
DIRICHLET_DRAWS = ("class", "client")


def partition(
    labels,
    num_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    min_size: int = 1,
    generator: torch.Generator | int | None = None,
    draw: str = "class",
    max_tries: int = 1000,
) -> list[torch.Tensor]:
    """Split the indices of ``labels`` among ``num_clients`` clients (module docstring).

    Parameters
    ----------
    labels : 1-D integer labels (tensor, array or list) of the N samples; only ``"dirichlet"``
        reads their values, the other schemes only their number.
    num_clients : number of clients, in [1, N].
    scheme : ``"iid"``, ``"dirichlet"`` (label skew) or ``"quantity"`` (quantity skew).
    alpha : Dirichlet concentration α > 0 (``"dirichlet"`` and ``"quantity"``; ignored by
        ``"iid"``). Smaller is more skewed.
    min_size : every client gets at least this many samples (≥ 1: no client is ever empty);
        ``num_clients * min_size`` must not exceed N.
    generator : ``torch.Generator``, an int seed, or None (torch's global generator).
    draw : ``"class"`` (per-class Dir(α·1_N), Hsu et al. 2019) or ``"client"`` (per-client
        Dir(α·1_C), the FSLoRA code); ``"dirichlet"`` only.
    max_tries : how many draws ``"dirichlet"``/``"quantity"`` may take to satisfy ``min_size``.

    Returns
    -------
    A list of ``num_clients`` sorted ``torch.long`` index tensors that together hold every index
    in ``range(N)`` exactly once.

    >>> parts = partition([0, 1, 0, 1, 2, 2], 3, generator=0)
    >>> sorted(torch.cat(parts).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    y = _check_labels(labels)
    N = y.size
    num_clients = check_int("num_clients", num_clients, low=1, high=N)
    check_choice("scheme", scheme, SCHEMES)
    alpha = check_real("alpha", alpha, low=0.0, low_open=True)
    min_size = check_int("min_size", min_size, low=1)
    if num_clients * min_size > N:
        raise ValueError(
            f"min_size must be at most N/num_clients = {N}/{num_clients} (every client needs "
            f"min_size samples), got {min_size}"
        )
    check_choice("draw", draw, DIRICHLET_DRAWS)
    max_tries = check_int("max_tries", max_tries, low=1)
    rng = np.random.default_rng(_numpy_seed(generator))

    if scheme == "dirichlet" and np.unique(y).size == 1:
        warnings.warn(
            "a 'dirichlet' (label skew) split of labels with a single class skews nothing but the "
            "client sizes: it is a 'quantity' split; give the class labels",
            UserWarning,
            stacklevel=2,
        )
    if scheme == "iid":
        parts = np.array_split(rng.permutation(N), num_clients)
    else:
        for _ in range(max_tries):
            if scheme == "quantity":
                parts = _cut(rng.permutation(N), rng.dirichlet(np.full(num_clients, alpha)))
            else:
                parts = _label_skew(y, num_clients, alpha, draw, rng)
            sizes = np.array([p.size for p in parts])
            if sizes.min() >= min_size:
                break
        else:
            l = int(sizes.argmin())
            raise ValueError(
                f"{scheme} partition: client {l} got {sizes[l]} samples (< min_size={min_size}) "
                f"in draw {max_tries} of {max_tries}; raise alpha (got {alpha:g}), lower "
                "num_clients or min_size, or allow more max_tries"
            )
    out = [torch.from_numpy(np.sort(p).astype(np.int64)) for p in parts]
    return check_partition(out, N, min_size=min_size)


def label_histogram(labels, parts) -> pd.DataFrame:
    """Long table of a partition's label counts: columns ``client``, ``label``, ``count``.

    One row per (client, label) pair, zeros included (every label present in ``labels``), sorted
    by client then label, so ``frame.pivot(index="client", columns="label", values="count")`` is
    the client × label count matrix.
    """
    y = _check_labels(labels)
    parts = list(parts)
    if not parts:
        raise ValueError("parts must be a non-empty sequence of index arrays")
    classes = np.unique(y)
    rows = []
    for l, part in enumerate(parts):
        idx = np.asarray(torch.as_tensor(part).cpu())
        if idx.ndim != 1 or not (idx.dtype.kind in "iu" or idx.size == 0):
            raise ValueError(f"parts[{l}] must be a 1-D array of integer indices")
        if idx.size and (idx.min() < 0 or idx.max() >= y.size):
            raise ValueError(f"parts[{l}] has indices outside [0, {y.size - 1}]")
        counts = np.array([np.count_nonzero(y[idx] == c) for c in classes], dtype=np.int64)
        rows.extend(
            {"client": l, "label": int(c), "count": int(n)}
            for c, n in zip(classes, counts, strict=True)
        )
    return pd.DataFrame(rows, columns=["client", "label", "count"])


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _check_labels(labels) -> np.ndarray:
    """``labels`` as a 1-D int64 numpy array (N ≥ 1)."""
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(labels)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"labels must be a 1-D array of integer labels, got {labels!r}"
            ) from err
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"labels must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _numpy_seed(generator) -> int:
    """One seed for numpy's generator, drawn from a torch generator (module docstring)."""
    if isinstance(generator, Integral) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(check_int("generator", generator, low=0))
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator, an int seed or None, got {type(generator)}"
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    return int(torch.randint(0, 2**62, (), generator=generator))


def _cut(idx: np.ndarray, p: np.ndarray) -> list[np.ndarray]:
    """Cut ``idx`` into len(p) consecutive pieces at the cumulative floors ⌊cumsum(p)·n⌋."""
    p = p / p.sum()
    bounds = np.floor(np.cumsum(p)[:-1] * idx.size).astype(np.int64)
    return np.split(idx, np.clip(bounds, 0, idx.size))


def _label_skew(y, num_clients, alpha, draw, rng) -> list[np.ndarray]:
    classes = np.unique(y)
    if draw == "client":  # FSLoRA code: q_l ~ Dir(α·1_C) per client, shared per class ∝ q_{l,c}
        Q = rng.dirichlet(np.full(classes.size, alpha), size=num_clients)  # (clients, C)
    pieces = [[] for _ in range(num_clients)]
    for j, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        p = Q[:, j] if draw == "client" else rng.dirichlet(np.full(num_clients, alpha))
        for l, piece in enumerate(_cut(idx, p)):
            pieces[l].append(piece)
    return [np.concatenate(ps) for ps in pieces]


def check_partition(parts, num_samples: int, *, min_size: int = 1) -> list[torch.Tensor]:
    """Validate a partition of ``range(num_samples)``; returns it as a list of long tensors.

    Raises ``ValueError`` naming the offending client: an empty client (or one below
    ``min_size``), non-integer or out-of-range indices, an index held twice, or a sample that no
    client holds.
    """
    num_samples = check_int("num_samples", num_samples, low=1)
    min_size = check_int("min_size", min_size, low=1)
    if isinstance(parts, torch.Tensor | np.ndarray) or not hasattr(parts, "__len__"):
        raise ValueError("parts must be a sequence of 1-D index arrays, one per client")
    if len(parts) == 0:
        raise ValueError("parts must hold at least one client")
    out = []
    for l, part in enumerate(parts):
        try:
            idx = torch.as_tensor(part).cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"parts[{l}] must be a 1-D array of sample indices") from err
        if idx.dim() != 1:
            raise ValueError(f"parts[{l}] must be 1-D, got shape {tuple(idx.shape)}")
        if idx.numel() == 0:
            raise ValueError(f"client {l} is empty: every client needs at least one sample")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ValueError(f"parts[{l}] must hold integer sample indices, got {idx.dtype}")
        if idx.numel() < min_size:
            raise ValueError(
                f"client {l} has {idx.numel()} samples, fewer than min_size={min_size}"
            )
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= num_samples:
            raise ValueError(
                f"client {l} holds indices outside [0, {num_samples - 1}] (min {lo}, max {hi})"
            )
        out.append(idx.long())
    counts = torch.bincount(torch.cat(out), minlength=num_samples)
    if bool((counts > 1).any()):
        i = int((counts > 1).nonzero()[0])
        holders = [l for l, idx in enumerate(out) if bool((idx == i).any())]
        raise ValueError(
            f"parts must be disjoint: sample {i} is held more than once (by clients {holders})"
        )
    missing = (counts == 0).nonzero().flatten()
    if missing.numel():
        raise ValueError(
            f"{missing.numel()} samples belong to no client (first: {int(missing[0])}); a "
            "partition must cover every sample exactly once"
        )
    return out
