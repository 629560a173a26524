"""Message accounting of Fed-Bernoulli-LoRA QGD, MARINA and EF21 (Algs. 7–9; Federated issue §1):
the bytes each client uploads and downloads per step, logged by the chain engine."""

import numpy as np
import pytest
import torch

import lorakit as lk
from lorakit import compressors as cp
from lorakit import estimators as es
from lorakit import problems as pb
from lorakit.rng import Streams

M, m, n, r = 5, 6, 4, 2
d = m * n
STEPS = 30
FED_COLUMNS = [
    "clients",
    "bytes_up",
    "bytes_down",
    "bytes_up_client",
    "bytes_down_client",
    "mb_up",
    "mb_down",
]


@pytest.fixture(scope="module")
def fed():
    return pb.heterogeneous_quadratics(M, m, n, L=2.0, mu=0.5, spread=0.5, seed=1)


def _run(fed, estimator, steps=STEPS, seeds=0, **kw):
    return lk.run(
        "bernoulli_lora", fed, steps, seeds=seeds, rank=r, gamma=0.3, estimator=estimator, **kw
    )


def _steps(frame):
    """The rows of the steps that communicated (all but the final W^T row)."""
    return frame[frame.step < frame.step.max()]


def test_qgd_rand_k_uploads_k_floats_and_k_indices(fed):
    k = 3
    frame = _run(fed, lk.qgd(cp.rand_k(k)))
    steps = _steps(frame)
    assert (steps.bytes_up == M * (k * 4 + k * 4)).all()
    assert (steps.bytes_up_client == (k + k) * 4).all()
    assert (steps.clients == M).all()
    final = frame[frame.step == STEPS]
    assert float(final.bytes_up.iloc[0]) == 0.0 and float(final.bytes_down.iloc[0]) == 0.0


def test_qgd_identity_uploads_full_matrices(fed):
    frame = _run(fed, lk.qgd("identity"))
    assert (_steps(frame).bytes_up == M * d * 4).all()


def test_bytes_per_float_and_index_are_configurable(fed):
    frame = _run(fed, lk.qgd(cp.rand_k(3), bytes_per_float=2, bytes_per_index=1))
    steps = _steps(frame)
    assert (steps.bytes_up == M * (3 * 2 + 3 * 1)).all()
    assert (steps.bytes_down == M * d * 2).all()
    frame = _run(fed, lk.qgd(cp.qsgd(2)))  # payload (1 float, d levels)
    assert (_steps(frame).bytes_up == M * (1 + d) * 4).all()
    with pytest.raises(ValueError, match="bytes_per_float"):
        lk.qgd("identity", bytes_per_float=0)


@pytest.mark.parametrize("q", [0.3, 0.7])
def test_marina_sends_full_gradients_exactly_on_coin_steps(fed, q):
    k = 4  # compressed: 8k = 32 bytes per client, full: 4d = 96
    for seed in (0, 3):
        frame = _run(fed, lk.marina(q, cp.rand_k(k)), seeds=seed)
        up = _steps(frame).bytes_up.to_numpy()
        # The shared coin s^t: one U[0, 1) draw from the "estimator" stream per step t >= 1; the
        # chain's other draws (coin, sketch, compression) use other streams.
        streams = Streams(seed)
        coin = np.array([True] + [streams.uniform("estimator") < q for _ in range(1, STEPS)])
        assert 0 < coin[1:].sum() < STEPS - 1
        assert (up[coin] == M * d * 4).all()
        assert (up[~coin] == M * 2 * k * 4).all()


def test_marina_q1_always_full(fed):
    frame = _run(fed, lk.marina(1.0, cp.rand_k(4)))
    assert (_steps(frame).bytes_up == M * d * 4).all()


def test_ef21_top_k_uploads_k_floats_and_indices(fed):
    k = 5
    frame = _run(fed, lk.ef21(cp.top_k(k)))
    steps = _steps(frame)
    assert float(steps.bytes_up.iloc[0]) == M * d * 4  # G_l^0 = ∇f_l(W^0), sent in full
    assert (steps.bytes_up.iloc[1:] == M * k * 8).all()
    zero = _steps(_run(fed, lk.ef21(cp.top_k(k), init="zero")))
    assert float(zero.bytes_up.iloc[0]) == 0.0
    assert (zero.bytes_up.iloc[1:] == M * k * 8).all()
    ident = _steps(_run(fed, lk.ef21("identity")))
    assert (ident.bytes_up == M * d * 4).all()


