"""Same inputs, same numbers, in every process (issue 11 §2 and the reproducibility property of §6).

* every method of ``tests/patterns.py`` at both scales: the same seed on freshly built problems
  gives a bit-identical frame, another seed a different one;
* a model-scale run in a fresh Python process gives the in-process frame;
* ``ModelProblem.split`` is seeded: the same arguments give the same partition in every call and
  every process;
* the per-link sketch streams (:mod:`lorakit.rng`): changing p in Bernoulli-LoRA changes which side
  a link trains, never the sketch of a link that trains the same side in both runs.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from patterns import CASES
from peft_toys import toy_problem

import lorakit as lk
from lorakit import sketches as sk
from lorakit.rng import Streams

TESTS = Path(__file__).parent
ROOT = TESTS.parent
STEPS = 3


def _fresh_process(code: str) -> str:
    """Run ``code`` in a new interpreter that imports this checkout's lorakit; its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- every method, both scales -------------------------------------------------------------------
#: Runs with no random draw at all, whose seed changes nothing but the ``seed`` column: none (every
#: federated run draws its adapter's A from the seed's ``init`` stream at both scales, as a
#: one-site model must run as its matrix problem: tests/test_engines.py).
SEED_FREE: set = set()


@pytest.mark.parametrize("scale", ["matrix", "model"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_same_seed_gives_bit_identical_frames(case, scale):
    """Two runs with seed 3 on problems built the same way: equal frames, exactly (check_exact);
    seed 4 gives a different frame (some logged value changes), except for the runs that draw
    nothing (``SEED_FREE``), whose frames are then equal but for the seed column."""
    build = case.matrix if scale == "matrix" else case.model
    a = case.run(build(), STEPS, seeds=3)
    b = case.run(build(), STEPS, seeds=3)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = case.run(build(), STEPS, seeds=4)
    assert set(c.seed) == {4}
    same = a.drop(columns="seed").equals(c.drop(columns="seed"))
    assert same == ((case.method, scale) in SEED_FREE)


_MODEL_RUN = """
import base64, pickle
import networkx as nx
import lorakit as lk
from lorakit.decentralized import RWLoRA
from peft_toys import toy_problem
chain = lk.run("bernoulli_lora", toy_problem(rank=2), 12, seeds=[0, 1], rank=2, gamma=0.5, p=0.5,
               estimator=lk.sgd(batch_size=8), steps_per_link=2)
nodes = toy_problem(rank=2).split(4)  # the README's route: the default split seed
walk = RWLoRA(2, 0.3, estimator=lk.sgd(batch_size=4), transition="lazy").run(nodes, 12, seeds=0, graph=nx.cycle_graph(4))
"""


def test_model_runs_in_a_fresh_process_give_the_same_frames():
    """Bernoulli-LoRA-SGD on the peft toy (coin, sketch and minibatch draws) and RW-LoRA on the
    toy split as the README shows (``problem.split(4)``: the partition, walk and minibatches):
    the frames computed in a new interpreter (pickled, so every bit comes back) equal the ones
    computed here."""
    dump = "print(base64.b64encode(pickle.dumps((chain, walk))).decode())"
    there = pickle.loads(base64.b64decode(_fresh_process(_MODEL_RUN + dump)))
    here = {}
    exec(_MODEL_RUN, here)
    for a, b in zip(there, (here["chain"], here["walk"]), strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert set(there[0].side) == {"left", "right"}


# -- ModelProblem.split --------------------------------------------------------------------------
_SPLIT = """
from peft_toys import toy_problem
p = toy_problem(samples=60)
for args in [(5,), (4, "quantity"), (3, "dirichlet")]:
    kw = {"labels": "labels"} if args[-1] == "dirichlet" else {}
    print([c.tolist() for c in p.split(*args, **kw).clients])
    print([c.tolist() for c in p.split(*args, seed=7, **kw).clients])
"""


def test_split_is_the_same_in_every_call_and_every_process():
    """The default seed and seed=7, iid/quantity/dirichlet: two fresh interpreters print the same
    partitions, equal to this process's; seed 7 differs from the default."""
    first, second = _fresh_process(_SPLIT), _fresh_process(_SPLIT)
    assert first == second
    lines = [json.loads(line) for line in first.splitlines()]
    p = toy_problem(samples=60)
    assert [c.tolist() for c in p.split(5).clients] == lines[0]
    assert [c.tolist() for c in p.split(5).clients] == lines[0]  # a second call, same partition
    assert [c.tolist() for c in p.split(5, seed=7).clients] == lines[1]
    for default, other in zip(lines[::2], lines[1::2], strict=True):
        assert default != other
        assert sorted(i for c in default for i in c) == list(range(60))


def test_split_does_not_read_or_advance_the_global_generator():
    p = toy_problem(samples=40)
    torch.manual_seed(0)
    a = p.split(4).clients
    torch.manual_seed(1)
    before = torch.get_rng_state()
    b = p.split(4).clients
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_split_accepts_a_generator_and_refuses_the_old_keyword():
    p = toy_problem(samples=40)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = p.split(4, seed=g1).clients, p.split(4, seed=g2).clients
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(TypeError, match="seed="):
        p.split(4, generator=0)
    with pytest.raises(ValueError, match="seed must be"):
        p.split(4, seed=-1)
    with pytest.raises(ValueError, match="seed must be"):
        p.split(4, seed=None)


# -- per-link sketch streams ---------------------------------------------------------------------
def test_substreams_are_fixed_by_seed_source_and_key():
    s = Streams(3)
    a = torch.randn(4, generator=s.substream("sketch", 2))
    torch.randn(100, generator=s["sketch"])  # the plain stream's use does not matter
    assert torch.equal(a, torch.randn(4, generator=Streams(3).substream("sketch", 2)))
    assert torch.equal(a, torch.randn(4, generator=s.substream("sketch", 2)))  # fresh each call
    for other in (s.substream("sketch", 3), Streams(4).substream("sketch", 2), s["sketch"]):
        assert not torch.equal(a, torch.randn(4, generator=other))
    with pytest.raises(ValueError, match="key must be"):
        s.substream("sketch", -1)


def _recording_sketch():
    """A Gaussian sketch that keeps every matrix it draws, in draw order."""
    drawn = []

    def sampler(shape, gen):
        X = torch.randn(*shape, generator=gen, dtype=torch.float64)
        drawn.append(X)
        return X

    return sk.custom(sampler, name="recording"), drawn


def _sketches_by_link(problem, p, links, per_link):
    sketch, drawn = _recording_sketch()
    frame = lk.run("bernoulli_lora", problem, links, seeds=5, rank=2, gamma=0.1, p=p,
                   sketch=sketch)  # fmt: skip
    sides = frame.groupby("link").side.first().tolist()
    assert len(drawn) == links * per_link
    return sides, [drawn[k * per_link : (k + 1) * per_link] for k in range(links)]


@pytest.mark.parametrize("scale", ["matrix", "model"])
def test_changing_p_does_not_reshuffle_the_sketches(scale):
    """Bernoulli-LoRA with p = 0.3 and p = 0.7, seed 5, 24 links: at every link where both runs
    train the same side the drawn sketches are identical (every site at model scale), including
    links after the first link whose sides differ; where the sides differ the shapes differ."""
    links = 24
    if scale == "matrix":
        problem, per_link = (lambda: lk.problems.quadratic(6, 4, seed=0)), 1
    else:
        problem, per_link = (lambda: toy_problem(rank=2)), 2  # fc1 and fc2
    sides_a, a = _sketches_by_link(problem(), 0.3, links, per_link)
    sides_b, b = _sketches_by_link(problem(), 0.7, links, per_link)
    same = [k for k in range(links) if sides_a[k] == sides_b[k]]
    first_diff = min(k for k in range(links) if sides_a[k] != sides_b[k])
    assert {sides_a[k] for k in same} == {"left", "right"}  # both sides occur among agreeing links
    assert any(k > first_diff for k in same)
    for k in range(links):
        for x, y in zip(a[k], b[k], strict=True):
            if k in same:
                assert torch.equal(x, y)
            else:
                assert x.shape != y.shape
