"""One registry, one call (issue 13 §4): every registered method runs through ``lk.run`` on a small
matrix problem of ``tests/patterns.py`` and returns its frame with the unit (and messages or events
where its pattern has them), exactly the frame its configuration's own ``run`` gives."""

import dataclasses

import pandas as pd
import pytest
from patterns import CASES, RANK, RING

import lorakit as lk
from lorakit.methods import METHODS, PATTERNS, REGISTRY, Attached

STEPS = 3
SEEDS = [0, 1]
#: the frame each pattern records beside the history (the chain has none)
RECORD = {"federated": "messages", "decentralized": "messages", "asynchronous": "events"}
EXTRA = {  # configuration that keeps each run small and well defined on the patterns' problems
    "lora": {"update": "sgd"},
    "cola": {"steps_per_link": 2, "update": "sgd"},
    "bernoulli_lora": {"p": 0.5},
    "fslora": {"budgets": 1},
    "hetero_lora": {"budgets": [1, 2, 1, 2]},
    "fslora_topk": {"budgets": 1},
    "flex_lora": {"budgets": [1, 2, 1, 2]},
    "fedstack_lora": {"budgets": [1, 2, 1, 2]},
    "rw_lora": {"transition": "lazy", "graph": RING},  # graph= is a run option
    "gossip_lora": {"graph": RING},
    "fedavg": {"local_steps": 2},
    "fedasync": {"local_steps": 2},
    "fedbuff": {"local_steps": 2},
}
CASE = {case.method: case for case in CASES}


def _fields(method) -> set:
    return {f.name for f in dataclasses.fields(REGISTRY[method].config)}


def config(method) -> dict:
    """The configuration and run options of ``method``'s run here. The names are the configuration
    class's own: the step size is ``gamma`` (``lr`` in a class its engine port has not renamed yet)
    and the LoRA rank ``rank`` (an asynchronous method without a ``rank`` field trains full deltas)."""
    fields = _fields(method)
    kw = {"gamma" if "gamma" in fields else "lr": 0.05 if method in METHODS else 0.3}
    if "rank" in fields:
        kw["rank"] = RANK
    return {**kw, **EXTRA.get(method, {})}


def split(method, kw) -> tuple[dict, dict]:
    options = REGISTRY[method].run_options()
    return {k: v for k, v in kw.items() if k not in options}, {
        k: v for k, v in kw.items() if k in options
    }


def test_the_registry_is_every_method_of_the_patterns_table():
    assert [(m.name, m.pattern) for m in REGISTRY.values()] == [
        (c.method, c.pattern) for c in CASES
    ]
    assert len(REGISTRY) == 17 and {m.pattern for m in REGISTRY.values()} == set(PATTERNS)
    assert lk.REGISTRY is REGISTRY and lk.METHODS is METHODS
    assert list(METHODS) == [m.name for m in REGISTRY.values() if m.pattern == "chain"]
    units = {m.name: m.unit for m in REGISTRY.values()}
    assert units["lora"] == "step" and units["fslora"] == units["fed_rac_lora"] == "round"
    assert (units["rw_lora"], units["gossip_lora"], units["fedbuff"]) == ("hop", "round", "update")
    for m in REGISTRY.values():
        assert m.description and m.source and m.paper == m.source
        assert {"log_every", "on_divergence", "blowup", "progress"} & set(m.run_options())


@pytest.mark.parametrize("method", list(REGISTRY))
def test_make_builds_the_configuration_unchanged(method):
    cfg_kw, _ = split(method, config(method))
    cfg = lk.make(method, **cfg_kw)
    assert isinstance(cfg, REGISTRY[method].config)
    assert cfg.method == method
    assert cfg == REGISTRY[method].build(**cfg_kw)  # configurations compare by value


