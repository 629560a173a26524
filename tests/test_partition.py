"""Client data partitions: iid, Dirichlet label skew (Hsu et al. 2019; the FSLoRA code's
per-client variant), quantity skew (NIID-Bench), and their validation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lorakit.problems.partition import (
    DIRICHLET_DRAWS,
    SCHEMES,
    check_partition,
    label_histogram,
    partition,
)


def _labels(N=600, C=6, seed=0):
    """Imbalanced labels: class c has weight ∝ c + 1."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.choice(C, size=N, p=np.arange(1, C + 1) / (C * (C + 1) / 2)))


def _counts(labels, parts) -> np.ndarray:
    frame = label_histogram(labels, parts)
    return frame.pivot(index="client", columns="label", values="count").to_numpy()


def _mean_entropy(labels, parts) -> float:
    """Mean over clients of the entropy (nats) of the client's label distribution."""
    counts = _counts(labels, parts).astype(float)
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return float(h.mean())


# -- coverage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("draw", DIRICHLET_DRAWS)
@pytest.mark.parametrize("num_clients", [1, 7, 40])
def test_every_index_exactly_once(scheme, draw, num_clients):
    y = _labels()
    alpha = (
        0.3 if num_clients < 10 else 3.0
    )  # 40 clients of 600 samples: Dir(0.3) leaves some empty
    parts = partition(y, num_clients, scheme, alpha=alpha, generator=3, draw=draw)
    assert len(parts) == num_clients
    assert all(p.dtype == torch.long and p.dim() == 1 and p.numel() >= 1 for p in parts)
    assert all(bool((p[1:] > p[:-1]).all()) for p in parts)  # sorted, no repeats within
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(y.numel()))


def test_iid_is_an_even_split_of_a_permutation():
    y = _labels(N=103)
    parts = partition(y, 10, "iid", generator=0)
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 103
    assert partition(y, 1, "iid", generator=0)[0].tolist() == list(range(103))


def test_min_size_is_respected():
    y = _labels(N=400)
    for scheme in ("dirichlet", "quantity"):
        parts = partition(y, 8, scheme, alpha=0.5, min_size=20, generator=1)
        assert min(p.numel() for p in parts) >= 20


# -- skew -------------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", DIRICHLET_DRAWS)
def test_small_alpha_is_far_more_label_skewed_than_large_alpha(draw):
    y = torch.arange(10).repeat(100)  # 1000 samples, 10 balanced classes
    h_small = np.mean(
        [_mean_entropy(y, partition(y, 5, "dirichlet", alpha=0.05, generator=s, draw=draw))
         for s in range(5)]
    )  # fmt: skip
    h_large = np.mean(
        [_mean_entropy(y, partition(y, 5, "dirichlet", alpha=100.0, generator=s, draw=draw))
         for s in range(5)]
    )  # fmt: skip
    assert h_large > 0.98 * math.log(10)  # nearly the global (uniform) mix
    assert h_small < 0.5 * h_large, (h_small, h_large)


def test_quantity_skew_unequal_sizes_with_an_iid_label_mix():
    y = _labels(N=5000, C=5, seed=1)
    parts = partition(y, 10, "quantity", alpha=0.5, generator=2)
    sizes = np.array([p.numel() for p in parts])
    assert sizes.max() > 3 * sizes.min()  # unequal sizes
    global_mix = np.bincount(y.numpy(), minlength=5) / y.numel()
    counts = _counts(y, parts)
    big = sizes >= 300
    assert big.sum() >= 3
    tv = 0.5 * np.abs(counts[big] / sizes[big, None] - global_mix).sum(axis=1)
    assert tv.max() < 0.12, tv  # sampling noise only (TV ~ 0.03 at 300 samples)
    # ... unlike label skew at the same α, whose big clients are far from the global mix.
    skew = partition(y, 10, "dirichlet", alpha=0.5, generator=2)
    s_sizes = np.array([p.numel() for p in skew])
    s_counts = _counts(y, skew)
    s_tv = 0.5 * np.abs(s_counts / s_sizes[:, None] - global_mix).sum(axis=1)
    assert s_tv.mean() > 2 * tv.mean()


