# diskaudit — every target sets itself up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/diskaudit.yaml
STAMP  := $(VENV)/.installed

.PHONY: install run test lint unit bench clean soak
SOAK_SECONDS ?= 600

install: $(STAMP)

# Reinstall only when the project's metadata or the C reader change. The extension is also
# built in place: scan workers run with `python -S` (no .pth files) and import from src/.
$(STAMP): pyproject.toml setup.py src/diskaudit/scan/_fastwalk.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $(STAMP)

run: install
	$(BIN)/diskaudit serve --config $(CONFIG)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.scan_bench $(BENCH_ARGS)
	$(BIN)/python -m bench.daemon_bench
	$(BIN)/python -m bench.audit_bench

# The long soak (the short form, 60 s, runs in `make test`): docs/reliability.md.
soak: install
	DISKAUDIT_SOAK=1 DISKAUDIT_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest tests/reliability -p no:cacheprovider -s

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