@pytest.mark.parametrize("method", list(REGISTRY))
def test_run_runs_every_method_and_returns_its_frame(method):
    entry, case = REGISTRY[method], CASE[method]
    kw = config(method)
    frame = lk.run(method, case.matrix(), STEPS, SEEDS, **kw)

    assert isinstance(frame, pd.DataFrame) and type(frame) is pd.DataFrame
    assert frame.attrs["unit"] == entry.unit
    assert set(frame["method"]) == {method}
    assert sorted(set(frame["seed"])) == SEEDS
    assert frame.groupby("seed")[entry.unit].max().tolist() == [STEPS, STEPS]
    assert frame["loss"].notna().all()
    record = RECORD.get(entry.pattern)
    assert {k for k in frame.attrs if k in ("messages", "events")} == ({record} - {None})
    if record is not None:
        extra = frame.attrs[record]
        assert isinstance(extra, Attached) and len(extra) > 0
        assert sorted(set(extra["seed"])) == SEEDS

    # the one call is the configuration's own run: the same frame (and messages/events)
    cfg_kw, run_kw = split(method, kw)
    direct = lk.make(method, **cfg_kw).run(
        case.matrix(), STEPS, SEEDS, **run_kw, **({record: True} if record else {})
    )
    direct, direct_extra = direct if record else (direct, None)
    pd.testing.assert_frame_equal(frame, direct, check_like=False)
    if record is not None:
        pd.testing.assert_frame_equal(pd.DataFrame(frame.attrs[record]), direct_extra)


@pytest.mark.parametrize("method", [m for m in REGISTRY if REGISTRY[m].pattern != "chain"])
def test_recording_can_be_turned_off(method):
    record = RECORD[REGISTRY[method].pattern]
    frame = lk.run(method, CASE[method].matrix(), 2, **config(method), **{record: False})
    assert record not in frame.attrs and frame.attrs["unit"] == REGISTRY[method].unit


def test_run_options_go_to_the_run_and_frames_with_messages_concatenate():
    kw = config("fslora")
    every = lk.run("fslora", CASE["fslora"].matrix(), 4, **kw)
    thinned = lk.run("fslora", CASE["fslora"].matrix(), 4, log_every=2, **kw)
    assert thinned["round"].tolist() == [0, 2, 4]
    pd.testing.assert_frame_equal(
        thinned.reset_index(drop=True),
        every[every["round"].isin([0, 2, 4])].reset_index(drop=True),
    )
    both = pd.concat([every, thinned])  # two plain frames in attrs would make pandas raise here
    assert len(both) == len(every) + len(thinned)
    assert "messages" not in both.attrs  # pandas keeps attrs only when they are the same
    view = every[every["round"] > 0]
    assert view.attrs["messages"] is every.attrs["messages"]  # shared, not copied


def test_divergence_options_pass_through():
    stopped = lk.run(
        "rac_lora", CASE["rac_lora"].matrix(), 6, rank=RANK, gamma=1e6, on_divergence="stop"
    )
    assert stopped.attrs["diverged"] and stopped.attrs["unit"] == "step"
    with pytest.raises(lk.DivergenceError):
        lk.run("rac_lora", CASE["rac_lora"].matrix(), 6, rank=RANK, gamma=1e6)


def test_unknown_method_is_refused_with_the_names():
    with pytest.raises(ValueError, match=r"method must be one of .*fedbuff"):
        lk.run("nonsense", CASE["lora"].matrix(), 3, rank=RANK, gamma=0.1)
    with pytest.raises(ValueError, match=r"method must be one of .*rw_lora"):
        lk.make("nonsense")


def test_the_federated_view_and_make_federated_keep_their_old_shape():
    from lorakit.federated import FEDERATED_METHODS, make_federated

    assert list(FEDERATED_METHODS) == [n for n, m in REGISTRY.items() if m.pattern == "federated"]
    for name, (build, description) in FEDERATED_METHODS.items():
        assert build is REGISTRY[name].build and description == REGISTRY[name].description
    # make_federated(method, rank, step size): positional, or the README's old keyword lr=
    with pytest.warns(DeprecationWarning, match="the step size is gamma"):
        old = make_federated("fed_rac_lora", rank=2, lr=0.1, side="right")
    assert old == make_federated("fed_rac_lora", 2, 0.1, side="right")
    assert old == lk.make("fed_rac_lora", 2, 0.1, side="right")
    with pytest.raises(TypeError, match="both gamma and lr"):
        make_federated("fedit", 2, 0.1, lr=0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        make_federated("rw_lora", 2, 0.1)  # the view holds the federated methods only
