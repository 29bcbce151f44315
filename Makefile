# The front door. `make train` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist: a test process per core, each taking whole files (a module shares its fixtures;
# the SLURM tests share one cluster): XDIST= runs them in one.
XDIST ?= -n auto --dist loadfile

.PHONY: setup train test test-fast lint format tensorboard bench slurm slurm-stop clean

setup: $(STAMP)  ## create .venv and install the package with its dev tools (quick once done)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: setup  ## train the default experiment (extra Hydra overrides: make train ARGS="model=mlp_128")
	$(BIN)/mnist-train $(ARGS)

test: setup lint  ## ruff, then the whole suite, the SLURM tests on `make slurm`'s cluster (what CI runs)
	$(BIN)/python -m pytest $(XDIST) $(ARGS)

# The fast tier runs in one process: a second worker would first spend ~10 s importing torch.
test-fast: setup  ## the fast tier: every test neither slow, nor on the real MNIST, nor on SLURM
	$(BIN)/python -m pytest -n 0 -m "not slow and not e2e and not slurm" $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup  ## tutorial loop vs plain PyTorch vs mnist-train, side by side -> docs/benchmarks.json (~17 min)
	$(BIN)/python -m benchmarks tutorial $(ARGS)

slurm:  ## install (as root) and start a two-node SLURM cluster on this machine (docs/sweeps.md)
	bash tests/slurm_cluster.sh start

slurm-stop:
	bash tests/slurm_cluster.sh stop

tensorboard: setup  ## open TensorBoard on every run and sweep
	$(BIN)/tensorboard --logdir outputs

clean:  ## remove the venv (data/ and outputs/ are kept)
	rm -rf $(VENV)
