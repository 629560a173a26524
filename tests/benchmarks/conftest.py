import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Benchmarks measure the machine as a user has it (tests/conftest.py pins unit tests to 1 thread).
torch.set_num_threads(os.cpu_count() or 1)
