# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# `make test` runs the whole suite under transformers 4.x (.venv), then the model-loading tests (marker `hf`)
# under transformers 5.x (.venv-tf5, constraints-tf5.txt), then, where a Python 3.10 exists (PATH or pyenv), the
# OpenVINO tests and the unit tests on Python 3.10 without torch (.venv-py310: the ONNX-in install).
PY310 := $(shell for p in $(HOME)/.pyenv/versions/3.10*/bin/python3.10 $$(command -v python3.10); do "$$p" -c "" >/dev/null 2>&1 && echo "$$p" && break; done)
.PHONY: demo test test-main test-tf5 test-py310 setup setup-tf5
setup:
	bash scripts/bootstrap.sh
setup-tf5:
	bash scripts/bootstrap.sh .venv-tf5 constraints-tf5.txt
demo: setup
	.venv/bin/mmdk demo
test: test-main
	$(MAKE) test-tf5
	$(MAKE) test-py310
test-main: setup
	.venv/bin/python -m pytest -q
test-tf5: setup-tf5
	.venv-tf5/bin/python -m pytest -q -m "hf and not slow" -p no:cacheprovider
test-py310:
ifeq ($(PY310),)
	@echo "mmdk: no Python 3.10 here (PATH or ~/.pyenv); the Python 3.10 / no-torch tests were not run"
else
	PYTHON=$(PY310) EXTRAS=onnx,openvino,data,test bash scripts/bootstrap.sh .venv-py310
	.venv-py310/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"
	.venv-py310/bin/python -m pytest -q -p no:cacheprovider tests/e2e/test_openvino.py tests/unit
endif
