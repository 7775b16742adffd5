# Two commands on a fresh clone: `make demo` and `make test`. Each sets up its own venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test reliability check fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: fresh SQLite database from the shipped real data, ingest, score, top 10, out/demo/
demo: $(STAMP)
	$(BIN)/atm-risk demo --out out/demo

## test: the whole suite (SQLite always; PostgreSQL when a server answers, required under CI=true)
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

## reliability: faults, load, bad input, security, reconciliation (issue #10); prints a JSON
## summary last and writes docs/RELIABILITY.md. Needs PostgreSQL (or RELIABILITY_ARGS="--backends sqlite").
reliability: $(STAMP)
	$(BIN)/python -m reliability $(RELIABILITY_ARGS)

## check: lint, format check, types
check: $(STAMP)
	$(BIN)/ruff check src tests benchmarks reliability
	$(BIN)/ruff format --check src tests benchmarks reliability
	$(BIN)/mypy src

fmt: $(STAMP)
	$(BIN)/ruff format src tests benchmarks reliability
	$(BIN)/ruff check --fix src tests benchmarks reliability

clean:
	rm -rf $(VENV) var out
