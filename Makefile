# Murmur: every target installs what it needs into .venv/ first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROTO_SRC := $(wildcard protos/murmur/v1/*.proto)
STAMP := $(VENV)/.installed

.PHONY: install protos run test lint clean certs soak bench

install: $(STAMP) protos

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# Generates murmur/v1/*_pb2*.py from protos/ (not committed: always reproducible).
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_SRC)

run: install
	$(BIN)/murmur-cluster

test: install
	$(BIN)/python -m pytest -q

# make bench                 full run (under 20 minutes on 2 cores)
# make bench ARGS=--quick     about three minutes; results in bench/results/
bench: install
	$(BIN)/murmur-bench $(ARGS)

# A development CA and cluster certificates in certs/ (see README "TLS").
certs: install
	$(BIN)/python deploy/dev_ca.py certs

# 10 minutes of mixed load on the real graph with a kill -9 every minute.
soak: install
	$(BIN)/python -m tests.faults.soak $(SOAK_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) murmur/v1/*_pb2*.py murmur/v1/*_pb2*.pyi
