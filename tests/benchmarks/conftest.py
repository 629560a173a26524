import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from timing import COLUMNS, RESULTS, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Benchmarks measure the machine as a user has it (tests/conftest.py pins unit tests to 1 thread).
torch.set_num_threads(os.cpu_count() or 1)

RESULTS_FILE = Path(os.environ.get("LORAKIT_BENCH_RESULTS", "build/bench/results.csv"))

_FAILED: set[str] = set()


def pytest_runtest_logreport(report):
    if report.failed:
        _FAILED.add(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A benchmark that fails before recording any figure (an error, a same-numbers check) still
    gets a failing row, so the results file and the README never hide it."""
    before = len(RESULTS)
    yield
    if item.nodeid in _FAILED and len(RESULTS) == before:
        record(
            item.path.stem,
            f"{item.name}: failed before recording a figure",
            math.nan,
            "",
            "passes",
            False,
        )


def pytest_sessionfinish(session, exitstatus):
    """Write every figure recorded with ``timing.record`` (one row each) to the results file,
    also when a benchmark failed or nothing was recorded (an empty file, not a stale one)."""
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(RESULTS, columns=COLUMNS).to_csv(RESULTS_FILE, index=False)
    print(f"\n{len(RESULTS)} benchmark figures written to {RESULTS_FILE}")
