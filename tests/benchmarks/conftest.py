import os
from pathlib import Path

import pandas as pd
import torch
from timing import RESULTS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Benchmarks measure the machine as a user has it (tests/conftest.py pins unit tests to 1 thread).
torch.set_num_threads(os.cpu_count() or 1)

RESULTS_FILE = Path(os.environ.get("LORAKIT_BENCH_RESULTS", "build/bench/results.csv"))


def pytest_sessionfinish(session, exitstatus):
    """Write every figure recorded with ``timing.record`` (one row each) to the results file."""
    if RESULTS:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(RESULTS).to_csv(RESULTS_FILE, index=False)
        print(f"\n{len(RESULTS)} benchmark figures written to {RESULTS_FILE}")
