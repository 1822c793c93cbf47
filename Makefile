# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# `make test` runs the whole suite under transformers 4.x (.venv), then the model-loading tests (marker `hf`)
# under transformers 5.x (.venv-tf5, constraints-tf5.txt).
.PHONY: demo test test-main test-tf5 setup setup-tf5
setup:
	bash scripts/bootstrap.sh
setup-tf5:
	bash scripts/bootstrap.sh .venv-tf5 constraints-tf5.txt
demo: setup
	.venv/bin/mmdk demo
test: test-main
	$(MAKE) test-tf5
test-main: setup
	.venv/bin/python -m pytest -q
test-tf5: setup-tf5
	.venv-tf5/bin/python -m pytest -q -m "hf and not slow" -p no:cacheprovider
