# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
VCC := $(VENV)/bin/vcc
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
BENCH_ARGS ?=
PYTEST_ARGS ?=
# Two workers (pytest-xdist): the tests that start clusters run one after the other in one of
# them, the rest in the other (tests/conftest.py). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

.PHONY: venv demo test lint proto bench prompts system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Servers the tests use that Python packages cannot bring: PostgreSQL from Debian.
system-deps:
	bash deploy/install-system-deps.sh

# The demo's cities answer SIP: rtpengine, espeak-ng and sox come from system-deps.
demo: $(STAMP) system-deps
	$(VCC) demo $(DEMO_ARGS)

test: $(STAMP) system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The IVR prompts of the example province, made offline from text (espeak-ng + sox). `vcc cluster
# up`, the demo and the SIP tests build their own the same way.
prompts: $(STAMP) system-deps
	$(VCC) prompts build --config deploy/province.example.yaml --out build/prompts

proto: $(STAMP)
	$(PY) tools/protogen.py

bench: $(STAMP)
	$(VCC) bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache .ruff_cache
