# Every target that needs Python first makes its own environment in $(VENV).
# On a CPU machine torch comes from TORCH_SPEC, installed before anything else, so that no
# package pulls the multi-GB CUDA build. Elsewhere (e.g. a CPU machine whose pip would fetch
# the CUDA wheel), point pip at the CPU index:
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
BOOK_JOBS ?= 2
# default scale for `make book` and `make lab`; `make test` runs at ci unless told otherwise
RLHF_LAB_SCALE ?=
export RLHF_LAB_SCALE

STAMP := $(VENV)/.installed

.PHONY: env test book book-instructor lab notebooks clean bench bench-gpu seeds

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[book,dev]"
	touch $@

# 1) unit, science and chapter tiers in parallel; the chapter tier executes every chapter at ci
#    AND at cpu (the default scale of a machine without CUDA, so what `make book` runs), and in
#    the instructor edition at ci, and saves the executed notebooks. Chapters are collected
#    first, longest first, and handed out two at a time (--maxschedchunk 2) so that both workers stay busy until the end;
# 2) the book tier builds the site from the cpu notebooks, as `make book` does, and opens it in
#    headless Chromium.
# One torch thread per process: two workers on two cores; torch's default of one thread per
# core makes the two workers fight (pretraining measured 7x slower).
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || (echo "installing Debian's chromium for the browser test"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium: the browser test will fail"
	RLHF_LAB_SCALE=$${RLHF_LAB_SCALE:-ci} OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --maxschedchunk 2 -m "not book" $(PYTEST_ARGS)
	RLHF_LAB_SCALE=$${RLHF_LAB_SCALE:-ci} OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:xdist -m book $(PYTEST_ARGS)


# Executes every chapter at the default scale (gpu with CUDA, else cpu; RLHF_LAB_SCALE=ci for the
# small one), two at a time, then builds the site from the executed notebooks: the student
# edition (stubs and their checks, empty practice answers) into book/_build/html.
book: $(STAMP)
	$(BIN)/python -m rlhf_lab.book build --jobs $(BOOK_JOBS)

# The instructor edition: every stub replaced by its solution and every practice answer filled
# in, executed (a check that fails fails the build), into book/_build/instructor/html.
book-instructor: $(STAMP)
	RLHF_LAB_EDITION=instructor $(BIN)/python -m rlhf_lab.book build --jobs $(BOOK_JOBS)

notebooks: $(STAMP)
	$(BIN)/python -m rlhf_lab.book notebooks

# MyST chapters open as notebooks (jupytext) by default, not as Markdown text
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(STAMP)
	mkdir -p $(dir $(LAB_OVERRIDES))
	echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $(LAB_OVERRIDES)
	$(BIN)/jupyter lab $(LAB_ARGS) chapters/

# every benchmark at ci and at cpu, each side by side with the library it is compared with
bench: $(STAMP)
	@for s in ci cpu; do \
	  OMP_NUM_THREADS=1 RLHF_LAB_SCALE=$$s $(BIN)/python benchmarks/sampler.py | sed "s/^/[$$s] /"; \
	  OMP_NUM_THREADS=1 RLHF_LAB_SCALE=$$s $(BIN)/python benchmarks/trainers.py | sed "s/^/[$$s] /"; \
	  OMP_NUM_THREADS=1 RLHF_LAB_SCALE=$$s $(BIN)/python benchmarks/teacher_forcing.py | sed "s/^/[$$s] /"; \
	done

# the same on a CUDA GPU, plus the sampler without its CUDA graph and one training step recorded as one
bench-gpu: $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/gpu.sh

# Claims must hold for any seed: every chapter at ci for seeds 0-4 and at cpu for seeds 0-1
# (not part of `make test`; about 15 + 25 minutes on two cores).
seeds: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run_chapters.py chapters/*.md --scales ci --seeds 0 1 2 3 4 --jobs 2
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run_chapters.py chapters/*.md --scales cpu --seeds 0 1 --jobs 2

clean:
	rm -rf book/_build $(VENV)
