# The two commands of the README. Each installs what it needs first.
PYTHON ?= python3

.PHONY: demo test bench lab-cleanup

demo:
	bash scripts/setup.sh demo
	$(PYTHON) -m shortpath demo

test:
	bash scripts/setup.sh test
	$(PYTHON) -m pytest -q -p no:cacheprovider

bench:
	bash scripts/setup.sh test
	$(PYTHON) -m benchmarks run --suite quick
