# The two commands a new user types: `make demo` and `make test`. Each creates .venv and installs
# the package (editable, with the test extras) the first time, and again only when pyproject.toml changes.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/train.py --task classification

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# Long end-to-end runs (the default detection training, ~10 min); CI runs them after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) tools/benchmark.py --output docs/benchmarks.md

clean:
	rm -rf $(VENV) runs build *.egg-info
