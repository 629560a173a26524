"""RW-LoRA on Ray actors (lorakit.distributed.ray_walk) equals the in-process walk: same path, same
message table, same adapter (1e-12 in float64), and a killed actor is a down node.

Ray runs locally (``ray.init(address="local", num_cpus=2)``, no dashboard, not local mode): one Ray of its own for the
module, shut down at its end. Its start-up dominates the time of this file."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import peft_toys
import pytest
import ray
from peft_toys import toy_problem

import lorakit as lk
from lorakit.compressors import rand_k
from lorakit.decentralized import RWLoRA, make_graph
from lorakit.decentralized.walk import WalkSimulation
from lorakit.distributed import ray_walk

N = 4
ATOL = 1e-12
#: Seconds any wait on an actor may take before the test fails instead of hanging (a loaded machine).
TIMEOUT = 300.0


def start_ray(attempts: int = 5) -> None:
    """ray.init of a Ray of its own (``address="local"``: never another test's, which a parallel
    test worker may shut down under it), retried: on a loaded machine the raylet can give up on
    its metrics agent after a fixed 15 s (ray-project/ray#65983) and the start fails before any
    lorakit code runs."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # Ray's notice of a future change of its GPU env var
                warnings.simplefilter("ignore", FutureWarning)
                ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            return
        except Exception:  # Ray raises a bare Exception for a node that did not start
            ray.shutdown()
            if attempt == attempts - 1:
                raise


@pytest.fixture(scope="module")
def ray_session():
    # The toy model's classes live in tests/, which Ray's workers cannot import: send them by value.
    ray.cloudpickle.register_pickle_by_value(peft_toys)
    start = time.perf_counter()
    start_ray()
    print(f"\nray.init: {time.perf_counter() - start:.1f} s")
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(peft_toys)


@pytest.fixture(scope="module")
def quadratics():
    return lk.problems.heterogeneous_quadratics(N, 5, 4, spread=1.0)


@pytest.fixture(scope="module")
def quadratic_nodes(ray_session, quadratics):
    with ray_walk.RayNodes(quadratics, timeout=TIMEOUT) as nodes:
        yield nodes


def same_frames(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Every column equal: floats to 1e-12 (the logged loss is evaluated by the same code), the
    rest exactly."""
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=0, atol=ATOL, err_msg=col)
        else:
            assert list(x) == list(y), col


def max_diff(X, Y) -> float:
    leaves = lambda t: list(t) if isinstance(t, tuple) else [t]  # noqa: E731
    return max(float((x - y).abs().max()) for x, y in zip(leaves(X), leaves(Y), strict=True))


# Every stream the walk and a visit draw from: the path (walk), down nodes and rerouting (failure),
# lost tokens (loss), gradient noise (noise), the upload compressor (compression); AdamW's state
# travels with the token.
STOCHASTIC = dict(
    rank=2, gamma=0.05, transition="lazy", estimator=lk.sgd(sigma=0.1), compressor=rand_k(6), optimizer="adamw",
    token_loss=0.2, node_failure=0.2,
)  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [STOCHASTIC, dict(rank=2, gamma=0.05, optimizer="adamw", optimizer_state="node")],
    ids=["every-stream", "node-state"],
)
def test_matrix_walk_equals_in_process(quadratics, quadratic_nodes, config):
    cfg = RWLoRA(**config)
    graph = make_graph("complete", N)
    hops, seeds = 30, [0, 1]
    ours, our_messages = ray_walk.run(
        cfg, quadratics, hops, seeds, graph=graph, nodes=quadratic_nodes, messages=True
    )
    theirs = lk.run("rw_lora", quadratics, hops, seeds, graph=graph, messages=True, **config)
    their_messages = pd.DataFrame(theirs.attrs["messages"])  # lk.run attaches a DataFrame subclass
    assert ours.attrs["path"] == theirs.attrs["path"]
    pd.testing.assert_frame_equal(our_messages, their_messages)
    same_frames(ours, theirs)
    # The messages exercise what they should: transfers, compression, skips, losses.
    assert our_messages["params"].max() > 0
    if config is STOCHASTIC:
        assert our_messages["lost"].any() and (our_messages["skipped"] >= 0).any()
    # The adapter itself, hop by hop.
    ray_sim = ray_walk.simulator(cfg, quadratics, graph, seed=3, nodes=quadratic_nodes)
    sim = cfg.simulator(quadratics, graph, seed=3)
    for _ in range(hops):
        ray_sim.hop(), sim.hop()
        B, A = ray_sim.token()
        assert max_diff(B, sim.B) <= ATOL and max_diff(A, sim.A) <= ATOL
        assert ray_sim.node == sim.node


def test_model_walk_equals_in_process(ray_session):
    """A peft model split into 4 clients (two LoRA sites), minibatches from the data stream: each
    actor holds a model copy and its client's rows; the model keeps the last token."""
    toy = toy_problem(clients=N)
    cfg = RWLoRA(rank=2, gamma=0.2, estimator=lk.sgd(batch_size=5), transition="lazy")
    graph = make_graph("ring", N)
    ours, our_messages = ray_walk.run(cfg, toy, 12, graph=graph, messages=True, timeout=TIMEOUT)
    ours_adapter = [(s.B.detach().clone(), s.A.detach().clone()) for s in toy.sites]
    theirs, their_messages = cfg.run(toy, 12, graph=graph, messages=True)
    assert ours.attrs["path"] == theirs.attrs["path"]
    pd.testing.assert_frame_equal(our_messages, their_messages)
    same_frames(ours, theirs)
    assert theirs["loss"].iloc[-1] < theirs["loss"].iloc[0]  # it trained
    for (B, A), site in zip(ours_adapter, toy.sites, strict=True):
        assert float((B - site.B.detach()).abs().max()) <= ATOL
        assert float((A - site.A.detach()).abs().max()) <= ATOL


class DownAfter(WalkSimulation):
    """The in-process walk with node ``dead`` down at every hop after hop ``after``."""

    def __init__(self, *args, dead: int, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.dead, self.after = dead, after

    def down_nodes(self, u):
        down = super().down_nodes(u)
        if self.t <= self.after:
            return down
        mask = np.zeros(self.N, dtype=bool)
        mask[self.dead] = True
        return mask if down is None else down | mask


def wait_dead(actor, timeout: float = 60.0) -> None:
    """Until the killed actor's calls fail (ray.kill is asynchronous)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ray.get(actor.ping.remote(), timeout=timeout)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def test_killed_actor_is_a_down_node(ray_session, quadratics):
    """Kill node k's actor after hop 10: from hop 11 on the walk is the in-process walk with k
    down (skipped, the token rerouted among the live nodes of P_{u,·}), path, messages and adapter
    included; the token never reaches k again. An actor that dies holding the token is NodeLost."""
    cfg = RWLoRA(rank=2, gamma=0.05, estimator=lk.sgd(sigma=0.1))
    graph = make_graph("complete", N)
    after, hops = 10, 40
    with ray_walk.RayNodes(quadratics, timeout=TIMEOUT) as nodes:
        ray_sim = ray_walk.simulator(cfg, quadratics, graph, seed=0, nodes=nodes)
        for _ in range(after):
            ray_sim.hop()
        dead = next(v for v in range(N) if v != ray_sim.node)
        ray.kill(nodes.actors[dead])
        wait_dead(nodes.actors[dead])
        for _ in range(hops - after):
            ray_sim.hop()
        P, pi = cfg.transition_matrix(quadratics, graph)
        sim = DownAfter(cfg, quadratics, 0, P, pi, dead=dead, after=after)
        for _ in range(hops):
            sim.hop()
        assert ray_sim.path == sim.path
        assert dead not in ray_sim.path[after + 1 :]
        pd.testing.assert_frame_equal(pd.DataFrame(ray_sim.messages), pd.DataFrame(sim.messages))
        skips = [m for m in ray_sim.messages if m["skipped"] == dead]
        assert skips and all(dead in m["down"] for m in ray_sim.messages[after:])
        B, A = ray_sim.token()
        assert max_diff(B, sim.B) <= ATOL and max_diff(A, sim.A) <= ATOL

        holder = ray_sim.node
        ray.kill(nodes.actors[holder])
        wait_dead(nodes.actors[holder])
        with pytest.raises(ray_walk.NodeLost, match=f"node {holder}'s Ray actor died"):
            ray_sim.hop()
        # A walk cannot start on a dead node either (in process the holder is always up).
        starts_dead = RWLoRA(rank=2, gamma=0.05, start=holder)
        with pytest.raises(ray_walk.NodeLost, match=f"starts at node {holder} .* is dead"):
            ray_walk.simulator(starts_dead, quadratics, graph, nodes=nodes)


def test_bad_input_is_refused_before_ray_starts(quadratics):
    cfg = RWLoRA(rank=2, gamma=0.05)
    with pytest.raises(TypeError, match="cfg must be an RWLoRA"):
        ray_walk.run("rw_lora", quadratics, 5, graph=make_graph("ring", N))
    pooled = lk.problems.counterexample()
    with pytest.raises(ValueError, match=r"FederatedProblem or a lorakit\.adapters\.ModelProblem"):
        ray_walk.RayNodes(pooled)
    with pytest.raises(ValueError, match="actor_options must be a dict"):
        ray_walk.RayNodes(quadratics, actor_options=[1])
    with pytest.raises(ValueError, match="timeout must be"):
        ray_walk.RayNodes(quadratics, timeout=0)
    with pytest.raises(ValueError, match="hops"):
        ray_walk.run(cfg, quadratics, 0, graph=make_graph("ring", N))
