# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
.PHONY: demo test setup
setup:
	bash scripts/bootstrap.sh
demo: setup
	.venv/bin/mmdk demo
test: setup
	.venv/bin/python -m pytest -q
