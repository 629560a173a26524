"""Server rounds of the FSLoRA family (Federated issue §1, §2, §4)."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

import lorakit as lk
from lorakit.config import Config
from lorakit.federated import budgets, make_federated
from lorakit.federated.lora import FederatedRun


@pytest.fixture(scope="module")
def problem():
    return lk.problems.heterogeneous_quadratics(6, 8, 8, L=1.0, spread=1.0, seed=0)


def test_fslora_with_full_budgets_is_fedit(problem):
    """k_i = r makes S = I: FSLoRA is vanilla federated LoRA (FSLoRA §2.5), bit for bit."""
    a = make_federated("fslora", 4, 0.05, budgets=4, local_steps=3).run(problem, 15, seeds=[0, 1])
    b = make_federated("fedit", 4, 0.05, local_steps=3).run(problem, 15, seeds=[0, 1])
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())


@pytest.mark.parametrize("method", ["fslora", "hetero_lora"])
def test_slice_and_mask_implementations_agree(problem, method):
    kw = dict(budgets=budgets.uniform(1), local_steps=4, cohort=4)
    a = make_federated(method, 4, 0.01, **kw).run(problem, 20, seeds=[0, 3])
    b = make_federated(method, 4, 0.01, impl="slice", **kw).run(problem, 20, seeds=[0, 3])
    np.testing.assert_allclose(a.loss.to_numpy(), b.loss.to_numpy(), rtol=1e-12, atol=1e-12)


def test_sketch_touches_exactly_the_chosen_columns_and_rows(problem):
    """Only B[:, I_i] and A[I_i, :] move, with one I_i shared by A and B (FSLoRA Lemma 3.2)."""
    cfg = make_federated("fslora", 6, 0.05, budgets=2, local_steps=3)
    run = FederatedRun(cfg, problem, 0)
    run.B = torch.randn(8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    clients = torch.arange(problem.M)
    svec = run.sketch(run.k[clients])
    dB, dA = run.local_train(clients, svec)
    for c in range(problem.M):
        chosen = svec[c] != 0
        assert int(chosen.sum()) == 2 and torch.allclose(
            svec[c][chosen], torch.tensor(3.0).double()
        )
        assert bool((dB[c][:, ~chosen] == 0).all()) and bool((dA[c][~chosen, :] == 0).all())
        assert bool((dB[c][:, chosen].abs().sum(0) > 0).all())
        assert bool((dA[c][chosen, :].abs().sum(1) > 0).all())


def test_index_sets_are_uniform_k_subsets(problem):
    """Each of the C(r, k) subsets is equally likely (Definition 3.1): chi-square over 6000 draws."""
    run = FederatedRun(make_federated("fslora", 4, 0.1, budgets=2), problem, 0)
    counts = {}
    for _ in range(1000):
        svec = run.sketch(torch.full((6,), 2))
        for row in (svec != 0).tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 6
    expected = 6000 / 6
    chi2 = sum((v - expected) ** 2 / expected for v in counts.values())
    assert chi2 < 20.5  # 0.1% quantile of chi-square with 5 degrees of freedom


def test_server_update_is_unbiased_for_the_sketched_gradient_with_one_local_step(problem):
    """H = 1, exact gradients: E_S[server update] = −γ ∇_X f^S(X), by enumeration of index sets
    (spec fslora.md §6 item 8c); f^S = E_S f(W0 + B S A) computed here by the same enumeration."""
    r, k, lr = 4, 2, 0.05
    gen = torch.Generator().manual_seed(1)
    B = torch.randn(8, r, generator=gen, dtype=torch.float64)
    A = torch.randn(r, 8, generator=gen, dtype=torch.float64)
    subsets = list(itertools.combinations(range(r), k))
    updates_B, updates_A = [], []
    for I in subsets:  # every client gets the same I: the server update for that sketch
        svec = torch.zeros(problem.M, r, dtype=torch.float64)
        svec[:, list(I)] = r / k
        run = FederatedRun(make_federated("fslora", r, lr, budgets=k), problem, 0)
        run.B, run.A = B.clone(), A.clone()
        dB, dA = run.local_train(torch.arange(problem.M), svec)
        updates_B.append(dB.mean(0))
        updates_A.append(dA.mean(0))
    Bv, Av = B.clone().requires_grad_(), A.clone().requires_grad_()
    fS = 0.0
    for I in subsets:
        s = torch.zeros(r, dtype=torch.float64)
        s[list(I)] = r / k
        fS = fS + problem.loss(problem.W0 + (Bv * s) @ Av) / len(subsets)
    gB, gA = torch.autograd.grad(fS, (Bv, Av))
    torch.testing.assert_close(torch.stack(updates_B).mean(0), -lr * gB, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.stack(updates_A).mean(0), -lr * gA, atol=1e-10, rtol=0)


def test_fslora_uploads_k_over_r_of_fedit_bytes(problem):
    ks = [1, 2, 3, 4, 2, 1]
    _, fs = make_federated("fslora", 4, 0.05, budgets=ks).run(problem, 3, messages=True)
    _, fi = make_federated("fedit", 4, 0.05).run(problem, 3, messages=True)
    ratio = fs.groupby("client").bytes_up.sum() / fi.groupby("client").bytes_up.sum()
    np.testing.assert_allclose(ratio.to_numpy(), np.array(ks) / 4)
    assert (fi.bytes_up == 4 * (8 + 8) * 4).all()  # r(m+n) fp32 values per client per round
    # Downloads: the full adapter (Algorithm 1 line 3) plus k_i indices naming I_i when k_i < r.
    assert (fs.bytes_down == 4 * 16 * 4 + np.where(fs.k < 4, fs.k * 4, 0)).all()


def test_topk_uploads_are_sparser_and_counted_with_their_indices(problem):
    hist, msgs = make_federated("fslora_topk", 4, 0.05, budgets=2, topk_ratio=0.25).run(
        problem, 3, messages=True
    )
    # ceil(0.25·k(m+n)) = 8 values and 8 indices, 4 bytes each.
    assert (msgs.bytes_up == 8 * 4 + 8 * 4).all()
    assert hist.gap.iloc[-1] < hist.gap.iloc[0]


def test_dropout_and_cohorts(problem):
    hist, msgs = make_federated("fslora", 4, 0.05, budgets=2, cohort=4, dropout=0.5).run(
        problem, 30, messages=True
    )
    assert (msgs.groupby("round").client.count() == 4).all()
    assert (msgs[msgs.dropped].bytes_up == 0).all() and 0.3 < msgs.dropped.mean() < 0.7
    assert (hist.reported[1:] + hist.dropped[1:] == 4).all()
    # Every client dropping in every round would train nothing: refused (issue 11 §4).
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1"):
        make_federated("fslora", 4, 0.05, budgets=2, dropout=1.0)


def test_fedadam_server_and_count_aggregation_run_and_descend(problem):
    for kw in ({"server_optimizer": "adam", "server_lr": 0.05}, {"aggregation": "count"}):
        hist = make_federated("fslora", 4, 0.05, budgets=2, local_steps=2, **kw).run(problem, 40)
        assert hist.loss.iloc[-1] < 0.9 * hist.loss.iloc[0], kw


def test_divergence_stops_before_the_global_adapter_is_touched(problem):
    with pytest.raises(lk.DivergenceError, match=r"diverged in round \d+.*Proposition D.4") as info:
        make_federated("fslora", 8, 5.0, budgets=1, local_steps=5).run(problem, 10)
    assert np.isfinite(info.value.frame.loss).all()


def test_budget_distributions_stay_in_range_and_are_seeded():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for b in (budgets.mix(), budgets.uniform(4), budgets.normal(), budgets.heavy_tail(4)):
        k = b.sample(500, 64, gen())
        assert int(k.min()) >= 1 and int(k.max()) <= 64, b
        assert torch.equal(k, b.sample(500, 64, gen()))
    k = budgets.mix().sample(4000, 64, gen())
    assert set(k.tolist()) == {8, 16, 32, 48}  # the paper's ratios {1/8, 1/4, 1/2, 3/4} of r = 64
    heavy = budgets.heavy_tail(4).sample(4000, 64, gen()).double()
    assert heavy.median() < 8 and heavy.max() > 32


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"budgets": 5}, r"budgets k_i must be in \[1, 4\]"),
        ({"budgets": 0}, r"budgets k_i must be in \[1, 4\]"),
        ({"budgets": [1, 2]}, "one k_i per client"),
        ({"cohort": 7}, r"cohort must be in \[1, 6\]"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"topk_ratio": 0.0}, r"topk_ratio must be in \(0, 1\]"),
    ],
)
def test_bad_input(problem, kw, match):
    with pytest.raises(ValueError, match=match):
        make_federated("fslora", 4, 0.1, **kw).run(problem, 1)


def test_fedit_rejects_budgets_and_non_federated_problems():
    with pytest.raises(ValueError, match="fedit trains the full rank"):
        make_federated("fedit", 4, 0.1, budgets=2)
    with pytest.raises(ValueError, match="problem must be a FederatedProblem"):
        make_federated("fslora", 2, 0.1).run(lk.problems.quadratic(4, 4), 1)


def _one_round_products(problem, method, k):
    """The clients' adapters after one round, recomputed here from the run's own local step."""
    cfg = make_federated(method, 4, 0.05, budgets=k, local_steps=2)
    run = FederatedRun(cfg, problem, 0)
    B0, A0 = run.B.clone(), run.A.clone()
    clients = torch.arange(problem.M)
    svec = run.sketch(run.k[clients])
    dB, dA = run.local_train(clients, svec)
    keep = (svec != 0).double()
    products = ((B0 + dB) * keep[:, None, :]) @ (A0 + dA)
    return cfg, products.mean(0)


def test_flex_lora_keeps_the_best_rank_r_factorisation_of_the_mean_product(problem):
    cfg, mean_product = _one_round_products(problem, "flex_lora", 2)
    hist = cfg.run(problem, 1)
    U, S, Vh = torch.linalg.svd(mean_product)
    best = U[:, :4] @ torch.diag(S[:4]) @ Vh[:4, :]  # Eckart–Young
    assert hist.loss.iloc[1] == pytest.approx(float(problem.loss(problem.W0 + best)), rel=1e-12)


def test_fedstack_lora_merges_the_mean_product_into_the_base(problem):
    cfg, mean_product = _one_round_products(problem, "fedstack_lora", 3)
    hist, msgs = cfg.run(problem, 2, messages=True)
    assert hist.loss.iloc[1] == pytest.approx(
        float(problem.loss(problem.W0 + mean_product)), rel=1e-12
    )
    # Every client downloads the stack of the previous round's factors, (Σ_j k_j)(m + n) values
    # over the 6 clients of budget 3 that reported; nothing in round 1 (nothing to stack yet).
    assert (msgs.bytes_down[msgs["round"] == 1] == 0).all()
    assert (msgs.bytes_down[msgs["round"] == 2] == 6 * 3 * 16 * 4).all()


def test_product_aggregations_need_leading_components():
    with pytest.raises(ValueError, match="selection='leading'"):
        lk.federated.FederatedLoRA(4, 0.1, aggregation="svd")


def test_on_divergence_stop_keeps_other_seeds_and_the_configuration(problem):
    cfg = make_federated("fslora", 8, 0.2, budgets=3, local_steps=4)
    with pytest.raises(lk.DivergenceError) as info:
        cfg.run(problem, 30)
    assert info.value.frame.method.iloc[0] == "fslora"  # the error's rows carry the config
    frame, msgs = cfg.run(problem, 30, seeds=[0, 1], on_divergence="stop", messages=True)
    assert set(frame.attrs["diverged"]) == {0, 1} and set(frame.seed) == {0, 1}
    assert np.isfinite(frame.loss).all()
    # The rounds up to the divergence keep their messages.
    for seed, stopped in frame.attrs["diverged"].items():
        rounds = set(msgs[msgs.seed == seed]["round"])
        assert rounds and rounds <= set(range(1, stopped + 1))


def test_client_budgets_are_what_the_run_uses(problem):
    cfg = make_federated("fslora", 4, 0.05, budgets=budgets.uniform(1))
    _, msgs = cfg.run(problem, 2, seeds=3, messages=True)
    k = cfg.client_budgets(problem.M, 3)
    assert msgs.groupby("client").k.first().tolist() == k.tolist()


def test_uploads_go_through_the_upload_compressor(problem):
    """The identity compressor is the default, bit for bit; any compressor of lorakit.compressors
    compresses each client's k_i(m + n) entries and its payload is what the message counts."""
    from lorakit import compressors as cp

    kw = dict(budgets=[1, 2, 3, 4, 2, 1], local_steps=2)
    plain, _ = make_federated("fslora", 4, 0.05, **kw).run(problem, 4, messages=True)
    same = make_federated("fslora", 4, 0.05, compressor=cp.identity(), **kw).run(problem, 4)
    pd.testing.assert_frame_equal(plain, same, check_exact=True)
    cfg = make_federated("fslora", 4, 0.05, compressor=cp.rand_k(5), **kw)
    hist, msgs = cfg.run(problem, 4, messages=True)
    assert (msgs.bytes_up == 5 * 4 + 5 * 4).all()  # payload (k, k) of rand-k, 4 bytes each
    assert hist.loss.iloc[-1] != plain.loss.iloc[-1]
    pd.testing.assert_frame_equal(hist, cfg.run(problem, 4), check_exact=True)
    with pytest.raises(ValueError, match="not both"):
        make_federated("fslora_topk", 4, 0.05, compressor=cp.top_k(2))
    assert make_federated("fslora", 4, 0.05, compressor="identity").compressor == cp.identity()
    with pytest.raises(ValueError, match="compressor must be one of"):
        make_federated("fslora", 4, 0.05, compressor="top-k")


