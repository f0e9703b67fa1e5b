# The two commands of the README. Each installs what it needs first (scripts/setup.sh), into a
# virtual environment at $(VENV) made with $(PYTHON): Debian's own python3 works too (PEP 668).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench lab-cleanup

demo:
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh demo
	$(PY) -m shortpath demo

test:
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh test
	$(PY) -m pytest -q -p no:cacheprovider

bench:
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh test
	$(PY) -m benchmarks run --suite quick

lab-cleanup:
	$(PY) -m netns_lab cleanup
