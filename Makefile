# The two commands of the README. Both install what they need first (idempotent).
PY := .venv/bin/python

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m bitsearch demo

test: setup
	$(PY) -m ruff check bitsearch tests experiments
	.venv/bin/lint-imports
	$(PY) -m pytest -n 2 tests --doctest-modules bitsearch

bench: setup
	$(PY) experiments/bench_dense.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .hypothesis
