"""The benchmark harness (tests/benchmarks/timing.py, report.py) on a fake clock: no timing here.

Every expected value below is written out by hand from the fake clock's script, not computed by
the harness.
"""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).parent / "benchmarks"


def _load(name):
    """tests/benchmarks is not on sys.path for unit tests (norecursedirs): import by path."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


timing = _load("timing")
report = _load("report")


class FakeClock:
    """A clock that a candidate advances by its own cost, and a log of who ran when."""

    def __init__(self):
        self.now = 0.0
        self.calls = []

    def __call__(self):
        return self.now

    def candidate(self, name, costs):
        """A candidate whose k-th call (warm-ups included) takes ``costs[k]`` seconds."""
        costs = iter(costs)

        def run():
            self.calls.append(name)
            self.now += next(costs)

        return run


def test_compare_rotates_the_order_each_repeat_after_the_warmups():
    clock = FakeClock()
    names = ("a", "b", "c")
    candidates = {n: clock.candidate(n, [1.0] * 6) for n in names}
    timing.compare(candidates, repeats=4, warmup=2, clock=clock)
    warmups = ["a", "a", "b", "b", "c", "c"]
    rotated = ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert clock.calls == warmups + rotated


def test_compare_divides_by_per_and_reports_min_median_max_and_the_ratio_of_medians():
    clock = FakeClock()
    # the first cost of each is the warm-up, which must not be counted
    slow = clock.candidate("slow", [100.0, 30.0, 10.0, 50.0, 20.0, 40.0])
    fast = clock.candidate("fast", [100.0, 2.0, 9.0, 1.0, 3.0, 5.0])
    out = timing.compare({"slow": slow, "fast": fast}, repeats=5, per=10, clock=clock)
    assert list(out) == ["slow", "fast"]
    assert out["slow"].seconds == pytest.approx((3.0, 1.0, 5.0, 2.0, 4.0))
    assert (out["slow"].min, out["slow"].median, out["slow"].max) == pytest.approx((1, 3, 5))
    assert (out["fast"].min, out["fast"].median, out["fast"].max) == pytest.approx((0.1, 0.3, 0.9))
    assert out.ratio("slow", "fast") == pytest.approx(10.0)
    assert out.ratio("fast", "slow") == pytest.approx(0.1)
    lines = out.table().splitlines()
    assert lines[0].split() == [
        "slow",
        "min",
        "1000.000",
        "median",
        "3000.000",
        "max",
        "5000.000",
        "ms",
    ]
    assert lines[1].split() == [
        "fast",
        "min",
        "100.000",
        "median",
        "300.000",
        "max",
        "900.000",
        "ms",
    ]


def test_compare_takes_a_count_per_candidate():
    clock = FakeClock()
    steps = clock.candidate("steps", [0.0, 2.0, 2.0, 2.0])
    copies = clock.candidate("copies", [0.0, 1.0, 1.0, 1.0])
    out = timing.compare(
        {"steps": steps, "copies": copies}, repeats=3, per={"steps": 10, "copies": 200}, clock=clock
    )
    assert out["steps"].median == pytest.approx(0.2)
    assert out["copies"].median == pytest.approx(0.005)


def test_compare_settles_before_each_timed_call_and_does_not_time_it(monkeypatch):
    clock = FakeClock()

    def sleep(seconds):  # the settle pause: on the clock, but outside the timed calls
        clock.calls.append(f"sleep {seconds}")
        clock.now += seconds

    monkeypatch.setattr(timing.time, "sleep", sleep)
    a, b = clock.candidate("a", [0.0, 1.0, 1.0]), clock.candidate("b", [0.0, 3.0, 3.0])
    out = timing.compare({"a": a, "b": b}, repeats=2, settle=0.5, clock=clock)
    warmups, first, second = ["a", "b"], ["sleep 0.5", "a", "sleep 0.5", "b"], ["sleep 0.5", "b"]
    assert clock.calls == [*warmups, *first, *second, "sleep 0.5", "a"]
    assert out["a"].seconds == (1.0, 1.0) and out["b"].seconds == (3.0, 3.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"repeats": 0}, "repeats must be >= 1"),
        ({"warmup": -1}, "warmup >= 0"),
        ({"per": 0}, "per must be > 0"),
        ({"per": {"a": 1}}, "per must be > 0 for each of"),
        ({"settle": -0.1}, "settle must be >= 0 seconds"),
    ],
)
def test_compare_refuses_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        timing.compare({"a": lambda: None, "b": lambda: None}, **kw)


def test_record_adds_one_row_per_figure_and_returns_the_verdict(monkeypatch):
    monkeypatch.setattr(timing, "RESULTS", [])
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    assert timing.record("bench_x", "loop / batched", 12, "×", ">= 10", True) is True
    assert timing.record("bench_x", "slow / fast", 3, "×", ">= 4", False) is False
    assert timing.record("bench_x", "memory", 4.5, "MiB") is None
    assert timing.RESULTS == [
        {"bench": "bench_x", "figure": "loop / batched", "value": 12.0, "unit": "×",
         "target": ">= 10", "pass": True, "cores": 2},
        {"bench": "bench_x", "figure": "slow / fast", "value": 3.0, "unit": "×",
         "target": ">= 4", "pass": False, "cores": 2},
        {"bench": "bench_x", "figure": "memory", "value": 4.5, "unit": "MiB",
         "target": "", "pass": "", "cores": 2},
    ]  # fmt: skip


CSV = """bench,figure,value,unit,target,pass,cores
bench_federated,loop / batched (float32),196.9,×,>= 10,True,2
bench_theory,numpy / lorakit,1.5,×,>= 4,False,2
bench_peft_fslora,peak memory,4.7,MiB,,,2
bench_markov,test_x: failed before recording a figure,,,passes,False,2
"""

TABLE = """| benchmark | figure | value | target | pass |
|---|---|---|---|---|
| bench_federated | loop / batched (float32) | 197 × | >= 10 | yes |
| bench_theory | numpy / lorakit | 1.5 × | >= 4 | **no** |
| bench_peft_fslora | peak memory | 4.7 MiB |  |  |
| bench_markov | test_x: failed before recording a figure | — | passes | **no** |

Measured by `make bench` on 2 CPU core(s).
"""


def test_report_rewrites_only_the_text_between_the_markers(tmp_path):
    results, readme = tmp_path / "results.csv", tmp_path / "README.md"
    results.write_text(CSV)
    readme.write_text(
        "# x\n\n## Performance\n<!-- bench:start -->\nold\n<!-- bench:end -->\ntail\n"
    )
    report.main(results, readme)
    expected = f"# x\n\n## Performance\n<!-- bench:start -->\n{TABLE}<!-- bench:end -->\ntail\n"
    assert readme.read_text() == expected
    report.main(results, readme)  # idempotent
    assert readme.read_text() == expected


def test_report_table_of_an_empty_results_file_and_a_readme_without_markers(tmp_path):
    frame = pd.DataFrame(columns=timing.COLUMNS)
    assert report.table(frame) == "No figures recorded: run `make bench`.\n"
    results, readme = tmp_path / "results.csv", tmp_path / "README.md"
    results.write_text(CSV)
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="must hold one <!-- bench:start -->"):
        report.main(results, readme)


def test_a_figure_with_a_bar_stays_in_its_cell():
    frame = pd.DataFrame([["b", "a | b", "1", "×", "", "", 2]], columns=timing.COLUMNS)
    assert "| b | a \\| b | 1 × |  |  |" in report.table(frame)