# -- randomness -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_generator_seed_same_partition(scheme):
    y = _labels()

    def run(g):
        return partition(y, 6, scheme, alpha=0.4, generator=g)

    a = run(torch.Generator().manual_seed(7))
    b = run(torch.Generator().manual_seed(7))
    c = run(7)  # an int seed means torch.Generator().manual_seed(seed)
    d = run(torch.Generator().manual_seed(8))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, d, strict=True))
    g = torch.Generator().manual_seed(7)  # one call advances the generator by one draw
    first, second = run(g), run(g)
    assert not all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    torch.manual_seed(5)  # generator=None: torch's global generator
    e = run(None)
    torch.manual_seed(5)
    f = run(None)
    assert all(torch.equal(p, q) for p, q in zip(e, f, strict=True))


# -- label_histogram --------------------------------------------------------------------------


def test_label_histogram():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    frame = label_histogram(y, [torch.tensor([0, 3]), np.array([1, 2, 4, 5])])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["client", "label", "count"]
    table = frame.pivot(index="client", columns="label", values="count")
    assert table.to_numpy().tolist() == [[1, 0, 1], [1, 1, 2]]  # zeros included
    parts = partition(_labels(), 4, "dirichlet", generator=0)
    counts = _counts(_labels(), parts)
    assert counts.sum() == 600
    assert counts.sum(axis=1).tolist() == [p.numel() for p in parts]
    with pytest.raises(ValueError, match=r"parts\[0\] has indices outside"):
        label_histogram(y, [torch.tensor([6])])


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, r"alpha must be in \(0, inf\], got 0"),
        ({"alpha": -1.0}, r"alpha must be in \(0, inf\]"),
        ({"alpha": float("nan")}, "alpha must be a finite"),
        ({"num_clients": 0}, r"num_clients must be in \[1, 20\]"),
        ({"num_clients": 21}, r"num_clients must be in \[1, 20\], got 21"),
        ({"num_clients": 2.0}, "num_clients must be an integer"),
        ({"scheme": "pathological"}, r"scheme must be one of \['dirichlet', 'iid', 'quantity'\]"),
        ({"min_size": 0}, "min_size must be in"),
        ({"num_clients": 5, "min_size": 5}, "min_size must be at most N/num_clients = 20/5"),
        ({"draw": "both"}, "draw must be one of"),
        ({"max_tries": 0}, "max_tries must be in"),
        ({"generator": "seed"}, "generator must be a torch.Generator, an int seed or None"),
        ({"generator": -1}, "generator must be in"),
        ({"labels": torch.zeros(2, 3, dtype=torch.long)}, "labels must be a non-empty 1-D"),
        ({"labels": []}, "labels must be a non-empty 1-D"),
        ({"labels": torch.rand(20)}, "labels must hold integers"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"labels": torch.arange(20) % 3, "num_clients": 4, "scheme": "dirichlet", **kwargs}
    with pytest.raises(ValueError, match=match):
        partition(args.pop("labels"), args.pop("num_clients"), **args)


def test_redraw_limit_names_the_client():
    y = torch.arange(100) % 2
    with pytest.raises(ValueError, match=r"quantity partition: client \d+ got 0 samples"):
        partition(y, 50, "quantity", alpha=0.01, generator=0, max_tries=5)
    with pytest.raises(ValueError, match=r"dirichlet partition: client \d+ got \d+ samples"):
        partition(y, 50, "dirichlet", alpha=0.01, generator=0, max_tries=5)


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ([[0, 1], [], [2, 3, 4]], "client 1 is empty"),
        ([[0, 1], [1, 2, 3, 4]], r"sample 1 is held more than once \(by clients \[0, 1\]\)"),
        ([[0, 1], [2, 3]], "1 samples belong to no client"),
        ([[0, 1], [2, 3, 5]], r"client 1 holds indices outside \[0, 4\]"),
        ([[0.0, 1.0], [2, 3, 4]], "parts\\[0\\] must hold integer"),
        ([], "parts must hold at least one client"),
        (torch.arange(5), "parts must be a sequence"),
    ],
)
def test_check_partition(parts, match):
    with pytest.raises(ValueError, match=match):
        check_partition(parts, 5)


def test_the_old_path_reexports_the_problems_module():
    # the partitions live under lorakit.problems (the problems split their data with them, with no
    # lazy import); notebook 04 imports them from lorakit.federated.partition
    import lorakit.federated.partition as old
    import lorakit.problems.partition as new

    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name)