@pytest.mark.parametrize(
    "estimator",
    [lk.qgd(cp.rand_k(3)), lk.marina(0.4, cp.rand_k(3)), lk.ef21(cp.top_k(3))],
    ids=str,
)
def test_cumulative_megabytes_are_running_sums(fed, estimator):
    frame = _run(fed, estimator, seeds=[0, 1])
    for _, one in frame.groupby("seed"):
        np.testing.assert_allclose(one.mb_up, np.cumsum(one.bytes_up) / 2**20, rtol=1e-12)
        np.testing.assert_allclose(one.mb_down, np.cumsum(one.bytes_down) / 2**20, rtol=1e-12)
        np.testing.assert_allclose(one.bytes_up_client * M, one.bytes_up)
        np.testing.assert_allclose(one.bytes_down_client * M, one.bytes_down)


def test_log_every_keeps_counting_unlogged_steps(fed):
    est = lk.marina(0.4, cp.rand_k(3))
    every = _run(fed, est)
    sparse = _run(fed, est, log_every=7)
    assert sparse.step.tolist() == [0, 7, 14, 21, 28, STEPS]
    merged = every.set_index("step").loc[sparse.step]
    np.testing.assert_allclose(sparse.mb_up, merged.mb_up)
    np.testing.assert_allclose(sparse.bytes_up, merged.bytes_up)
    np.testing.assert_allclose(sparse.loss, merged.loss)


def test_broadcast_full_and_factors(fed):
    est = lk.qgd(cp.rand_k(3))
    full = _run(fed, est)
    factors = _run(fed, est, broadcast="factors")
    assert (_steps(full).bytes_down == M * m * n * 4).all()
    assert (_steps(full).bytes_down_client == m * n * 4).all()
    assert (_steps(factors).bytes_down == M * r * (m + n) * 4).all()
    # Only the accounting differs: the trajectories are identical.
    same = [c for c in full.columns if not c.startswith(("bytes_down", "mb_down"))]
    assert full[same].equals(factors[same])
    with pytest.raises(ValueError, match="broadcast"):
        lk.Chain(r, 0.3, broadcast="dense")


def test_non_federated_estimators_have_no_message_columns(fed):
    for est in ("gd", lk.sgd(batch_size=2), lk.page(0.5, batch_size=2)):
        frame = _run(fed, est)
        assert not set(FED_COLUMNS) & set(frame.columns)
    for est in (lk.qgd("identity"), lk.marina(0.5, "identity"), lk.ef21("identity")):
        assert set(FED_COLUMNS) <= set(_run(fed, est, steps=3).columns)


def test_estimate_defaults_and_direct_calls(fed):
    W = fed.W0
    e = es.gd().update(fed, W, None, Streams(0))
    assert e.bytes_up == 0.0 and e.clients == 0
    assert e == es.Estimate(e.G, None, True)  # three-field construction still works
    e = lk.qgd(cp.rand_k(2)).update(fed, W, None, Streams(0))
    assert e.bytes_up == M * 16 and e.clients == M
    init = lk.marina(0.5, cp.rand_k(2)).init(fed, W, Streams(0))
    assert init.bytes_up == M * d * 4
    assert not es.GD.federated and es.QGD.federated


def test_identity_estimators_keep_gd_trajectories(fed):
    # Counting messages leaves the update path alone: QGD/EF21 with the identity compressor and
    # MARINA with q = 1 are GD bit for bit (as in tests/test_federated_problems.py).
    gd = _run(fed, "gd")
    for est in (lk.qgd("identity"), lk.marina(1.0, cp.rand_k(3)), lk.ef21("identity")):
        other = _run(fed, est)
        np.testing.assert_array_equal(other.loss.to_numpy(), gd.loss.to_numpy())
    # a compressed run is reproducible and its losses do not depend on the byte settings
    a = _run(fed, lk.qgd(cp.rand_k(3)))
    b = _run(fed, lk.qgd(cp.rand_k(3), bytes_per_float=8))
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    assert torch.isfinite(torch.tensor(a.loss.to_numpy())).all()