def test_gamma_is_the_step_size_and_lr_is_deprecated(problem):
    cfg = make_federated("fslora", 4, 0.05, budgets=2)
    assert isinstance(cfg, Config) and cfg.gamma == 0.05
    assert cfg.with_params(gamma=0.1).gamma == 0.1
    with pytest.warns(DeprecationWarning, match="gamma"):
        old = make_federated("fslora", rank=4, lr=0.05, budgets=2)
    assert old == cfg
    with pytest.raises(ValueError, match=r"gamma must be in \(0"):
        cfg.with_params(gamma=0.0)


def test_flexlora_factors_have_a_fixed_sign():
    """FlexLoRA's B = U_r Σ_r, A = V_rᵀ: the best rank-r factorisation (Eckart–Young), each pair's
    sign fixed by U's largest |entry| (positive), so the factors do not depend on which sign LAPACK
    returns (the Flower app and the engine round the same P differently and must agree)."""
    from lorakit.federated.lora import svd_factors

    P = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    B, A = svd_factors(P, 3)
    U, S, Vh = torch.linalg.svd(P)
    torch.testing.assert_close(B @ A, U[:, :3] @ torch.diag(S[:3]) @ Vh[:3], rtol=0, atol=1e-13)
    pivots = B.gather(0, B.abs().argmax(0, keepdim=True))[0]
    assert (pivots > 0).all()
    B2, A2 = svd_factors(-P, 3)  # every singular vector flips: the rule puts the sign on A
    torch.testing.assert_close(B2, B, rtol=0, atol=1e-13)
    torch.testing.assert_close(A2, -A, rtol=0, atol=1e-13)
